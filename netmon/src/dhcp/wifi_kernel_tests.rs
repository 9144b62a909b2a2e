//! Wi-Fi DHCP (`request_wifi_dhcp`) against a real server and the real kernel: a "host"
//! namespace (where the client runs, as netmon runs in the host's) whose link `ww0` stands in
//! for the Wi-Fi parent, its far end `wl0` in a "lan" namespace where `dnsmasq` serves
//! 10.216.0.0/24 with one reservation per client id (option 61), and "container" namespaces
//! held by sleeping processes whose PIDs the requests carry. Addresses in 10.216.0.0/24, which
//! this machine does not use; nothing leaves the namespaces. Everything is removed on drop.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::time::Duration;

use netmon_proto::DhcpUpdate;
use test_support::{Dnsmasq, Netns, Pool, Proc};
use tokio::sync::mpsc;

use super::DhcpClients;
use crate::proxy_arp::SharedBridges;

const PARENT: &str = "ww0";
const ROUTER: &str = "10.216.0.1";
const FIRST: &str = "10.216.0.71";
const SECOND: &str = "10.216.0.72";
const BIND_WAIT: Duration = Duration::from_secs(20);

/// Under qemu-user netlink neighbour messages are not translated (the bridge needs a proxy
/// entry): skipped there, run natively on amd64 (as the proxy-ARP kernel tests).
fn under_qemu() -> bool {
    let q = std::env::var_os("ORCH_QEMU_USER").is_some();
    if q {
        eprintln!("skipped: qemu-user translates no netlink neighbour messages (run natively)");
    }
    q
}

/// `aa:bb:...`, as dnsmasq writes client ids.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A container: the process holding its namespace (dropped first), and the namespace.
struct Container {
    proc: Proc,
    ns: Netns,
}

impl Container {
    fn new() -> Container {
        let ns = Netns::new("dwc");
        let proc = ns.holder();
        Container { proc, ns }
    }

    fn pid(&self) -> u32 {
        self.proc.id()
    }

    fn addresses(&self, dev: &str) -> Vec<String> {
        self.ns.ipv4_addresses(dev)
    }

    fn default_routes(&self) -> Vec<String> {
        self.ns
            .default_routes()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["gateway"].as_str().unwrap_or("-"),
                    r["dev"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }
}

/// Field order is drop order: processes before namespaces.
struct Lab {
    dnsmasq: Dnsmasq,
    containers: Vec<Container>,
    dir: tempfile::TempDir,
    _lan: Netns,
    host: Netns,
}

impl Lab {
    fn new() -> Lab {
        let host = Netns::new("dwh");
        let lan = Netns::new("dwl");
        host.ip(&["link", "add", PARENT, "type", "veth", "peer", "name", "wl0"]);
        host.ip(&["link", "set", "wl0", "netns", &lan.name]);
        // The parent is up with no address: the host's own addressing is not the client's
        // business, and the test shows the client never adds one.
        host.ip(&["link", "set", PARENT, "up"]);
        lan.ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", "wl0"]);
        lan.ip(&["link", "set", "wl0", "up"]);
        let mut dnsmasq = Dnsmasq::new(
            &lan.name,
            "wl0",
            Pool {
                first: "10.216.0.100".into(),
                last: "10.216.0.150".into(),
                router: ROUTER.into(),
                dns: ROUTER.into(),
            },
        );
        // Reserved by client id (option 61) only: the two vNICs share the host's MAC. Written
        // in hex (dnsmasq reads colons as hex): exactly the UTF-8 bytes, no type byte.
        dnsmasq.start_hosts(&[
            format!("id:{},{FIRST}", hex(b"plc:wifi0")),
            format!("id:{},{SECOND}", hex(b"plc:wifi1")),
        ]);
        Lab {
            dnsmasq,
            containers: vec![Container::new()],
            dir: tempfile::tempdir().expect("tempdir"),
            _lan: lan,
            host,
        }
    }

    fn clients(&self) -> (DhcpClients, mpsc::UnboundedReceiver<DhcpUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = File::open(format!("/run/netns/{}", self.host.name)).expect("host netns");
        let c = DhcpClients::new(self.dir.path().join("dhcp"), tx, SharedBridges::default())
            .with_host_netns(host);
        (c, rx)
    }

    /// The parent's IPv4 addresses in the host namespace.
    fn parent_addresses(&self) -> Vec<String> {
        self.host.ipv4_addresses(PARENT)
    }

    fn host_default_routes(&self) -> usize {
        self.host.default_routes().len()
    }

    fn host_links(&self) -> Vec<String> {
        self.host
            .ip_json(&["link"])
            .as_array()
            .expect("array")
            .iter()
            .map(|l| l["ifname"].as_str().unwrap_or("-").to_owned())
            .collect()
    }
}

async fn next_update(rx: &mut mpsc::UnboundedReceiver<DhcpUpdate>) -> DhcpUpdate {
    tokio::time::timeout(BIND_WAIT, rx.recv())
        .await
        .expect("a dhcp_update in time")
        .expect("the channel is open")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_str(u: &DhcpUpdate, key: &str) -> String {
    u.proxy_arp_config.as_ref().expect("proxy_arp_config")[key]
        .as_str()
        .expect(key)
        .to_owned()
}

#[tokio::test]
async fn wifi_leases_by_client_id_become_bridges_never_host_addresses_and_stop_releases() {
    if under_qemu() {
        return;
    }
    let mut lab = Lab::new();
    let (mut clients, mut rx) = lab.clients();
    let pid = lab.containers[0].pid();

    // The first vNIC: its client id's reservation, bridged into the container.
    let r = clients
        .request_wifi("plc", "wifi0", PARENT, pid, "plc:wifi0")
        .await;
    assert_eq!(r, Ok(format!("WiFi DHCP client started on {PARENT}")));
    let u = next_update(&mut rx).await;
    assert_eq!(
        (u.ip.as_str(), u.prefix, u.mask.as_str(), u.gateway.as_str()),
        (FIRST, 24, "24", ROUTER),
        "{}",
        lab.dnsmasq.log()
    );
    assert_eq!(u.mac_address, None);
    assert_eq!(config_str(&u, "ip_address"), FIRST);
    assert_eq!(config_str(&u, "parent_interface"), PARENT);
    let veth0 = config_str(&u, "veth_host");
    let eth0 = config_str(&u, "veth_container");
    assert_eq!(lab.containers[0].addresses(&eth0), [format!("{FIRST}/24")]);
    assert_eq!(
        lab.containers[0].default_routes(),
        [format!("{ROUTER} {eth0}")]
    );
    // The server keyed the lease by the client id: the plain UTF-8 bytes, no type byte.
    let leases = lab.dnsmasq.leases();
    assert!(
        leases
            .lines()
            .any(|l| l.contains(FIRST) && l.ends_with(&hex(b"plc:wifi0"))),
        "{leases}"
    );

    // Asked again: the original's answer, the lease announced again.
    let r = clients
        .request_wifi("plc", "wifi0", PARENT, pid, "plc:wifi0")
        .await;
    assert_eq!(r, Ok("WiFi DHCP client already running".to_owned()));
    assert_eq!(next_update(&mut rx).await.ip, FIRST);

    // The container restarts (a new process, a new namespace: the bridge went with the old one);
    // the same request with the new PID rebuilds it at once from the lease held (W5/W6).
    lab.containers.push(Container::new());
    lab.containers.remove(0);
    let pid = lab.containers[0].pid();
    let r = clients
        .request_wifi("plc", "wifi0", PARENT, pid, "plc:wifi0")
        .await;
    assert_eq!(r, Ok("WiFi DHCP client already running".to_owned()));
    let u = next_update(&mut rx).await;
    assert_eq!(u.ip, FIRST);
    let eth0 = config_str(&u, "veth_container");
    assert_eq!(lab.containers[0].addresses(&eth0), [format!("{FIRST}/24")]);
    assert_eq!(
        lab.containers[0].default_routes(),
        [format!("{ROUTER} {eth0}")]
    );

    // A second vNIC, another client id: another address, another bridge.
    let r = clients
        .request_wifi("plc", "wifi1", PARENT, pid, "plc:wifi1")
        .await;
    assert_eq!(r, Ok(format!("WiFi DHCP client started on {PARENT}")));
    let u1 = next_update(&mut rx).await;
    assert_eq!(u1.ip, SECOND, "{}", lab.dnsmasq.log());
    let veth1 = config_str(&u1, "veth_host");
    let eth1 = config_str(&u1, "veth_container");
    assert_ne!(veth1, veth0);
    assert_eq!(lab.containers[0].addresses(&eth1), [format!("{SECOND}/24")]);

    let status = clients.status();
    assert_eq!(status["plc:wifi0"]["wifi"], true);
    assert_eq!(status["plc:wifi0"]["parent_interface"], PARENT);
    assert_eq!(status["plc:wifi0"]["container_pid"], pid);
    assert_eq!(status["plc:wifi1"]["last_ip"], SECOND);

    // The host's Wi-Fi got nothing: no address, no default route.
    assert_eq!(lab.parent_addresses(), Vec::<String>::new());
    assert_eq!(lab.host_default_routes(), 0);

    // stop_dhcp: released at the server, the bridge gone; the other vNIC untouched.
    let r = clients.stop("plc", "wifi0").await;
    assert_eq!(r, Ok("DHCP client stopped for plc:wifi0".to_owned()));
    eventually("the release at the server", || {
        !lab.dnsmasq.leases().contains(FIRST)
    })
    .await;
    assert!(
        lab.dnsmasq.log().contains("DHCPRELEASE"),
        "{}",
        lab.dnsmasq.log()
    );
    let links = lab.host_links();
    assert!(!links.contains(&veth0), "{links:?}");
    assert!(links.contains(&veth1), "{links:?}");
    // The container's end of the pair went with it, and with it the address.
    let left = lab.containers[0]
        .ns
        .ip_json(&["-4", "addr", "show"])
        .to_string();
    assert!(!left.contains(FIRST), "{left}");
    assert!(lab.dnsmasq.leases().contains(SECOND));

    clients.stop("plc", "wifi1").await.expect("stopped");
    assert!(!lab.host_links().contains(&veth1));
    assert_eq!(lab.parent_addresses(), Vec::<String>::new());
    assert_eq!(lab.host.proxy_entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_wifi_lease_is_renewed_at_t1_by_broadcast_without_touching_the_parent() {
    if under_qemu() {
        return;
    }
    let lab = Lab::new();
    let (mut clients, mut rx) = lab.clients();
    let pid = lab.containers[0].pid();
    let r = clients
        .request_wifi("plc", "wifi0", PARENT, pid, "plc:wifi0")
        .await;
    assert_eq!(r, Ok(format!("WiFi DHCP client started on {PARENT}")));
    assert_eq!(next_update(&mut rx).await.ip, FIRST);
    // T1 is 10 s: the renewal (a broadcast REQUEST asking for the address by option 50) is
    // acknowledged for the same address; nothing changed, so nothing is announced.
    let acks = |log: &str| log.matches(&format!("DHCPACK(wl0) {FIRST}")).count();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(test_support::dnsmasq::T1 + 15);
    while acks(&lab.dnsmasq.log()) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal: {}",
            lab.dnsmasq.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        rx.try_recv().is_err(),
        "a renewal without change is not announced"
    );
    assert_eq!(clients.status()["plc:wifi0"]["state"], "bound");
    assert_eq!(lab.parent_addresses(), Vec::<String>::new());
    clients.stop("plc", "wifi0").await.expect("stopped");
}
