//! Real DHCP for `dhcp` vNICs end to end (issue 14): the real agent, the real netmon and the
//! engine; `dnsmasq` (Debian's `dnsmasq-base`) serves DHCP in a namespace at the far end of the
//! veth whose near end is the MACVLAN parent, as a LAN's server would. dnsmasq sends T1 = 10 s
//! and T2 = 20 s, so renewals happen within the test.
//!
//! Shown: the lease (not the engine's placeholder) is on the runtime's link, in the status and
//! persisted as the original persists it; a restarted server with a moved reservation changes the
//! lease at renewal and the change reaches the status; a runtime restarted (by the agent, or by
//! its watchdog after a kill from the host) leases again in its new namespace; after a netmon restart and after an agent restart the agent asks for its clients
//! again and learns the current lease; a stop and a delete release the lease at the server.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use test_support::{Dnsmasq, Netns, Pool};

/// The pool dnsmasq hands out from (hosts of the parent's /24).
const POOL: std::ops::RangeInclusive<u8> = 100..=150;

/// The LAN: dnsmasq in a namespace of its own, on the far end (`<parent>p`) of the parent veth,
/// at `10.203.<octet>.2`. Field order is drop order: the server, then the namespace.
struct Server {
    dnsmasq: Dnsmasq,
    _ns: Netns,
    octet: u8,
}

impl Server {
    fn new(parent: &Veth) -> Self {
        let ns = Netns::new("rdh");
        let addr = |host: u8| format!("10.203.{}.{host}", parent.octet);
        let peer = parent.move_peer(&ns, &format!("{}/24", addr(2)));
        let pool = Pool {
            first: addr(*POOL.start()),
            last: addr(*POOL.end()),
            router: addr(2),
            dns: addr(53),
        };
        Server {
            dnsmasq: Dnsmasq::new(&ns.name, &peer, pool),
            _ns: ns,
            octet: parent.octet,
        }
    }

    fn addr(&self, host: u8) -> String {
        format!("10.203.{}.{host}", self.octet)
    }

    /// (Re)starts dnsmasq, with `mac` reserved at `.<host>` if given.
    fn start(&mut self, reserved: Option<(&str, u8)>) {
        let reserved = reserved.map(|(mac, host)| (mac.to_owned(), self.addr(host)));
        self.dnsmasq
            .start(reserved.as_ref().map(|(m, a)| (m.as_str(), a.as_str())));
    }

    fn leases(&self) -> String {
        self.dnsmasq.leases()
    }

    fn log(&self) -> String {
        self.dnsmasq.log()
    }
}

/// The PID of the container's init, 0 when it does not run.
fn pid_of(name: &str) -> u32 {
    docker(&["inspect", "-f", "{{.State.Pid}}", name])
        .trim()
        .parse()
        .unwrap()
}

/// The IPv4 addresses (`a.b.c.d/len`) on the runtime's link with `mac`, read in its namespace.
fn addresses_in(name: &str, mac: &str) -> Vec<String> {
    let pid = pid_of(name).to_string();
    let Some(out) = run_try("nsenter", &["-t", &pid, "-n", "ip", "-j", "addr", "show"]) else {
        return Vec::new();
    };
    let links: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["address"].as_str() == Some(mac))
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// The runtime's persisted vNIC.
fn persisted(w: &World, name: &str) -> Value {
    let text = w
        .read_state("runtime_vnics.json")
        .expect("runtime_vnics.json");
    let all: Value = serde_json::from_str(&text).expect("JSON");
    all[name][0].clone()
}

fn shown_ip(s: &Value, net: &str) -> Option<String> {
    s["networks"][net]["ip_address"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dhcp_vnic_is_leased_by_the_lans_server_kept_current_and_released_on_delete() {
    // Declared before the world: dropped after it (the runtime goes before its LAN).
    let parent = Veth::new();
    let mut srv = Server::new(&parent);
    srv.start(None);
    let mut w = World::start().await;
    let name = unique("rtdhcp");
    let net = parent.macvlan();
    w.create_runtime(&name, json!([dhcp_vnic(&parent, None)]))
        .await;

    // A lease from the LAN's pool, in the status (in place of the placeholder) and on the link.
    let in_pool = |ip: &str| POOL.clone().any(|h| ip == srv.addr(h));
    let s = w
        .wait_status(&name, |s| shown_ip(s, &net).is_some_and(|ip| in_pool(&ip)))
        .await;
    let ip = shown_ip(&s, &net).unwrap();
    let mac = s["networks"][&net]["mac_address"]
        .as_str()
        .expect("the endpoint's MAC")
        .to_owned();
    assert_eq!(s["networks"][&net]["gateway"], srv.addr(2).as_str(), "{s}");
    assert!(
        !warnings_of(&s).iter().any(|w| w.contains("no DHCP lease")),
        "{s}"
    );
    assert!(
        srv.leases().contains(&format!("{mac} {ip}")),
        "the server leased {ip} to {mac}: {}",
        srv.leases()
    );
    // The engine's placeholder came from the top of the subnet and is gone from the link.
    let docker_ip = inspect(&name).unwrap()["NetworkSettings"]["Networks"][&net]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let host: u8 = docker_ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(host >= 224, "placeholder {docker_ip} outside the IPRange");
    assert_eq!(addresses_in(&name, &mac), [format!("{ip}/24")]);
    // Persisted as the original persists it.
    let v = persisted(&w, &name);
    assert_eq!(v["dhcp_ip"], ip.as_str(), "{v}");
    assert_eq!(v["dhcp_gateway"], srv.addr(2).as_str(), "{v}");
    assert_eq!(v["dhcp_dns"], srv.addr(53).as_str(), "{v}");

    // The server restarts with the MAC reserved elsewhere: at renewal the lease moves, and the
    // change reaches the status and the state file.
    srv.start(Some((&mac, 77)));
    let moved = srv.addr(77);
    w.wait_status(&name, |s| {
        shown_ip(s, &net).as_deref() == Some(moved.as_str())
    })
    .await;
    assert_eq!(persisted(&w, &name)["dhcp_ip"], moved.as_str());
    assert_eq!(addresses_in(&name, &mac), [format!("{moved}/24")]);

    // A restart: a new namespace, leased again there.
    let before = pid_of(&name);
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}\n{}", w.logs());
    eventually(SLOW, "the lease in the restarted runtime", || {
        let pid = pid_of(&name);
        (pid != 0 && pid != before && addresses_in(&name, &mac) == [format!("{moved}/24")])
            .then_some(())
    })
    .await;
    w.wait_status(&name, |s| {
        shown_ip(s, &net).as_deref() == Some(moved.as_str())
    })
    .await;

    // Killed from the host: the watchdog starts it again, and with it the DHCP client.
    let before = pid_of(&name);
    docker(&["kill", &name]);
    eventually(
        SLOW,
        "the lease in the runtime the watchdog started",
        || {
            let pid = pid_of(&name);
            (pid != 0 && pid != before && addresses_in(&name, &mac) == [format!("{moved}/24")])
                .then_some(())
        },
    )
    .await;

    // netmon restarts (its clients end, keeping their leases): the agent asks for them again on
    // the new connection, and the client that runs again follows the next move.
    w.terminate_netmon();
    srv.start(Some((&mac, 78)));
    w.start_netmon().await;
    let again = srv.addr(78);
    w.wait_status(&name, |s| {
        shown_ip(s, &net).as_deref() == Some(again.as_str())
    })
    .await;
    assert_eq!(addresses_in(&name, &mac), [format!("{again}/24")]);

    // The agent is down while the lease moves: after its restart it learns the current lease.
    w.kill_agent().await;
    srv.start(Some((&mac, 79)));
    let third = srv.addr(79);
    eventually(SLOW, "the renewal onto the third address", || {
        srv.leases()
            .contains(&format!("{mac} {third}"))
            .then_some(())
    })
    .await;
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    w.wait_status(&name, |s| {
        shown_ip(s, &net).as_deref() == Some(third.as_str())
    })
    .await;
    assert_eq!(persisted(&w, &name)["dhcp_ip"], third.as_str());

    // stop_device releases the lease at the server; start_device leases it again.
    let ack = w.call("stop_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}\n{}", w.logs());
    eventually(
        Duration::from_secs(20),
        "the release of a stopped runtime",
        || (!srv.leases().contains(&mac)).then_some(()),
    )
    .await;
    assert!(persisted(&w, &name).get("dhcp_ip").is_none());
    let ack = w.call("start_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}\n{}", w.logs());
    w.wait_status(&name, |s| {
        shown_ip(s, &net).as_deref() == Some(third.as_str())
    })
    .await;
    assert_eq!(addresses_in(&name, &mac), [format!("{third}/24")]);

    // Delete: the lease is released at the server.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    eventually(
        Duration::from_secs(20),
        "the server to see the release",
        || (!srv.leases().contains(&mac)).then_some(()),
    )
    .await;
    assert!(srv.log().contains("DHCPRELEASE"), "{}", srv.log());
}
