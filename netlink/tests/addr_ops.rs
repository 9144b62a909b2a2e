//! `ConfigSocket` against the real kernel, inside a network namespace the test creates (a veth
//! pair; addresses from 10.213.0.0/16, which this machine does not use).

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use netlink::ConfigSocket;
use test_support::Netns;

fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    ns.ip_json(&["-4", "addr", "show", "dev", dev])
        .as_array()
        .expect("array")
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            format!(
                "{}/{} brd {}",
                a["local"].as_str().unwrap_or(""),
                a["prefixlen"],
                a["broadcast"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

fn default_routes(ns: &Netns) -> Vec<String> {
    ns.ip_json(&["-4", "route", "show", "default"])
        .as_array()
        .expect("array")
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

#[test]
fn addresses_and_default_routes_are_written_replaced_and_removed() {
    let ns = Netns::new("aot");
    ns.veth("ao0", "ao1");
    let name = ns.name.clone();
    let a = Ipv4Addr::new(10, 213, 7, 50);
    let gw = Ipv4Addr::new(10, 213, 7, 1);

    let index = ns.run_in(move || async move {
        let mut s = ConfigSocket::new().expect("socket");
        let link = s
            .links()
            .expect("links")
            .into_iter()
            .find(|l| l.name == "ao0")
            .expect("ao0 listed");
        s.add_ipv4_address(link.index, a, 24).expect("add");
        // Twice is a refresh, not an error or a second address.
        s.add_ipv4_address(link.index, a, 24).expect("add again");
        s.replace_default_route(link.index, gw, 100).expect("route");
        s.replace_default_route(link.index, gw, 100)
            .expect("route again");
        let listed = s.ipv4_addresses().expect("addresses");
        assert!(
            listed
                .iter()
                .any(|x| x.index == link.index && x.address == a)
        );
        let routes = s.ipv4_routes().expect("routes");
        assert!(
            routes
                .iter()
                .any(|r| r.prefix_len == 0 && r.gateway == Some(gw) && r.metric == Some(100))
        );
        link.index
    });
    assert_eq!(addresses(&ns, "ao0"), ["10.213.7.50/24 brd 10.213.7.255"]);
    assert_eq!(default_routes(&ns), ["10.213.7.1 ao0 100"]);

    ns.run_in(move || async move {
        let mut s = ConfigSocket::new().expect("socket");
        s.del_default_route(index, gw, 100).expect("route deleted");
        let again = s.del_default_route(index, gw, 100).expect_err("gone");
        assert!(again.is_not_found(), "{again}");
        s.del_ipv4_address(index, a, 24).expect("address deleted");
        let again = s.del_ipv4_address(index, a, 24).expect_err("gone");
        assert!(again.is_not_found(), "{again}");
        // A route through a gateway the interface cannot reach is refused, with the errno.
        let refused = s
            .replace_default_route(index, Ipv4Addr::new(10, 213, 8, 1), 100)
            .expect_err("unreachable gateway");
        assert!(!refused.is_not_found());
        assert!(
            refused.to_string().contains("add default route"),
            "{refused}"
        );
    });
    assert!(addresses(&ns, "ao0").is_empty(), "in {name}");
    assert!(default_routes(&ns).is_empty());
}
