//! Wi-Fi vNICs end to end (issue 14): the real agent, the real netmon and the engine. A veth end
//! named `wlx…` stands in for the Wi-Fi parent (netmon's name rule), its far end is a LAN host
//! in a namespace of its own. The runtime gets no MACVLAN network for that vNIC but netmon's
//! proxy-ARP bridge, and traffic passes both ways between the runtime and the LAN host through
//! proxy ARP and the host's forwarding, on a host whose firewall drops forwarded traffic by
//! default (Docker's `FORWARD DROP`): netmon's accept rules are what lets it through.
//!
//! Shown: the bridge (address, default route in the runtime; /32 route, proxy entry, FORWARD
//! rules on the host), the original's `wifi_<parent>_<vnic>` pseudo-network in the status and
//! the persisted marks and `_proxy_arp_config`; a restart (new namespace) rebuilds it; a delete
//! removes every piece of it from the host. A `dhcp` Wi-Fi vNIC is leased by the LAN's server
//! (dnsmasq in the LAN namespace) through netmon's client on the host's Wi-Fi, keyed by the
//! original's client id `<runtime>:<vnic>`, bridged with the leased address, and released on
//! delete; the Wi-Fi itself never gets the lease.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use test_support::{Dnsmasq, Netns, Pool};

/// The LAN host at the far end of the Wi-Fi stand-in (`.2`, also the vNIC's gateway).
struct Lan {
    ns: Netns,
    octet: u8,
}

impl Lan {
    fn new(parent: &Veth) -> Self {
        let ns = Netns::new("rwf");
        parent.move_peer(&ns, &format!("10.203.{}.2/24", parent.octet));
        Lan {
            ns,
            octet: parent.octet,
        }
    }

    fn addr(&self, host: u8) -> String {
        format!("10.203.{}.{host}", self.octet)
    }

    /// One ping from the LAN host; true when answered.
    fn pings(&self, ip: &str) -> bool {
        pings(&["ip", "netns", "exec", &self.ns.name], ip)
    }
}

/// One ping from inside the runtime; true when answered.
fn runtime_pings(name: &str, ip: &str) -> bool {
    pings(&["docker", "exec", name], ip)
}

/// One busybox ping (`-c 1 -W 1`) run through `via` (a namespace or a container); true when
/// answered.
fn pings(via: &[&str], ip: &str) -> bool {
    let mut args = via[1..].to_vec();
    args.extend(["/bin/busybox", "ping", "-c", "1", "-W", "1", ip]);
    run_try(via[0], &args).is_some()
}

/// Retries `f` for up to 15 s (ARP through proxies, a bridge being rebuilt).
async fn retried(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..30 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

fn pid_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Pid}}", name])
        .trim()
        .to_owned()
}

/// `ip -j` in the runtime's namespace.
fn in_runtime(name: &str, args: &[&str]) -> Value {
    let pid = pid_of(name);
    let mut all = vec!["-t", pid.as_str(), "-n", "ip", "-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&run_try("nsenter", &all).unwrap_or_default()).unwrap_or(Value::Null)
}

fn host_links() -> Vec<String> {
    let out = run_try("ip", &["-j", "link", "show"]).unwrap_or_default();
    let links: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

fn proxy_entries(parent: &str) -> String {
    run_try("ip", &["neigh", "show", "proxy", "dev", parent]).unwrap_or_default()
}

/// netmon's FORWARD rules for `veth` (none when the machine's iptables cannot be read).
fn forward_rules(veth: &str) -> Vec<String> {
    run_try("iptables", &["-S", "FORWARD"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("autonomy-netmon proxy-arp {veth}")))
        .map(str::to_owned)
        .collect()
}

/// The Wi-Fi stand-in down and up again, as a reconnect does: the kernel flushes its proxy
/// entries; waits until they are gone so the test sees them come back, not stay.
fn flap(parent: &str) {
    ip(&["link", "set", parent, "down"]);
    assert!(proxy_entries(parent).is_empty());
    std::thread::sleep(Duration::from_secs(1));
    ip(&["link", "set", parent, "up"]);
}

fn persisted(w: &World, name: &str) -> Value {
    let text = w
        .read_state("runtime_vnics.json")
        .expect("runtime_vnics.json");
    let all: Value = serde_json::from_str(&text).expect("JSON");
    all[name][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_wifi_vnic_is_bridged_by_proxy_arp_rebuilt_after_a_restart_and_removed_on_delete()
{
    // Declared before the world: dropped after it (the runtime goes before its LAN).
    let parent = Veth::named(&unique("wlx"), 175);
    let lan = Lan::new(&parent);
    // Docker's hosts drop forwarded traffic; this one must too, whatever the machine had.
    let policy = run_try("iptables", &["-S", "FORWARD"]).unwrap_or_default();
    assert!(
        policy.contains("-P FORWARD DROP"),
        "the engine's host drops forwarded traffic (Docker sets it): {policy}"
    );
    let mut w = World::start().await;
    let name = unique("rtwifi");
    let vnic_ip = lan.addr(50);
    let gateway = lan.addr(2);
    w.create_runtime(
        &name,
        json!([{"name": "wl0", "parent_interface": parent.name, "network_mode": "static",
                "ip": vnic_ip, "subnet": "255.255.255.0", "gateway": gateway}]),
    )
    .await;

    // No MACVLAN network for it; the original's pseudo-network instead.
    let pseudo = format!("wifi_{}_wl0", parent.name);
    let s = w
        .wait_status(&name, |s| s["networks"].get(&pseudo).is_some())
        .await;
    assert_eq!(
        s["networks"][&pseudo],
        json!({"ip_address": vnic_ip, "mac_address": null, "gateway": gateway}),
        "{s}"
    );
    assert!(
        !s["networks"]
            .as_object()
            .unwrap()
            .keys()
            .any(|n| n.starts_with("macvlan_")),
        "{s}"
    );
    let v = persisted(&w, &name);
    assert_eq!(v["_is_wifi"], true, "{v}");
    assert_eq!(v["_network_method"], "proxy_arp", "{v}");
    assert_eq!(v["_interface_type"], "wifi", "{v}");
    let config = &v["_proxy_arp_config"];
    assert_eq!(config["ip_address"], vnic_ip.as_str(), "{v}");
    assert_eq!(config["parent_interface"], parent.name.as_str(), "{v}");
    let veth = config["veth_host"].as_str().expect("veth_host").to_owned();

    // The bridge: the address and default route in the runtime, the host's pieces.
    let addrs = in_runtime(&name, &["-4", "addr", "show"]).to_string();
    assert!(addrs.contains(&vnic_ip), "{addrs}");
    let routes = in_runtime(&name, &["-4", "route", "show", "default"]);
    assert!(
        routes
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["gateway"] == gateway.as_str()),
        "{routes}"
    );
    assert!(host_links().contains(&veth));
    assert!(proxy_entries(&parent.name).contains(&vnic_ip));
    assert_eq!(forward_rules(&veth).len(), 2, "{:?}", forward_rules(&veth));

    // Traffic both ways through proxy ARP and the host's forwarding.
    assert!(
        retried(|| lan.pings(&vnic_ip)).await,
        "LAN host → runtime\n{}",
        w.logs()
    );
    assert!(
        retried(|| runtime_pings(&name, &gateway)).await,
        "runtime → LAN host"
    );

    // The Wi-Fi goes down and comes back (a reconnect): the kernel flushed the proxy entry, the
    // agent has the bridge built again.
    flap(&parent.name);
    assert!(
        retried(|| lan.pings(&vnic_ip)).await,
        "LAN host → runtime after the Wi-Fi came back\n{}",
        w.logs()
    );
    assert!(proxy_entries(&parent.name).contains(&vnic_ip));

    // A restart is a new namespace: the agent has the bridge built again in it.
    let old_pid = pid_of(&name);
    let ack = w.call("restart_device", json!({"device_id": name})).await;
    assert_ne!(ack["status"], "error", "{ack}");
    let s = w
        .wait_status(&name, |s| {
            s["status"] == "success" && s["is_running"] == true && pid_of(&name) != old_pid
        })
        .await;
    assert_eq!(
        s["networks"][&pseudo]["ip_address"],
        vnic_ip.as_str(),
        "{s}"
    );
    assert!(
        retried(|| lan.pings(&vnic_ip)).await,
        "LAN host → runtime after the restart\n{}",
        w.logs()
    );
    assert_eq!(forward_rules(&veth).len(), 2);

    // Delete: every piece gone from the host.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    let gone = retried(|| {
        !host_links().contains(&veth)
            && !proxy_entries(&parent.name).contains(&vnic_ip)
            && forward_rules(&veth).is_empty()
    })
    .await;
    assert!(
        gone,
        "links {:?}, proxy entries {:?}, rules {:?}",
        host_links(),
        proxy_entries(&parent.name),
        forward_rules(&veth)
    );
    assert!(!lan.pings(&vnic_ip));
}

/// `id:<hex>` of a client id, as dnsmasq takes it (a literal `id:a:b` is read as hex bytes).
fn dnsmasq_id(client_id: &str) -> String {
    let hex: Vec<String> = client_id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("id:{}", hex.join(":"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dhcp_wifi_vnic_is_leased_by_client_id_bridged_with_the_lease_and_released_on_delete() {
    let parent = Veth::named(&unique("wlx"), 176);
    let lan = Lan::new(&parent);
    let name = unique("rtwdh");
    // The LAN's server keys the reservation on the original's client id only.
    let reserved = lan.addr(77);
    let mut dnsmasq = Dnsmasq::new(
        &lan.ns.name,
        &format!("{}p", parent.name),
        Pool {
            first: lan.addr(100),
            last: lan.addr(150),
            router: lan.addr(2),
            dns: lan.addr(53),
        },
    );
    dnsmasq.start_hosts(&[format!("{},{reserved}", dnsmasq_id(&format!("{name}:wl1")))]);
    let mut w = World::start().await;
    w.create_runtime(
        &name,
        json!([{"name": "wl1", "parent_interface": parent.name, "network_mode": "dhcp"}]),
    )
    .await;

    let pseudo = format!("wifi_{}_wl1", parent.name);
    let s = w
        .wait_status(&name, |s| {
            s["networks"][&pseudo]["ip_address"] == reserved.as_str()
        })
        .await;
    assert_eq!(
        s["networks"][&pseudo]["gateway"],
        lan.addr(2).as_str(),
        "{s}"
    );
    let v = persisted(&w, &name);
    assert_eq!(v["dhcp_ip"], reserved.as_str(), "{v}");
    assert_eq!(
        v["_proxy_arp_config"]["ip_address"],
        reserved.as_str(),
        "{v}"
    );
    // The runtime has the lease; the host's Wi-Fi only its own address.
    assert!(
        in_runtime(&name, &["-4", "addr", "show"])
            .to_string()
            .contains(&reserved)
    );
    let host_addrs =
        run_try("ip", &["-4", "addr", "show", "dev", &parent.name]).unwrap_or_default();
    assert!(!host_addrs.contains(&reserved), "{host_addrs}");
    assert!(
        retried(|| lan.pings(&reserved)).await,
        "LAN host → runtime\n{}",
        w.logs()
    );

    // The Wi-Fi comes back on the same network: the bridge again from the lease.
    flap(&parent.name);
    assert!(
        retried(|| lan.pings(&reserved)).await,
        "LAN host → runtime after the Wi-Fi came back\n{}",
        w.logs()
    );

    // Delete: released at the server, bridge gone.
    let veth = v["_proxy_arp_config"]["veth_host"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    w.wait_status(&name, |s| s["status"] == "not_found").await;
    assert!(
        retried(|| !dnsmasq.leases().contains(&reserved)).await,
        "{}\n{}",
        dnsmasq.leases(),
        dnsmasq.log()
    );
    assert!(dnsmasq.log().contains("DHCPRELEASE"), "{}", dnsmasq.log());
    assert!(retried(|| !host_links().contains(&veth)).await);
}
