//! As deployed, end to end, on the real engine: both release images (FROM scratch, static musl,
//! built from `dist/`) started by the real `install/install.sh` exactly as on a device (shared
//! volume, netmon on the host network, the agent on the default bridge with the Docker socket and
//! the mTLS directory read-only), devcloud as the cloud. The agent in its container connects and
//! heartbeats, creates a runtime on a veth parent with a second veth end as its dedicated NIC (moved
//! in by netmon in its container with the installer's privileges) and reaches it over the runtime's
//! internal network (run_command), re-homes it when the parent's subnet changes, and
//! `delete_orchestrator` gives the NIC back and removes the runtime, its networks, netmon's
//! container and, last, its own.
//!
//! Then, with netmon as the installer runs it, a second runtime gets a DHCP lease from a LAN's
//! server (dnsmasq in a namespace), a Wi-Fi vNIC's proxy-ARP bridge that carries traffic, and a
//! serial node for the machine's `ttyS0`.
//!
//! Fixed subnets: 10.203.170.0/24, 10.203.171.0/24, 10.203.172.0/24, 10.203.177.0/24 and
//! 10.203.178.0/24 (this test's octets).

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::ship::{Deployment, Stack, WAIT};
use support::{SERVER_IMAGE_LOOPBACK, Veth, docker, endpoints, eventually, inspect, ip, unique};
use test_support::{Dnsmasq, Netns, Pool, run_try};

async fn call(stack: &Stack, id: &str, topic: &str, payload: Value) -> Value {
    stack
        .cloud
        .emit_with_ack(Some(id), topic, vec![payload], Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{topic}: no ack: {e}"))
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

fn macvlan_of(container: &str, parent: &str) -> Option<(String, String)> {
    endpoints(container)
        .into_iter()
        .find(|(n, _)| n.starts_with(&format!("macvlan_{parent}_")))
        .map(|(n, (ip, _, _))| (n, ip))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_agent_runs_a_runtime_rehomes_it_and_removes_everything_on_delete() {
    let stack = Stack::start().await;
    let mut dep = Deployment::new(&stack);
    dep.runtime_image = SERVER_IMAGE_LOOPBACK.to_owned();
    let parent = unique("sd");
    let _veth = Veth::named(&parent, 170);
    let dedicated = unique("sn");
    let _dedicated = Veth::named(&dedicated, 172);

    let cmd = dep.command(&[]);
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.output()
    })
    .await
    .expect("join")
    .expect("install.sh");
    assert!(
        out.status.success(),
        "install.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = dep.cert_cn();

    // Connects and heartbeats from inside its container.
    let mut events = stack.cloud.subscribe();
    if let Err(e) = stack.cloud.wait_for_agent(Some(&id), WAIT).await {
        panic!("agent did not connect: {e}\n{}", dep.agent_logs());
    }
    let beat = support::next_event(&mut events, "heartbeat").await;
    assert_eq!(beat[0]["agent_id"], id);

    // A runtime on the veth parent; the agent joins its internal network and reaches it there.
    let rt = unique("sdrt");
    let vnics = json!([{
        "name": "eth0", "parent_interface": parent, "network_mode": "static",
        "ip": "10.203.170.50", "subnet": "255.255.255.0", "gateway": "10.203.170.1",
        "dns": ["10.203.170.53"]
    }]);
    let ack = call(
        &stack,
        &id,
        "create_new_runtime",
        json!({"correlation_id": 1, "container_name": rt, "vnic_configs": vnics,
               "dedicated_interface": dedicated}),
    )
    .await;
    assert_eq!(ack["status"], "creating", "{ack}\n{}", dep.agent_logs());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = call(
            &stack,
            &id,
            "get_device_status",
            json!({"correlation_id": 2, "device_id": rt}),
        )
        .await;
        if s["status"] == "success" && s["is_running"] == true {
            break;
        }
        assert!(
            s["status"] != "error" && tokio::time::Instant::now() < deadline,
            "runtime did not come up: {s}\n{}",
            dep.agent_logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let old_net = format!("macvlan_{parent}_10.203.170.0_24");
    assert_eq!(
        macvlan_of(&rt, &parent),
        Some((old_net.clone(), "10.203.170.50".into()))
    );
    // The dedicated NIC is in the runtime's namespace, not the host's.
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &rt]);
    let inside = std::fs::read_to_string(format!("/proc/{}/net/dev", pid.trim())).unwrap();
    assert!(
        inside.contains(&format!("{dedicated}:")),
        "{inside}\n{}",
        dep.agent_logs()
    );
    assert!(support::run_try("ip", &["link", "show", "dev", &dedicated]).is_none());
    let internal = format!("{rt}_internal");
    assert!(
        endpoints(&dep.agent).contains_key(&internal),
        "the agent's container is not on {internal}: {:?}",
        endpoints(&dep.agent)
    );
    let mut answer = Value::Null;
    for n in 0..100 {
        answer = call(
            &stack,
            &id,
            "run_command",
            json!({"correlation_id": 10 + n, "device_id": rt, "method": "GET", "api": "/status"}),
        )
        .await;
        if answer["status"] == "success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        answer["status"],
        "success",
        "run_command over the internal network: {answer}\n{}",
        dep.agent_logs()
    );

    // The parent moves to another subnet: netmon (host network, its own container) reports it
    // and the agent re-homes the runtime.
    ip(&["addr", "del", "10.203.170.1/24", "dev", &parent]);
    ip(&["addr", "add", "10.203.171.1/24", "dev", &parent]);
    let new_net = format!("macvlan_{parent}_10.203.171.0_24");
    let (net, addr) = eventually(WAIT, "re-homing onto 10.203.171.0/24", || {
        macvlan_of(&rt, &parent).filter(|(n, _)| *n == new_net)
    })
    .await;
    assert_eq!(net, new_net);
    assert!(addr.starts_with("10.203.171."), "{addr}");

    // Issues 14 and 15 as deployed: netmon in its container with the installer's privileges
    // leases a DHCP vNIC's address in the runtime's namespace from the LAN's server, builds Wi-Fi
    // vNICs' proxy-ARP bridges (FORWARD rules included) that carry traffic, a static one and one
    // leased on the host's Wi-Fi (port 68 in the host's namespace: NET_BIND_SERVICE), and makes a
    // serial port's node in the runtime's /dev.
    let wifi = Veth::named(&unique("wlx"), 177);
    let wifi_lan = Netns::new("sdw");
    let wifi_peer = wifi.move_peer(&wifi_lan, "10.203.177.2/24");
    let rt2 = unique("sdrw");
    // The Wi-Fi LAN's server leases by the original's client id (`<runtime>:<vnic>`), given in hex.
    let mut wifi_dnsmasq = Dnsmasq::new(
        &wifi_lan.name,
        &wifi_peer,
        Pool {
            first: "10.203.177.100".into(),
            last: "10.203.177.150".into(),
            router: "10.203.177.2".into(),
            dns: "10.203.177.53".into(),
        },
    );
    let client_id: Vec<String> = format!("{rt2}:wl1")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    wifi_dnsmasq.start_hosts(&[format!("id:{},10.203.177.77", client_id.join(":"))]);
    let lan = Veth::named(&unique("sq"), 178);
    let lan_ns = Netns::new("sdq");
    let lan_peer = lan.move_peer(&lan_ns, "10.203.178.2/24");
    let mut dnsmasq = Dnsmasq::new(
        &lan_ns.name,
        &lan_peer,
        Pool {
            first: "10.203.178.100".into(),
            last: "10.203.178.150".into(),
            router: "10.203.178.2".into(),
            dns: "10.203.178.53".into(),
        },
    );
    dnsmasq.start(None);
    let ack = call(
        &stack,
        &id,
        "create_new_runtime",
        json!({"correlation_id": 30, "container_name": rt2, "vnic_configs": [
            {"name": "wl0", "parent_interface": wifi.name, "network_mode": "static",
             "ip": "10.203.177.50", "subnet": "255.255.255.0", "gateway": "10.203.177.2"},
            {"name": "wl1", "parent_interface": wifi.name, "network_mode": "dhcp"},
            {"name": "d0", "parent_interface": lan.name, "network_mode": "dhcp"}],
            "serial_configs": [{"name": "modbus", "device_id": "ttyS0",
                                "container_path": "/dev/modbus0"}]}),
    )
    .await;
    assert_eq!(ack["status"], "creating", "{ack}\n{}", dep.agent_logs());
    let lan_net = format!("macvlan_{}_10.203.178.0_24", lan.name);
    let wifi_net = format!("wifi_{}_wl0", wifi.name);
    let wifi_dhcp_net = format!("wifi_{}_wl1", wifi.name);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    let s = loop {
        n += 1;
        let s = call(
            &stack,
            &id,
            "get_device_status",
            json!({"correlation_id": 100 + n, "device_id": rt2}),
        )
        .await;
        let leased = s["networks"][&lan_net]["ip_address"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.203.178.1"));
        let bridged = s["networks"][&wifi_net]["ip_address"] == "10.203.177.50"
            && s["networks"][&wifi_dhcp_net]["ip_address"] == "10.203.177.77";
        let serial = s["serial_ports"][0]["status"] == "connected";
        if leased && bridged && serial {
            break s;
        }
        assert!(
            s["status"] != "error" && tokio::time::Instant::now() < deadline,
            "DHCP lease, Wi-Fi bridge and serial node as deployed: {s}\n{}\n{}",
            dep.agent_logs(),
            docker(&["logs", "--tail", "40", &dep.netmon])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        dnsmasq.leases().contains("10.203.178.1"),
        "{s}\n{}",
        dnsmasq.leases()
    );
    for addr in ["10.203.177.50", "10.203.177.77"] {
        let pinged = eventually(WAIT, "the runtime answers over its Wi-Fi bridges", || {
            run_try(
                "ip",
                &[
                    "netns",
                    "exec",
                    &wifi_lan.name,
                    "/bin/busybox",
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "1",
                    addr,
                ],
            )
        })
        .await;
        assert!(pinged.contains("1 packets received"), "{pinged}");
    }
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &rt2]);
    let node = std::fs::symlink_metadata(format!("/proc/{}/root/dev/modbus0", pid.trim()))
        .expect("the serial node in the runtime");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &node.file_type()
    ));

    // delete_orchestrator: everything goes, the agent's own container last. Removals are counted
    // from here (a create may remove and make its container again, e.g. where the engine refuses
    // the real-time ulimits).
    let delete_asked = now();
    let ack = call(
        &stack,
        &id,
        "delete_orchestrator",
        json!({"correlation_id": 500}),
    )
    .await;
    assert_ne!(ack["status"], "error", "{ack}");
    eventually(WAIT, "the agent's container to be removed", || {
        inspect(&dep.agent).is_none().then_some(())
    })
    .await;
    assert!(inspect(&rt).is_none(), "the runtime is left");
    assert!(inspect(&dep.netmon).is_none(), "netmon's container is left");
    assert!(
        support::run_try("ip", &["link", "show", "dev", &dedicated]).is_some(),
        "the dedicated NIC is back on the host"
    );
    for net in [&internal, &old_net, &new_net] {
        assert!(
            support::inspect_network(net).is_none(),
            "network {net} is left"
        );
    }
    let destroyed = docker(&[
        "events",
        "--since",
        &delete_asked,
        "--until",
        &now(),
        "--filter",
        "type=container",
        "--filter",
        "event=destroy",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    let order: Vec<&str> = destroyed
        .lines()
        .filter(|n| [rt.as_str(), dep.netmon.as_str(), dep.agent.as_str()].contains(n))
        .collect();
    assert_eq!(
        order,
        [rt.as_str(), dep.netmon.as_str(), dep.agent.as_str()],
        "removal order (the agent's own container last)"
    );
    // The volume and credentials stay for the operator (upstream's removal of the volume always
    // failed: the agent itself mounts it); the test's Deployment removes them.
    assert!(dep.volume_exists());
}

/// Now as Docker's `--until` takes it: seconds with nanoseconds (whole seconds would leave out
/// what happened in the current one).
fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}
