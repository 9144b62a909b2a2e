//! Happy paths on the real engine: create (both vNIC generations, static + DHCP, MACs on API 1.41),
//! status, stop/start/restart (ack + emit), delete; and the boot reconcile after a restart.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use serde_json::{Value, json};
use support::*;

fn networks_of(c: &Value) -> Vec<String> {
    c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_status_power_and_delete_act_on_the_engine() {
    let mut w = World::start().await;
    let a = Veth::new();
    let b = Veth::new();
    let name = unique("rtplc");

    let ack = w
        .call(
            "create_new_runtime",
            json!({
                "container_name": name,
                "vnic_configs": [
                    static_vnic(&a, 10, Some("02:ab:00:00:00:10")),
                    dhcp_vnic(&b, Some("02:ab:00:00:00:11")),
                ],
            }),
        )
        .await;
    assert_eq!(ack["action"], "create_new_runtime", "{ack}");
    assert_eq!(ack["status"], "creating", "{ack}");
    assert_eq!(ack["container_id"], name.as_str());
    assert_eq!(
        ack["message"],
        format!("Container creation started for {name}").as_str()
    );
    let keys: Vec<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "action",
            "correlation_id",
            "status",
            "container_id",
            "message"
        ]
    );

    let s = w.settle(&name).await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert_eq!(s["is_running"], true);
    assert_eq!(s["container_status"], "running");
    let nets = s["networks"].as_object().unwrap();
    assert_eq!(nets.len(), 2, "internal network hidden: {s}");
    assert_eq!(nets[&a.macvlan()]["ip_address"], a.addr(10).as_str());
    assert_eq!(nets[&a.macvlan()]["mac_address"], "02:ab:00:00:00:10");
    assert!(nets.contains_key(&b.macvlan()), "{s}");
    let warnings = warnings_of(&s).join("\n");
    // Both MACs on every engine: per-endpoint MACs at create from API 1.44; before, the engine
    // honours one per container and netmon sets the other in the runtime's namespace.
    let both_macs = |s: &Value| {
        let nets = &s["networks"];
        assert_eq!(
            nets[&a.macvlan()]["mac_address"],
            "02:ab:00:00:00:10",
            "{s}"
        );
        assert_eq!(
            nets[&b.macvlan()]["mac_address"],
            "02:ab:00:00:00:11",
            "{s}"
        );
        let links = link_macs(&name);
        for mac in ["02:ab:00:00:00:10", "02:ab:00:00:00:11"] {
            assert!(
                links.contains(&mac.to_owned()),
                "{mac} on a link: {links:?}"
            );
        }
        assert!(
            !warnings_of(s).join("\n").contains("02:ab:00:00:00:1"),
            "{s}"
        );
    };
    both_macs(&s);
    // No DHCP server on this parent: the DHCP vNIC says it has no lease, only the engine's
    // placeholder (issue 14; the lease itself is tests/runtime_dhcp.rs).
    assert!(
        warnings.contains("vnic_configs[1] (") && warnings.contains("no DHCP lease yet"),
        "{s}"
    );
    let internal_ip = s["internal_ip"].as_str().expect("internal_ip").to_owned();

    // The engine agrees.
    let c = inspect(&name).expect("container exists");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["edge.autonomy.managed-by"], "orchestrator-agent");
    assert_eq!(labels["edge.autonomy.runtime"], name.as_str());
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(c["HostConfig"]["LogConfig"]["Type"], "json-file");
    assert_eq!(c["HostConfig"]["LogConfig"]["Config"]["max-file"], "3");
    assert_eq!(c["HostConfig"]["Dns"], json!(["10.203.0.53"]));
    assert_eq!(c["HostConfig"]["CapAdd"], json!(["SYS_NICE", "MKNOD"]));
    let mut got = networks_of(&c);
    got.sort();
    let mut want = vec![a.macvlan(), b.macvlan(), format!("{name}_internal")];
    want.sort();
    assert_eq!(got, want);
    let internal = inspect_network(&format!("{name}_internal")).expect("internal network");
    assert_eq!(internal["Internal"], true);
    assert_eq!(internal["Labels"]["edge.autonomy.runtime"], name.as_str());
    let mv = inspect_network(&b.macvlan()).expect("macvlan network");
    assert_eq!(mv["Driver"], "macvlan");
    assert_eq!(mv["Options"]["parent"], b.name.as_str());
    assert_eq!(mv["IPAM"]["Config"][0]["Subnet"], b.subnet().as_str());
    // The engine's own picks (DHCP placeholders) stay at the top of the subnet.
    assert_eq!(
        mv["IPAM"]["Config"][0]["IPRange"],
        format!("10.203.{}.224/27", b.octet).as_str()
    );

    // State files in the upstream formats.
    let clients: Value = serde_json::from_str(&w.read_state("data/clients.json").unwrap()).unwrap();
    assert_eq!(
        clients[&name],
        json!({"ip": internal_ip, "name": name}),
        "{clients}"
    );
    let vnics_text = w.read_state("runtime_vnics.json").unwrap();
    assert!(
        vnics_text.starts_with("{\n  \""),
        "2-space indent: {vnics_text}"
    );
    let vnics: Value = serde_json::from_str(&vnics_text).unwrap();
    assert_eq!(vnics[&name][0]["vendor_extra"], json!({"kept": "verbatim"}));
    assert_eq!(vnics[&name][1]["ip_address"], Value::Null);

    // stop / start / restart: ack and the same-named event, acting for real.
    let mut events = w.events();
    let ack = w.call("stop_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    let keys: Vec<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .take(3)
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["action", "success", "correlation_id"]);
    let ev = next_event(&mut events, "stop_device").await;
    assert_eq!(ev[0]["success"], true);
    assert_eq!(ev[0]["correlation_id"], ack["correlation_id"]);
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], false);
    let s = w.status(&name).await;
    assert_eq!(s["is_running"], false, "{s}");
    assert!(s.get("exit_code").is_some(), "{s}");

    let ack = w.call("start_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    next_event(&mut events, "start_device").await;
    assert_eq!(inspect(&name).unwrap()["State"]["Running"], true);

    let before = inspect(&name).unwrap()["State"]["StartedAt"].clone();
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    next_event(&mut events, "restart_device").await;
    let c = inspect(&name).unwrap();
    assert_eq!(c["State"]["Running"], true);
    assert_ne!(c["State"]["StartedAt"], before);
    // The engine gave the endpoints its own MACs at the start; they are the persisted ones again.
    both_macs(&w.status(&name).await);

    // delete: ack, then nothing of the runtime is left; MACVLAN networks nobody uses go too.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    assert_eq!(
        ack["message"],
        format!("Container deletion started for {name}").as_str()
    );
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "not_found", "{s}\n{}", w.logs());
    assert!(inspect(&name).is_none());
    assert!(inspect_network(&format!("{name}_internal")).is_none());
    assert!(inspect_network(&a.macvlan()).is_none());
    assert!(inspect_network(&b.macvlan()).is_none());
    let clients: Value = serde_json::from_str(&w.read_state("data/clients.json").unwrap()).unwrap();
    assert!(clients.get(&name).is_none());
    assert_eq!(w.read_state("runtime_vnics.json").unwrap(), "{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_generation_with_parent_subnet_and_manual_ip_is_honoured() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtup");
    let ack = w
        .call(
            "create_new_runtime",
            json!({
                "container_name": name,
                "vnic_configs": [{
                    "name": "eth0", "parent_interface": v.name,
                    "parent_subnet": v.subnet(), "parent_gateway": v.addr(1),
                    "network_mode": "manual", "ip_address": format!("{}/24", v.addr(20)),
                    "subnet": v.subnet(), "gateway": null,
                    "dns": ["10.203.0.53", "10.203.0.53"], "mac_address": "02:cd:00:00:00:20"
                }],
            }),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert!(
        warnings_of(&s).is_empty(),
        "one MAC is honoured on 1.41: {s}"
    );
    let net = &s["networks"][&v.macvlan()];
    assert_eq!(net["ip_address"], v.addr(20).as_str());
    assert_eq!(net["mac_address"], "02:cd:00:00:00:20");
    assert_eq!(net["gateway"], v.addr(1).as_str());
    assert_eq!(
        inspect(&name).unwrap()["HostConfig"]["Dns"],
        json!(["10.203.0.53"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_reconcile_starts_runtimes_that_should_run_but_not_those_stopped_on_request() {
    let mut w = World::start().await;
    let v = Veth::new();
    let u = Veth::new();
    let up = unique("rtre");
    let down = unique("rtre");
    for (name, veth) in [(&up, &v), (&down, &u)] {
        w.create_runtime(name, json!([dhcp_vnic(veth, None)])).await;
    }
    let ack = w.call("stop_device", json!({"device_id": down})).await;
    assert_eq!(ack["success"], true, "{ack}");

    // The agent dies; meanwhile the runtime that should run stops (as if its start failed at boot).
    w.kill_agent().await;
    docker(&["stop", "-t", "1", &up]);
    assert_eq!(inspect(&up).unwrap()["State"]["Running"], false);
    w.start_agent().await;

    let s = w.wait_status(&up, |s| s["is_running"] == true).await;
    assert_eq!(s["status"], "success");
    // The reconcile (and rehome's catch-up) run per runtime under its lock: wait for both.
    w.settle(&up).await;
    let s = w.settle(&down).await;
    assert_eq!(
        s["is_running"], false,
        "stopped on request stays stopped: {s}"
    );
    let clients: Value = serde_json::from_str(&w.read_state("data/clients.json").unwrap()).unwrap();
    assert_eq!(clients[&up]["ip"], s_internal_ip(&up).as_str());
}

fn s_internal_ip(name: &str) -> String {
    let c = inspect(name).unwrap();
    c["NetworkSettings"]["Networks"][format!("{name}_internal")]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_macvlan_network_stays_while_a_stopped_runtime_is_configured_on_it() {
    let mut w = World::start().await;
    let v = Veth::new();
    let a = unique("rtsh");
    let b = unique("rtsh");
    for (name, host) in [(&a, 50), (&b, 51)] {
        w.create_runtime(name, json!([static_vnic(&v, host, None)]))
            .await;
    }
    let ack = w.call("stop_device", json!({"device_id": a})).await;
    assert_eq!(ack["success"], true, "{ack}");
    // The engine lists no endpoint of the stopped runtime on the network, yet it is still its network.
    let ack = w.call("delete_device", json!({"device_id": b})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    assert_eq!(w.settle(&b).await["status"], "not_found");
    assert!(
        inspect_network(&v.macvlan()).is_some(),
        "network removed under a stopped runtime"
    );
    let ack = w.call("start_device", json!({"device_id": a})).await;
    assert_eq!(ack["success"], true, "{ack}");
    let s = w.status(&a).await;
    assert_eq!(
        s["networks"][&v.macvlan()]["ip_address"],
        v.addr(50).as_str(),
        "{s}"
    );
}

/// Issue 12 item 3: today's cloud may create a runtime without vNICs (upstream-head §9.1.1): it
/// runs on its internal network only, survives an agent restart (its state entry is an empty
/// list) and is deleted with that network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_without_vnics_runs_on_its_internal_network_only() {
    let mut w = World::start().await;
    let name = unique("rtnov");
    w.create_runtime(&name, json!([])).await;
    let s = w.status(&name).await;
    assert_eq!(s["networks"], json!({}), "{s}");
    assert!(s["internal_ip"].is_string(), "{s}");
    let internal = format!("{name}_internal");
    assert_eq!(networks_of(&inspect(&name).unwrap()), [internal.as_str()]);

    w.kill_agent().await;
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    let s = w.status(&name).await;
    assert_eq!(
        (&s["status"], &s["is_running"]),
        (&json!("success"), &json!(true)),
        "{s}\n{}",
        w.logs()
    );

    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    assert!(inspect(&name).is_none());
    assert!(inspect_network(&internal).is_none());
}
