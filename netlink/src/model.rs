//! The host interface model the netmon sidecar reports (upstream §7.3, field for field) and the
//! rule for which interfaces are the host's own network ports. Pure: built from a [`Snapshot`];
//! knows nothing of sockets or of how the model is framed on the wire.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::types::{Link, OperState, Snapshot};

/// One IPv4 address entry, keys in upstream order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Entry {
    pub address: Ipv4Addr,
    pub prefixlen: u8,
    /// Network in CIDR notation with host bits cleared, e.g. `192.168.1.0/24`.
    pub subnet: String,
    pub network_address: Ipv4Addr,
}

/// Why an interface is reported without addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The link exists but is not operational or has no IPv4 address.
    Down,
    /// The link is gone.
    Removed,
}

/// One interface as the sidecar reports it; keys in upstream order, `status` only on
/// down/removed reports (an extension of upstream, which sent nothing in that case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub interface: String,
    pub index: u32,
    pub operstate: String,
    pub ipv4_addresses: Vec<Ipv4Entry>,
    pub gateway: Option<Ipv4Addr>,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl InterfaceInfo {
    /// True when the interface is usable: operational with at least one IPv4 address.
    pub fn is_reportable(&self) -> bool {
        self.status.is_none()
    }

    /// Everything but the timestamp: two infos with the same state compare equal here.
    pub fn same_state(&self, other: &InterfaceInfo) -> bool {
        self.interface == other.interface
            && self.index == other.index
            && self.operstate == other.operstate
            && self.ipv4_addresses == other.ipv4_addresses
            && self.gateway == other.gateway
            && self.status == other.status
    }

    /// The report for an interface that disappeared.
    pub fn removed(name: &str, index: u32, timestamp: String) -> Self {
        InterfaceInfo {
            interface: name.to_owned(),
            index,
            operstate: OperState::NotPresent.as_str().to_owned(),
            ipv4_addresses: Vec::new(),
            gateway: None,
            timestamp,
            status: Some(Status::Removed),
        }
    }
}

/// The interface as it stands in `snap`: full info when operational with IPv4, otherwise an
/// empty address list with `status: down`. `None` when the link is not in the snapshot.
pub fn interface_info(snap: &Snapshot, index: u32, timestamp: &str) -> Option<InterfaceInfo> {
    let link = snap.link(index)?;
    let entries: Vec<Ipv4Entry> = snap
        .addresses_of(index)
        .map(|a| Ipv4Entry {
            address: a.address,
            prefixlen: a.prefix_len,
            subnet: a.subnet(),
            network_address: a.network(),
        })
        .collect();
    let usable = link.is_operational() && !entries.is_empty();
    Some(InterfaceInfo {
        interface: link.name.clone(),
        index,
        operstate: link.oper_state.as_str().to_owned(),
        ipv4_addresses: if usable { entries } else { Vec::new() },
        gateway: if usable { snap.gateway_of(index) } else { None },
        timestamp: timestamp.to_owned(),
        status: (!usable).then_some(Status::Down),
    })
}

/// Every reportable (operational, IPv4, not ignored) interface of the snapshot, in index order.
pub fn discover(snap: &Snapshot, filter: &Filter, timestamp: &str) -> Vec<InterfaceInfo> {
    let mut links: Vec<&Link> = snap
        .links
        .iter()
        .filter(|l| !filter.ignores(&l.name))
        .collect();
    links.sort_by_key(|l| l.index);
    links
        .into_iter()
        .filter_map(|l| interface_info(snap, l.index, timestamp))
        .filter(InterfaceInfo::is_reportable)
        .collect()
}

/// Which interface names are not the host's own network ports. Name rules only: tests (and
/// some real hosts) use veth links as ports, so the link kind alone decides nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    patterns: Vec<String>,
}

impl Filter {
    /// Upstream's rules (`lo`, `docker0`, `veth*`); Docker's user bridges are matched by
    /// `is_docker_bridge`, not by a `br-*` pattern, so host bridges such as OpenWrt's `br-lan`
    /// stay visible (a runtime's MACVLAN parent may be one).
    pub const DEFAULT_PATTERNS: [&'static str; 3] = ["lo", "docker0", "veth*"];

    /// The default rules plus `extra` glob patterns (`*` any run, `?` one character).
    pub fn new<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut patterns: Vec<String> = Self::DEFAULT_PATTERNS
            .iter()
            .map(|p| p.to_string())
            .collect();
        patterns.extend(extra.into_iter().map(Into::into));
        Filter { patterns }
    }

    pub fn ignores(&self, name: &str) -> bool {
        is_docker_bridge(name)
            || self
                .patterns
                .iter()
                .any(|p| glob_match(p.as_bytes(), name.as_bytes()))
    }
}

/// A Docker user-defined bridge: `br-` and the first 12 hex digits of the network id.
pub fn is_docker_bridge(name: &str) -> bool {
    name.strip_prefix("br-").is_some_and(|id| {
        id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new(std::iter::empty::<String>())
    }
}

/// Iterative glob match with backtracking on the last `*`: linear in practice, no recursion.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Now as ISO 8601 / RFC 3339 in UTC with microseconds and a `+00:00` offset. Upstream sent local
/// time without an offset, which no reader can place in time; `+00:00` rather than `Z` because
/// Python's `datetime.fromisoformat` before 3.11 (a likely reader) refuses `Z`.
pub fn timestamp_now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// `2025-11-20T20:30:45.123456+00:00`.
pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IFF_LOWER_UP, IFF_UP, Ipv4Address, Ipv4Route, MAIN_TABLE, NextHop};

    fn link(index: u32, name: &str, state: OperState, flags: u32) -> Link {
        Link {
            index,
            name: name.into(),
            oper_state: state,
            flags,
            mac: None,
            kind: None,
        }
    }

    fn addr(index: u32, a: [u8; 4], prefix_len: u8) -> Ipv4Address {
        Ipv4Address {
            index,
            address: Ipv4Addr::from(a),
            prefix_len,
        }
    }

    fn default_route(oif: Option<u32>, gw: Option<[u8; 4]>, metric: Option<u32>) -> Ipv4Route {
        Ipv4Route {
            table: MAIN_TABLE,
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            oif,
            gateway: gw.map(Ipv4Addr::from),
            metric,
            multipath: Vec::new(),
        }
    }

    #[test]
    fn info_serialises_with_upstream_keys_in_upstream_order() {
        let snap = Snapshot {
            links: vec![link(2, "ens37", OperState::Up, IFF_UP | IFF_LOWER_UP)],
            addresses: vec![addr(2, [192, 168, 1, 50], 24)],
            routes: vec![default_route(Some(2), Some([192, 168, 1, 1]), None)],
        };
        let info = interface_info(&snap, 2, "2025-11-20T20:30:45.123456Z").unwrap();
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"interface":"ens37","index":2,"operstate":"UP","ipv4_addresses":[{"address":"192.168.1.50","prefixlen":24,"subnet":"192.168.1.0/24","network_address":"192.168.1.0"}],"gateway":"192.168.1.1","timestamp":"2025-11-20T20:30:45.123456Z"}"#
        );
    }

    #[test]
    fn down_interface_is_reported_with_no_addresses_and_status_down() {
        let snap = Snapshot {
            links: vec![link(3, "eth1", OperState::Down, 0)],
            addresses: vec![addr(3, [10, 202, 0, 1], 24)],
            routes: vec![],
        };
        let info = interface_info(&snap, 3, "t").unwrap();
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"interface":"eth1","index":3,"operstate":"DOWN","ipv4_addresses":[],"gateway":null,"timestamp":"t","status":"down"}"#
        );
        let removed = InterfaceInfo::removed("eth1", 3, "t".into());
        assert_eq!(serde_json::to_value(&removed).unwrap()["status"], "removed");
    }

    #[test]
    fn unknown_operstate_with_carrier_counts_as_up() {
        let snap = Snapshot {
            links: vec![
                link(4, "wwan0", OperState::Unknown, IFF_UP | IFF_LOWER_UP),
                link(5, "tun0", OperState::Unknown, IFF_UP),
            ],
            addresses: vec![addr(4, [10, 202, 1, 2], 24), addr(5, [10, 202, 2, 2], 24)],
            routes: vec![],
        };
        assert!(interface_info(&snap, 4, "t").unwrap().is_reportable());
        assert!(!interface_info(&snap, 5, "t").unwrap().is_reportable());
    }

    #[test]
    fn gateway_comes_from_main_default_route_through_the_interface_including_multipath() {
        let mut multi = default_route(None, None, Some(50));
        multi.multipath = vec![
            NextHop {
                oif: Some(7),
                gateway: Some(Ipv4Addr::new(10, 202, 7, 1)),
            },
            NextHop {
                oif: Some(8),
                gateway: Some(Ipv4Addr::new(10, 202, 8, 1)),
            },
        ];
        let mut other_table = default_route(Some(6), Some([10, 202, 6, 9]), None);
        other_table.table = 100;
        let snap = Snapshot {
            links: vec![],
            addresses: vec![],
            routes: vec![
                other_table,
                default_route(Some(6), Some([10, 202, 6, 2]), Some(200)),
                default_route(Some(6), Some([10, 202, 6, 1]), Some(100)),
                multi,
            ],
        };
        assert_eq!(snap.gateway_of(6), Some(Ipv4Addr::new(10, 202, 6, 1)));
        assert_eq!(snap.gateway_of(8), Some(Ipv4Addr::new(10, 202, 8, 1)));
        assert_eq!(snap.gateway_of(9), None);
    }

    #[test]
    fn subnet_clears_host_bits() {
        let a = addr(1, [10, 202, 3, 77], 20);
        assert_eq!(a.subnet(), "10.202.0.0/20");
        assert_eq!(addr(1, [10, 0, 0, 1], 0).subnet(), "0.0.0.0/0");
        assert_eq!(addr(1, [10, 0, 0, 1], 32).subnet(), "10.0.0.1/32");
    }

    #[test]
    fn filter_ignores_upstream_names_docker_bridges_and_extra_patterns() {
        let f = Filter::new(["tap?", "wg*x"]);
        for name in [
            "lo",
            "docker0",
            "veth1234",
            "br-0a1b2c3d4e5f",
            "tap0",
            "wg-lanx",
        ] {
            assert!(f.ignores(name), "{name}");
        }
        // Host bridges that merely start with `br-` are ports (OpenWrt's `br-lan`).
        for name in [
            "eth0",
            "nm0",
            "ens37",
            "lo0",
            "docker1",
            "tap10",
            "wg0",
            "bridge0",
            "br-lan",
            "br-0a1b2c",
            "br-0A1B2C3D4E5F",
            "br-0a1b2c3d4e5f0",
        ] {
            assert!(!f.ignores(name), "{name}");
        }
    }

    #[test]
    fn discovery_lists_only_reportable_unfiltered_interfaces() {
        let up = IFF_UP | IFF_LOWER_UP;
        let snap = Snapshot {
            links: vec![
                link(1, "lo", OperState::Unknown, up),
                link(3, "eth1", OperState::Up, up),
                link(2, "eth0", OperState::Up, up),
                link(4, "veth9", OperState::Up, up),
                link(5, "eth2", OperState::Down, 0),
            ],
            addresses: vec![
                addr(1, [127, 0, 0, 1], 8),
                addr(2, [10, 202, 9, 1], 24),
                addr(3, [10, 202, 10, 1], 24),
                addr(4, [10, 202, 11, 1], 24),
                addr(5, [10, 202, 12, 1], 24),
            ],
            routes: vec![],
        };
        let names: Vec<String> = discover(&snap, &Filter::default(), "t")
            .into_iter()
            .map(|i| i.interface)
            .collect();
        assert_eq!(names, ["eth0", "eth1"]);
    }

    #[test]
    fn timestamp_is_utc_with_microseconds_and_z() {
        let t = time::macros::datetime!(2025-11-20 20:30:45.123456789 +02:00);
        assert_eq!(format_timestamp(t), "2025-11-20T18:30:45.123456+00:00");
    }
}
