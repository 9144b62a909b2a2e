//! The Docker engine as the tests see it: the `docker` CLI (so checks do not depend on the code under
//! test), the test images, and guards that remove test-made containers and networks — or everything
//! an agent instance made — on drop. Every object a test makes carries `orchestrator-test=1`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use test_support::{run, run_try};

/// Image the agent's runtimes run in most tests: the loopback "registry" makes the agent's pull fail
/// at once without leaving the machine, then the local copy is used (`scripts/test-images.sh`).
pub const IMAGE: &str = "127.0.0.1:9/orchestrator-test/busybox:latest";
/// The plain local name of the same image (for test-made containers).
pub const LOCAL_IMAGE: &str = "orchestrator-test/busybox:latest";
/// The run_command test server image (`test_support/src/bin/https_test_server.rs`).
pub const SERVER_IMAGE: &str = "orchestrator-test/https-server:latest";
/// The test server image under its loopback-registry name (see [`IMAGE`]).
pub const SERVER_IMAGE_LOOPBACK: &str = "127.0.0.1:9/orchestrator-test/https-server:latest";

/// Runs `docker <args>`; `Some(trimmed stdout)` on success.
pub fn docker_try(args: &[&str]) -> Option<String> {
    run_try("docker", args)
}

/// Runs `docker <args>`, panicking with its stderr on failure; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    run("docker", args)
}

/// Whether the engine's API version is at least `major.minor` (the matrix runs both sides).
pub fn api_at_least(major: u32, minor: u32) -> bool {
    let v = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    let (a, b) = v.split_once('.').expect("API version");
    (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()) >= (major, minor)
}

/// The status warnings, without those about ulimits the engine refused (they depend on the
/// engine's own limits, not on what a test does).
pub fn warnings_of(status: &Value) -> Vec<String> {
    status["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|w| !w.starts_with("ulimit "))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Fails (never skips) when the engine or `image` is missing.
pub fn require_engine(image: &str) {
    assert!(
        docker_try(&["info", "--format", "{{.ServerVersion}}"]).is_some(),
        "the Docker engine must be running for this test"
    );
    assert!(
        docker_try(&["image", "inspect", image]).is_some(),
        "image {image} is missing: run scripts/test-images.sh"
    );
}

/// `docker inspect` of a container as JSON, `None` when it does not exist.
pub fn inspect(name: &str) -> Option<Value> {
    let text = docker_try(&["container", "inspect", name])?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_array()?.first().cloned()
}

/// `docker network inspect` as JSON, `None` when it does not exist.
pub fn inspect_network(name: &str) -> Option<Value> {
    let text = docker_try(&["network", "inspect", name])?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_array()?.first().cloned()
}

/// Names of containers (all states) or networks carrying `label`; `None` when docker fails.
fn labelled(networks: bool, label: &str) -> Option<Vec<String>> {
    let filter = format!("label={label}");
    let out = if networks {
        docker_try(&[
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ])
    } else {
        docker_try(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
    }?;
    Some(out.split_whitespace().map(str::to_owned).collect())
}

/// Names of containers carrying `label` (all states).
pub fn containers_with_label(label: &str) -> Vec<String> {
    labelled(false, label).unwrap_or_else(|| panic!("cannot list the containers labelled {label}"))
}

/// Names of networks carrying `label`.
pub fn networks_with_label(label: &str) -> Vec<String> {
    labelled(true, label).unwrap_or_else(|| panic!("cannot list the networks labelled {label}"))
}

/// A container's endpoints: network name → (IPv4, MAC, endpoint id).
pub fn endpoints(container: &str) -> BTreeMap<String, (String, String, String)> {
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

/// The MACs of the links in the running container's network namespace, read from the host
/// (`nsenter … ip -j link`: what the kernel has, not what the engine reports).
pub fn link_macs(container: &str) -> Vec<String> {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    let out = run(
        "nsenter",
        &["-t", pid.trim(), "-n", "ip", "-j", "link", "show"],
    );
    let links: Value = serde_json::from_str(&out).expect("ip -j link");
    links
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["address"].as_str().map(str::to_owned))
        .collect()
}

/// Removes network `name` (best effort), force-disconnecting what is still attached first.
pub fn remove_network(name: &str) {
    if let Some(ids) = docker_try(&[
        "network",
        "inspect",
        "--format",
        "{{range $k, $v := .Containers}}{{$k}} {{end}}",
        name,
    ]) {
        for id in ids.split_whitespace() {
            let _ = docker_try(&["network", "disconnect", "-f", name, id]);
        }
    }
    let _ = docker_try(&["network", "rm", name]);
}

/// A container removed (forcefully) on drop.
pub struct ContainerGuard {
    pub name: String,
}

impl ContainerGuard {
    /// `docker run -d --name <name> --label orchestrator-test=1 <options> <image> <command>`.
    pub fn run(name: &str, options: &[&str], image: &str, command: &[&str]) -> Self {
        Self::make(&["run", "-d"], name, options, image, command)
    }

    /// Like [`ContainerGuard::run`] with `docker create`: made, never started.
    pub fn create(name: &str, options: &[&str], image: &str, command: &[&str]) -> Self {
        Self::make(&["create"], name, options, image, command)
    }

    fn make(verb: &[&str], name: &str, options: &[&str], image: &str, command: &[&str]) -> Self {
        let mut args = verb.to_vec();
        args.extend(["--name", name, "--label", "orchestrator-test=1"]);
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        docker(&args);
        Self::adopt(name)
    }

    /// A busybox container on the default bridge, running the image's default command (a sleep).
    pub fn busybox(name: &str) -> Self {
        Self::run(name, &[], LOCAL_IMAGE, &[])
    }

    /// The test server image attached to `network`, with extra `docker run` options.
    pub fn server(name: &str, network: &str, extra: &[&str]) -> Self {
        let mut options = vec!["--network", network];
        options.extend_from_slice(extra);
        Self::run(name, &options, SERVER_IMAGE, &[])
    }

    /// Takes over removing `name` (which may not exist yet, or may be gone by then).
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    pub fn is_running(&self) -> bool {
        inspect(&self.name).is_some_and(|c| c["State"]["Running"] == true)
    }

    /// The container's IPv4 address on `network`.
    pub fn ip_on(&self, network: &str) -> Ipv4Addr {
        let tpl = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "--format", &tpl, &self.name])
            .parse()
            .expect("docker reports a valid IPv4 address")
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", "-v", &self.name]);
    }
}

/// A Docker network removed on drop (containers still attached are disconnected first).
pub struct NetworkGuard {
    pub name: String,
}

impl NetworkGuard {
    /// An internal bridge network with an engine-chosen subnet, labelled as a test object.
    pub fn internal(name: &str, extra_labels: &[&str]) -> Self {
        let mut args = vec![
            "network",
            "create",
            "--internal",
            "--label",
            "orchestrator-test=1",
        ];
        for l in extra_labels {
            args.extend(["--label", l]);
        }
        args.push(name);
        docker(&args);
        Self::adopt(name)
    }

    /// Takes over removing `name` (which may not exist yet, or may be gone by then).
    pub fn adopt(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        remove_network(&self.name);
    }
}

/// Removes every container, then every network, carrying `edge.autonomy.instance=<instance>` on
/// drop: what an agent under test made with the state dir `<instance>`.
pub struct InstanceCleanup {
    pub instance: String,
}

impl InstanceCleanup {
    /// The label every object of this instance carries.
    pub fn label(&self) -> String {
        format!("edge.autonomy.instance={}", self.instance)
    }
}

impl Drop for InstanceCleanup {
    fn drop(&mut self) {
        let label = self.label();
        for c in labelled(false, &label).unwrap_or_default() {
            let _ = docker_try(&["rm", "-f", "-v", &c]);
        }
        for n in labelled(true, &label).unwrap_or_default() {
            remove_network(&n);
        }
    }
}
