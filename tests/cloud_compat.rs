//! Issue 12 items 3–5 against today's cloud's peers: the agent binary driven by the
//! python-socketio server (the reference Socket.IO implementation) with the real `autonomy-netmon`
//! watching veth links in a network namespace of the test's own. The answers are compared with
//! the original at HEAD (spec upstream-head §1.2, §9.4, §9.5, §9.7, §5.1, §4.4).
//!
//! No Docker engine: the agent is pointed at a socket that does not exist, so everything shown
//! here is decided before the engine is asked (refusals) or without it (host topics).
//! Fixed subnets: 10.203.190.0/24 and 10.203.191.0/24, only inside the test's namespace.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cloud::{Agent, Pki, PyServer, assert_error_ack};
use support::{Netmon, unique};
use test_support::netns::Netns;

const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// The python cloud and a connected agent.
fn cloud_and_agent() -> (Pki, PyServer, Agent) {
    let pki = Pki::new();
    let server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", |v| v.get("connect").is_some());
    (pki, server, agent)
}

/// Calls `topic` until `done` holds for its ack (netmon's reports reach the agent after its
/// debounce); panics with the last ack after 20 s.
fn call_until(
    server: &mut PyServer,
    topic: &str,
    args: &Value,
    id: &mut u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        *id += 1;
        let ack = server.call(topic, vec![args.clone()], *id).remove(0);
        if done(&ack) {
            return ack;
        }
        assert!(Instant::now() < deadline, "{topic}: last ack {ack}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn entry<'a>(ack: &'a Value, name: &str) -> Option<&'a Value> {
    ack["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
}

fn mac_of(ns: &Netns, name: &str) -> String {
    ns.ip_json(&["link", "show", "dev", name])[0]["address"]
        .as_str()
        .expect("address")
        .to_owned()
}

#[test]
fn base_message_fields_are_optional_and_answered_with_a_null_correlation_id() {
    let (_pki, mut server, _agent) = cloud_and_agent();

    // Processed without any BASE field: a success whose correlation_id is null (present).
    let ack = server.call(
        "get_consumption_orchestrator",
        vec![json!({"cpuPeriod": "1h", "memoryPeriod": "1h"})],
        1,
    );
    let ack = &ack[0];
    assert!(
        ack.get("correlation_id").is_some_and(Value::is_null),
        "{ack}"
    );
    assert!(ack["ip_addresses"].is_array(), "{ack}");
    assert!(ack.get("status").is_none(), "{ack}");

    // Topics naming a device: reached the device lookup, not a contract error.
    let ack = server.call(
        "run_command",
        vec![json!({"device_id": "nosuch", "method": "GET", "api": "status"})],
        2,
    );
    assert_error_ack(&ack, "run_command", "nosuch");
    assert!(ack[0]["correlation_id"].is_null(), "{}", ack[0]);
    assert!(
        !ack[0]["error"].as_str().unwrap().contains("Missing"),
        "{}",
        ack[0]
    );

    // A present field of the wrong type is still refused, echoed as received.
    let ack = server.call(
        "get_consumption_orchestrator",
        vec![json!({"correlation_id": "abc", "cpuPeriod": "1h", "memoryPeriod": "1h"})],
        3,
    );
    assert_error_ack(
        &ack,
        "get_consumption_orchestrator",
        "Invalid field type: Value must be a number. (field: correlation_id)",
    );
    assert_eq!(ack[0]["correlation_id"], "abc");
    let ack = server.call(
        "get_consumption_orchestrator",
        vec![json!({"requested_at": "x", "cpuPeriod": "1h", "memoryPeriod": "1h"})],
        4,
    );
    assert_error_ack(
        &ack,
        "get_consumption_orchestrator",
        "(field: requested_at)",
    );
}

#[test]
fn delete_orchestrator_acks_accepted_and_emits_command_received_for_the_older_cloud() {
    let (_pki, mut server, _agent) = cloud_and_agent();
    let from = server.out.len();
    let ack = server.call(
        "delete_orchestrator",
        vec![json!({"correlation_id": 41})],
        1,
    );
    assert_eq!(
        ack[0],
        json!({
            "action": "delete_orchestrator",
            "correlation_id": 41,
            "status": "accepted",
            "message": "Self-destruct initiated. Poll get_device_status with device_id='__orchestrator__' for progress.",
            "poll_device_id": "__orchestrator__",
        })
    );
    let event = server.expect(
        from,
        Duration::from_secs(10),
        "delete_orchestrator_response",
        |v| v.get("event") == Some(&json!("delete_orchestrator_response")),
    );
    let payload = &event["args"][0];
    assert_eq!(payload["status"], "command_received", "{event}");
    assert_eq!(payload["correlation_id"], 41, "{event}");
    assert_eq!(payload["poll_device_id"], "__orchestrator__", "{event}");

    // A second one while the first runs (it waits a moment before it starts): HEAD's refusal.
    let ack = server.call("delete_orchestrator", vec![json!({})], 2);
    assert_error_ack(
        &ack,
        "delete_orchestrator",
        "Self-destruct operation already in progress",
    );
    assert!(ack[0]["correlation_id"].is_null(), "{}", ack[0]);
}

#[test]
fn an_unsafe_serial_container_path_is_refused_by_name() {
    let (_pki, mut server, _agent) = cloud_and_agent();
    let vnic = json!({"name": "e0", "parent_interface": "eth0", "network_mode": "dhcp"});
    let id = 1;
    let msg = json!({"correlation_id": id, "container_name": unique("rtcmp"),
        "vnic_configs": [vnic],
        "serial_configs": [{"name": "s0", "device_id": "usb-FTDI-1", "container_path": "/dev/../etc/shadow"}]});
    let ack = server.call("create_new_runtime", vec![msg], id);
    assert_error_ack(
        &ack,
        "create_new_runtime",
        "Invalid serial_configs[0].container_path: \"/dev/../etc/shadow\" must not contain empty, . or .. components",
    );
    assert_eq!(ack[0]["correlation_id"], id);
}

#[test]
fn host_topics_report_netmon_ports_as_todays_original() {
    let (_pki, mut server, agent) = cloud_and_agent();
    let ns = Netns::new("cmp");
    // A port with an address and a gateway, one up without IPv4, and a Wi-Fi-named one.
    ns.veth("cmpa0", "cmpb0");
    ns.ip(&["addr", "add", "10.203.190.5/24", "dev", "cmpa0"]);
    ns.ip(&["addr", "add", "10.203.191.7/24", "dev", "cmpb0"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.203.190.1",
        "dev",
        "cmpa0",
    ]);
    ns.veth("wlan5", "cmpc0");
    // A name the original counts as virtual (`wg*`), reported by netmon all the same.
    ns.veth("WG7", "cmpd0");
    let _netmon = Netmon::start_in(&ns.name, &agent.state_dir.path().join("netmon.sock"));
    let mut id = 0;

    // get_host_interfaces, detailed by default: subnet and gateway keys always (null allowed).
    let ack = call_until(
        &mut server,
        "get_host_interfaces",
        &json!({}),
        &mut id,
        |a| {
            a["status"] == "success"
                && ["cmpa0", "cmpc0", "wlan5"]
                    .iter()
                    .all(|n| entry(a, n).is_some())
        },
    );
    assert!(ack["correlation_id"].is_null(), "{ack}");
    let a0 = entry(&ack, "cmpa0").unwrap();
    assert_eq!(a0["ip_address"], "10.203.190.5", "{a0}");
    assert_eq!(a0["ipv4_addresses"], json!(["10.203.190.5"]), "{a0}");
    assert_eq!(a0["subnet"], "10.203.190.0/24", "{a0}");
    assert_eq!(a0["gateway"], "10.203.190.1", "{a0}");
    assert_eq!(a0["type"], "ethernet", "{a0}");
    assert_eq!(a0["mac_address"], mac_of(&ns, "cmpa0").as_str(), "{a0}");
    assert!(a0.get("dedicated_only").is_none(), "{a0}");
    let c0 = entry(&ack, "cmpc0").unwrap();
    assert_eq!(c0["ip_address"], Value::Null, "{c0}");
    assert_eq!(c0["ipv4_addresses"], json!([]), "{c0}");
    assert!(c0.get("subnet").is_some_and(Value::is_null), "{c0}");
    assert!(c0.get("gateway").is_some_and(Value::is_null), "{c0}");
    assert_eq!(c0["dedicated_only"], true, "{c0}");
    assert_eq!(c0["mac_address"], mac_of(&ns, "cmpc0").as_str(), "{c0}");
    let w5 = entry(&ack, "wlan5").unwrap();
    assert_eq!(w5["type"], "wifi", "{w5}");
    assert!(w5.get("dedicated_only").is_none(), "{w5}");

    assert!(entry(&ack, "WG7").is_none(), "virtual by default: {ack}");
    id += 1;
    let ack = server
        .call(
            "get_host_interfaces",
            vec![json!({"correlation_id": id, "include_virtual": true})],
            id,
        )
        .remove(0);
    assert!(entry(&ack, "WG7").is_some(), "include_virtual: {ack}");

    // Not detailed: neither key.
    id += 1;
    let ack = server
        .call(
            "get_host_interfaces",
            vec![json!({"correlation_id": id, "detailed": false})],
            id,
        )
        .remove(0);
    let a0 = entry(&ack, "cmpa0").unwrap();
    assert!(
        a0.get("subnet").is_none() && a0.get("gateway").is_none(),
        "{a0}"
    );
    assert_eq!(a0["ip_address"], "10.203.190.5", "{a0}");

    // get_consumption_orchestrator: today's objects, host addresses in interface order.
    id += 1;
    let ack = server
        .call(
            "get_consumption_orchestrator",
            vec![json!({"correlation_id": id, "cpuPeriod": "1h", "memoryPeriod": "1h"})],
            id,
        )
        .remove(0);
    assert_eq!(
        ack["ip_addresses"],
        json!([
            {"interface": "cmpa0", "ip_address": "10.203.190.5"},
            {"interface": "cmpb0", "ip_address": "10.203.191.7"},
        ]),
        "{ack}"
    );

    // A static vNIC on the Wi-Fi port without the gateway its proxy-ARP bridge routes through is
    // refused, naming it (before the engine is asked).
    id += 1;
    let ack = server.call(
        "create_new_runtime",
        vec![
            json!({"correlation_id": id, "container_name": unique("rtcmp"), "vnic_configs": [
            {"name": "e0", "parent_interface": "cmpa0", "network_mode": "static",
             "ip": "10.203.190.50", "subnet": "255.255.255.0", "gateway": "10.203.190.1"},
            {"name": "w0", "parent_interface": "wlan5", "network_mode": "static",
             "ip": "10.203.199.9"}]}),
        ],
        id,
    );
    assert_error_ack(
        &ack,
        "create_new_runtime",
        "Invalid vnic_configs[1].gateway: a static vNIC on the Wi-Fi interface wlan5 needs a gateway (its proxy-ARP bridge routes through it)",
    );

    // A port that loses its addresses stays known, with none.
    ns.ip(&["addr", "flush", "dev", "cmpb0"]);
    let ack = call_until(
        &mut server,
        "get_host_interfaces",
        &json!({}),
        &mut id,
        |a| entry(a, "cmpb0").is_some_and(|e| e["ipv4_addresses"] == json!([])),
    );
    let b0 = entry(&ack, "cmpb0").unwrap();
    assert_eq!(b0["ip_address"], Value::Null, "{b0}");
    assert_eq!(b0["dedicated_only"], true, "{b0}");
}
