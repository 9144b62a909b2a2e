//! The pure core of re-homing: given the new state of one parent interface, the runtimes with a
//! vNIC on it (their vNICs and current endpoints) and the MACVLAN networks on that parent, decide
//! what to disconnect, remove, create and connect — and how to update the persisted vNIC objects.
//! No I/O; unit-tested here and fed by the fuzzers.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::netevents::InterfaceInfo;
use crate::runtime::naming;
use crate::runtime::net::{Ipv4Net, MacAddr};
pub use crate::runtime::vnic::PersistedVnic;
use netmon_proto::InterfaceStatus;

/// The state of a parent interface after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentState {
    /// Up with an IPv4 subnet (the first address's, as the original cache kept it).
    Up {
        /// The subnet, host bits cleared.
        subnet: Ipv4Net,
        /// The default gateway through this interface, if any.
        gateway: Option<Ipv4Addr>,
    },
    /// Down, removed, or without IPv4: nothing to attach to; runtimes are left as they are.
    Down {
        /// Why, for the device status, read after "is": `down`, `removed`, or
        /// [`WITHOUT_IPV4`].
        reason: String,
    },
}

/// The [`ParentState::Down`] reason of an interface that is up but has no IPv4 address.
pub const WITHOUT_IPV4: &str = "without an IPv4 address";

impl ParentState {
    /// Reads netmon's view of an interface (`None`: the interface is gone).
    pub fn from_info(info: Option<&InterfaceInfo>) -> Self {
        let Some(info) = info else {
            return ParentState::Down {
                reason: "removed".into(),
            };
        };
        if let Some(status) = info
            .status
            .filter(|s| matches!(s, InterfaceStatus::Down | InterfaceStatus::Removed))
        {
            // netmon says "down" for any unusable link; one that is up merely lacks an address.
            let up = matches!(info.operstate.as_deref(), Some("UP" | "UNKNOWN"));
            let reason = if status == InterfaceStatus::Down && up {
                WITHOUT_IPV4
            } else {
                status.as_str()
            };
            return ParentState::Down {
                reason: reason.to_string(),
            };
        }
        let subnet = info
            .subnet()
            .and_then(|s| s.parse::<Ipv4Net>().ok())
            .or_else(|| {
                let first = info.ipv4_addresses.first()?;
                Ipv4Net::new(first.address.parse().ok()?, first.prefixlen)
            });
        match subnet {
            Some(s) => ParentState::Up {
                subnet: s.network(),
                gateway: info.gateway.as_deref().and_then(|g| g.parse().ok()),
            },
            None => ParentState::Down {
                reason: WITHOUT_IPV4.into(),
            },
        }
    }
}

/// One endpoint of a runtime container (from container inspect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// Network name.
    pub network: String,
    /// Current IPv4 address (none while stopped on some engines).
    pub ip: Option<Ipv4Addr>,
    /// Current MAC address.
    pub mac: Option<MacAddr>,
}

/// A runtime with a vNIC on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeView {
    /// Runtime (container) name.
    pub name: String,
    /// Its persisted vNICs.
    pub vnics: Vec<PersistedVnic>,
    /// Its current endpoints (all networks).
    pub endpoints: Vec<EndpointView>,
}

/// A MACVLAN network on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanView {
    /// Name.
    pub name: String,
    /// `Options.parent`.
    pub parent: String,
    /// IPAM subnets, host bits cleared.
    pub subnets: Vec<Ipv4Net>,
    /// Names of the attached containers.
    pub containers: Vec<String>,
    /// Ours to remove: carries this agent's labels, or is an unlabelled network named by the
    /// upstream convention (`macvlan_<parent>_<subnet>`, made by the Python agent we replaced).
    pub removable: bool,
}

/// The network the runtimes move to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `macvlan_<if>_<a.b.c.d>_<prefix>`.
    pub network: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// Connecting one runtime to the target network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Runtime name.
    pub runtime: String,
    /// The vNIC (index in the persisted array).
    pub vnic_index: usize,
    /// The address to request; `None` lets Docker's IPAM choose.
    pub ip: Option<Ipv4Addr>,
    /// The MAC to request (only when the engine honours it on connect).
    pub mac: Option<MacAddr>,
    /// The MAC the endpoint should end up with (configured, else the current one); checked after
    /// the connect.
    pub keep_mac: Option<MacAddr>,
    /// `Some(old)` when a configured static IP had to be given up (outside the new subnet): the
    /// persisted address is replaced by the one Docker assigns.
    pub replaces_static_ip: Option<Ipv4Addr>,
    /// What could not be kept, for the device status.
    pub warnings: Vec<String>,
    /// The old network and address, to go back to when the new network cannot be made.
    pub previous: Option<(String, Option<Ipv4Addr>)>,
}

/// What to do for one interface change. Executed in this order: disconnect, remove, get-or-create
/// the target, connect, persist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The parent interface.
    pub interface: String,
    /// The network to connect to; `None` when the interface is down.
    pub target: Option<Target>,
    /// `(runtime, network)` endpoints to remove (forced).
    pub disconnects: Vec<(String, String)>,
    /// Old MACVLAN networks of the parent that are empty once the disconnects are done (an
    /// overlapping new subnet cannot be created while they exist; engines before 27.0.1 allow only
    /// one MACVLAN network per parent).
    pub remove: Vec<String>,
    /// Runtimes to connect to the target.
    pub connects: Vec<Connect>,
    /// Runtimes already on a network with the new subnet: nothing to do.
    pub unchanged: Vec<String>,
    /// `(runtime, reason)`: the parent is down; recorded, left alone.
    pub down: Vec<(String, String)>,
}

impl Plan {
    /// Whether the plan changes anything on the engine.
    pub fn is_noop(&self) -> bool {
        self.disconnects.is_empty() && self.remove.is_empty() && self.connects.is_empty()
    }

    /// The runtimes the plan touches on the engine.
    pub fn affected(&self) -> BTreeSet<String> {
        self.disconnects
            .iter()
            .map(|(r, _)| r.clone())
            .chain(self.connects.iter().map(|c| c.runtime.clone()))
            .collect()
    }
}

/// Plans the re-home of every runtime with a vNIC on `interface` after it changed to `state`.
///
/// `networks` should list the MACVLAN networks on the host (others are ignored);
/// `mac_on_connect` says whether the engine honours `MacAddress` on connect (API ≥ 1.54).
pub fn plan(
    interface: &str,
    state: &ParentState,
    runtimes: &[RuntimeView],
    networks: &[MacvlanView],
    mac_on_connect: bool,
) -> Plan {
    let mut out = Plan {
        interface: interface.to_string(),
        ..Plan::default()
    };
    let on_parent: Vec<&MacvlanView> = networks.iter().filter(|n| n.parent == interface).collect();
    let (subnet, gateway) = match state {
        ParentState::Down { reason } => {
            for rt in runtimes {
                if rt.vnics.iter().any(|v| v.parent == interface) {
                    out.down.push((rt.name.clone(), reason.clone()));
                }
            }
            return out;
        }
        ParentState::Up { subnet, gateway } => (subnet.network(), *gateway),
    };
    let matches = |n: &MacvlanView| n.subnets.iter().any(|s| s.network() == subnet);
    let target = Target {
        network: naming::macvlan_network_name(interface, subnet),
        subnet,
        gateway,
    };

    for rt in runtimes {
        let mut vnics = rt.vnics.iter().filter(|v| v.parent == interface);
        let Some(vnic) = vnics.next() else {
            continue;
        };
        let extra: Vec<usize> = vnics.map(|v| v.index).collect();
        let on_this_parent = |e: &&EndpointView| on_parent.iter().any(|n| n.name == e.network);
        let attached: Vec<&EndpointView> = rt.endpoints.iter().filter(on_this_parent).collect();
        let is_matching =
            |e: &EndpointView| on_parent.iter().any(|n| n.name == e.network && matches(n));
        let stale: Vec<&EndpointView> = attached
            .iter()
            .copied()
            .filter(|e| !is_matching(e))
            .collect();
        let already = attached.iter().any(|e| is_matching(e));
        if stale.is_empty() && already {
            out.unchanged.push(rt.name.clone());
            continue;
        }
        for e in &stale {
            out.disconnects.push((rt.name.clone(), e.network.clone()));
        }
        if already {
            continue;
        }
        let mut warnings = Vec::new();
        for index in &extra {
            warnings.push(format!(
                "vNIC {index} also uses {interface}; a runtime gets one endpoint per MACVLAN \
                 network, so only vNIC {} was attached",
                vnic.index
            ));
        }
        let usable = |ip: Ipv4Addr| {
            subnet.contains(ip) && !subnet.is_network_or_broadcast(ip) && Some(ip) != gateway
        };
        let old_ip = stale.iter().find_map(|e| e.ip);
        let mut replaces_static_ip = None;
        let ip = match vnic.static_ip {
            Some(ip) if usable(ip) => Some(ip),
            Some(ip) => {
                warnings.push(format!(
                    "static IP {ip} is outside the new subnet {subnet} of {interface}; Docker \
                     assigned an address"
                ));
                replaces_static_ip = Some(ip);
                None
            }
            // DHCP-mode vNICs keep their current address when it still fits (e.g. a widened
            // subnet), so their peers do not see it move.
            None => old_ip.filter(|ip| usable(*ip)),
        };
        // The MAC to keep: the configured one, else the current one. It is requested only where
        // the engine honours MacAddress on connect (API ≥ 1.54); whether it was kept is decided
        // after the connect by looking at the endpoint (some engines derive a macvlan endpoint's
        // MAC from its IP, so a kept IP can mean a kept MAC even on old engines).
        let keep_mac = vnic.mac.or_else(|| stale.iter().find_map(|e| e.mac));
        let mac = keep_mac.filter(|_| mac_on_connect);
        out.connects.push(Connect {
            runtime: rt.name.clone(),
            vnic_index: vnic.index,
            ip,
            mac,
            keep_mac,
            replaces_static_ip,
            warnings,
            previous: stale.first().map(|e| (e.network.clone(), e.ip)),
        });
    }

    // Old networks of this parent that nothing will use any more (including ones already empty,
    // e.g. left by an interrupted re-home): remove them before creating the new one.
    for n in on_parent.iter().filter(|n| !matches(n) && n.removable) {
        let leaving: BTreeSet<&str> = out
            .disconnects
            .iter()
            .filter(|(_, net)| *net == n.name)
            .map(|(r, _)| r.as_str())
            .collect();
        if n.containers.iter().all(|c| leaving.contains(c.as_str())) {
            out.remove.push(n.name.clone());
        }
    }
    out.target = Some(target);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP")
    }

    fn up(s: &str, gw: Option<&str>) -> ParentState {
        ParentState::Up {
            subnet: net(s),
            gateway: gw.map(ip),
        }
    }

    fn runtime(name: &str, static_ip: Option<&str>, endpoints: &[(&str, &str)]) -> RuntimeView {
        RuntimeView {
            name: name.into(),
            vnics: vec![PersistedVnic {
                index: 0,
                parent: "eth1".into(),
                static_ip: static_ip.map(ip),
                mac: Some("02:00:00:00:00:01".parse().expect("mac")),
            }],
            endpoints: endpoints
                .iter()
                .map(|(n, a)| EndpointView {
                    network: (*n).into(),
                    ip: Some(ip(a)),
                    mac: Some("02:00:00:00:00:01".parse().expect("mac")),
                })
                .chain(std::iter::once(EndpointView {
                    network: format!("{name}_internal"),
                    ip: Some(ip("172.20.0.2")),
                    mac: None,
                }))
                .collect(),
        }
    }

    fn macvlan(name: &str, subnet: &str, containers: &[&str]) -> MacvlanView {
        MacvlanView {
            name: name.into(),
            parent: "eth1".into(),
            subnets: vec![net(subnet)],
            containers: containers.iter().map(|c| (*c).to_string()).collect(),
            removable: true,
        }
    }

    #[test]
    fn a_moved_subnet_disconnects_removes_and_reconnects_keeping_a_fitting_static_ip() {
        let rts = [runtime(
            "plc1",
            Some("10.1.2.50"),
            &[("macvlan_eth1_10.1.1.0_24", "10.1.1.50")],
        )];
        let nets = [macvlan(
            "macvlan_eth1_10.1.1.0_24",
            "10.1.1.0/24",
            &["plc1"],
        )];
        // The static IP is outside the new subnet 10.1.3.0/24 → Docker assigns.
        let p = plan(
            "eth1",
            &up("10.1.3.0/24", Some("10.1.3.1")),
            &rts,
            &nets,
            false,
        );
        assert_eq!(
            p.disconnects,
            vec![("plc1".into(), "macvlan_eth1_10.1.1.0_24".into())]
        );
        assert_eq!(p.remove, vec!["macvlan_eth1_10.1.1.0_24".to_string()]);
        let t = p.target.as_ref().expect("target");
        assert_eq!(t.network, "macvlan_eth1_10.1.3.0_24");
        assert_eq!(t.gateway, Some(ip("10.1.3.1")));
        assert_eq!(p.connects.len(), 1);
        assert_eq!(p.connects[0].ip, None);
        assert_eq!(p.connects[0].replaces_static_ip, Some(ip("10.1.2.50")));
        assert!(p.connects[0].warnings[0].contains("outside the new subnet"));
        assert_eq!(p.connects[0].warnings.len(), 1);
        assert_eq!(
            p.connects[0].mac, None,
            "not requested where the engine ignores it"
        );
        assert_eq!(
            p.connects[0].keep_mac,
            Some("02:00:00:00:00:01".parse().expect("mac"))
        );

        // Inside the new subnet → kept.
        let p = plan("eth1", &up("10.1.2.0/24", None), &rts, &nets, true);
        assert_eq!(p.connects[0].ip, Some(ip("10.1.2.50")));
        assert_eq!(p.connects[0].replaces_static_ip, None);
        assert_eq!(
            p.connects[0].mac,
            Some("02:00:00:00:00:01".parse().expect("mac"))
        );
        assert!(p.connects[0].warnings.is_empty());
    }

    #[test]
    fn an_unchanged_subnet_is_a_no_op() {
        let rts = [runtime(
            "plc1",
            Some("10.1.1.50"),
            &[("macvlan_eth1_10.1.1.0_24", "10.1.1.50")],
        )];
        let nets = [macvlan(
            "macvlan_eth1_10.1.1.0_24",
            "10.1.1.0/24",
            &["plc1"],
        )];
        // Same subnet written with host bits, new gateway: still the same network.
        let p = plan(
            "eth1",
            &up("10.1.1.7/24", Some("10.1.1.254")),
            &rts,
            &nets,
            false,
        );
        assert!(p.is_noop());
        assert_eq!(p.unchanged, vec!["plc1".to_string()]);
    }

    #[test]
    fn a_widened_subnet_keeps_dhcp_addresses_and_removes_the_overlapping_old_network() {
        let mut rt = runtime("plc1", None, &[("macvlan_eth1_10.1.1.0_24", "10.1.1.9")]);
        rt.vnics[0].mac = None;
        let nets = [macvlan(
            "macvlan_eth1_10.1.1.0_24",
            "10.1.1.0/24",
            &["plc1"],
        )];
        let p = plan("eth1", &up("10.1.0.0/23", None), &[rt], &nets, false);
        assert_eq!(p.remove, vec!["macvlan_eth1_10.1.1.0_24".to_string()]);
        assert_eq!(
            p.target.map(|t| t.network),
            Some("macvlan_eth1_10.1.0.0_23".into())
        );
        assert_eq!(p.connects[0].ip, Some(ip("10.1.1.9")));
        // Its current MAC is the one to keep (checked after the connect).
        assert!(p.connects[0].warnings.is_empty());
        assert_eq!(
            p.connects[0].keep_mac,
            Some("02:00:00:00:00:01".parse().expect("mac"))
        );
    }

    #[test]
    fn an_old_network_still_used_by_someone_else_is_not_removed() {
        let rts = [runtime(
            "plc1",
            None,
            &[("macvlan_eth1_10.1.1.0_24", "10.1.1.9")],
        )];
        let mut nets = vec![macvlan(
            "macvlan_eth1_10.1.1.0_24",
            "10.1.1.0/24",
            &["plc1", "foreign"],
        )];
        let p = plan("eth1", &up("10.1.5.0/24", None), &rts, &nets, false);
        assert!(p.remove.is_empty());
        nets[0].containers = vec!["plc1".into()];
        nets[0].removable = false;
        let p = plan("eth1", &up("10.1.5.0/24", None), &rts, &nets, false);
        assert!(p.remove.is_empty(), "not ours: never removed");
    }

    #[test]
    fn several_runtimes_move_together_and_an_existing_target_is_reused() {
        let rts = [
            runtime(
                "a",
                Some("10.1.1.10"),
                &[("macvlan_eth1_10.1.1.0_24", "10.1.1.10")],
            ),
            runtime(
                "b",
                Some("10.1.1.11"),
                &[("macvlan_eth1_10.1.1.0_24", "10.1.1.11")],
            ),
            runtime(
                "c",
                Some("10.1.2.12"),
                &[("macvlan_eth1_10.1.2.0_24", "10.1.2.12")],
            ),
        ];
        let nets = [
            macvlan("macvlan_eth1_10.1.1.0_24", "10.1.1.0/24", &["a", "b"]),
            macvlan("macvlan_eth1_10.1.2.0_24", "10.1.2.0/24", &["c"]),
        ];
        let p = plan("eth1", &up("10.1.2.0/24", None), &rts, &nets, false);
        assert_eq!(p.unchanged, vec!["c".to_string()]);
        assert_eq!(p.disconnects.len(), 2);
        assert_eq!(p.remove, vec!["macvlan_eth1_10.1.1.0_24".to_string()]);
        let runtimes: Vec<&str> = p.connects.iter().map(|c| c.runtime.as_str()).collect();
        assert_eq!(runtimes, ["a", "b"]);
    }

    #[test]
    fn a_runtime_not_attached_at_all_is_connected_and_other_parents_are_ignored() {
        let mut other = runtime("x", None, &[]);
        other.vnics[0].parent = "eth2".into();
        let lonely = runtime("plc1", Some("10.1.1.5"), &[]);
        let p = plan(
            "eth1",
            &up("10.1.1.0/24", None),
            &[other, lonely],
            &[],
            true,
        );
        assert!(p.disconnects.is_empty());
        assert_eq!(p.connects.len(), 1);
        assert_eq!(p.connects[0].runtime, "plc1");
        assert_eq!(p.connects[0].ip, Some(ip("10.1.1.5")));
    }

    #[test]
    fn a_down_interface_is_recorded_without_any_engine_change() {
        let rts = [runtime(
            "plc1",
            None,
            &[("macvlan_eth1_10.1.1.0_24", "10.1.1.9")],
        )];
        let nets = [macvlan(
            "macvlan_eth1_10.1.1.0_24",
            "10.1.1.0/24",
            &["plc1"],
        )];
        let down = ParentState::Down {
            reason: "down".into(),
        };
        let p = plan("eth1", &down, &rts, &nets, false);
        assert!(p.is_noop());
        assert!(p.target.is_none());
        assert_eq!(p.down, vec![("plc1".to_string(), "down".to_string())]);
    }

    #[test]
    fn the_gateway_and_network_address_are_never_requested() {
        let rts = [runtime("plc1", Some("10.1.4.1"), &[])];
        let p = plan(
            "eth1",
            &up("10.1.4.0/24", Some("10.1.4.1")),
            &rts,
            &[],
            false,
        );
        assert_eq!(p.connects[0].ip, None);
        let rts = [runtime("plc1", Some("10.1.4.0"), &[])];
        let p = plan("eth1", &up("10.1.4.0/24", None), &rts, &[], false);
        assert_eq!(p.connects[0].ip, None);
    }

    #[test]
    fn parent_state_reads_netmon_events() {
        let info: InterfaceInfo = serde_json::from_value(json!({
            "interface": "eth1", "ipv4_addresses": [{"address": "10.1.1.7", "prefixlen": 24,
            "subnet": "10.1.1.0/24", "network_address": "10.1.1.0"}], "gateway": "10.1.1.1"
        }))
        .expect("info");
        assert_eq!(
            ParentState::from_info(Some(&info)),
            up("10.1.1.0/24", Some("10.1.1.1"))
        );
        let info: InterfaceInfo = serde_json::from_value(json!({
            "interface": "eth1", "ipv4_addresses": [], "status": "down"
        }))
        .expect("info");
        assert!(
            matches!(ParentState::from_info(Some(&info)), ParentState::Down { reason } if reason == "down")
        );
        // Up but without an address (netmon lists such links as down).
        let info: InterfaceInfo = serde_json::from_value(json!({
            "interface": "eth1", "operstate": "UP", "ipv4_addresses": [], "status": "down"
        }))
        .expect("info");
        assert!(
            matches!(ParentState::from_info(Some(&info)), ParentState::Down { reason } if reason == WITHOUT_IPV4)
        );
        assert!(matches!(
            ParentState::from_info(None),
            ParentState::Down { .. }
        ));
    }
}
