//! Ownership holes closed (spec §2 "The agent touches only what it owns", "Every input is
//! validated before Docker sees it"): a re-home never touches a container that merely carries a
//! runtime's name, a create never reuses someone else's `<name>_internal`, and device ids that are
//! not Docker names never reach the engine.

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
use orchestrator_agent::runtime::command::HttpCommand;
use orchestrator_agent::runtime::{Outcome, Power, RuntimeConfig, Runtimes, rehome};
use serde_json::json;
use support::*;

const OTHER_MANAGED: &str = "edge.autonomy.managed-by=orchestrator-agent";
const OTHER_INSTANCE: &str = "edge.autonomy.instance=/another/agent";

/// A service whose engine socket does not exist: any engine call fails with a transport error,
/// so "not found" proves the id was refused before Docker saw it.
async fn service_without_engine() -> (Runtimes, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp state dir");
    let docker = docker_api::Docker::new(docker_api::DockerConfig::unix(
        dir.path().join("no-engine.sock"),
    ));
    let rt = Runtimes::open(
        docker,
        InterfaceCache::new(),
        RuntimeConfig::new(dir.path()),
    )
    .await
    .expect("state dir opens");
    (rt, dir)
}

#[tokio::test]
async fn device_ids_that_are_not_docker_names_are_not_found_without_asking_the_engine() {
    let (rt, _dir) = service_without_engine().await;
    for id in ["..", "a/b", "../../v1.41/containers/x", "-x", "plc1?all=1"] {
        let e = rt.delete(id).await.expect_err("delete refused");
        assert!(e.is_not_found(), "delete {id}: {e}");
        for power in [Power::Stop, Power::Start, Power::Restart] {
            let e = rt.power(id, power).await.expect_err("refused");
            assert!(e.is_not_found(), "{power:?} {id}: {e}");
        }
        let status = rt.device_status(id).await.expect("a not-found status");
        assert_eq!(status["status"], "not_found", "status {id}: {status:?}");
        let cmd = HttpCommand::new("GET", "/x", None, None, None).expect("valid");
        let e = rt.send_command(id, &cmd).await.expect_err("refused");
        assert!(e.is_device_not_found(), "run_command {id}: {e}");
    }
}

async fn create_fails_on_a_foreign_internal_network(labels: &[&str]) {
    let agent = LibAgent::start().await;
    let v = Veth::new();
    let name = unique("rtown-in-");
    let internal = format!("{name}_internal");
    let _net = NetworkGuard::internal(&internal, labels);
    let before = inspect_network(&internal).expect("the foreign network exists");

    let msg = json!({
        "correlation_id": 1, "container_name": name,
        "vnic_configs": [static_vnic(&v, 20, None)]
    });
    let spec = create_spec(&name, msg["vnic_configs"].clone());
    agent.rt.create(spec).await.expect("create accepted");
    let ops = agent.rt.ops().clone();
    let record = eventually(SLOW, "the create outcome", || {
        ops.get(&name).filter(|r| r.outcome != Outcome::Running)
    })
    .await;
    assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
    let why = format!("network {internal} exists and is not managed by this agent");
    assert!(format!("{record:?}").contains(&why), "{record:?}");
    // Rolled back, and the foreign network is exactly as it was (nobody attached).
    assert!(inspect(&name).is_none(), "no container is left");
    let after = inspect_network(&internal).expect("the foreign network is kept");
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(after["Labels"], before["Labels"]);
    assert_eq!(after["Containers"], json!({}), "{after}");
    assert!(!agent.rt.state().is_known(&name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refuses_an_internal_network_of_another_instance() {
    create_fails_on_a_foreign_internal_network(&[OTHER_MANAGED, OTHER_INSTANCE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_refuses_an_internal_network_without_the_agents_labels() {
    create_fails_on_a_foreign_internal_network(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_change_leaves_another_instances_container_named_like_a_runtime_alone() {
    let agent = LibAgent::start().await;
    let v = Veth::new();
    let name = unique("rtown-rh-");
    // The runtime was removed outside the agent; another agent instance now has a container of
    // that name on a MACVLAN network of the same parent.
    let old_net = v.macvlan();
    let _net = NetworkGuard::adopt(&old_net);
    docker(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &format!("parent={}", v.name),
        "--subnet",
        &v.subnet(),
        "--label",
        "orchestrator-test=1",
        "--label",
        OTHER_MANAGED,
        "--label",
        OTHER_INSTANCE,
        &old_net,
    ]);
    let _c = ContainerGuard::run(
        &name,
        &[
            "--network",
            &old_net,
            "--label",
            OTHER_MANAGED,
            "--label",
            OTHER_INSTANCE,
        ],
        LOCAL_IMAGE,
        &[],
    );
    let before = endpoints(&name);
    assert!(before.contains_key(&old_net), "{before:?}");
    agent
        .rt
        .state()
        .set_vnics(
            &name,
            vec![json!({
                "name": "eth0", "parent_interface": v.name, "network_mode": "manual",
                "ip_address": v.addr(50), "subnet": v.subnet(), "parent_subnet": v.subnet(),
                "parent_gateway": v.addr(1)
            })],
        )
        .await
        .expect("runtime_vnics.json written");

    // The parent's subnet changes (/24 → /25, still inside the test's own /24).
    ip(&["addr", "del", &format!("{}/24", v.addr(1)), "dev", &v.name]);
    ip(&["addr", "add", &format!("{}/25", v.addr(1)), "dev", &v.name]);
    let cache = agent.rt.interfaces().clone();
    eventually(Duration::from_secs(20), "netmon reports the /25", || {
        cache
            .get(&v.name)
            .filter(|i| i.subnet().is_some_and(|s| s.ends_with("/25")))
    })
    .await;

    let report = rehome::rehome_interface(&agent.rt, &v.name).await;
    for list in [&report.unchanged, &report.down, &report.busy] {
        assert!(!list.contains(&name), "{report:?}");
    }
    assert!(report.rehomed.iter().all(|r| r.0 != name), "{report:?}");
    assert!(report.failed.iter().all(|r| r.0 != name), "{report:?}");
    // Same network, same endpoint: never disconnected or reconnected.
    assert_eq!(endpoints(&name), before);
}
