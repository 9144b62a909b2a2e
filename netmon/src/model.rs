//! How a netlink [`Snapshot`] is reported on the socket: the interface as netmon describes it
//! ([`interface_info`], [`removed`]; the wire shape is `netmon_proto`'s) and which interfaces are
//! not the host's own network ports ([`Filter`]). Pure but for [`interface_type`], which looks
//! at sysfs as the original does.

use std::path::Path;

use netlink::{OperState, Snapshot};
use netmon_proto::{InterfaceInfo, InterfaceStatus, InterfaceType, Ipv4Entry};

/// Where the kernel shows this network namespace's interfaces (the namespace of whoever mounted
/// sysfs: `ip netns exec` mounts its own).
const SYS_CLASS_NET: &str = "/sys/class/net";

/// `wifi` or `ethernet` as the original decides it (upstream-head §5.1): a `wireless` or
/// `phy80211` entry under `<sysfs>/<name>`, else the name rule.
pub fn interface_type(sysfs: &Path, name: &str) -> InterfaceType {
    let dir = sysfs.join(name);
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        InterfaceType::Wifi
    } else {
        InterfaceType::from_name(name)
    }
}

/// The interface as it stands in `snap`: full info when operational with IPv4, otherwise an
/// empty address list with `status: down`. `None` when the link is not in the snapshot.
pub fn interface_info(snap: &Snapshot, index: u32, timestamp: &str) -> Option<InterfaceInfo> {
    let link = snap.link(index)?;
    let entries: Vec<Ipv4Entry> = snap
        .addresses_of(index)
        .map(|a| Ipv4Entry {
            address: a.address.to_string(),
            prefixlen: a.prefix_len,
            subnet: a.subnet(),
            network_address: a.network().to_string(),
        })
        .collect();
    let usable = link.is_operational() && !entries.is_empty();
    Some(InterfaceInfo {
        interface: link.name.clone(),
        index: Some(index),
        operstate: Some(link.oper_state.as_str().to_owned()),
        kind: Some(interface_type(Path::new(SYS_CLASS_NET), &link.name)),
        ipv4_addresses: if usable { entries } else { Vec::new() },
        gateway: if usable {
            snap.gateway_of(index).map(|g| g.to_string())
        } else {
            None
        },
        timestamp: Some(timestamp.to_owned()),
        status: (!usable).then_some(InterfaceStatus::Down),
        mac_address: link.mac_string(),
    })
}

/// The report for an interface that disappeared.
pub fn removed(name: &str, index: u32, timestamp: &str) -> InterfaceInfo {
    InterfaceInfo {
        interface: name.to_owned(),
        index: Some(index),
        operstate: Some(OperState::NotPresent.as_str().to_owned()),
        kind: None,
        ipv4_addresses: Vec::new(),
        gateway: None,
        timestamp: Some(timestamp.to_owned()),
        status: Some(InterfaceStatus::Removed),
        mac_address: None,
    }
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink::{IFF_LOWER_UP, IFF_UP, Ipv4Address, Ipv4Route, Link, MAIN_TABLE};

    use super::*;

    fn link(index: u32, name: &str, state: OperState, flags: u32) -> Link {
        Link {
            index,
            name: name.into(),
            oper_state: state,
            flags,
            mac: None,
            kind: None,
            alias: None,
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
            r#"{"interface":"ens37","index":2,"operstate":"UP","type":"ethernet","ipv4_addresses":[{"address":"192.168.1.50","prefixlen":24,"subnet":"192.168.1.0/24","network_address":"192.168.1.0"}],"gateway":"192.168.1.1","timestamp":"2025-11-20T20:30:45.123456Z"}"#
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
            r#"{"interface":"eth1","index":3,"operstate":"DOWN","type":"ethernet","ipv4_addresses":[],"gateway":null,"timestamp":"t","status":"down"}"#
        );
        let removed = removed("eth1", 3, "t");
        assert_eq!(serde_json::to_value(&removed).unwrap()["status"], "removed");
        assert_eq!(removed.operstate.as_deref(), Some("NOTPRESENT"));
    }

    #[test]
    fn type_is_wifi_by_sysfs_or_by_name_and_the_mac_is_reported() {
        let sysfs = std::env::temp_dir().join(format!("nm-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(sysfs.join("radio0/phy80211")).unwrap();
        std::fs::create_dir_all(sysfs.join("radio1/wireless")).unwrap();
        std::fs::create_dir_all(sysfs.join("eth0")).unwrap();
        assert_eq!(interface_type(&sysfs, "radio0"), InterfaceType::Wifi);
        assert_eq!(interface_type(&sysfs, "radio1"), InterfaceType::Wifi);
        assert_eq!(interface_type(&sysfs, "eth0"), InterfaceType::Ethernet);
        for name in ["wlan0", "wlp2s0", "wlx001122334455"] {
            assert_eq!(interface_type(&sysfs, name), InterfaceType::Wifi, "{name}");
        }
        std::fs::remove_dir_all(&sysfs).unwrap();

        let mut port = link(2, "ens37", OperState::Up, IFF_UP | IFF_LOWER_UP);
        port.mac = Some(vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x0a]);
        let snap = Snapshot {
            links: vec![port],
            addresses: vec![],
            routes: vec![],
        };
        let info = interface_info(&snap, 2, "t").unwrap();
        assert_eq!(info.mac_address.as_deref(), Some("02:42:ac:11:00:0a"));
        assert_eq!(info.kind, Some(InterfaceType::Ethernet));
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
}
