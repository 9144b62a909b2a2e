//! Host links the tests make: veth pairs in the root namespace (Docker's MACVLAN parents live in the
//! engine's namespace) with an address in 10.203.0.0/16, the runtime tests' range, never in a subnet
//! the machine already routes. Deleted on drop.
//!
//! Octets: 0-119 are handed out by [`Veth::new`]; 120-127 are never put on a link (tests use them
//! for parents that do not exist); 128-255 are chosen by the tests that need fixed subnets
//! ([`Veth::named`]), a distinct one per test.

use std::sync::atomic::{AtomicU32, Ordering};

use super::unique;
use test_support::{Netns, run, run_try};

/// Runs `ip <args>`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

/// The machine's IPv4 routes (all tables), to keep test subnets off the ones it uses.
fn routes() -> String {
    run("ip", &["-4", "route", "show", "table", "all"])
}

/// A veth pair in the root namespace: `<name>` (the MACVLAN parent, with `10.203.<octet>.1/24`) and
/// `<name>p`, both up; the pair is deleted on drop.
pub struct Veth {
    pub name: String,
    pub octet: u8,
}

impl Veth {
    /// A pair with a unique name on a free subnet among 10.203.0-119.0/24.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let routes = routes();
        let base = std::process::id() % 120;
        for _ in 0..120 {
            let octet = ((base + NEXT.fetch_add(1, Ordering::Relaxed)) % 120) as u8;
            if !routes.contains(&format!("10.203.{octet}.")) {
                return Self::create(&unique("rv"), octet);
            }
        }
        panic!("no free 10.203.x.0/24 subnet");
    }

    /// The pair `<name>`/`<name>p` with `10.203.<octet>.1/24` (`octet` ≥ 128); panics when the machine
    /// already routes that subnet.
    pub fn named(name: &str, octet: u8) -> Self {
        assert!(octet >= 128, "10.203.{octet}.0/24 is not for fixed subnets");
        assert!(
            !routes().contains(&format!("10.203.{octet}.")),
            "10.203.{octet}.0/24 is in use on this machine (a leftover test link?)"
        );
        Self::create(name, octet)
    }

    fn create(name: &str, octet: u8) -> Self {
        assert!(name.len() <= 14, "veth name {name} too long");
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        let veth = Veth {
            name: name.to_owned(),
            octet,
        };
        ip(&["link", "set", &peer, "up"]);
        ip(&["link", "set", name, "up"]);
        ip(&["addr", "add", &format!("{}/24", veth.addr(1)), "dev", name]);
        veth
    }

    /// `10.203.<octet>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.203.{}.0/24", self.octet)
    }

    /// `10.203.<octet>.<host>`.
    pub fn addr(&self, host: u8) -> String {
        format!("10.203.{}.{host}", self.octet)
    }

    /// Moves the far end (`<name>p`) into `ns` with `addr` (`a.b.c.d/len`) and up, as a LAN host
    /// or server at the other end of the parent; returns its name.
    pub fn move_peer(&self, ns: &Netns, addr: &str) -> String {
        let peer = format!("{}p", self.name);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ns.ip(&["addr", "add", addr, "dev", &peer]);
        ns.ip(&["link", "set", &peer, "up"]);
        peer
    }

    /// The MACVLAN network name the agent gives this parent's subnet.
    pub fn macvlan(&self) -> String {
        format!("macvlan_{}_10.203.{}.0_24", self.name, self.octet)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = run_try("ip", &["link", "del", &self.name]);
    }
}
