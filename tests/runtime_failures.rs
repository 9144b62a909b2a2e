//! Failure paths on the real engine: invalid input, duplicate names, one operation per runtime,
//! parents the host does not have (refused in the ack) and one without an address (accepted), a
//! create that fails midway (rollback), containers that are not ours, and consumption periods that
//! do not parse.

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

fn assert_error(ack: &Value, action: &str, needle: &str) {
    assert_eq!(ack["action"], action, "{ack}");
    assert_eq!(ack["status"], "error", "{ack}");
    let e = ack["error"].as_str().unwrap_or_default();
    assert!(e.contains(needle), "error {e:?} should mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_at_once_naming_the_field() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtbad");
    let base = || static_vnic(&v, 10, None);
    let with = |k: &str, val: Value| {
        let mut o = base();
        o[k] = val;
        o
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with("mac", json!("01:00:5e:00:00:01")),
            "vnic_configs[0].mac",
        ),
        (
            with("mac", json!("ff:ff:ff:ff:ff:ff")),
            "vnic_configs[0].mac",
        ),
        (
            with("mac", json!("00:00:00:00:00:00")),
            "vnic_configs[0].mac",
        ),
        (with("mac", json!("02:00:00:00:00")), "vnic_configs[0].mac"),
        (
            with("subnet", json!("255.0.255.0")),
            "vnic_configs[0].subnet",
        ),
        (
            with("subnet", json!("10.203.0.0/33")),
            "vnic_configs[0].subnet",
        ),
        (
            with("dns", json!(["8.8.8.8", "not-an-ip"])),
            "vnic_configs[0].dns[1]",
        ),
        (with("ip", json!("10.99.0.5")), "outside the subnet"),
        (
            with("parent_interface", json!("way-too-long-iface0")),
            "vnic_configs[0].parent_interface",
        ),
        (
            with("parent_interface", json!("eth0;reboot")),
            "vnic_configs[0].parent_interface",
        ),
        (
            with("network_mode", json!("bridge")),
            "vnic_configs[0].network_mode",
        ),
        (
            with("gateway", json!("10.99.0.1")),
            "outside the subnet 10.99.0.0/24",
        ),
    ];
    for (vnic, needle) in cases {
        let ack = w
            .call(
                "create_new_runtime",
                json!({"correlation_id": 77, "container_name": name, "vnic_configs": [vnic]}),
            )
            .await;
        assert_error(&ack, "create_new_runtime", needle);
        assert_eq!(ack["correlation_id"], 77);
    }
    // A second vNIC on the same MACVLAN network, and a CIDR parent_subnet that is not one.
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [base(), dhcp_vnic_on(&v)]}),
        )
        .await;
    assert_error(&ack, "create_new_runtime", "vnic_configs[1]");
    let mut up = dhcp_vnic(&v, None);
    up["parent_subnet"] = json!("10.203.0.0");
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "vnic_configs": [up]}),
        )
        .await;
    assert_error(&ack, "create_new_runtime", "vnic_configs[0].parent_subnet");
    for bad in [
        "-plc",
        "plc/1",
        "plc 1",
        &"p".repeat(60),
        "orchestrator_agent",
    ] {
        let ack = w
            .call(
                "create_new_runtime",
                json!({"container_name": bad, "vnic_configs": [base()]}),
            )
            .await;
        assert_error(&ack, "create_new_runtime", "container_name");
    }
    assert!(inspect(&name).is_none());
    assert!(containers_with_label(&w.instance_label()).is_empty());
    assert!(networks_with_label(&w.instance_label()).is_empty());
}

/// A DHCP vNIC that names the same subnet as [`static_vnic`] (so it lands on the same network).
fn dhcp_vnic_on(v: &Veth) -> Value {
    json!({"name": "eth1", "parent_interface": v.name, "network_mode": "dhcp",
           "subnet": "255.255.255.0", "gateway": v.addr(1)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_concurrent_operations_are_refused() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtdup");
    let create = json!({"container_name": name, "vnic_configs": [dhcp_vnic(&v, None)]});

    let ack = w.call("create_new_runtime", create.clone()).await;
    assert_eq!(ack["status"], "creating", "{ack}");
    // While the create runs: a second create and a delete of the same name are refused.
    let ack = w.call("create_new_runtime", create.clone()).await;
    assert_error(
        &ack,
        "create_new_runtime",
        &format!("Container {name} already has a create operation in progress"),
    );
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_error(
        &ack,
        "delete_device",
        &format!("Container {name} already has a create operation in progress"),
    );
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());

    // Afterwards: the name is taken.
    let ack = w.call("create_new_runtime", create.clone()).await;
    assert_error(
        &ack,
        "create_new_runtime",
        &format!("Container name {name} is already in use"),
    );
    // A delete in flight blocks a create of the same name, too.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    let ack = w.call("create_new_runtime", create).await;
    assert_eq!(ack["status"], "error", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "not_found", "{s}");
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_error(&ack, "delete_device", &format!("Device {name} not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_on_a_parent_the_host_does_not_have_is_refused_in_the_ack_naming_its_interfaces() {
    let mut w = World::start().await;
    let v = Veth::new();
    let missing = unique("rvnope");
    let name = unique("rtnop");
    // With a subnet (the engine would refuse the parent later) and without one (the create
    // would wait for netmon's subnet and fail later): both refused at once, with the id.
    let vnics = [
        json!({"name": "eth1", "parent_interface": missing, "network_mode": "dhcp",
               "parent_subnet": "10.203.127.0/24"}),
        json!({"name": "eth1", "parent_interface": missing, "network_mode": "dhcp"}),
    ];
    for vnic in vnics {
        let ack = w
            .call(
                "create_new_runtime",
                json!({"correlation_id": 4711, "container_name": name,
                       "vnic_configs": [static_vnic(&v, 10, None), vnic]}),
            )
            .await;
        assert_error(
            &ack,
            "create_new_runtime",
            "vnic_configs[1].parent_interface",
        );
        assert_eq!(ack["correlation_id"], 4711, "{ack}");
        let error = ack["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("interface {missing} does not exist on this host")),
            "{error}"
        );
        // The interfaces the host has are named; the test's veth is one of them.
        let listed = error
            .split("its interfaces: ")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches(')');
        assert!(
            listed.split(", ").any(|i| i == v.name),
            "{} should be listed: {error}",
            v.name
        );
    }
    let s = w.status(&name).await;
    assert_eq!(s["status"], "not_found", "nothing was started: {s}");
    assert!(inspect(&name).is_none());
    assert!(containers_with_label(&w.instance_label()).is_empty());
    assert_eq!(
        networks_with_label(&w.instance_label()),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_exists_without_an_ipv4_address_is_accepted() {
    let mut w = World::start().await;
    // A dedicated PLC port often has no address on the host: the runtime's static subnet says
    // where it lives, and netmon still lists the port (as down). The veth only reserves a free
    // subnet; the parent is a link that never had an address.
    let v = Veth::new();
    let bare = BareLink::new();
    let mut vnic = static_vnic(&v, 10, None);
    vnic["parent_interface"] = json!(bare.0);
    let name = unique("rtnoip");
    w.create_runtime(&name, json!([vnic])).await;
    let s = w.status(&name).await;
    let network = format!("macvlan_{}_10.203.{}.0_24", bare.0, v.octet);
    assert_eq!(s["networks"][&network]["ip_address"], v.addr(10), "{s}");
}

/// A veth pair `<name>`/`<name>p`, up, without any address; deleted on drop.
struct BareLink(String);

impl BareLink {
    fn new() -> Self {
        let name = unique("rvbare");
        let peer = format!("{name}p");
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        let link = BareLink(name);
        ip(&["link", "set", &peer, "up"]);
        ip(&["link", "set", &link.0, "up"]);
        link
    }
}

impl Drop for BareLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_failing_midway_is_rolled_back_and_reported() {
    let mut w = World::start().await;
    let v = Veth::new();
    let first = unique("rtrb");
    let second = unique("rtrb");
    w.create_runtime(&first, json!([static_vnic(&v, 10, None)]))
        .await;

    // Same static address: the engine refuses it after networks and container were made.
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": second, "vnic_configs": [static_vnic(&v, 10, None)]}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&second).await;
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(s["operation"], "create");
    assert!(
        s["error"].as_str().unwrap().contains(&v.addr(10))
            || s["error"].to_string().contains("in use"),
        "{s}"
    );
    assert!(inspect(&second).is_none(), "container rolled back");
    assert!(inspect_network(&format!("{second}_internal")).is_none());
    let mv = inspect_network(&v.macvlan()).expect("the first runtime's network stays");
    assert_eq!(mv["Containers"].as_object().map(|m| m.len()), Some(1));
    let vnics: Value = serde_json::from_str(&w.read_state("runtime_vnics.json").unwrap()).unwrap();
    assert!(vnics.get(&second).is_none() && vnics.get(&first).is_some());
    let s = w.status(&first).await;
    assert_eq!(s["is_running"], true, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_the_agent_does_not_own_are_refused_and_left_alone() {
    let mut w = World::start().await;
    let foreign = ContainerGuard::busybox(&unique("rtforeign"));
    let before = inspect(&foreign.name).unwrap()["State"]["StartedAt"].clone();
    let ack = w
        .call("delete_device", json!({"device_id": foreign.name}))
        .await;
    assert_error(&ack, "delete_device", "not a runtime managed by this agent");
    for topic in ["stop_device", "start_device", "restart_device"] {
        let ack = w.call(topic, json!({"device_id": foreign.name})).await;
        assert_eq!(ack["success"], false, "{topic}: {ack}");
        assert!(
            ack["error"]
                .as_str()
                .unwrap()
                .contains("not a runtime managed by this agent"),
            "{ack}"
        );
    }
    let s = w.status(&foreign.name).await;
    assert_eq!(s["status"], "error", "{s}");
    assert!(foreign.is_running());
    assert_eq!(
        inspect(&foreign.name).unwrap()["State"]["StartedAt"],
        before
    );

    // The installation's own containers, by their literal names, whether or not they exist here.
    for name in ["orchestrator_agent", "autonomy_netmon"] {
        let existed = inspect(name).map(|c| c["State"].clone());
        let ack = w.call("delete_device", json!({"device_id": name})).await;
        assert_error(&ack, "delete_device", "not a runtime managed by this agent");
        let ack = w.call("stop_device", json!({"device_id": name})).await;
        assert_eq!(ack["success"], false, "{ack}");
        assert_eq!(inspect(name).map(|c| c["State"].clone()), existed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_runtime_version_fails_without_leaving_anything() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtver");
    let ack = w
        .call(
            "create_new_runtime",
            json!({"container_name": name, "runtime_version": "no-such-tag",
                   "vnic_configs": [dhcp_vnic(&v, None)]}),
        )
        .await;
    assert_eq!(ack["status"], "creating", "{ack}");
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "error", "{s}");
    assert_eq!(s["step"], "pulling_image", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .starts_with("Runtime version 'no-such-tag' not found"),
        "{s}"
    );
    assert!(inspect(&name).is_none());
    assert!(networks_with_label(&w.instance_label()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_periods_that_do_not_parse_are_refused_naming_the_field() {
    let mut w = World::start().await;
    let good = w
        .call(
            "get_consumption_orchestrator",
            json!({"cpuPeriod": "1h", "memoryPeriod": "1700000000,1700003600"}),
        )
        .await;
    assert!(good["cpu_usage"].is_array(), "{good}");
    for (topic, field, bad) in [
        ("get_consumption_orchestrator", "cpuPeriod", "banana"),
        ("get_consumption_orchestrator", "memoryPeriod", "-5x"),
        ("get_consumption_device", "cpuPeriod", "-5x"),
        ("get_consumption_device", "memoryPeriod", "banana"),
    ] {
        let mut msg = json!({"correlation_id": 808, "device_id": "plc", "cpuPeriod": "1h",
                             "memoryPeriod": "1h"});
        msg[field] = json!(bad);
        let ack = w.call(topic, msg).await;
        assert_error(&ack, topic, &format!("(field: {field})"));
        assert!(
            ack["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Invalid field type: Value must be a period string"),
            "{ack}"
        );
        assert_eq!(ack["correlation_id"], 808, "{ack}");
    }
}
