//! `LinkOps::set_address` against the real kernel, inside a network namespace the test creates
//! (a veth pair and two MACVLAN links on it; no addresses, nothing leaves the namespace).

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use netlink::{Error, LinkOps};
use test_support::Netns;

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.ip_json(&["link", "show", "dev", dev])[0]["address"]
        .as_str()
        .expect("address")
        .to_owned()
}

fn set(ns: &Netns, dev: &'static str, mac: [u8; 6]) -> Result<(), Error> {
    ns.run_in(move || async move {
        let mut ops = LinkOps::new()?;
        let index = ops.index_of(dev)?.expect("link exists");
        ops.set_address(index, mac)
    })
}

#[test]
fn a_live_macvlan_takes_a_new_mac_and_one_its_sibling_uses_is_refused() {
    let ns = Netns::new("lat");
    ns.veth("la0", "la1");
    for (name, mac) in [
        ("lamv0", "02:5a:00:00:00:01"),
        ("lamv1", "02:5a:00:00:00:02"),
    ] {
        ns.ip(&[
            "link", "add", "link", "la0", "name", name, "address", mac, "type", "macvlan", "mode",
            "bridge",
        ]);
        ns.ip(&["link", "set", name, "up"]);
    }

    // Up, with carrier: no down/up needed around the change.
    set(&ns, "lamv0", [0x02, 0x5a, 0, 0, 0, 0x10]).expect("live change");
    assert_eq!(mac_of(&ns, "lamv0"), "02:5a:00:00:00:10");
    let up = ns.ip_json(&["link", "show", "dev", "lamv0"])[0]["flags"].clone();
    assert!(up.as_array().unwrap().iter().any(|f| f == "UP"), "{up}");

    // The parent's other MACVLAN has that MAC: the kernel refuses, nothing changes.
    let e = set(&ns, "lamv0", [0x02, 0x5a, 0, 0, 0, 0x02]).expect_err("address in use");
    assert!(
        matches!(e, Error::Kernel { code, .. } if code == -libc::EADDRINUSE),
        "{e}"
    );
    assert_eq!(mac_of(&ns, "lamv0"), "02:5a:00:00:00:10");

    // A multicast address is refused by the kernel too.
    let e = set(&ns, "lamv0", [0x03, 0x5a, 0, 0, 0, 0x10]).expect_err("multicast");
    assert!(matches!(e, Error::Kernel { .. }), "{e}");
}
