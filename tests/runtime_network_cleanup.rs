//! MACVLAN clean-up against the real engine: a network of ours is removed only when no container,
//! in any state, is configured on it. Network inspect lists started endpoints only, and before its
//! first start a container's endpoint has no network id, so a create in progress (created, not yet
//! started) must still keep its network: the boot reconcile and re-home clean-ups run concurrently
//! with creates.
//!
//! Resources: one veth pair in the root namespace (no address; only the MACVLAN parent), one
//! MACVLAN network in 10.204.0.0/16 and one container, all removed by the guard.

use std::process::Command;

use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::net::Ipv4Net;
use orchestrator_agent::runtime::{RuntimeConfig, Runtimes, macvlan};

const IMAGE: &str = "127.0.0.1:9/orchestrator-test/busybox:latest";

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes what the test made, even when it fails.
struct Cleanup {
    veth: String,
    container: String,
    network: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        run("docker", &["rm", "-f", &self.container]);
        if let Some(n) = &self.network {
            run("docker", &["network", "rm", n]);
        }
        run("ip", &["link", "del", &self.veth]);
    }
}

#[tokio::test]
async fn cleanup_keeps_a_macvlan_network_a_created_but_not_started_container_is_configured_on() {
    assert!(
        run("docker", &["info"]),
        "the Docker engine is not reachable at /var/run/docker.sock: run scripts/test.sh (as root)"
    );
    let id = std::process::id();
    let mut guard = Cleanup {
        veth: format!("nc{}", id % 1_000_000),
        container: format!("netcleanup-{id}"),
        network: None,
    };
    let peer = format!("{}p", guard.veth);
    assert!(
        run(
            "ip",
            &[
                "link",
                "add",
                &guard.veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer
            ]
        ),
        "cannot create a veth pair (root needed)"
    );
    assert!(run("ip", &["link", "set", &guard.veth, "up"]));

    let state = tempfile::tempdir().expect("tempdir");
    let docker = docker_api::Docker::from_env().expect("DOCKER_HOST");
    let rt = Runtimes::open(
        docker,
        InterfaceCache::new(),
        RuntimeConfig::new(state.path()),
    )
    .await
    .expect("open the runtime service");

    // A /28 keyed on the pid, so parallel runs do not overlap.
    let subnet: Ipv4Net = format!("10.204.{}.{}/28", (id >> 4) % 256, (id % 16) * 16)
        .parse()
        .expect("subnet");
    let net = macvlan::ensure(&rt, &guard.veth, subnet, None)
        .await
        .expect("create the MACVLAN network");
    guard.network = Some(net.name.clone());

    // Created with the network as its primary one, as the agent's create does, and not started.
    assert!(
        run(
            "docker",
            &[
                "create",
                "--name",
                &guard.container,
                "--network",
                &net.name,
                IMAGE
            ]
        ),
        "cannot create the test container (run scripts/test-images.sh)"
    );
    let _lock = rt.network_lock().await;
    let removed = macvlan::remove_if_unused(&rt, &net.name)
        .await
        .expect("clean-up runs");
    assert!(
        !removed,
        "a network a created container is configured on was removed"
    );
    assert!(run("docker", &["network", "inspect", &net.name]));

    // Once nothing is configured on it, the same call removes it.
    assert!(run("docker", &["rm", "-f", &guard.container]));
    let removed = macvlan::remove_if_unused(&rt, &net.name)
        .await
        .expect("clean-up runs");
    assert!(removed, "an unused network of ours was kept");
    assert!(!run("docker", &["network", "inspect", &net.name]));
}
