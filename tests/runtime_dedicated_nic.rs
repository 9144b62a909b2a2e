//! Dedicated NICs end to end (upstream-head §6): the real agent, the real netmon (on the host, as
//! root) and the engine. A veth end stands in for the physical port: lent to a runtime it is
//! inside the container's namespace, it is still there after `restart_device`, and it is back on
//! the host after `delete_device`; the original's refusals come with its texts.
//!
//! Fixed subnet: 10.203.173.0/24 (the Wi-Fi-named link; the others take free ones).

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

use serde_json::{Value, json};
use support::*;

/// The PID of the container's init, 0 when it does not run.
fn pid_of(name: &str) -> u32 {
    docker(&["inspect", "-f", "{{.State.Pid}}", name])
        .trim()
        .parse()
        .unwrap()
}

/// The links of the container's network namespace (read from the host: the image needs no `ip`).
fn links_in(name: &str) -> Vec<String> {
    let pid = pid_of(name);
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Whether the link is in the host's namespace, and up.
fn on_host(link: &str) -> Option<bool> {
    let out = run_try("ip", &["-j", "link", "show", "dev", link])?;
    let v: Value = serde_json::from_str(&out).ok()?;
    let flags = v[0]["flags"].as_array()?.clone();
    Some(flags.iter().any(|f| f == "UP"))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    eventually(SLOW, what, || cond().then_some(())).await;
}

/// The `get_host_interfaces` entry named `link`.
async fn host_entry(w: &mut World, link: &str) -> Option<Value> {
    let ack = w.call("get_host_interfaces", json!({})).await;
    ack["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == link)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veth_end_moves_into_the_runtime_survives_its_restart_and_comes_back_on_delete() {
    let mut w = World::start().await;
    let nic = Veth::new();
    let parent = Veth::new();
    // Wi-Fi by the original's name rule (netmon's `type`).
    let wifi = Veth::named(&unique("wlx"), 173);
    let name = unique("rtnic");
    // netmon has reported the links.
    let cache_has = |e: &Option<Value>| e.is_some();
    for link in [&nic.name, &parent.name, &wifi.name] {
        let deadline = tokio::time::Instant::now() + SLOW;
        while !cache_has(&host_entry(&mut w, link).await) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "netmon never reported {link}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The original's refusals, with its texts.
    let refused = |ack: &Value| {
        assert_eq!(ack["status"], "error", "{ack}");
        ack["error"].as_str().unwrap().to_owned()
    };
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [], "dedicated_interface": "rvnothere0"}),
        )
        .await;
    let e = refused(&ack);
    assert!(
        e.starts_with("Interface 'rvnothere0' not found on host. Available interfaces: ['")
            && e.contains(&format!("'{}'", nic.name)),
        "{e}"
    );
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [static_vnic(&parent, 20, None)],
                   "dedicated_interface": parent.name}),
        )
        .await;
    assert_eq!(
        refused(&ack),
        format!(
            "Interface '{}' is configured as a vNIC parent. A dedicated NIC cannot also be used for \
             MACVLAN/Proxy ARP networking.",
            parent.name
        )
    );
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [], "dedicated_interface": wifi.name}),
        )
        .await;
    assert_eq!(
        refused(&ack),
        format!(
            "Interface '{}' is a WiFi interface. Dedicated NIC assignment requires a physical \
             Ethernet interface.",
            wifi.name
        )
    );
    assert!(inspect(&name).is_none(), "a refused create made nothing");

    // Lent: inside the runtime, gone from the host, recorded as the original records it.
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [], "dedicated_interface": nic.name}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert_eq!(s["dedicated_interface"], nic.name.as_str(), "{s}");
    assert!(links_in(&name).contains(&nic.name), "{:?}", links_in(&name));
    assert_eq!(on_host(&nic.name), None, "the NIC left the host");
    let caps = inspect(&name).unwrap()["HostConfig"]["CapAdd"].clone();
    assert!(
        caps.as_array()
            .unwrap()
            .iter()
            .any(|c| c == "NET_ADMIN" || c == "CAP_NET_ADMIN"),
        "{caps}"
    );
    assert_eq!(
        w.read_state("dedicated_nics.json").unwrap(),
        format!(
            "{{\n  \"{name}\": {{\n    \"host_interface\": \"{}\"\n  }}\n}}",
            nic.name
        )
    );
    let entry = host_entry(&mut w, &nic.name).await.expect("still listed");
    assert_eq!(entry["dedicated_to"], name.as_str(), "{entry}");

    // Already dedicated.
    let other = unique("rtnic");
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": other, "vnic_configs": [], "dedicated_interface": nic.name}),
        )
        .await;
    assert_eq!(
        refused(&ack),
        format!(
            "Interface '{}' is already dedicated to container '{name}'.",
            nic.name
        )
    );

    // A restart: the container gets a new namespace, the NIC goes with it.
    let before = pid_of(&name);
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}\n{}", w.logs());
    wait_for("the restarted runtime", || {
        let pid = pid_of(&name);
        pid != 0 && pid != before
    })
    .await;
    wait_for("the NIC in the restarted runtime", || {
        links_in(&name).contains(&nic.name)
    })
    .await;
    assert_eq!(on_host(&nic.name), None);
    let s = w.settle(&name).await;
    assert!(warnings_of(&s).is_empty(), "{s}");

    // Delete: back on the host, up; the record is gone.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    assert_eq!(on_host(&nic.name), Some(true), "the NIC is back and up");
    assert_eq!(w.read_state("dedicated_nics.json").unwrap(), "{}");
    let deadline = tokio::time::Instant::now() + SLOW;
    let entry = loop {
        if let Some(e) = host_entry(&mut w, &nic.name).await {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "netmon never reported the NIC back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(entry.get("dedicated_to").is_none(), "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netmon_gives_the_nic_back_when_it_stops_and_the_agent_moves_it_in_again_when_it_is_back() {
    let mut w = World::start().await;
    let nic = Veth::new();
    let name = unique("rtnic");
    let deadline = tokio::time::Instant::now() + SLOW;
    while host_entry(&mut w, &nic.name).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "netmon never reported {}",
            nic.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [], "dedicated_interface": nic.name}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert!(links_in(&name).contains(&nic.name));

    let status = tokio::task::block_in_place(|| w.terminate_netmon()).expect("netmon stopped");
    assert!(status.success(), "{status}");
    assert_eq!(
        on_host(&nic.name),
        Some(true),
        "netmon gave the NIC back when it stopped"
    );
    assert!(!links_in(&name).contains(&nic.name));

    w.start_netmon().await;
    wait_for("the NIC moved in again after netmon came back", || {
        links_in(&name).contains(&nic.name)
    })
    .await;
    assert_eq!(on_host(&nic.name), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_netmon_a_create_with_a_dedicated_nic_fails_and_leaves_nothing() {
    let mut w = World::start().await;
    let nic = Veth::new();
    let name = unique("rtnic");
    let deadline = tokio::time::Instant::now() + SLOW;
    while host_entry(&mut w, &nic.name).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "netmon never reported {}",
            nic.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.stop_netmon();
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [], "dedicated_interface": nic.name}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "error", "{s}");
    let e = s["error"].as_str().unwrap();
    assert!(
        e.contains(&format!(
            "Failed to move the dedicated interface '{}'",
            nic.name
        )) && e.contains("Not connected to network monitor"),
        "{e}"
    );
    wait_for("the rolled-back container to go", || {
        inspect(&name).is_none()
    })
    .await;
    assert_eq!(on_host(&nic.name), Some(true));
    assert_eq!(w.read_state("dedicated_nics.json").as_deref(), Some("{}"));
}
