//! Snapshot and event tests against the real kernel, inside network namespaces the tests create
//! (veth pairs only; addresses from 10.202.0.0/16; nothing leaves the namespace).

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use netlink::{Event, EventStream, RouteSocket, Snapshot};
use test_support::Netns;

/// Two veth pairs: nm0/nm1 up with addresses and a default route via nm0, nm2/nm3 down.
fn fixture(ns: &Netns) {
    ns.ip(&["link", "add", "nm0", "type", "veth", "peer", "name", "nm1"]);
    ns.ip(&["link", "add", "nm2", "type", "veth", "peer", "name", "nm3"]);
    ns.ip(&["addr", "add", "10.202.1.1/24", "dev", "nm0"]);
    ns.ip(&["addr", "add", "10.202.1.77/28", "dev", "nm0"]);
    ns.ip(&["addr", "add", "10.202.2.1/24", "dev", "nm1"]);
    ns.ip(&["addr", "add", "10.202.3.1/24", "dev", "nm2"]);
    ns.ip(&["link", "set", "nm0", "up"]);
    ns.ip(&["link", "set", "nm1", "up"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.202.1.254",
        "dev",
        "nm0",
    ]);
}

fn snapshot_in(ns: &Netns) -> Snapshot {
    ns.run_in(|| async {
        let mut sock = RouteSocket::new().expect("netlink socket");
        sock.snapshot().await.expect("snapshot")
    })
}

#[test]
fn snapshot_matches_ip_json_output() {
    let ns = Netns::new("nlt");
    fixture(&ns);
    let snap = snapshot_in(&ns);

    let mut want_links = BTreeSet::new();
    for l in ns.ip_json(&["link"]).as_array().expect("array") {
        want_links.insert((
            l["ifindex"].as_u64().expect("ifindex") as u32,
            l["ifname"].as_str().expect("ifname").to_owned(),
            l["operstate"].as_str().expect("operstate").to_owned(),
            l["address"].as_str().map(str::to_owned),
        ));
    }
    let got_links: BTreeSet<_> = snap
        .links
        .iter()
        .map(|l| {
            (
                l.index,
                l.name.clone(),
                l.oper_state.as_str().to_owned(),
                l.mac_string(),
            )
        })
        .collect();
    assert_eq!(got_links, want_links);
    let nm0 = snap.link_by_name("nm0").expect("nm0");
    assert_eq!(nm0.kind.as_deref(), Some("veth"));
    assert!(nm0.is_operational());
    assert!(!snap.link_by_name("nm2").expect("nm2").is_operational());

    let mut want_addrs = BTreeSet::new();
    for l in ns.ip_json(&["-4", "addr"]).as_array().expect("array") {
        for a in l["addr_info"].as_array().expect("addr_info") {
            want_addrs.insert((
                l["ifindex"].as_u64().expect("ifindex") as u32,
                a["local"]
                    .as_str()
                    .expect("local")
                    .parse::<Ipv4Addr>()
                    .expect("ip"),
                a["prefixlen"].as_u64().expect("prefixlen") as u8,
            ));
        }
    }
    let got_addrs: BTreeSet<_> = snap
        .addresses
        .iter()
        .map(|a| (a.index, a.address, a.prefix_len))
        .collect();
    assert_eq!(got_addrs, want_addrs);

    let mut want_routes = BTreeSet::new();
    for r in ns
        .ip_json(&["-4", "route", "show", "table", "main"])
        .as_array()
        .expect("array")
    {
        let dst = r["dst"].as_str().expect("dst");
        let (dst, len) = match dst {
            "default" => (Ipv4Addr::UNSPECIFIED, 0),
            d => match d.split_once('/') {
                Some((a, l)) => (a.parse().expect("dst"), l.parse().expect("len")),
                None => (d.parse().expect("dst"), 32),
            },
        };
        let dev = r["dev"].as_str().expect("dev");
        let oif = snap.link_by_name(dev).expect("route dev").index;
        let gw = r["gateway"]
            .as_str()
            .map(|g| g.parse::<Ipv4Addr>().expect("gw"));
        want_routes.insert((dst, len, Some(oif), gw));
    }
    let got_routes: BTreeSet<_> = snap
        .routes
        .iter()
        .map(|r| (r.destination, r.prefix_len, r.oif, r.gateway))
        .collect();
    assert_eq!(got_routes, want_routes);
    assert_eq!(
        snap.gateway_of(nm0.index),
        Some(Ipv4Addr::new(10, 202, 1, 254))
    );
}

#[test]
fn multipath_default_route_gives_each_interface_its_gateway() {
    let ns = Netns::new("nlt");
    ns.ip(&["link", "add", "nm0", "type", "veth", "peer", "name", "nm1"]);
    ns.ip(&["addr", "add", "10.202.4.1/24", "dev", "nm0"]);
    ns.ip(&["addr", "add", "10.202.5.1/24", "dev", "nm1"]);
    ns.ip(&["link", "set", "nm0", "up"]);
    ns.ip(&["link", "set", "nm1", "up"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "nexthop",
        "via",
        "10.202.4.254",
        "dev",
        "nm0",
        "nexthop",
        "via",
        "10.202.5.254",
        "dev",
        "nm1",
    ]);
    let snap = snapshot_in(&ns);
    let nm0 = snap.link_by_name("nm0").expect("nm0").index;
    let nm1 = snap.link_by_name("nm1").expect("nm1").index;
    assert_eq!(snap.gateway_of(nm0), Some(Ipv4Addr::new(10, 202, 4, 254)));
    assert_eq!(snap.gateway_of(nm1), Some(Ipv4Addr::new(10, 202, 5, 254)));
}

/// Reads events until `pred` matches one (or fails after a generous timeout).
async fn wait_for(stream: &mut EventStream, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} event within 10 s"))
            .expect("event stream");
        if let Some(e) = events.into_iter().find(|e| pred(e)) {
            return e;
        }
    }
}

#[test]
fn event_stream_reports_address_route_and_link_changes() {
    let ns = Netns::new("nlt");
    ns.ip(&["link", "add", "nm0", "type", "veth", "peer", "name", "nm1"]);
    ns.ip(&["link", "set", "nm0", "up"]);
    ns.ip(&["link", "set", "nm1", "up"]);
    let name = ns.name.clone();
    let ip = move |args: &[&str]| {
        let mut full = vec!["-n", name.as_str()];
        full.extend_from_slice(args);
        test_support::run("ip", &full);
    };
    ns.run_in(move || async move {
        let mut stream = EventStream::subscribe().expect("subscribe");
        ip(&["addr", "add", "10.202.6.1/24", "dev", "nm0"]);
        let e = wait_for(
            &mut stream,
            "address added",
            |e| matches!(e, Event::AddressAdded(a) if a.address == Ipv4Addr::new(10, 202, 6, 1)),
        )
        .await;
        let Event::AddressAdded(a) = e else {
            unreachable!()
        };
        assert_eq!(a.prefix_len, 24);
        let index = a.index;

        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.202.6.254",
            "dev",
            "nm0",
        ]);
        let e = wait_for(
            &mut stream,
            "default route",
            |e| matches!(e, Event::RouteAdded(r) if r.is_main_default()),
        )
        .await;
        assert_eq!(e.interfaces(), vec![index]);

        ip(&["addr", "del", "10.202.6.1/24", "dev", "nm0"]);
        wait_for(
            &mut stream,
            "address removed",
            |e| matches!(e, Event::AddressRemoved(a) if a.index == index),
        )
        .await;

        ip(&["link", "del", "nm0"]);
        wait_for(
            &mut stream,
            "link removed",
            |e| matches!(e, Event::LinkRemoved(l) if l.index == index && l.name == "nm0"),
        )
        .await;
    });
}

#[test]
fn an_overrun_receive_queue_asks_for_a_resync_instead_of_losing_changes_silently() {
    let ns = Netns::new("nlt");
    ns.ip(&["link", "add", "nm0", "type", "veth", "peer", "name", "nm1"]);
    let name = ns.name.clone();
    ns.run_in(move || async move {
        // The smallest queue the kernel allows, then far more changes than fit, unread.
        let mut stream = EventStream::subscribe_with_queue(1).expect("subscribe");
        let batch: String = (1..=200)
            .map(|h| format!("addr add 10.202.9.{h}/24 dev nm0\n"))
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", &name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("ip -batch");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), batch.as_bytes())
            .expect("write batch");
        assert!(child.wait().expect("ip -batch").success());
        wait_for(&mut stream, "resync", |e| *e == Event::Resync).await;
    });
}
