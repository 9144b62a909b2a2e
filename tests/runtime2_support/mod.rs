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
