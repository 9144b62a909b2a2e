//! The DHCP client against a real server and the real kernel: `dnsmasq` (Debian's
//! `dnsmasq-base`) serves DHCP in a "server" namespace at the far end of a veth pair whose near
//! end, in a "host" namespace, is the parent of a MACVLAN with a known MAC; the MACVLAN is moved
//! into a "container" namespace held by a sleeping process, whose PID the client gets (as netmon
//! gets the runtime container's). Addresses in 10.213.0.0/24, which this machine does not use;
//! nothing leaves the namespaces. Everything is removed on drop, also when a test fails.
//!
//! dnsmasq's shortest lease is 2 minutes; it sends T1 = 10 s and T2 = 20 s (options 58 and 59),
//! which the client honours, so renewal and rebinding happen within seconds.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netmon_proto::DhcpUpdate;
use test_support::dnsmasq::{T1, T2};
use test_support::{Dnsmasq, Netns, Pool, Proc};
use tokio::sync::mpsc;

use super::DhcpClients;

const MAC: &str = "02:13:00:00:00:50";
const PLACEHOLDER: &str = "10.213.0.2/24";
const SERVER: &str = "10.213.0.1";
const RESERVED: &str = "10.213.0.77";
const MOVED: &str = "10.213.0.88";
const DNS: &str = "10.213.0.53";
/// A DORA on a loaded 2-core machine takes well under a second; this is the patience.
const BIND_WAIT: Duration = Duration::from_secs(20);
/// T1 plus margin.
const RENEW_WAIT: Duration = Duration::from_secs(T1 + 15);

/// The three namespaces, the container's process and dnsmasq. Field order is drop order:
/// processes first, then namespaces.
struct Lab {
    dnsmasq: Dnsmasq,
    container: Proc,
    dir: tempfile::TempDir,
    ctr: Netns,
    _srv: Netns,
    _host: Netns,
}

impl Lab {
    fn new() -> Lab {
        let host = Netns::new("dhh");
        let srv = Netns::new("dhs");
        let ctr = Netns::new("dhc");
        host.ip(&["link", "add", "dv1", "type", "veth", "peer", "name", "dv0"]);
        host.ip(&["link", "set", "dv0", "netns", &srv.name]);
        host.ip(&["link", "set", "dv1", "up"]);
        srv.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "dv0"]);
        srv.ip(&["link", "set", "dv0", "up"]);
        // The runtime's vNIC: a MACVLAN on the near end, moved into the container.
        host.ip(&[
            "link", "add", "mv0", "link", "dv1", "address", MAC, "type", "macvlan", "mode",
            "bridge",
        ]);
        host.ip(&["link", "set", "mv0", "netns", &ctr.name]);
        ctr.ip(&["link", "set", "mv0", "name", "eth1"]);
        // What Docker's IPAM would have put there.
        ctr.ip(&["addr", "add", PLACEHOLDER, "dev", "eth1"]);
        ctr.ip(&["link", "set", "eth1", "up"]);
        let mut sleep = Command::new("ip");
        sleep.args(["netns", "exec", &ctr.name, "sleep", "600"]);
        let container = Proc::spawn(sleep);
        let dnsmasq = Dnsmasq::new(
            &srv.name,
            "dv0",
            Pool {
                first: "10.213.0.100".into(),
                last: "10.213.0.150".into(),
                router: SERVER.into(),
                dns: DNS.into(),
            },
        );
        Lab {
            dnsmasq,
            container,
            dir: tempfile::tempdir().expect("tempdir"),
            ctr,
            _srv: srv,
            _host: host,
        }
    }

    fn lease_dir(&self) -> PathBuf {
        self.dir.path().join("dhcp")
    }

    /// (Re)starts dnsmasq with `MAC` reserved at `reserved`; waits until it listens.
    fn start_dnsmasq(&mut self, reserved: &str) {
        self.dnsmasq.start(Some((MAC, reserved)));
    }

    fn stop_dnsmasq(&mut self) {
        self.dnsmasq.stop();
    }

    fn dnsmasq_log(&self) -> String {
        self.dnsmasq.log()
    }

    /// dnsmasq's lease database (`<expiry> <mac> <ip> <host> <client id>` lines).
    fn server_leases(&self) -> String {
        self.dnsmasq.leases()
    }

    /// `address/prefix` of every IPv4 address on the container's vNIC.
    fn addresses(&self) -> Vec<String> {
        self.ctr.ipv4_addresses("eth1")
    }

    /// `gateway dev metric` of every default route in the container.
    fn default_routes(&self) -> Vec<String> {
        self.ctr
            .default_routes()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["gateway"].as_str().unwrap_or("-"),
                    r["dev"].as_str().unwrap_or("-"),
                    r["metric"]
                )
            })
            .collect()
    }

    fn lease_file(&self) -> PathBuf {
        self.lease_dir().join("plc-01_eth0.lease")
    }

    fn lease_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.lease_file()).expect("lease file");
        serde_json::from_str(&text).expect("lease file is JSON")
    }
}

fn clients(lab: &Lab) -> (DhcpClients, mpsc::UnboundedReceiver<DhcpUpdate>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        DhcpClients::new(
            lab.lease_dir(),
            tx,
            crate::proxy_arp::SharedBridges::default(),
        ),
        rx,
    )
}

async fn next_update(rx: &mut mpsc::UnboundedReceiver<DhcpUpdate>, wait: Duration) -> DhcpUpdate {
    tokio::time::timeout(wait, rx.recv())
        .await
        .expect("a dhcp_update in time")
        .expect("the channel is open")
}

/// Polls `f` (blocking calls are fine in these tests) every 200 ms up to `wait`.
async fn eventually(wait: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn exists(p: &Path) -> bool {
    p.exists()
}

async fn bound(lab: &Lab) -> (DhcpClients, mpsc::UnboundedReceiver<DhcpUpdate>, DhcpUpdate) {
    let (mut c, mut rx) = clients(lab);
    let started = c.start("plc-01", "eth0", MAC, lab.container.id()).await;
    assert_eq!(started, Ok("DHCP client started for eth1".to_owned()));
    let update = next_update(&mut rx, BIND_WAIT).await;
    (c, rx, update)
}

#[tokio::test]
async fn dora_against_dnsmasq_applies_the_reserved_lease_and_stop_releases_it() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (mut c, mut rx, update) = bound(&lab).await;

    assert_eq!(
        (update.container_name.as_str(), update.vnic_name.as_str()),
        ("plc-01", "eth0")
    );
    assert_eq!(update.mac_address.as_deref(), Some(MAC));
    assert_eq!(update.ip, RESERVED);
    assert_eq!((update.mask.as_str(), update.prefix), ("24", 24));
    assert_eq!(update.gateway, SERVER);
    assert_eq!(update.dns, DNS);
    assert_eq!(update.lease_time, "120");
    // The placeholder is gone, the lease is the only address; the default route goes through it.
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
    assert_eq!(lab.default_routes(), [format!("{SERVER} eth1 100")]);
    // The server leased that address to that MAC.
    let leases = lab.server_leases();
    assert!(leases.contains(&format!("{MAC} {RESERVED}")), "{leases}");
    assert!(
        lab.dnsmasq_log()
            .contains(&format!("DHCPACK(dv0) {RESERVED} {MAC}"))
    );
    // The lease file, in the original's shape.
    let file = lab.lease_json();
    assert_eq!(file["interface"], "eth1");
    assert_eq!(file["ip"], RESERVED);
    assert_eq!(file["subnet"], "255.255.255.0");
    assert_eq!(file["router"], SERVER);
    assert_eq!(file["serverid"], SERVER);
    assert_eq!(file["lease"], "120");
    assert_eq!(file["event"], "bound");
    // The status shows it; a second start for the same PID is "already running".
    let status = c.status();
    assert_eq!(status["plc-01:eth0"]["last_ip"], RESERVED);
    assert_eq!(status["plc-01:eth0"]["interface"], "eth1");
    assert_eq!(status["plc-01:eth0"]["running"], true);
    assert_eq!(
        c.start("plc-01", "eth0", MAC, lab.container.id()).await,
        Ok("DHCP client already running".to_owned())
    );
    // ... which announces the lease again, for an agent that missed it while it was down.
    assert_eq!(next_update(&mut rx, Duration::from_secs(1)).await, update);

    // Stop: RELEASE reaches the server, the address and route leave the interface, the lease
    // file is deleted.
    assert_eq!(
        c.stop("plc-01", "eth0").await,
        Ok("DHCP client stopped for plc-01:eth0".to_owned())
    );
    eventually(Duration::from_secs(10), "dnsmasq to drop the lease", || {
        !lab.server_leases().contains(MAC)
    })
    .await;
    assert!(
        lab.dnsmasq_log()
            .contains(&format!("DHCPRELEASE(dv0) {RESERVED} {MAC}"))
    );
    assert!(lab.addresses().is_empty());
    assert!(lab.default_routes().is_empty());
    assert!(!exists(&lab.lease_file()));
    assert!(rx.try_recv().is_err(), "no update for a release");
    lab.stop_dnsmasq();
}

#[tokio::test]
async fn the_lease_is_renewed_at_t1_by_a_restarted_server_without_an_update() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (_c, mut rx, update) = bound(&lab).await;
    assert_eq!(update.ip, RESERVED);
    let first = lab.lease_json();

    // The server restarts: the client keeps its lease meanwhile.
    lab.start_dnsmasq(RESERVED);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);

    // At T1 the client renews with the new server process: unicast REQUEST, ACK.
    let want = format!("DHCPACK(dv0) {RESERVED} {MAC}");
    eventually(RENEW_WAIT, "the renewal", || {
        lab.dnsmasq_log().contains(&want)
    })
    .await;
    let log = lab.dnsmasq_log();
    assert!(
        !log.contains("DHCPDISCOVER"),
        "a renewal, not a new lease: {log}"
    );
    eventually(Duration::from_secs(5), "the renewed lease file", || {
        lab.lease_json()["event"] == "renew"
    })
    .await;
    assert_ne!(lab.lease_json()["timestamp"], first["timestamp"]);
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
    assert_eq!(lab.default_routes(), [format!("{SERVER} eth1 100")]);
    // Nothing the agent is told about changed: no second update.
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn with_the_server_down_at_t1_the_lease_is_rebound_by_broadcast_at_t2() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (_c, mut rx, update) = bound(&lab).await;
    assert_eq!(update.ip, RESERVED);
    let granted = std::time::Instant::now();
    // Down over T1: the unicast renewal goes unanswered and is not retried before T2 (retries
    // wait at least a minute, capped at T2), so the lease is kept until the rebinding.
    lab.stop_dnsmasq();
    tokio::time::sleep(Duration::from_secs(T1 + 3)).await;
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
    lab.start_dnsmasq(RESERVED);
    let want = format!("DHCPACK(dv0) {RESERVED} {MAC}");
    eventually(Duration::from_secs(T2 + 10), "the rebinding", || {
        lab.dnsmasq_log().contains(&want)
    })
    .await;
    let took = granted.elapsed();
    assert!(
        took >= Duration::from_secs(T2 - 1),
        "ACKed at {took:?}, before T2"
    );
    assert!(!lab.dnsmasq_log().contains("DHCPDISCOVER"));
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
    assert_eq!(lab.default_routes(), [format!("{SERVER} eth1 100")]);
    assert!(rx.try_recv().is_err(), "the same lease: no update");
}

#[tokio::test]
async fn a_changed_reservation_is_taken_at_renewal_and_reported() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (c, mut rx, update) = bound(&lab).await;
    assert_eq!(update.ip, RESERVED);

    // The server comes back with another address for this MAC: at T1 it NAKs the renewal, the
    // client starts over and gets the new address.
    lab.start_dnsmasq(MOVED);
    let update = next_update(&mut rx, RENEW_WAIT).await;
    assert_eq!(update.ip, MOVED);
    assert!(
        lab.dnsmasq_log()
            .contains(&format!("DHCPNAK(dv0) {RESERVED} {MAC}"))
    );
    assert_eq!(lab.addresses(), [format!("{MOVED}/24")]);
    assert_eq!(lab.default_routes(), [format!("{SERVER} eth1 100")]);
    assert_eq!(lab.lease_json()["ip"], MOVED);
    assert_eq!(c.status()["plc-01:eth0"]["last_ip"], MOVED);
}

#[tokio::test]
async fn after_a_netmon_restart_the_client_asks_for_its_lease_again_and_keeps_it() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (mut c, _rx, update) = bound(&lab).await;
    assert_eq!(update.ip, RESERVED);
    // netmon exits: the lease stays on the interface and in the lease file.
    c.shutdown().await;
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
    assert!(exists(&lab.lease_file()));
    let before = lab.dnsmasq_log().len();

    // The next netmon (the agent's resync sends start_dhcp again): INIT-REBOOT, no DISCOVER, and
    // the lease is announced again.
    let (mut c, mut rx) = clients(&lab);
    let started = c.start("plc-01", "eth0", MAC, lab.container.id()).await;
    assert_eq!(started, Ok("DHCP client started for eth1".to_owned()));
    let update = next_update(&mut rx, BIND_WAIT).await;
    assert_eq!(update.ip, RESERVED);
    let log = lab.dnsmasq_log()[before..].to_owned();
    assert!(
        log.contains(&format!("DHCPREQUEST(dv0) {RESERVED} {MAC}")),
        "{log}"
    );
    assert!(!log.contains("DHCPDISCOVER"), "{log}");
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);
}

#[tokio::test]
async fn the_client_releases_and_ends_when_the_container_process_exits() {
    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let (c, _rx, _update) = bound(&lab).await;
    lab.container.kill();
    eventually(Duration::from_secs(5), "the client to end", || {
        c.status()["plc-01:eth0"]["running"] == false
    })
    .await;
    // The vNIC outlived the process here (the namespace is mounted), so the RELEASE went out.
    eventually(Duration::from_secs(10), "dnsmasq to drop the lease", || {
        !lab.server_leases().contains(MAC)
    })
    .await;
    assert!(!exists(&lab.lease_file()));
}

#[tokio::test]
async fn an_interface_that_never_appears_is_reported_with_the_originals_text() {
    let lab = Lab::new();
    let (mut c, _rx) = clients(&lab);
    let started = c
        .start("plc-01", "eth0", "02:13:00:00:00:99", lab.container.id())
        .await;
    assert_eq!(
        started,
        Err("Interface with MAC 02:13:00:00:00:99 not found in container after 10 retries".into())
    );
}

/// Through the command channel, as an agent (ours or the original) drives it: `start_dhcp` on
/// netmon's socket answers with the original's message, the lease arrives as a `dhcp_update`
/// event on the same connection, `get_status` and `get_dhcp_status` show it, `stop_dhcp` releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_dhcp_on_the_socket_binds_and_announces_a_dhcp_update() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut lab = Lab::new();
    lab.start_dnsmasq(RESERVED);
    let socket = lab.dir.path().join("netmon.sock");
    let daemon = tokio::spawn(crate::daemon::run(crate::daemon::Config {
        socket: socket.clone(),
        debounce: Duration::from_millis(200),
        filter: crate::model::Filter::default(),
        client_uid: None,
    }));
    eventually(Duration::from_secs(10), "netmon's socket", || {
        exists(&socket)
    })
    .await;
    let (r, mut w) = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap()
        .into_split();
    let mut lines = BufReader::new(r).lines();
    let mut next = async |what: &str, want: &dyn Fn(&serde_json::Value) -> bool| loop {
        let line = tokio::time::timeout(BIND_WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {BIND_WAIT:?}"))
            .unwrap()
            .expect("netmon keeps the connection");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if want(&v) {
            return v;
        }
    };
    let pid = lab.container.id();
    let start = format!(
        "{{\"command\":\"start_dhcp\",\"container_name\":\"plc-01\",\"vnic_name\":\"eth0\",\
         \"mac_address\":\"{MAC}\",\"container_pid\":{pid},\"id\":1}}\n"
    );
    w.write_all(start.as_bytes()).await.unwrap();
    let answer = next("start_dhcp's answer", &|v| v["id"] == 1).await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(
        answer["message"], "DHCP client started for eth1",
        "{answer}"
    );
    let update = next("the dhcp_update event", &|v| v["type"] == "dhcp_update").await;
    assert_eq!(update["data"]["ip"], RESERVED, "{update}");
    assert_eq!(update["data"]["container_name"], "plc-01", "{update}");
    assert_eq!(update["data"]["vnic_name"], "eth0", "{update}");
    assert_eq!(lab.addresses(), [format!("{RESERVED}/24")]);

    w.write_all(
        b"{\"command\":\"get_dhcp_status\",\"id\":2}\n{\"command\":\"get_status\",\"id\":3}\n",
    )
    .await
    .unwrap();
    let status = next("get_dhcp_status", &|v| v["id"] == 2).await;
    assert_eq!(
        status["status"]["plc-01:eth0"]["last_ip"], RESERVED,
        "{status}"
    );
    let status = next("get_status", &|v| v["id"] == 3).await;
    assert_eq!(
        status["status"]["dhcp"]["plc-01:eth0"]["running"], true,
        "{status}"
    );

    w.write_all(b"{\"command\":\"stop_dhcp\",\"container_name\":\"plc-01\",\"vnic_name\":\"eth0\",\"id\":4}\n")
        .await
        .unwrap();
    let stopped = next("stop_dhcp's answer", &|v| v["id"] == 4).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    eventually(Duration::from_secs(10), "dnsmasq to drop the lease", || {
        !lab.server_leases().contains(MAC)
    })
    .await;
    assert!(lab.addresses().is_empty());
    daemon.abort();
    lab.stop_dnsmasq();
}
