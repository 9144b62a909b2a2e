//! Proxy-ARP bridges against the real kernel: a "host" namespace (where netmon's code runs)
//! whose link `pw0` stands in for the Wi-Fi parent (10.214.0.2/24), the far end `pl0` in a
//! "lan" namespace (a LAN host, 10.214.0.1/24, also the gateway), and "container" namespaces
//! held by sleeping processes whose PIDs the set-up gets, as netmon gets a runtime's. Each
//! container already has an `eth0` with a default route, as Docker gives it. Traffic is UDP
//! echo between std sockets on threads that entered the namespaces (no `ping` needed).
//! Addresses in 10.214.0.0/16, which this machine does not use; nothing leaves the namespaces.
//! Everything is removed on drop, also when a test fails.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use netlink::in_netns;
use serde_json::Value;
use test_support::{Netns, Proc};

use super::{Bridges, Setup, host_name};

/// Under qemu-user (the test command's armv7 unit tests) netlink is translated by qemu, which has
/// no translation for neighbour messages (`RTM_NEWNEIGH` fails with EOPNOTSUPP): the tests that
/// build a bridge say so and stop there. They run natively on amd64 in the same test command.
fn neighbour_messages_unsupported() -> bool {
    let under_qemu = std::env::var_os("ORCH_QEMU_USER").is_some();
    if under_qemu {
        eprintln!("skipped: qemu-user translates no netlink neighbour messages (run natively)");
    }
    under_qemu
}

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);
const VNIC_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 50);
const PARENT: &str = "pw0";
/// Proxy ARP answers after a random delay of up to 0.8 s (`proxy_delay`); this is the patience.
const ECHO_WAIT: Duration = Duration::from_secs(8);

/// A container: its namespace and the process that holds it (dropped first).
struct Container {
    proc: Proc,
    ns: Netns,
}

impl Container {
    fn new() -> Container {
        let ns = Netns::new("pac");
        // What Docker gives a runtime: eth0 with an address and the default route.
        // (A veth pair: this kernel may lack the dummy driver.)
        ns.veth("eth0", "eth0peer");
        ns.ip(&["addr", "add", "10.214.9.2/24", "dev", "eth0"]);
        ns.ip(&["route", "add", "default", "via", "10.214.9.1"]);
        let proc = ns.holder();
        Container { proc, ns }
    }

    fn pid(&self) -> u32 {
        self.proc.id()
    }

    fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.ns.name)).expect("container netns")
    }

    fn link_names(&self) -> Vec<String> {
        names(&self.ns.ip_json(&["link"]))
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

fn inode(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn names(links: &Value) -> Vec<String> {
    links
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["ifname"].as_str().expect("ifname").to_owned())
        .collect()
}

/// Host, LAN and the containers. Field order is drop order: processes before namespaces.
struct Lab {
    containers: Vec<Container>,
    lan: Netns,
    host: Netns,
}

impl Lab {
    fn new(containers: usize) -> Lab {
        let host = Netns::new("pah");
        let lan = Netns::new("pal");
        host.ip(&["link", "add", PARENT, "type", "veth", "peer", "name", "pl0"]);
        host.ip(&["link", "set", "pl0", "netns", &lan.name]);
        host.ip(&["addr", "add", "10.214.0.2/24", "dev", PARENT]);
        host.ip(&["link", "set", PARENT, "up"]);
        lan.ip(&["addr", "add", &format!("{LAN_HOST}/24"), "dev", "pl0"]);
        lan.ip(&["link", "set", "pl0", "up"]);
        // A new namespace inherits the machine's ip_forward (Docker's hosts have 1): switched
        // off here so the tests show that forwarding on the bridge's links is all it takes.
        in_netns(
            &File::open(format!("/run/netns/{}", host.name)).expect("host netns"),
            || {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("ip_forward");
                Ok(())
            },
        )
        .expect("host namespace");
        Lab {
            containers: (0..containers).map(|_| Container::new()).collect(),
            lan,
            host,
        }
    }

    fn host_file(&self) -> File {
        File::open(format!("/run/netns/{}", self.host.name)).expect("host netns")
    }

    fn lan_file(&self) -> File {
        File::open(format!("/run/netns/{}", self.lan.name)).expect("lan netns")
    }

    /// Runs `f` on a thread in the host namespace, as netmon's blocking jobs run.
    fn on_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.host_file(), || Ok(f())).expect("entering the host namespace")
    }

    fn setup(
        &self,
        bridges: &mut Bridges,
        name: &str,
        c: usize,
        ip: Ipv4Addr,
    ) -> Result<super::Bridge, String> {
        let s = Setup::parse(
            name,
            self.containers[c].pid(),
            PARENT,
            &ip.to_string(),
            &LAN_HOST.to_string(),
            "255.255.255.0",
        )
        .expect("a valid set-up");
        self.on_host(|| bridges.setup(&s))
    }

    fn host_links(&self) -> Vec<String> {
        names(&self.host.ip_json(&["link"]))
    }

    /// `<ip> <dev>` of every proxy neighbour entry on the host.
    fn proxy_entries(&self) -> Vec<String> {
        self.host.proxy_entries()
    }

    /// `<dst> <dev>` of every /32 route on the host.
    fn host_routes(&self) -> Vec<String> {
        self.host
            .ip_json(&["-4", "route", "show"])
            .as_array()
            .expect("array")
            .iter()
            .filter(|r| {
                r["dst"]
                    .as_str()
                    .is_some_and(|d| !d.contains('/') && d != "default")
            })
            .map(|r| {
                format!(
                    "{} {}",
                    r["dst"].as_str().unwrap_or("-"),
                    r["dev"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }

    /// `net.ipv4.ip_forward` of the host namespace.
    fn host_ip_forward(&self) -> String {
        self.on_host(|| {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward")
        })
        .trim()
        .to_owned()
    }
}

/// A UDP echo: a server at `server_ip` in `server_ns`, a client in `client_ns` sends until it
/// gets its datagram back (ARP through proxies takes a moment). True when it did.
fn echo(server_ns: File, server_ip: Ipv4Addr, client_ns: File) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        in_netns(&server_ns, || {
            let sock = UdpSocket::bind(SocketAddrV4::new(server_ip, 0)).expect("server bind");
            sock.set_read_timeout(Some(ECHO_WAIT)).expect("timeout");
            tx.send(sock.local_addr().expect("addr")).expect("port");
            let mut buf = [0; 64];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"stop" {
                    break;
                }
                let _ = sock.send_to(&buf[..n], from);
            }
            Ok(())
        })
    });
    let addr = rx.recv().expect("the server's address");
    let ok = in_netns(&client_ns, || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("client bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let deadline = Instant::now() + ECHO_WAIT;
        let mut buf = [0; 64];
        while Instant::now() < deadline {
            // Unreachable errors while the neighbour is unresolved are retried too.
            let _ = sock.send_to(b"hello", addr);
            if let Ok((n, from)) = sock.recv_from(&mut buf)
                && &buf[..n] == b"hello"
                && from == addr
            {
                let _ = sock.send_to(b"stop", addr);
                return Ok(true);
            }
        }
        Ok(false)
    })
    .expect("client namespace");
    if !ok {
        // Unblock the server.
        let _ = server.join();
        return false;
    }
    server
        .join()
        .expect("server thread")
        .expect("server namespace");
    true
}

#[test]
fn a_bridge_carries_traffic_both_ways_and_cleanup_removes_it_all() {
    if neighbour_messages_unsupported() {
        return;
    }
    let lab = Lab::new(1);
    let c = &lab.containers[0];
    let mut bridges = Bridges::default();
    assert_eq!(lab.host_ip_forward(), "0");

    let bridge = lab
        .setup(&mut bridges, "plc-01", 0, VNIC_IP)
        .expect("set-up");
    assert_eq!(bridge.veth_host, host_name("plc-01", VNIC_IP));
    assert_eq!(bridge.veth_container, "eth1");
    assert_eq!(
        bridge.config(),
        serde_json::json!({"veth_host": bridge.veth_host, "veth_container": "eth1",
            "ip_address": "10.214.0.50", "gateway": "10.214.0.1", "parent_interface": PARENT})
    );
    // Container: the vNIC address on eth1, the default route through the LAN gateway.
    assert_eq!(c.addresses("eth1"), ["10.214.0.50/24"]);
    assert_eq!(c.default_routes(), ["10.214.0.1 eth1"]);
    // Host: the veth without address, the /32 route, the proxy entry on the parent.
    assert!(lab.host_links().contains(&bridge.veth_host));
    assert!(!lab.host_links().iter().any(|n| n.starts_with("vpb")));
    assert_eq!(
        lab.host_routes(),
        [format!("10.214.0.50 {}", bridge.veth_host)]
    );
    assert_eq!(lab.proxy_entries(), [format!("10.214.0.50 {PARENT}")]);

    assert!(
        echo(lab.lan_file(), LAN_HOST, c.file()),
        "container → LAN host"
    );
    assert!(
        echo(c.file(), VNIC_IP, lab.lan_file()),
        "LAN host → container"
    );
    // Per-link forwarding only: the host's global switch was left alone.
    assert_eq!(lab.host_ip_forward(), "0");

    lab.on_host(|| {
        bridges.cleanup(
            "plc-01",
            Some(VNIC_IP),
            Some(PARENT),
            Some(&bridge.veth_host),
        )
    })
    .expect("cleanup");
    assert!(!lab.host_links().contains(&bridge.veth_host));
    assert!(!c.link_names().contains(&"eth1".to_owned()));
    assert!(lab.host_routes().is_empty(), "{:?}", lab.host_routes());
    assert!(lab.proxy_entries().is_empty(), "{:?}", lab.proxy_entries());
    assert!(!echo(lab.lan_file(), LAN_HOST, c.file()));
}

#[test]
fn a_second_setup_replaces_the_bridge_and_names_never_collide() {
    if neighbour_messages_unsupported() {
        return;
    }
    let lab = Lab::new(2);
    let mut bridges = Bridges::default();
    let first = lab
        .setup(&mut bridges, "plc-01-alpha", 0, VNIC_IP)
        .expect("set-up");
    let again = lab
        .setup(&mut bridges, "plc-01-alpha", 0, VNIC_IP)
        .expect("set-up again");
    assert_eq!(first, again);
    let own = |lab: &Lab| -> Vec<String> {
        lab.host_links()
            .into_iter()
            .filter(|n| n.starts_with("vpa"))
            .collect()
    };
    assert_eq!(own(&lab), std::slice::from_ref(&first.veth_host));
    assert_eq!(
        lab.containers[0]
            .link_names()
            .iter()
            .filter(|n| n.starts_with("eth") && !n.ends_with("peer"))
            .count(),
        2
    );
    assert_eq!(lab.proxy_entries(), [format!("10.214.0.50 {PARENT}")]);
    assert!(echo(lab.lan_file(), LAN_HOST, lab.containers[0].file()));

    // The same 8 first characters (W1), a container whose eth1 is taken (a MACVLAN vNIC).
    lab.containers[1].ns.veth("eth1", "eth1peer");
    let ip2 = Ipv4Addr::new(10, 214, 0, 51);
    let second = lab
        .setup(&mut bridges, "plc-01-beta", 1, ip2)
        .expect("second container");
    assert_ne!(second.veth_host, first.veth_host);
    assert_eq!(second.veth_container, "eth2");
    assert_eq!(lab.containers[1].addresses("eth2"), ["10.214.0.51/24"]);
    assert!(echo(lab.containers[1].file(), ip2, lab.lan_file()));
    assert!(echo(lab.containers[0].file(), VNIC_IP, lab.lan_file()));

    // Another container asking for an address already bridged is refused, and breaks nothing
    // (W2: the original's failure clean-up deleted the working bridge).
    let e = lab.setup(&mut bridges, "intruder", 1, VNIC_IP).unwrap_err();
    assert_eq!(
        e,
        "10.214.0.50 is already bridged for container 'plc-01-alpha'"
    );
    assert_eq!(own(&lab).len(), 2);
    assert!(echo(lab.containers[0].file(), VNIC_IP, lab.lan_file()));
    // Also by a restarted netmon, from the bridge's alias.
    let mut restarted = Bridges::default();
    let e = lab
        .setup(&mut restarted, "intruder", 1, VNIC_IP)
        .unwrap_err();
    assert!(e.contains("'plc-01-alpha'"), "{e}");
}

#[test]
fn cleanup_all_removes_only_netmons_bridges_also_after_a_restart() {
    if neighbour_messages_unsupported() {
        return;
    }
    let lab = Lab::new(2);
    // Not netmon's: a link with a look-alike name, a proxy entry the admin made.
    lab.host.veth("vpa-mine", "vpa-minep");
    lab.host.veth("veth-plc", "veth-plcp");
    lab.host
        .ip(&["neigh", "add", "proxy", "10.214.0.99", "dev", PARENT]);
    let mut before = Bridges::default();
    let a = lab
        .setup(&mut before, "plc-a", 0, VNIC_IP)
        .expect("set-up a");
    // netmon restarts: a new registry finds the bridge by its name and alias.
    drop(before);
    let mut bridges = Bridges::default();
    let ip2 = Ipv4Addr::new(10, 214, 0, 51);
    let b = lab.setup(&mut bridges, "plc-b", 1, ip2).expect("set-up b");
    // Container b dies: its veth pair and route go with its namespace, the proxy entry stays
    // until netmon removes it.
    let Lab {
        mut containers,
        lan,
        host,
    } = lab;
    let dead = containers.pop().expect("b");
    drop(dead);
    let lab = Lab {
        containers,
        lan,
        host,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.host_links().contains(&b.veth_host) {
        assert!(Instant::now() < deadline, "b's veth outlived its namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lab.proxy_entries().contains(&format!("{ip2} {PARENT}")));
    // Its address is free again: another container's bridge takes it (one proxy entry).
    let c = lab.setup(&mut bridges, "plc-c", 0, ip2).expect("set-up c");
    assert_eq!(c.veth_container, "eth2");
    assert_eq!(
        lab.proxy_entries()
            .iter()
            .filter(|e| e.starts_with(&format!("{ip2} ")))
            .count(),
        1
    );

    let removed = lab.on_host(|| bridges.remove_all()).expect("remove all");
    assert_eq!(removed, 2, "a's pair and c's");
    assert!(!lab.host_links().contains(&c.veth_host));
    let links = lab.host_links();
    assert!(!links.contains(&a.veth_host), "{links:?}");
    assert!(links.contains(&"vpa-mine".to_owned()) && links.contains(&"veth-plc".to_owned()));
    assert_eq!(lab.proxy_entries(), [format!("10.214.0.99 {PARENT}")]);
    assert!(lab.host_routes().is_empty(), "{:?}", lab.host_routes());
    assert_eq!(lab.on_host(|| bridges.remove_all()), Ok(0));
}

#[test]
fn setups_that_cannot_work_are_refused_before_anything_is_made() {
    let lab = Lab::new(1);
    let mut bridges = Bridges::default();
    let before = lab.host_links();
    // A process in netmon's own namespace: a bridge "into" it would reconfigure the host.
    let own = Setup::parse(
        "plc",
        std::process::id(),
        PARENT,
        "10.214.0.50",
        "10.214.0.1",
        "24",
    )
    .unwrap();
    let host_proc = {
        let mut sleep = Command::new("ip");
        sleep.args(["netns", "exec", &lab.host.name, "sleep", "600"]);
        Proc::spawn(sleep)
    };
    let want = inode(&format!("/run/netns/{}", lab.host.name));
    while inode(&format!("/proc/{}/ns/net", host_proc.id())) != want {
        std::thread::sleep(Duration::from_millis(10));
    }
    let in_host = Setup {
        pid: host_proc.id(),
        ..own.clone()
    };
    let e = lab.on_host(|| bridges.setup(&in_host)).unwrap_err();
    assert!(
        e.contains("netmon's own (the host's) network namespace"),
        "{e}"
    );
    // A parent that does not exist; a process that does not exist.
    let no_parent = Setup {
        pid: lab.containers[0].pid(),
        parent: "nope0".into(),
        ..own.clone()
    };
    assert_eq!(
        lab.on_host(|| bridges.setup(&no_parent)).unwrap_err(),
        "Device \"nope0\" does not exist."
    );
    let gone = Setup {
        pid: 999_999_999,
        ..own
    };
    assert!(
        lab.on_host(|| bridges.setup(&gone))
            .unwrap_err()
            .starts_with("Container PID 999999999 network namespace not found")
    );
    assert_eq!(lab.host_links(), before);
    assert!(lab.proxy_entries().is_empty());
    drop(host_proc);
}

/// `iptables -S FORWARD` of the host namespace (the machine's iptables, nft variant: the tables
/// netmon's rules go to). None when the machine has no such iptables.
fn host_forward_rules(lab: &Lab) -> Option<Vec<String>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host.name,
            "iptables-nft",
            "-S",
            "FORWARD",
        ])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
}

#[test]
fn a_host_dropping_forwarded_traffic_gets_accept_rules_for_the_bridge_and_loses_them_on_cleanup() {
    if neighbour_messages_unsupported() {
        return;
    }
    let lab = Lab::new(1);
    // The host's firewall as Docker leaves it: forwarded traffic dropped by default.
    let policy = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host.name,
            "iptables-nft",
            "-P",
            "FORWARD",
            "DROP",
        ])
        .status();
    if !policy.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no iptables-nft on this machine to set the FORWARD policy with");
        return;
    }
    let c = &lab.containers[0];
    let mut bridges = Bridges::default();
    let bridge = lab
        .setup(&mut bridges, "plc-01", 0, VNIC_IP)
        .expect("set-up");
    assert_eq!(bridge.firewall_warning, None);
    assert!(
        echo(lab.lan_file(), LAN_HOST, c.file()),
        "container → LAN host"
    );
    assert!(
        echo(c.file(), VNIC_IP, lab.lan_file()),
        "LAN host → container"
    );
    let rules = host_forward_rules(&lab).expect("iptables -S");
    let veth = &bridge.veth_host;
    let comment = format!("\"autonomy-netmon proxy-arp {veth}\"");
    // iptables reads them as its own rules, at the top of the chain.
    assert_eq!(
        rules[1..3],
        [
            format!("-A FORWARD -i {PARENT} -o {veth} -m comment --comment {comment} -j ACCEPT"),
            format!("-A FORWARD -i {veth} -o {PARENT} -m comment --comment {comment} -j ACCEPT"),
        ],
        "{rules:?}"
    );

    // Set up again (a restart): still exactly two rules.
    let again = lab
        .setup(&mut bridges, "plc-01", 0, VNIC_IP)
        .expect("set-up again");
    assert_eq!(&again.veth_host, veth);
    let ours = |rules: &[String]| {
        rules
            .iter()
            .filter(|r| r.contains("autonomy-netmon"))
            .count()
    };
    assert_eq!(ours(&host_forward_rules(&lab).unwrap()), 2);
    assert!(echo(c.file(), VNIC_IP, lab.lan_file()), "after the rebuild");

    // Someone else's rule stays; ours go.
    let foreign = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host.name,
            "iptables-nft",
            "-I",
            "FORWARD",
            "-i",
            "pl9",
            "-j",
            "ACCEPT",
        ])
        .status()
        .expect("iptables");
    assert!(foreign.success());
    lab.on_host(|| bridges.cleanup("plc-01", Some(VNIC_IP), Some(PARENT), Some(veth)))
        .expect("cleanup");
    let rules = host_forward_rules(&lab).unwrap();
    assert_eq!(ours(&rules), 0, "{rules:?}");
    assert!(rules.iter().any(|r| r.contains("-i pl9")), "{rules:?}");

    // A bridge whose rules outlived it (netmon restarted, the container died): cleanup_all.
    let b = lab
        .setup(&mut bridges, "plc-02", 0, VNIC_IP)
        .expect("set-up");
    lab.on_host(|| {
        let mut cfg = netlink::ConfigSocket::new().unwrap();
        let mut ops = netlink::LinkOps::new().unwrap();
        let index = ops.index_of(&b.veth_host).unwrap().unwrap();
        cfg.del_link(index).unwrap();
    });
    assert_eq!(ours(&host_forward_rules(&lab).unwrap()), 2);
    lab.on_host(|| Bridges::default().remove_all())
        .expect("cleanup all");
    assert_eq!(ours(&host_forward_rules(&lab).unwrap()), 0);
}
