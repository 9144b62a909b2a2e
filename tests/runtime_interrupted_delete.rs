//! A delete interrupted by a crash is finished by the boot reconcile, against the real engine.
//! `delete_device` removes the container, then forgets the runtime in `runtime_vnics.json`, then
//! in `data/clients.json`, then removes `<name>_internal`; a crash after the first file write left
//! the registry entry and the internal network behind for good (the runtime still counted as
//! known, so nothing cleaned them). The reconcile now recognises "no container and no vNIC entry"
//! as an interrupted delete and finishes it, while a runtime whose vNIC configuration is still on
//! disk keeps it (that is what must not be lost).

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::Duration;

use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::naming;
use orchestrator_agent::runtime::{RuntimeConfig, Runtimes};
use support::{IMAGE, NetworkGuard, inspect_network, poll, require_engine, unique};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn boot_reconcile_finishes_a_delete_interrupted_after_the_vnic_file_was_written() {
    require_engine(IMAGE);
    let gone = unique("intdel");
    let kept = unique("intkeep");
    let state = tempfile::tempdir().expect("tempdir");
    // As a crashed delete of `gone` left it: no container, no vNIC entry, a registry entry. And a
    // runtime `kept` whose container vanished but whose vNIC configuration is still on disk.
    std::fs::create_dir_all(state.path().join("data")).expect("data dir");
    let clients = serde_json::json!({
        &gone: {"ip": "172.30.0.9", "name": &gone},
        &kept: {"ip": "172.30.0.10", "name": &kept},
    });
    std::fs::write(
        state.path().join("data/clients.json"),
        serde_json::to_string_pretty(&clients).expect("json"),
    )
    .expect("write clients.json");
    let vnics = serde_json::json!({
        &kept: [{"name": "eth0", "parent_interface": "nopar0", "network_mode": "dhcp"}]
    });
    std::fs::write(
        state.path().join("runtime_vnics.json"),
        serde_json::to_string_pretty(&vnics).expect("json"),
    )
    .expect("write runtime_vnics.json");

    let docker = docker_api::Docker::from_env().expect("DOCKER_HOST");
    let rt = Runtimes::open(
        docker,
        InterfaceCache::new(),
        RuntimeConfig::new(state.path()),
    )
    .await
    .expect("open the runtime service");
    // The internal network the crashed delete did not get to, labelled as the agent makes it.
    let internal = naming::internal_network_name(&gone);
    let labels = [
        format!("{}={}", naming::LABEL_MANAGED_BY, naming::MANAGED_BY_VALUE),
        format!("{}={}", naming::LABEL_INSTANCE, rt.instance()),
        format!("{}={}", naming::LABEL_ROLE, naming::ROLE_INTERNAL),
        format!("{}={gone}", naming::LABEL_RUNTIME),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let _net = NetworkGuard::internal(&internal, &labels);

    rt.start_background();
    let cleaned = poll(PATIENCE, || {
        let registry = std::fs::read_to_string(state.path().join("data/clients.json")).ok()?;
        (!registry.contains(&gone) && inspect_network(&internal).is_none()).then_some(())
    })
    .await;
    assert!(
        cleaned.is_some(),
        "the registry entry and the internal network of the interrupted delete are still there"
    );
    // The runtime with a vNIC configuration on disk keeps it.
    let vnics_now =
        std::fs::read_to_string(state.path().join("runtime_vnics.json")).expect("vnics file");
    assert!(vnics_now.contains(&kept), "{vnics_now}");
    rt.shutdown();
}
