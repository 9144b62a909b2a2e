//! Re-homing against the real engine and a real `autonomy-netmon`: a runtime created by the real
//! create workflow on a veth parent in the root namespace (Docker's MACVLAN parents live in the
//! engine's namespace) is re-attached when the parent's subnet changes. Addresses are in
//! 10.203.128.0/17 (this helper's half of the runtime tests' range), a distinct /23 per test
//! (the flapping test uses 10.203.160-161).
//!
//! The agent's library stack runs in-process ([`LibAgent`]: engine + netmon + `Runtimes`), so the
//! tests exercise exactly what the agent binary wires, without the cloud link.

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

use orchestrator_agent::runtime::{OpKind, Outcome, Power, rehome};
use serde_json::{Value, json};
use support::{
    LibAgent, SERVER_IMAGE_LOOPBACK, Veth, World, docker, docker_try, endpoints, eventually, ip,
    link_macs, unique, warnings_of,
};

const WAIT: Duration = Duration::from_secs(30);

fn manual_vnic(parent: &str, ip: &str, subnet: &str, gateway: &str) -> Value {
    json!([{
        "name": "eth0", "parent_interface": parent, "network_mode": "manual",
        "ip_address": ip, "subnet": subnet, "parent_subnet": subnet, "parent_gateway": gateway,
        "mac_address": "02:42:0a:cb:00:32", "dns": ["10.203.128.53"]
    }])
}

fn macvlan_of(container: &str, parent: &str) -> Option<(String, String)> {
    endpoints(container)
        .into_iter()
        .find(|(n, _)| n.starts_with(&format!("macvlan_{parent}_")))
        .map(|(n, (ip, _, _))| (n, ip))
}

async fn persisted_file(agent: &LibAgent) -> Value {
    let text = tokio::fs::read_to_string(agent.dir.path().join("runtime_vnics.json"))
        .await
        .expect("runtime_vnics.json exists");
    serde_json::from_str(&text).expect("valid JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_parent_to_another_subnet_reattaches_the_runtime_and_updates_the_state() {
    let agent = LibAgent::start().await;
    let parent = unique("r2m");
    let _veth = Veth::named(&parent, 130);
    let name = unique("r2rh-move-");
    agent
        .create(
            &name,
            manual_vnic(&parent, "10.203.130.50", "10.203.130.0/24", "10.203.130.1"),
        )
        .await;
    let old_net = format!("macvlan_{parent}_10.203.130.0_24");
    assert_eq!(
        macvlan_of(&name, &parent),
        Some((old_net.clone(), "10.203.130.50".into()))
    );
    rehome::spawn(&agent.rt);

    ip(&["addr", "del", "10.203.130.1/24", "dev", &parent]);
    ip(&["addr", "add", "10.203.131.1/24", "dev", &parent]);

    let new_net = format!("macvlan_{parent}_10.203.131.0_24");
    let (net, addr) = eventually(WAIT, "re-attachment to the new subnet", || {
        macvlan_of(&name, &parent).filter(|(n, _)| *n == new_net)
    })
    .await;
    assert_eq!(net, new_net);
    // The manual IP lies outside 10.203.131.0/24: Docker assigned one there, and said so.
    let addr: std::net::Ipv4Addr = addr.parse().expect("an address on the new network");
    assert_eq!(addr.octets()[..3], [10, 203, 131]);
    assert_eq!(
        endpoints(&name)
            .keys()
            .filter(|n| n.starts_with("macvlan_"))
            .count(),
        1,
        "only the new MACVLAN network"
    );
    assert!(
        docker_try(&["network", "inspect", &old_net]).is_none(),
        "the old, now unused network is removed"
    );

    let ops = agent.rt.ops().clone();
    let record = eventually(WAIT, "the rehome outcome", || {
        ops.get(&name)
            .filter(|r| r.kind == OpKind::Rehome && r.outcome != Outcome::Running)
    })
    .await;
    assert_eq!(record.outcome, Outcome::Succeeded, "{record:?}");
    assert!(
        record
            .warnings
            .iter()
            .any(|w| w.contains("outside the new subnet")),
        "{record:?}"
    );
    // Engines before API 1.54 ignore MacAddress on connect; netmon set the persisted MAC in the
    // runtime's namespace instead, so nothing was lost (the engine still reports its own).
    assert!(
        !record.warnings.iter().any(|w| w.contains("MAC")),
        "{record:?}"
    );
    assert!(
        link_macs(&name).contains(&"02:42:0a:cb:00:32".to_owned()),
        "the vNIC's link has the persisted MAC: {:?}",
        link_macs(&name)
    );

    // runtime_vnics.json: the subnet fields and the replaced address updated in place, every
    // other key kept.
    let state = persisted_file(&agent).await;
    let vnic = &state[&name][0];
    assert_eq!(vnic["parent_subnet"], "10.203.131.0/24");
    assert_eq!(vnic["subnet"], "10.203.131.0/24");
    assert_eq!(vnic["parent_gateway"], "10.203.131.1");
    assert_eq!(vnic["ip_address"], addr.to_string());
    assert_eq!(vnic["mac_address"], "02:42:0a:cb:00:32");
    assert_eq!(vnic["dns"], json!(["10.203.128.53"]));
    assert_eq!(vnic["name"], "eth0");

    // The re-homed runtime still restarts cleanly (its create-time network is gone), and keeps its
    // MAC: the engine gives the endpoint its own again at the start, the agent has it set back.
    let warnings = agent
        .rt
        .power(&name, Power::Restart)
        .await
        .expect("restart");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        macvlan_of(&name, &parent).map(|(n, _)| n),
        Some(new_net.clone())
    );
    assert!(
        link_macs(&name).contains(&"02:42:0a:cb:00:32".to_owned()),
        "the persisted MAC after a restart: {:?}",
        link_macs(&name)
    );
    let status = agent.rt.device_status(&name).await.expect("status");
    assert_eq!(
        status["networks"][&new_net]["mac_address"], "02:42:0a:cb:00:32",
        "{status:?}"
    );
    assert!(
        !status
            .get("warnings")
            .is_some_and(|w| w.to_string().contains("MAC")),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_widened_while_the_agent_was_down_is_caught_up_at_boot_keeping_the_manual_ip() {
    let agent = LibAgent::start().await;
    let parent = unique("r2w");
    let veth = Veth::named(&parent, 134);
    let name = unique("r2rh-wide-");
    agent
        .create(
            &name,
            manual_vnic(&parent, "10.203.134.60", "10.203.134.0/24", "10.203.134.1"),
        )
        .await;
    // No subscription yet: the change happens "while the agent is down".
    ip(&["addr", "del", "10.203.134.1/24", "dev", &veth.name]);
    ip(&["addr", "add", "10.203.134.1/23", "dev", &veth.name]);
    let cache = agent.rt.interfaces().clone();
    eventually(WAIT, "netmon to report the /23", || {
        cache
            .get(&parent)
            .filter(|i| i.subnet() == Some("10.203.134.0/23"))
    })
    .await;
    assert_eq!(
        macvlan_of(&name, &parent).map(|(n, _)| n),
        Some(format!("macvlan_{parent}_10.203.134.0_24")),
        "nothing moves without the agent"
    );

    rehome::reconcile(&agent.rt).await;

    assert_eq!(
        macvlan_of(&name, &parent),
        Some((
            format!("macvlan_{parent}_10.203.134.0_23"),
            "10.203.134.60".into()
        )),
        "re-attached to the overlapping /23 with the manual IP kept"
    );
    let state = persisted_file(&agent).await;
    assert_eq!(state[&name][0]["parent_subnet"], "10.203.134.0/23");
    assert_eq!(state[&name][0]["ip_address"], "10.203.134.60");
    let record = agent.rt.ops().get(&name).expect("a record");
    assert_eq!(
        (record.kind, record.outcome),
        (OpKind::Rehome, Outcome::Succeeded)
    );
    assert!(
        !record.warnings.iter().any(|w| w.contains("outside")),
        "{record:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_subnet_causes_no_churn_and_a_link_down_is_only_recorded() {
    let agent = LibAgent::start().await;
    let parent = unique("r2u");
    let _veth = Veth::named(&parent, 136);
    let name = unique("r2rh-same-");
    agent
        .create(
            &name,
            manual_vnic(&parent, "10.203.136.70", "10.203.136.0/24", "10.203.136.1"),
        )
        .await;
    let before = endpoints(&name);
    rehome::spawn(&agent.rt);

    // A second address in the same subnet: netmon reports a change, the subnet is the same.
    ip(&["addr", "add", "10.203.136.2/24", "dev", &parent]);
    let cache = agent.rt.interfaces().clone();
    eventually(WAIT, "netmon to report the second address", || {
        cache.get(&parent).filter(|i| i.ipv4_addresses.len() == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        endpoints(&name),
        before,
        "same endpoints, same endpoint ids"
    );
    let record = agent.rt.ops().get(&name).expect("the create record");
    assert_eq!(record.kind, OpKind::Create, "no re-home was recorded");

    // Link down: recorded in the status, nothing changed on the engine.
    ip(&["link", "set", &parent, "down"]);
    let ops = agent.rt.ops().clone();
    let record = eventually(WAIT, "the link-down record", || {
        ops.get(&name).filter(|r| r.kind == OpKind::Rehome)
    })
    .await;
    assert!(
        record.warnings.iter().any(|w| w.contains("is down")),
        "{record:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(endpoints(&name), before, "no churn on link down");

    // Link up again with the same subnet: still no churn.
    ip(&["link", "set", &parent, "up"]);
    eventually(WAIT, "netmon to report the link up", || {
        cache.get(&parent).filter(|i| i.has_ipv4())
    })
    .await;
    let record = eventually(WAIT, "the back-up record", || {
        ops.get(&name).filter(|r| r.message.contains("is up again"))
    })
    .await;
    assert_eq!(record.kind, OpKind::Rehome);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(endpoints(&name), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_rehomes_on_netmon_events_and_reports_it_in_the_device_status() {
    let parent = unique("r2a");
    let _veth = Veth::named(&parent, 144);
    let mut world = World::start_with_image(SERVER_IMAGE_LOOPBACK).await;
    let name = unique("r2rh-agent-");
    // Production field names: `ip`, dotted `subnet`, `gateway`, `static`.
    world
        .create_runtime(
            &name,
            json!([{"name": "eth0", "parent_interface": parent, "network_mode": "static",
                "ip": "10.203.144.80", "subnet": "255.255.255.0", "gateway": "10.203.144.1"}]),
        )
        .await;
    let before = world.status(&name).await;
    let old_net = format!("macvlan_{parent}_10.203.144.0_24");
    let old_mac = before["networks"][&old_net]["mac_address"].clone();
    assert!(old_mac.is_string(), "{before}");
    let new_net = format!("macvlan_{parent}_10.203.144.0_23");

    ip(&["addr", "del", "10.203.144.1/24", "dev", &parent]);
    ip(&["addr", "add", "10.203.144.1/23", "dev", &parent]);

    let status = world
        .wait_status(&name, |s| {
            s["networks"].get(&new_net).is_some() && s["last_operation"]["status"] == "success"
        })
        .await;
    assert_eq!(status["networks"][&new_net]["ip_address"], "10.203.144.80");
    assert_eq!(
        status["networks"].as_object().map(|n| n.len()),
        Some(1),
        "{status}"
    );
    assert_eq!(status["last_operation"]["operation"], "rehome");
    // The address is kept, and with it the MAC: the engine derives a macvlan endpoint's MAC from
    // its IP when none is requested, so nothing had to be reported as lost.
    assert_eq!(
        status["networks"][&new_net]["mac_address"], old_mac,
        "{status}"
    );
    assert!(warnings_of(&status).is_empty(), "{status}");
    let text = tokio::fs::read_to_string(world.state_dir.join("runtime_vnics.json"))
        .await
        .expect("state file");
    let state: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        state[&name][0],
        json!({"name": "eth0", "parent_interface": parent, "network_mode": "static",
            "ip": "10.203.144.80", "subnet": "255.255.254.0", "gateway": "10.203.144.1",
            // The original's marks, given at create (upstream-head §5.1).
            "_interface_type": "ethernet", "_is_wifi": false, "_network_method": "macvlan",
            // The MAC given at create (02:42 + the address) is persisted and kept.
            "mac": "02:42:0a:cb:90:50"})
    );
    assert_eq!(old_mac, "02:42:0a:cb:90:50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_runtime_is_rehomed_and_starts_on_the_new_subnet() {
    let agent = LibAgent::start().await;
    let parent = unique("r2s");
    let _veth = Veth::named(&parent, 146);
    let name = unique("r2rh-stop-");
    agent
        .create(
            &name,
            manual_vnic(&parent, "10.203.146.90", "10.203.146.0/24", "10.203.146.1"),
        )
        .await;
    docker(&["stop", "-t", "1", &name]);
    rehome::spawn(&agent.rt);

    ip(&["addr", "del", "10.203.146.1/24", "dev", &parent]);
    ip(&["addr", "add", "10.203.146.1/23", "dev", &parent]);
    let ops = agent.rt.ops().clone();
    let record = eventually(WAIT, "the rehome outcome", || {
        ops.get(&name)
            .filter(|r| r.kind == OpKind::Rehome && r.outcome != Outcome::Running)
    })
    .await;
    assert_eq!(record.outcome, Outcome::Succeeded, "{record:?}");

    docker(&["start", &name]);
    assert_eq!(
        macvlan_of(&name, &parent),
        Some((
            format!("macvlan_{parent}_10.203.146.0_23"),
            "10.203.146.90".into()
        ))
    );
}

/// Names of the networks the engine connected a container to within `[since, until]` (unix
/// seconds): the engine's own record, independent of the agent's.
fn connects_between(since: f64, until: f64) -> Vec<String> {
    docker(&[
        "events",
        "--since",
        &format!("{since:.6}"),
        "--until",
        &format!("{until:.6}"),
        "--filter",
        "type=network",
        "--filter",
        "event=connect",
        "--format",
        "{{.Actor.Attributes.name}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_parent_moves_the_runtime_at_most_once_per_window_and_ends_on_the_last_subnet() {
    let agent = LibAgent::start().await;
    let window = agent.rt.config().rehome_window;
    let parent = unique("r2f");
    let _veth = Veth::named(&parent, 160);
    let name = unique("r2rh-flap-");
    agent
        .create(
            &name,
            manual_vnic(&parent, "10.203.160.50", "10.203.160.0/24", "10.203.160.1"),
        )
        .await;
    rehome::spawn(&agent.rt);
    let since = unix_now();

    // Seven moves between two subnets, 300 ms apart (netmon's test debounce is 200 ms, so each
    // is reported), ending on 10.203.161.0/24.
    let started = std::time::Instant::now();
    let mut on = 160;
    for _ in 0..7 {
        let to = if on == 160 { 161 } else { 160 };
        ip(&["addr", "del", &format!("10.203.{on}.1/24"), "dev", &parent]);
        ip(&["addr", "add", &format!("10.203.{to}.1/24"), "dev", &parent]);
        on = to;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(on, 161);
    let flapped = started.elapsed();

    let final_net = format!("macvlan_{parent}_10.203.161.0_24");
    eventually(WAIT, "the runtime on the last subnet", || {
        macvlan_of(&name, &parent).filter(|(n, _)| *n == final_net)
    })
    .await;
    // Let a coalesced re-home that is still owed run (or not) before counting.
    tokio::time::sleep(window * 2).await;
    assert_eq!(
        macvlan_of(&name, &parent).map(|(n, _)| n),
        Some(final_net.clone()),
        "the last subnet stays applied"
    );
    let connects: Vec<String> = connects_between(since, unix_now() + 1.0)
        .into_iter()
        .filter(|n| n.starts_with(&format!("macvlan_{parent}_")))
        .collect();
    // One re-home at the first change, then at most one per window while the flapping lasts.
    let allowed = 1 + flapped.as_millis().div_ceil(window.as_millis()) as usize;
    eprintln!(
        "{} re-attachments in {flapped:?}: {connects:?}",
        connects.len()
    );
    assert!(
        !connects.is_empty() && connects.len() <= allowed,
        "{} re-attachments for 7 changes in {flapped:?} (window {window:?}, at most {allowed}): {connects:?}",
        connects.len()
    );
    let record = agent.rt.ops().get(&name).expect("a record");
    assert_eq!(
        (record.kind, record.outcome),
        (OpKind::Rehome, Outcome::Succeeded),
        "{record:?}"
    );
}
