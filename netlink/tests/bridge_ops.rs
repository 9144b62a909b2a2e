//! `ConfigSocket`'s bridge writes against the real kernel, inside a network namespace the test
//! creates (veth pairs; addresses from 10.214.0.0/16, which this machine does not use).

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use netlink::{ConfigSocket, Link, LinkOps};
use serde_json::Value;
use test_support::Netns;

fn link(s: &mut ConfigSocket, name: &str) -> Option<Link> {
    s.links()
        .expect("links")
        .into_iter()
        .find(|l| l.name == name)
}

fn sysctl(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

fn strings(v: &Value, f: impl Fn(&Value) -> String) -> Vec<String> {
    v.as_array().expect("array").iter().map(f).collect()
}

#[test]
fn a_veth_pair_is_made_renamed_labelled_configured_routed_proxied_and_removed() {
    let ns = Netns::new("bot");
    let name = ns.name.clone();
    ns.ip(&["link", "add", "bo0", "type", "veth", "peer", "name", "bo0p"]);
    let ip = Ipv4Addr::new(10, 214, 3, 50);

    ns.run_in(move || async move {
        let mut s = ConfigSocket::new().expect("socket");
        // A new namespace inherits the machine's ip_forward: off, to see the links' own switch.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("ip_forward");
        // A setting the devconf request must leave alone.
        std::fs::write("/proc/sys/net/ipv4/conf/bo0/arp_ignore", "2").expect("arp_ignore");
        s.add_veth("bv0", "bv0tmp").expect("veth");
        assert!(s.add_veth("bv0", "other").unwrap_err().is_exists());
        let host = link(&mut s, "bv0").expect("bv0");
        let peer = link(&mut s, "bv0tmp").expect("peer");
        assert_eq!(host.kind.as_deref(), Some("veth"));
        s.rename_link(peer.index, "bv0peer").expect("rename");
        assert!(link(&mut s, "bv0peer").is_some() && link(&mut s, "bv0tmp").is_none());
        s.set_link_alias(host.index, "made by a test")
            .expect("alias");
        assert_eq!(
            link(&mut s, "bv0").and_then(|l| l.alias).as_deref(),
            Some("made by a test")
        );

        let parent = link(&mut s, "bo0").expect("bo0");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bv0/forwarding"), "0");
        s.enable_ipv4_forwarding(host.index, true).expect("devconf");
        s.enable_ipv4_forwarding(parent.index, false)
            .expect("devconf");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bv0/forwarding"), "1");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bv0/proxy_arp"), "1");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bo0/forwarding"), "1");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bo0/proxy_arp"), "0");
        assert_eq!(sysctl("/proc/sys/net/ipv4/conf/bo0/arp_ignore"), "2");

        // A route needs its link up (ENETDOWN otherwise).
        LinkOps::new()
            .expect("link socket")
            .set_up(host.index, true)
            .expect("up");
        s.replace_host_route(ip, host.index).expect("route");
        s.replace_host_route(ip, host.index).expect("route again");
        s.add_proxy_neighbour(ip, parent.index).expect("proxy");
        s.add_proxy_neighbour(ip, parent.index)
            .expect("proxy again");
    });

    let routes = strings(
        &ns.ip_json(&["-4", "route", "show", "10.214.3.50/32"]),
        |r| format!("{} {} {}", r["dst"], r["dev"], r["scope"]),
    );
    assert_eq!(routes, [r#""10.214.3.50" "bv0" "link""#]);
    let proxies = strings(&ns.ip_json(&["-4", "neigh", "show", "proxy"]), |n| {
        format!("{} {}", n["dst"], n["dev"])
    });
    assert_eq!(proxies, [r#""10.214.3.50" "bo0""#]);

    let left = ns.run_in(move || async move {
        let mut s = ConfigSocket::new().expect("socket");
        let host = link(&mut s, "bv0").expect("bv0");
        let parent = link(&mut s, "bo0").expect("bo0");
        s.del_proxy_neighbour(ip, parent.index).expect("unproxy");
        assert!(
            s.del_proxy_neighbour(ip, parent.index)
                .unwrap_err()
                .is_not_found()
        );
        s.del_host_route(ip, host.index).expect("unroute");
        assert!(s.del_host_route(ip, host.index).unwrap_err().is_not_found());
        s.del_link(host.index).expect("delete");
        assert!(s.del_link(host.index).unwrap_err().is_no_device());
        s.links()
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
    });
    // Both ends went.
    assert!(
        !left.iter().any(|n| n.starts_with("bv0")),
        "{left:?} in {name}"
    );
    assert!(ns.ip_json(&["-4", "neigh", "show", "proxy"]) == Value::Array(vec![]));
}
