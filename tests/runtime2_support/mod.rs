//! Shared fixtures of the `runtime2_*` integration tests: unique names, Docker objects and host
//! links owned by guards that remove them on drop. Docker is driven through the `docker` CLI so the
//! fixtures do not depend on the code under test.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The run_command test server image built by `scripts/test-images.sh`.
pub const SERVER_IMAGE: &str = "orchestrator-test/https-server:latest";

/// A name unique to this test process and call: `<prefix><pid>x<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `docker <args>`, panicking with its stderr on failure; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed for the runtime2 tests");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Like [`docker`] but returns `None` on failure.
pub fn docker_try(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fails (never skips) when the engine or the server image is missing.
pub fn require_engine_and_image() {
    assert!(
        docker_try(&["info", "--format", "{{.ServerVersion}}"]).is_some(),
        "the Docker engine must be running for this test"
    );
    assert!(
        docker_try(&["image", "inspect", SERVER_IMAGE]).is_some(),
        "image {SERVER_IMAGE} is missing: run scripts/test-images.sh"
    );
}

/// Runs `ip <args>`, panicking on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 must be installed");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Docker network removed on drop (containers still attached are disconnected first).
pub struct NetworkGuard {
    pub name: String,
}

impl NetworkGuard {
    /// An internal bridge network with Docker-chosen subnet, labelled as a test object.
    pub fn internal(name: &str, extra_labels: &[&str]) -> Self {
        let mut args = vec![
            "network",
            "create",
            "--internal",
            "--label",
            "orchestrator-test=1",
        ];
        for l in extra_labels {
            args.push("--label");
            args.push(l);
        }
        args.push(name);
        docker(&args);
        Self {
            name: name.to_string(),
        }
    }

    /// Adopts an existing network for cleanup.
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Some(ids) = docker_try(&[
            "network",
            "inspect",
            "--format",
            "{{range $k, $v := .Containers}}{{$k}} {{end}}",
            &self.name,
        ]) {
            for id in ids.split_whitespace() {
                let _ = docker_try(&["network", "disconnect", "-f", &self.name, id]);
            }
        }
        let _ = docker_try(&["network", "rm", &self.name]);
    }
}

/// A container removed (forcefully) on drop.
pub struct ContainerGuard {
    pub name: String,
}

impl ContainerGuard {
    /// Starts the test server image attached to `network`, with extra `docker run` arguments.
    pub fn server(name: &str, network: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "orchestrator-test=1",
            "--network",
            network,
        ];
        args.extend_from_slice(extra);
        args.push(SERVER_IMAGE);
        docker(&args);
        Self {
            name: name.to_string(),
        }
    }

    /// The container's IPv4 address on `network`.
    pub fn ip_on(&self, network: &str) -> std::net::Ipv4Addr {
        let tpl = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "--format", &tpl, &self.name])
            .parse()
            .expect("docker reports a valid IPv4 address")
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", &self.name]);
    }
}

/// A veth pair in the root namespace (`<name>` and `<name>p`), deleted on drop.
pub struct VethGuard {
    pub name: String,
}

impl VethGuard {
    /// Creates the pair, brings both ends up and gives `<name>` the address `cidr` (e.g.
    /// `10.203.130.1/24`; only 10.203.128.0/17 is ours).
    pub fn new(name: &str, cidr: Option<&str>) -> Self {
        assert!(name.len() <= 13, "veth name {name} too long");
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        let guard = Self {
            name: name.to_string(),
        };
        ip(&["link", "set", &peer, "up"]);
        ip(&["link", "set", name, "up"]);
        if let Some(cidr) = cidr {
            ip(&["addr", "add", cidr, "dev", name]);
        }
        guard
    }
}

impl Drop for VethGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// The loopback-registry name of the test server image: the agent's pull fails at once on
/// 127.0.0.1:9 and it falls back to the local image (never any traffic off the machine).
pub const SERVER_IMAGE_LOOPBACK: &str = "127.0.0.1:9/orchestrator-test/https-server:latest";

/// `autonomy-netmon` next to the test binaries (`cargo build -p autonomy-netmon`).
pub fn netmon_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/autonomy-netmon
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = dir.join("autonomy-netmon");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p autonomy-netmon`",
        bin.display()
    );
    bin
}

/// A running `autonomy-netmon` serving `socket`, killed on drop.
pub struct NetmonGuard {
    child: std::process::Child,
}

impl NetmonGuard {
    /// Starts netmon with a short debounce (tests) and waits for its socket.
    pub fn start(socket: &std::path::Path) -> Self {
        let child = Command::new(netmon_binary())
            .arg("--socket")
            .arg(socket)
            .args(["--debounce", "300ms", "--log-level", "warn"])
            .spawn()
            .expect("netmon starts");
        let guard = Self { child };
        for _ in 0..100 {
            if socket.exists() {
                return guard;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("netmon did not create {}", socket.display());
    }
}

impl Drop for NetmonGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes every container and network carrying `edge.autonomy.instance=<instance>` on drop: what
/// an agent under test created with this state dir.
pub struct InstanceCleanup {
    pub instance: String,
}

impl Drop for InstanceCleanup {
    fn drop(&mut self) {
        let filter = format!("label=edge.autonomy.instance={}", self.instance);
        if let Some(ids) = docker_try(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker_try(&["rm", "-f", id]);
            }
        }
        if let Some(ids) = docker_try(&["network", "ls", "-q", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker_try(&["network", "rm", id]);
            }
        }
    }
}

/// `docker inspect` of a container's endpoints: network name → (IPv4, MAC, endpoint id).
pub fn endpoints(container: &str) -> std::collections::BTreeMap<String, (String, String, String)> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}} {{$v.MacAddress}} {{$v.EndpointID}}\n{{end}}",
        container,
    ]);
    out.lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((
                p.next()?.to_string(),
                (
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                ),
            ))
        })
        .collect()
}

/// Polls `f` every 100 ms until it returns `Some`, up to `timeout`.
pub async fn eventually<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An in-process agent library stack on a fresh state dir: the real engine, a real netmon feeding
/// the interface cache, and the runtime service (`Runtimes`) — everything the cloud topics call,
/// without the cloud link.
pub struct LibAgent {
    pub rt: orchestrator_agent::runtime::Runtimes,
    pub dir: tempfile::TempDir,
    _cleanup: InstanceCleanup,
    _netmon: NetmonGuard,
}

impl LibAgent {
    pub async fn start() -> Self {
        require_engine_and_image();
        let dir = tempfile::tempdir().expect("temp state dir");
        let instance = dir.path().to_string_lossy().into_owned();
        let cleanup = InstanceCleanup { instance };
        let socket = dir.path().join("netmon.sock");
        let netmon = NetmonGuard::start(&socket);
        let cache = orchestrator_agent::netevents::InterfaceCache::new();
        orchestrator_agent::netevents::spawn_listener(socket, cache.clone());
        let docker = docker_api::Docker::from_env().expect("docker client");
        let mut config = orchestrator_agent::runtime::RuntimeConfig::new(dir.path());
        config.runtime_image = SERVER_IMAGE_LOOPBACK.to_string();
        let rt = orchestrator_agent::runtime::Runtimes::open(docker, cache.clone(), config)
            .await
            .expect("state dir opens");
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while !cache.is_discovered() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "netmon discovery did not arrive");
        Self {
            rt,
            dir,
            _cleanup: cleanup,
            _netmon: netmon,
        }
    }

    /// Creates a runtime through the real create workflow and waits for its outcome.
    pub async fn create(&self, name: &str, vnics: serde_json::Value) {
        use orchestrator_agent::topics::RuntimeOps;
        let msg = serde_json::json!({
            "correlation_id": 1, "container_name": name, "vnic_configs": vnics
        });
        let req = orchestrator_agent::contract::CreateRuntimeRequest::parse(
            msg.as_object().expect("object"),
        )
        .expect("valid create request");
        self.rt.create(req).await.expect("create accepted");
        let ops = self.rt.ops().clone();
        let record = eventually(std::time::Duration::from_secs(90), "create", || {
            ops.get(name)
                .filter(|r| r.outcome != orchestrator_agent::runtime::Outcome::Running)
        })
        .await;
        assert_eq!(
            record.outcome,
            orchestrator_agent::runtime::Outcome::Succeeded,
            "create failed: {record:?}"
        );
    }

    /// The persisted vNIC objects of `name`.
    pub async fn vnics(&self, name: &str) -> Vec<serde_json::Value> {
        self.rt.state().vnics_of(name).await.unwrap_or_default()
    }
}

impl Drop for LibAgent {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}

/// The real agent binary connected to an in-process devcloud, with a real netmon, on a fresh
/// state dir; everything the agent creates (its instance label) is removed on drop.
pub struct AgentWorld {
    pub cloud: devcloud::DevCloud,
    pub pki: devcloud::pki::PkiPaths,
    pub state_dir: std::path::PathBuf,
    agent: std::process::Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    cid: u64,
    _cleanup: InstanceCleanup,
    _netmon: NetmonGuard,
    _dir: tempfile::TempDir,
}

impl AgentWorld {
    pub async fn start() -> Self {
        use std::io::BufRead;
        require_engine_and_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_id = unique("r2-agent-");
        let pki_dir = dir.path().join("pki");
        let pki = tokio::task::spawn_blocking(move || {
            devcloud::pki::generate(
                &pki_dir,
                &devcloud::pki::PkiOptions {
                    agent_id,
                    ..Default::default()
                },
            )
        })
        .await
        .expect("join")
        .expect("dev PKI");
        let cloud = devcloud::DevCloud::start(devcloud::ServerConfig::from_pki(
            &pki,
            "127.0.0.1:0".parse().expect("literal"),
        ))
        .await
        .expect("devcloud starts");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let cleanup = InstanceCleanup {
            instance: state_dir.to_string_lossy().into_owned(),
        };
        let netmon = NetmonGuard::start(&state_dir.join("netmon.sock"));
        let mut agent = Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"))
            .arg("--server")
            .arg(cloud.url())
            .arg("--ca-file")
            .arg(&pki.ca_cert)
            .arg("--mtls-dir")
            .arg(&pki.agent_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .args([
                "--runtime-image",
                SERVER_IMAGE_LOOPBACK,
                "--log-level",
                "info",
            ])
            .env_remove("HOST_NAME")
            .env_remove("DOCKER_HOST")
            .env_remove("RUST_LOG")
            .env("HOSTNAME", "runtime2-test-host")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the agent binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            agent
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            agent
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let world = Self {
            cloud,
            pki,
            state_dir,
            agent,
            log,
            cid: 1,
            _cleanup: cleanup,
            _netmon: netmon,
            _dir: dir,
        };
        if let Err(e) = world
            .cloud
            .wait_for_agent(
                Some(&world.pki.agent_id),
                std::time::Duration::from_secs(60),
            )
            .await
        {
            panic!("agent did not connect: {e}\n{}", world.logs());
        }
        // Let the boot reconcile finish first: its clean-up of unused MACVLAN networks can remove
        // a network a create made a moment before (reported to the runtime service's owner).
        let log = world.log.clone();
        eventually(
            std::time::Duration::from_secs(30),
            "the boot reconcile",
            || {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|l| l.contains("reconcile done"))
                    .then_some(())
            },
        )
        .await;
        world
    }

    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Emits `topic` with `args` and returns the ack values.
    pub async fn emit(
        &self,
        topic: &str,
        args: Vec<serde_json::Value>,
        timeout: std::time::Duration,
    ) -> Vec<serde_json::Value> {
        match self
            .cloud
            .emit_with_ack(Some(&self.pki.agent_id), topic, args, timeout)
            .await
        {
            Ok(v) => v,
            Err(e) => panic!("{topic}: no ack: {e}\n{}", self.logs()),
        }
    }

    /// Sends `topic` with one object (a fresh `correlation_id` added) and returns the first ack value.
    pub async fn call(&mut self, topic: &str, mut payload: serde_json::Value) -> serde_json::Value {
        self.cid += 1;
        if let Some(obj) = payload.as_object_mut() {
            obj.entry("correlation_id")
                .or_insert(serde_json::json!(self.cid));
        }
        self.emit(topic, vec![payload], std::time::Duration::from_secs(60))
            .await
            .into_iter()
            .next()
            .unwrap_or(serde_json::Value::Null)
    }

    /// Creates a runtime through `create_new_runtime` and waits until it runs.
    pub async fn create_runtime(&mut self, name: &str, vnics: serde_json::Value) {
        let ack = self
            .call(
                "create_new_runtime",
                serde_json::json!({"container_name": name, "vnic_configs": vnics}),
            )
            .await;
        assert_eq!(ack["status"], "creating", "{ack}\n{}", self.logs());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let s = self
                .call("get_device_status", serde_json::json!({"device_id": name}))
                .await;
            if s["status"] == "success" && s["is_running"] == true {
                return;
            }
            assert!(
                s["status"] != "error" && std::time::Instant::now() < deadline,
                "runtime {name} did not come up: {s}\n{}",
                self.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

impl Drop for AgentWorld {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}
