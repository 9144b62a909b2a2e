//! What each interface was last reported as, and which reports a fresh snapshot calls for.
//! Pure: fed snapshots and events by the daemon, returns the infos to send. Holds the only
//! copy of the reported state (one owner: the daemon task).

use std::collections::{BTreeSet, HashMap};

use netlink::{Event, Snapshot};
use netmon_proto::InterfaceInfo;

use crate::model::{self, Filter, interface_info};

#[derive(Debug)]
pub struct Tracker {
    filter: Filter,
    /// Last state per interface index (reportable or down); absent = never seen or removed.
    last: HashMap<u32, InterfaceInfo>,
    /// Names of links we have seen, so a link that vanished can still be named.
    names: HashMap<u32, String>,
}

impl Tracker {
    pub fn new(filter: Filter) -> Self {
        Tracker {
            filter,
            last: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// Takes `snap` as the state clients already know (it is what discovery sends them).
    pub fn set_baseline(&mut self, snap: &Snapshot, timestamp: &str) {
        self.last.clear();
        self.names.clear();
        for link in &snap.links {
            self.names.insert(link.index, link.name.clone());
            if let Some(info) = interface_info(snap, link.index, timestamp) {
                self.last.insert(link.index, info);
            }
        }
    }

    /// Remembers link names from events (a removed link is absent from the next dump).
    pub fn note(&mut self, event: &Event) {
        if let Event::LinkChanged(l) | Event::LinkRemoved(l) = event
            && !l.name.is_empty()
        {
            self.names.insert(l.index, l.name.clone());
        }
    }

    /// The name of interface `index`, when known.
    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.names.get(&index).map(String::as_str)
    }

    /// Every interface index known from the last snapshot or events (for a full resync).
    pub fn known(&self) -> BTreeSet<u32> {
        self.names.keys().chain(self.last.keys()).copied().collect()
    }

    /// What a new client is told: every link of `snap` whose name is not ignored, in index
    /// order — usable ones with their addresses and gateway, the others (down, or up without
    /// IPv4) with `ipv4_addresses: []` and `status: "down"`, so a client knows which interfaces
    /// the host has, not only which have a subnet (the agent refuses runtimes on a parent the
    /// host does not have).
    pub fn discovery(&self, snap: &Snapshot, timestamp: &str) -> Vec<InterfaceInfo> {
        let mut links: Vec<_> = snap
            .links
            .iter()
            .filter(|l| !self.filter.ignores(&l.name))
            .collect();
        links.sort_by_key(|l| l.index);
        links
            .iter()
            .filter_map(|l| interface_info(snap, l.index, timestamp))
            .collect()
    }

    /// The reports `dirty` interfaces call for, given the fresh `snap`. Clients know every link
    /// ([`Tracker::discovery`]), so one is reported when it appears (in whatever state), when a
    /// usable one changes state, when it becomes usable or stops being usable
    /// (`ipv4_addresses: []` with `status: "down"`), and when it is removed (`status:
    /// "removed"`). An unusable link that stays unusable is not reported again (its operstate
    /// moving between DOWN and LOWERLAYERDOWN tells a client nothing). Ignored names never appear.
    pub fn changes(
        &mut self,
        snap: &Snapshot,
        dirty: &[u32],
        timestamp: &str,
    ) -> Vec<InterfaceInfo> {
        let mut out = Vec::new();
        for &index in dirty {
            let name = match snap.link(index) {
                Some(l) => l.name.clone(),
                None => match self
                    .names
                    .get(&index)
                    .or(self.last.get(&index).map(|i| &i.interface))
                {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            let current = interface_info(snap, index, timestamp)
                .unwrap_or_else(|| model::removed(&name, index, timestamp));
            let previous = self.last.get(&index);
            // A renamed interface: the old name is gone as far as clients can tell.
            if let Some(p) = previous
                && p.interface != name
                && !self.filter.ignores(&p.interface)
            {
                out.push(model::removed(&p.interface, index, timestamp));
            }
            let previous = previous.filter(|p| p.interface == name);
            let report = match previous {
                // New to clients: worth a line unless it vanished before anyone saw it.
                None => snap.link(index).is_some(),
                Some(p) if p.is_reportable() || current.is_reportable() => !p.same_state(&current),
                Some(p) => p.status != current.status,
            };
            if report && !self.filter.ignores(&name) {
                out.push(current.clone());
            }
            if snap.link(index).is_some() {
                self.names.insert(index, name);
                self.last.insert(index, current);
            } else {
                self.names.remove(&index);
                self.last.remove(&index);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink::{IFF_LOWER_UP, IFF_UP, Ipv4Address, Ipv4Route, Link, MAIN_TABLE, OperState};
    use netmon_proto::InterfaceStatus;

    use super::*;

    fn snap(
        links: &[(u32, &str, bool)],
        addrs: &[(u32, [u8; 4], u8)],
        gws: &[(u32, [u8; 4])],
    ) -> Snapshot {
        Snapshot {
            links: links
                .iter()
                .map(|&(index, name, up)| Link {
                    index,
                    name: name.into(),
                    oper_state: if up { OperState::Up } else { OperState::Down },
                    flags: if up { IFF_UP | IFF_LOWER_UP } else { 0 },
                    mac: None,
                    kind: None,
                    alias: None,
                })
                .collect(),
            addresses: addrs
                .iter()
                .map(|&(index, a, prefix_len)| Ipv4Address {
                    index,
                    address: Ipv4Addr::from(a),
                    prefix_len,
                })
                .collect(),
            routes: gws
                .iter()
                .map(|&(oif, gw)| Ipv4Route {
                    table: MAIN_TABLE,
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    oif: Some(oif),
                    gateway: Some(Ipv4Addr::from(gw)),
                    metric: None,
                    multipath: Vec::new(),
                })
                .collect(),
        }
    }

    fn tracker_with(base: &Snapshot) -> Tracker {
        let mut t = Tracker::new(Filter::default());
        t.set_baseline(base, "t0");
        t
    }

    #[test]
    fn new_subnet_is_reported_once_and_unchanged_state_not_again() {
        let base = snap(&[(2, "eth0", true)], &[(2, [10, 202, 0, 5], 24)], &[]);
        let mut t = tracker_with(&base);
        assert!(t.changes(&base, &[2], "t1").is_empty());
        let moved = snap(
            &[(2, "eth0", true)],
            &[(2, [10, 202, 1, 5], 24)],
            &[(2, [10, 202, 1, 1])],
        );
        let out = t.changes(&moved, &[2], "t2");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ipv4_addresses[0].subnet, "10.202.1.0/24");
        assert_eq!(out[0].gateway.as_deref(), Some("10.202.1.1"));
        assert!(t.changes(&moved, &[2], "t3").is_empty());
    }

    #[test]
    fn gateway_only_change_is_reported() {
        let base = snap(
            &[(2, "eth0", true)],
            &[(2, [10, 202, 0, 5], 24)],
            &[(2, [10, 202, 0, 1])],
        );
        let mut t = tracker_with(&base);
        let gw = snap(
            &[(2, "eth0", true)],
            &[(2, [10, 202, 0, 5], 24)],
            &[(2, [10, 202, 0, 2])],
        );
        let out = t.changes(&gw, &[2], "t1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gateway.as_deref(), Some("10.202.0.2"));
    }

    #[test]
    fn losing_the_last_address_down_and_removal_are_reported_once_with_status() {
        let base = snap(
            &[(2, "eth0", true), (3, "eth1", true)],
            &[(2, [10, 202, 0, 5], 24), (3, [10, 202, 3, 5], 24)],
            &[],
        );
        let mut t = tracker_with(&base);
        let after = snap(
            &[(2, "eth0", true), (3, "eth1", false)],
            &[(3, [10, 202, 3, 5], 24)],
            &[],
        );
        let out = t.changes(&after, &[2, 3], "t1");
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|i| i.ipv4_addresses.is_empty() && i.status == Some(InterfaceStatus::Down))
        );
        assert!(t.changes(&after, &[2, 3], "t2").is_empty());

        let mut t = tracker_with(&base);
        let gone = snap(&[(2, "eth0", true)], &[(2, [10, 202, 0, 5], 24)], &[]);
        let out = t.changes(&gone, &[3], "t1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].interface, "eth1");
        assert_eq!(out[0].status, Some(InterfaceStatus::Removed));
        assert!(t.changes(&gone, &[3], "t2").is_empty());
    }

    #[test]
    fn never_usable_interfaces_and_ignored_names_produce_nothing() {
        let base = snap(&[(2, "eth0", false)], &[], &[]);
        let mut t = tracker_with(&base);
        let now = snap(
            &[
                (2, "eth0", false),
                (4, "veth1", true),
                (5, "br-0a1b2c3d4e5f", true),
            ],
            &[(4, [10, 202, 4, 1], 24), (5, [10, 202, 5, 1], 24)],
            &[],
        );
        assert!(t.changes(&now, &[2, 4, 5, 99], "t1").is_empty());
    }

    #[test]
    fn a_renamed_interface_is_reported_removed_under_its_old_name_and_new_under_the_new() {
        let base = snap(&[(2, "eth0", true)], &[(2, [10, 202, 0, 5], 24)], &[]);
        let mut t = tracker_with(&base);
        let renamed = snap(&[(2, "lan0", true)], &[(2, [10, 202, 0, 5], 24)], &[]);
        let out = t.changes(&renamed, &[2], "t1");
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            (out[0].interface.as_str(), out[0].status),
            ("eth0", Some(InterfaceStatus::Removed))
        );
        assert_eq!((out[1].interface.as_str(), out[1].status), ("lan0", None));
    }

    #[test]
    fn discovery_lists_every_link_not_ignored_unusable_ones_as_down() {
        let now = snap(
            &[
                (2, "eth0", true),
                (3, "eth1", false),
                (4, "veth1", true),
                (5, "eth2", true),
            ],
            &[(2, [10, 202, 0, 5], 24), (4, [10, 202, 4, 1], 24)],
            &[],
        );
        let t = tracker_with(&now);
        let d = t.discovery(&now, "t0");
        let shape: Vec<(&str, usize, Option<InterfaceStatus>)> = d
            .iter()
            .map(|i| (i.interface.as_str(), i.ipv4_addresses.len(), i.status))
            .collect();
        assert_eq!(
            shape,
            [
                ("eth0", 1, None),
                ("eth1", 0, Some(InterfaceStatus::Down)),
                ("eth2", 0, Some(InterfaceStatus::Down))
            ]
        );
    }

    #[test]
    fn a_new_link_without_an_address_is_reported_down_and_its_removal_is_reported() {
        let base = snap(&[(2, "eth0", true)], &[(2, [10, 202, 0, 5], 24)], &[]);
        let mut t = tracker_with(&base);
        let plugged = snap(
            &[(2, "eth0", true), (6, "usb0", false)],
            &[(2, [10, 202, 0, 5], 24)],
            &[],
        );
        let out = t.changes(&plugged, &[6], "t1");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].interface.as_str(), out[0].status),
            ("usb0", Some(InterfaceStatus::Down))
        );
        // Carrier comes up, still without an address: unusable before and after, not reported.
        let carrier = snap(
            &[(2, "eth0", true), (6, "usb0", true)],
            &[(2, [10, 202, 0, 5], 24)],
            &[],
        );
        assert!(t.changes(&carrier, &[6], "t2").is_empty());
        let out = t.changes(&base, &[6], "t3");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].interface.as_str(), out[0].status),
            ("usb0", Some(InterfaceStatus::Removed))
        );
        // A link created and deleted between two looks was never seen: nothing to say.
        assert!(t.changes(&base, &[7], "t4").is_empty());
    }

    #[test]
    fn a_link_that_comes_up_with_an_address_is_reported() {
        let base = snap(&[], &[], &[]);
        let mut t = tracker_with(&base);
        t.note(&Event::LinkChanged(Link {
            index: 7,
            name: "nm7".into(),
            oper_state: OperState::Down,
            flags: 0,
            mac: None,
            kind: None,
            alias: None,
        }));
        let now = snap(&[(7, "nm7", true)], &[(7, [10, 202, 7, 1], 24)], &[]);
        let out = t.changes(&now, &[7], "t1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].interface, "nm7");
        assert_eq!(out[0].status, None);
    }
}
