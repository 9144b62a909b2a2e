//! MACVLAN clean-up against the real engine: a network of ours is removed only when no container,
//! in any state, is configured on it. Network inspect lists started endpoints only, and before its
//! first start a container's endpoint has no network id, so a create in progress (created, not yet
//! started) must still keep its network: the boot reconcile and re-home clean-ups run concurrently
//! with creates.
//!
//! Resources: one veth pair in the root namespace (the MACVLAN parent), one MACVLAN network on its
//! 10.203.x.0/24 and one container, all removed by guards.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::net::Ipv4Net;
use orchestrator_agent::runtime::{RuntimeConfig, Runtimes, macvlan};
use support::{
    ContainerGuard, IMAGE, NetworkGuard, Veth, docker, inspect_network, require_engine, unique,
};

#[tokio::test]
async fn cleanup_keeps_a_macvlan_network_a_created_but_not_started_container_is_configured_on() {
    require_engine(IMAGE);
    let veth = Veth::new();
    let state = tempfile::tempdir().expect("tempdir");
    let docker_client = docker_api::Docker::from_env().expect("DOCKER_HOST");
    let rt = Runtimes::open(
        docker_client,
        InterfaceCache::new(),
        RuntimeConfig::new(state.path()),
    )
    .await
    .expect("open the runtime service");

    let subnet: Ipv4Net = veth.subnet().parse().expect("subnet");
    let net = macvlan::ensure(&rt, &veth.name, subnet, None)
        .await
        .expect("create the MACVLAN network");
    let _network = NetworkGuard::adopt(&net.name);

    // Created with the network as its primary one, as the agent's create does, and not started.
    let container =
        ContainerGuard::create(&unique("rtnetcl"), &["--network", &net.name], IMAGE, &[]);
    let _lock = rt.network_lock().await;
    let removed = macvlan::remove_if_unused(&rt, &net.name)
        .await
        .expect("clean-up runs");
    assert!(
        !removed,
        "a network a created container is configured on was removed"
    );
    assert!(inspect_network(&net.name).is_some());

    // Once nothing is configured on it, the same call removes it.
    docker(&["rm", "-f", &container.name]);
    let removed = macvlan::remove_if_unused(&rt, &net.name)
        .await
        .expect("clean-up runs");
    assert!(removed, "an unused network of ours was kept");
    assert!(inspect_network(&net.name).is_none());
}
