//! Shared test plumbing: the engine handle, unique names and subnets, and drop guards for
//! containers, networks and veth pairs.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use docker_api::{
    ContainerCreate, Docker, DockerConfig, Filters, HostConfig, RemoveContainerOptions,
};

/// Built by scripts/test-images.sh; its CMD sleeps for an hour.
pub const TEST_IMAGE: &str = "orchestrator-test/busybox:latest";
/// Label key every test object carries.
pub const TEST_LABEL: &str = "orchestrator-test";
/// Label naming the test process, so leftovers of killed runs can be swept.
const OWNER_LABEL: &str = "orchestrator-test-owner";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SUBNETS: AtomicU32 = AtomicU32::new(0);
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A Docker client for the engine under test, with its version already negotiated. Panics with a
/// clear message when the engine is unreachable: these tests need it.
pub async fn engine() -> Docker {
    let config = DockerConfig::from_env().expect("DOCKER_HOST must be a unix:// socket");
    let socket = config.socket.clone();
    let docker = Docker::new(config);
    if let Err(e) = docker.negotiate().await {
        panic!(
            "the Docker engine at {} is required for docker_api tests (start dockerd, e.g. via \
             scripts/test.sh): {e}",
            socket.display()
        );
    }
    SWEPT.get_or_init(|| sweep_dead_runs(&docker)).await;
    docker
}

/// Removes containers and networks left behind by test processes that no longer exist (killed
/// runs whose guards never ran), so their subnets cannot make this run fail.
async fn sweep_dead_runs(docker: &Docker) {
    let alive = |owner: &str| {
        owner
            .strip_prefix("docker_api-")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let f = Filters::new().label(OWNER_LABEL);
    for c in docker.list_containers(true, &f).await.unwrap_or_default() {
        if !alive(c.labels.get(OWNER_LABEL).map_or("", String::as_str)) {
            let opts = RemoveContainerOptions {
                force: true,
                volumes: true,
            };
            let _ = docker.remove_container(&c.id, opts).await;
        }
    }
    for n in docker.list_networks(&f).await.unwrap_or_default() {
        if !alive(n.labels.get(OWNER_LABEL).map_or("", String::as_str)) {
            let _ = docker.remove_network(&n.id).await;
        }
    }
}

/// A name unique to this process and call: `dapi-<pid>x<n>-<tag>`.
pub fn unique(tag: &str) -> String {
    format!("{}-{tag}", test_support::unique("dapi-"))
}

/// A /24 inside 10.201.0.0/16 (returned as its third octet) that no network on the engine uses
/// and no other test of this run got. Test processes start at different offsets (pid), so
/// concurrent runs rarely race for the same octet.
pub async fn subnet_octet(docker: &Docker) -> u8 {
    let used: Vec<String> = docker
        .list_networks(&Filters::new())
        .await
        .expect("list networks")
        .into_iter()
        .flat_map(|n| n.ipam.config)
        .filter_map(|p| p.subnet)
        .collect();
    loop {
        let k = SUBNETS.fetch_add(1, Ordering::Relaxed);
        assert!(k < 254, "out of test subnets");
        let octet = (std::process::id().wrapping_mul(37).wrapping_add(k) % 254 + 1) as u8;
        let prefix = format!("10.201.{octet}.");
        if !used.iter().any(|s| s.starts_with(&prefix)) {
            return octet;
        }
    }
}

/// The labels every test object carries.
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (TEST_LABEL.to_string(), "1".to_string()),
        (
            OWNER_LABEL.to_string(),
            format!("docker_api-{}", std::process::id()),
        ),
    ])
}

/// A container spec running the sleeping test image with the test labels.
pub fn sleeper() -> ContainerCreate {
    ContainerCreate {
        image: TEST_IMAGE.into(),
        labels: labels(),
        host_config: HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs a command synchronously (guards run in `Drop`, where nothing can be awaited) and returns
/// its stdout; panics on failure unless `allow_fail` (then a failure reads as no output).
pub fn run(cmd: &str, args: &[&str], allow_fail: bool) -> String {
    if allow_fail {
        test_support::run_try(cmd, args).unwrap_or_default()
    } else {
        test_support::run(cmd, args)
    }
}

/// `docker inspect` through the CLI: an oracle independent of the client under test.
pub async fn cli_inspect(kind: &str, name: &str) -> serde_json::Value {
    let out = tokio::process::Command::new("docker")
        .args([kind, "inspect", name])
        .output()
        .await
        .expect("docker CLI");
    assert!(out.status.success(), "docker {kind} inspect {name} failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    v[0].clone()
}

/// Removes the container (force, with volumes) on drop.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        run("docker", &["rm", "-f", "-v", &self.0], true);
    }
}

/// Removes the network on drop (declare it before the containers that use it, so they go first).
pub struct NetworkGuard(pub String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        run("docker", &["network", "rm", &self.0], true);
    }
}

/// A veth pair in the root namespace, both ends up, deleted on drop.
pub struct Veth {
    /// One end (used as a MACVLAN parent).
    pub a: String,
    /// The peer.
    pub b: String,
}

impl Veth {
    pub async fn new() -> Veth {
        // Names ≤ 15 chars: "dv" + pid (hex, ≤ 6) + counter (hex) + end.
        let base = format!("dv{:x}x{:x}", std::process::id(), next());
        let veth = Veth {
            a: format!("{base}a"),
            b: format!("{base}b"),
        };
        for args in [
            vec![
                "link", "add", &veth.a, "type", "veth", "peer", "name", &veth.b,
            ],
            vec!["link", "set", &veth.a, "up"],
            vec!["link", "set", &veth.b, "up"],
        ] {
            let st = tokio::process::Command::new("ip")
                .args(&args)
                .status()
                .await
                .expect("ip");
            assert!(st.success(), "ip {args:?} failed");
        }
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        run("ip", &["link", "del", &self.a], true);
    }
}

/// Generous limit for waiting on the engine in tests.
pub const PATIENCE: Duration = Duration::from_secs(60);
