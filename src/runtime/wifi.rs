//! Wi-Fi vNICs (upstream-head §5): MACVLAN passes no traffic on most Wi-Fi links (a station may
//! use one MAC), so a vNIC whose parent netmon reports as Wi-Fi gets no Docker network; netmon
//! builds a proxy-ARP bridge into the runtime's namespace instead (a veth pair routed through the
//! host, FORWARD accept rules included). The agent asks for it after every start of the container
//! and on every connection to netmon, and tears it down before a stop, restart or delete:
//! - `static`: `setup_proxy_arp_bridge` with the vNIC's address, gateway and mask; the answer's
//!   `proxy_arp_config` is persisted only when the bridge was built (the original stored it
//!   regardless, Defect W3);
//! - `dhcp`: `request_wifi_dhcp` with the client id `<runtime>:<vnic>` (the original's); netmon
//!   leases on the host's Wi-Fi and builds the bridge when the lease comes, the `dhcp_update`
//!   carries the bridge and is recorded like a MACVLAN lease ([`super::dhcp::record`]).
//!
//! A new container process is a new namespace, whose veth end died with the old one: asking
//! again after every start rebuilds it (Defect W5; netmon replaces a bridge of the same runtime
//! and address, W12, and rebuilds a held Wi-Fi lease's bridge for a new PID, W6).
//!
//! The Wi-Fi itself coming back (a reconnect, a replugged dongle: the kernel flushes the proxy
//! entry when the link goes down) or joining another network is followed too
//! ([`follow_parents`]): the bridges on it are built again, and a `dhcp` vNIC on a new network
//! leases afresh (the original rebuilt only when the address changed, W6).
//!
//! The vNICs are marked at create as the original marks them (`_interface_type`, `_is_wifi`,
//! `_network_method`), and those marks, not the interface's current type, decide later on.

use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use super::{Runtimes, vnic};
use crate::netevents::{InterfaceInfo, NetmonCommand, NetworkChange, Pid};

/// The netmask sent when a static Wi-Fi vNIC has none (the original's default).
const DEFAULT_MASK: &str = "255.255.255.0";

/// One Wi-Fi vNIC of a runtime, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WifiVnic {
    /// Position in the persisted list (`vnic_configs[i]` in texts).
    pub index: usize,
    pub name: String,
    pub parent: String,
    /// `Some` for a static vNIC: its address (without `/len`), gateway and mask.
    pub fixed: Option<Fixed>,
    /// The bridge netmon built last (`_proxy_arp_config`), for the teardown.
    pub bridge: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fixed {
    pub ip: String,
    pub gateway: String,
    pub subnet_mask: String,
}

/// Marks a vNIC object as the original marks it at create (upstream-head §5.1).
pub(super) fn mark(o: &mut Map<String, Value>, wifi: bool) {
    o.insert(
        "_interface_type".into(),
        json!(if wifi { "wifi" } else { "ethernet" }),
    );
    o.insert("_is_wifi".into(), json!(wifi));
    o.insert(
        "_network_method".into(),
        json!(if wifi { "proxy_arp" } else { "macvlan" }),
    );
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The Wi-Fi vNICs of a persisted list.
pub(super) fn wifi_vnics(list: &[Value]) -> Vec<WifiVnic> {
    list.iter()
        .enumerate()
        .filter_map(|(index, v)| {
            let o = v.as_object()?;
            if !vnic::is_proxy_arp(o) {
                return None;
            }
            let fixed = (text(o, "network_mode").unwrap_or("dhcp") == "static")
                .then(|| {
                    let ip = text(o, "ip")?.split('/').next()?.to_owned();
                    let gateway = text(o, "gateway")
                        .or_else(|| text(o, "parent_gateway"))?
                        .to_owned();
                    let subnet_mask = text(o, "subnet")
                        .or_else(|| text(o, "netmask"))
                        .map(str::to_owned)
                        .or_else(|| {
                            text(o, "ip")
                                .and_then(|ip| ip.split_once('/'))
                                .map(|(_, len)| len.to_owned())
                        })
                        .unwrap_or_else(|| DEFAULT_MASK.to_owned());
                    Some(Fixed {
                        ip,
                        gateway,
                        subnet_mask,
                    })
                })
                .flatten();
            Some(WifiVnic {
                index,
                name: text(o, "name")?.to_owned(),
                parent: text(o, "parent_interface")?.to_owned(),
                fixed,
                bridge: o
                    .get("_proxy_arp_config")
                    .and_then(Value::as_object)
                    .cloned(),
            })
        })
        .collect()
}

/// Asks netmon for the bridge (static) or the host-side DHCP client (dhcp) of every Wi-Fi vNIC
/// of the runtime, if its container runs. Returns what could not be done; a retry is scheduled
/// then.
pub(super) async fn ensure(rt: &Runtimes, name: &str) -> Vec<String> {
    let vnics = wifi_vnics(&rt.state().vnics_of(name).await.unwrap_or_default());
    if vnics.is_empty() {
        return Vec::new();
    }
    let pid = match rt.docker().inspect_container(name).await {
        Ok(c) => match super::running_pid(&c) {
            Some(pid) => pid,
            None => return Vec::new(),
        },
        Err(e) if e.is_not_found() => return Vec::new(),
        Err(e) => {
            rt.dhcp_retries().schedule(name);
            return vec![format!(
                "Wi-Fi bridges not built: cannot inspect {name}: {e}"
            )];
        }
    };
    let (mut warnings, mut notes) = (Vec::new(), Vec::new());
    for v in &vnics {
        match ensure_one(rt, name, pid, v).await {
            Ok(None) => {}
            // Built, but the host's firewall may drop its traffic: said, not retried.
            Ok(Some(w)) => notes.push(format!("vnic_configs[{}] ({}): {w}", v.index, v.name)),
            Err(e) => warnings.push(format!(
                "vnic_configs[{}] ({}): Wi-Fi bridge on {} not built (retrying): {e}",
                v.index, v.name, v.parent
            )),
        }
    }
    if !warnings.is_empty() {
        rt.dhcp_retries().schedule(name);
    }
    warnings.extend(notes);
    warnings
}

/// Asks netmon for one vNIC's bridge or client. `Ok(Some(w))`: done, with netmon's warning (the
/// host's firewall could not be opened for it).
async fn ensure_one(
    rt: &Runtimes,
    name: &str,
    pid: u32,
    v: &WifiVnic,
) -> Result<Option<String>, String> {
    let command = match &v.fixed {
        Some(f) => NetmonCommand::SetupProxyArpBridge {
            container_name: name.to_owned(),
            container_pid: Pid(pid),
            parent_interface: v.parent.clone(),
            ip_address: f.ip.clone(),
            gateway: f.gateway.clone(),
            subnet_mask: f.subnet_mask.clone(),
        },
        None => NetmonCommand::RequestWifiDhcp {
            container_name: name.to_owned(),
            vnic_name: v.name.clone(),
            parent_interface: v.parent.clone(),
            container_pid: Pid(pid),
            client_id: format!("{name}:{}", v.name),
        },
    };
    let answer = rt.interfaces().command(command).await;
    if !answer.success {
        return Err(answer
            .error
            .unwrap_or_else(|| "the network monitor gave no reason".to_owned()));
    }
    let warning = answer
        .data
        .get("warning")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(w) = &warning {
        // The bridge is there; the host's firewall may still drop its traffic.
        warn!(runtime = name, vnic = %v.name, "{w}");
    }
    if v.fixed.is_none() {
        debug!(runtime = name, vnic = %v.name, message = ?answer.message, "Wi-Fi DHCP client running");
        return Ok(warning);
    }
    let Some(config) = answer.data.get("proxy_arp_config").cloned() else {
        return Ok(warning);
    };
    let index = v.index;
    let saved = rt
        .state()
        .update_vnics(name, |list| {
            match list.get_mut(index).and_then(Value::as_object_mut) {
                Some(o) if o.get("_proxy_arp_config") != Some(&config) => {
                    o.insert("_proxy_arp_config".into(), config.clone());
                    true
                }
                _ => false,
            }
        })
        .await;
    match saved {
        Ok(_) => {
            info!(runtime = name, vnic = %v.name, parent = %v.parent, "Wi-Fi proxy-ARP bridge built");
            Ok(warning)
        }
        Err(e) => Err(format!("the bridge is built but cannot be recorded: {e}")),
    }
}

/// Usable: up (no down/removed status) with an IPv4 address.
fn usable(i: Option<&InterfaceInfo>) -> bool {
    i.is_some_and(|i| i.is_reportable() && i.has_ipv4())
}

/// What a change of a Wi-Fi parent asks of the bridges on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reattach {
    /// Back on the same network: the bridges built again (the leases still hold).
    Rebuild,
    /// On another network: static bridges built again, `dhcp` vNICs lease afresh.
    NewNetwork,
}

fn reattach_for(change: &NetworkChange) -> Option<Reattach> {
    if !usable(change.current.as_ref()) {
        return None;
    }
    let was_usable = usable(change.previous.as_ref());
    if was_usable && change.subnet_changed() {
        Some(Reattach::NewNetwork)
    } else if !was_usable {
        Some(
            if change.subnet_changed()
                && change
                    .previous
                    .as_ref()
                    .is_some_and(InterfaceInfo::has_ipv4)
            {
                Reattach::NewNetwork
            } else {
                Reattach::Rebuild
            },
        )
    } else {
        None
    }
}

/// For the life of the service: when a Wi-Fi parent comes back or changes network, the Wi-Fi
/// vNICs on it are attached again (module docs). A lagging subscription rebuilds every Wi-Fi
/// runtime's bridges.
pub(super) async fn follow_parents(rt: Runtimes) {
    let mut changes = rt.interfaces().subscribe();
    loop {
        let (parent, how) = match changes.recv().await {
            Ok(change) => match reattach_for(&change) {
                Some(how) => (Some(change.interface), how),
                None => continue,
            },
            Err(RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "missed network changes; rebuilding every Wi-Fi bridge"
                );
                (None, Reattach::Rebuild)
            }
            Err(RecvError::Closed) => return,
        };
        let all = rt.state().vnics().await;
        for (name, list) in all {
            let list = list.as_array().cloned().unwrap_or_default();
            let on_parent: Vec<WifiVnic> = wifi_vnics(&list)
                .into_iter()
                .filter(|v| parent.as_ref().is_none_or(|p| &v.parent == p))
                .collect();
            // An operation in flight attaches them itself once the container runs.
            if on_parent.is_empty() || rt.ops().running(&name).is_some() {
                continue;
            }
            for w in reattach(&rt, &name, &list, &on_parent, how).await {
                warn!(runtime = %name, "{w}");
            }
        }
    }
}

async fn reattach(
    rt: &Runtimes,
    name: &str,
    list: &[Value],
    vnics: &[WifiVnic],
    how: Reattach,
) -> Vec<String> {
    let Some(pid) = rt
        .docker()
        .inspect_container(name)
        .await
        .ok()
        .as_ref()
        .and_then(super::running_pid)
    else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for v in vnics {
        info!(runtime = name, vnic = %v.name, parent = %v.parent, ?how, "Wi-Fi parent changed: attaching the vNIC again");
        let lease = list.get(v.index).and_then(Value::as_object).and_then(|o| {
            Some((
                text(o, "dhcp_ip")?,
                text(o, "dhcp_gateway")?.split_whitespace().next()?,
            ))
        });
        let result = match (&v.fixed, lease, how) {
            // Same network, a lease held: its bridge again, from the lease (netmon's client
            // has no reason to announce it again).
            (None, Some((ip, gateway)), Reattach::Rebuild) => {
                // The lease is on the Wi-Fi's network: its prefix is the Wi-Fi's.
                let mask = rt
                    .interfaces()
                    .get(&v.parent)
                    .and_then(|i| i.ipv4_addresses.first().map(|a| a.prefixlen.to_string()))
                    .unwrap_or_else(|| DEFAULT_MASK.to_owned());
                let answer = rt
                    .interfaces()
                    .command(NetmonCommand::SetupProxyArpBridge {
                        container_name: name.to_owned(),
                        container_pid: Pid(pid),
                        parent_interface: v.parent.clone(),
                        ip_address: ip.to_owned(),
                        gateway: gateway.to_owned(),
                        subnet_mask: mask,
                    })
                    .await;
                if answer.success {
                    Ok(None)
                } else {
                    Err(answer.error.unwrap_or_default())
                }
            }
            // Another network: the old lease is worthless, lease afresh.
            (None, _, Reattach::NewNetwork) => {
                let _ = rt
                    .interfaces()
                    .command(NetmonCommand::StopDhcp {
                        container_name: name.to_owned(),
                        vnic_name: v.name.clone(),
                    })
                    .await;
                ensure_one(rt, name, pid, v).await
            }
            _ => ensure_one(rt, name, pid, v).await,
        };
        if let Err(e) = result {
            warnings.push(format!(
                "vnic_configs[{}] ({}): Wi-Fi bridge on {} not rebuilt (retrying): {e}",
                v.index, v.name, v.parent
            ));
        }
    }
    if !warnings.is_empty() {
        rt.dhcp_retries().schedule(name);
    }
    warnings
}

/// Tears down the runtime's Wi-Fi bridges and stops their host-side DHCP clients (the lease is
/// released): before a stop, restart or delete. Returns warnings.
pub(super) async fn stop(rt: &Runtimes, name: &str) -> Vec<String> {
    let vnics = wifi_vnics(&rt.state().vnics_of(name).await.unwrap_or_default());
    let mut warnings = Vec::new();
    for v in &vnics {
        if v.fixed.is_none() {
            let answer = rt
                .interfaces()
                .command(NetmonCommand::StopDhcp {
                    container_name: name.to_owned(),
                    vnic_name: v.name.clone(),
                })
                .await;
            let e = answer.error.unwrap_or_default();
            if !answer.success && !e.starts_with("No DHCP client found") {
                warnings.push(format!(
                    "vnic_configs[{}] ({}): could not stop its Wi-Fi DHCP client: {e}",
                    v.index, v.name
                ));
            }
        }
        let field = |k: &str| {
            v.bridge
                .as_ref()
                .and_then(|b| b.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let ip = field("ip_address").or_else(|| v.fixed.as_ref().map(|f| f.ip.clone()));
        let answer = rt
            .interfaces()
            .command(NetmonCommand::CleanupProxyArpBridge {
                container_name: name.to_owned(),
                ip_address: ip,
                parent_interface: field("parent_interface").or_else(|| Some(v.parent.clone())),
                veth_host: field("veth_host"),
            })
            .await;
        if !answer.success {
            warnings.push(format!(
                "vnic_configs[{}] ({}): could not remove its Wi-Fi bridge: {}",
                v.index,
                v.name,
                answer.error.unwrap_or_default()
            ));
        }
    }
    warnings
}

/// The original's pseudo-networks of `get_device_status` (upstream-head §5.5):
/// `wifi_<parent>_<vnic>` → `{ip_address, mac_address: null, gateway}`, for every Wi-Fi vNIC
/// with an address (the bridge's, else the lease's, else the static one). Without one the entry
/// is left out (the original failed the whole status, Defect W8).
pub(super) fn status_networks(list: &[Value]) -> Vec<(String, Value)> {
    list.iter()
        .filter_map(Value::as_object)
        .filter(|o| vnic::is_proxy_arp(o))
        .filter_map(|o| {
            let bridge = o.get("_proxy_arp_config").and_then(Value::as_object);
            let from_bridge = |k: &str| bridge.and_then(|b| text(b, k));
            let ip = from_bridge("ip_address")
                .or_else(|| text(o, "dhcp_ip"))
                .or_else(|| text(o, "ip").and_then(|ip| ip.split('/').next()))?;
            let gateway = from_bridge("gateway")
                .or_else(|| text(o, "dhcp_gateway").and_then(|g| g.split_whitespace().next()))
                .or_else(|| text(o, "gateway"));
            let parent = text(o, "parent_interface").unwrap_or("wlan0");
            let vnic = text(o, "name").unwrap_or("wifi");
            Some((
                format!("wifi_{parent}_{vnic}"),
                json!({"ip_address": ip, "mac_address": null, "gateway": gateway}),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wifi_vnics_are_the_marked_ones_with_what_the_bridge_needs() {
        let list = vec![
            json!({"name": "lan", "parent_interface": "eth0", "network_mode": "dhcp",
                   "_network_method": "macvlan", "_is_wifi": false}),
            json!({"name": "w1", "parent_interface": "wlan0", "network_mode": "static",
                   "ip": "192.168.50.20/24", "gateway": "192.168.50.1",
                   "_network_method": "proxy_arp", "_is_wifi": true,
                   "_proxy_arp_config": {"veth_host": "vpa0011223344", "ip_address": "192.168.50.20"}}),
            json!({"name": "w2", "parent_interface": "wlan0", "_is_wifi": true}),
            json!({"name": "w3", "parent_interface": "wlan0", "network_mode": "static",
                   "ip": "10.0.0.5", "gateway": "10.0.0.1", "subnet": "255.255.0.0",
                   "_network_method": "proxy_arp"}),
        ];
        let w = wifi_vnics(&list);
        assert_eq!(
            w.iter()
                .map(|v| (v.index, v.name.as_str()))
                .collect::<Vec<_>>(),
            [(1, "w1"), (2, "w2"), (3, "w3")]
        );
        assert_eq!(
            w[0].fixed,
            Some(Fixed {
                ip: "192.168.50.20".into(),
                gateway: "192.168.50.1".into(),
                subnet_mask: "24".into()
            })
        );
        assert!(w[0].bridge.is_some());
        assert_eq!(w[1].fixed, None, "dhcp is the default mode");
        assert_eq!(w[2].fixed.as_ref().unwrap().subnet_mask, "255.255.0.0");
    }

    #[test]
    fn a_parent_coming_back_rebuilds_and_a_new_network_leases_afresh() {
        let info = |addr: Option<&str>, status: Option<&str>| -> InterfaceInfo {
            let mut v = json!({"interface": "wlan0", "ipv4_addresses": []});
            if let Some(a) = addr {
                v["ipv4_addresses"] = json!([{"address": a, "prefixlen": 24,
                    "subnet": format!("{}.0/24", a.rsplit_once('.').unwrap().0),
                    "network_address": "x"}]);
                v["gateway"] = json!(format!("{}.1", a.rsplit_once('.').unwrap().0));
            }
            if let Some(s) = status {
                v["status"] = json!(s);
            }
            serde_json::from_value(v).unwrap()
        };
        let change = |p: Option<InterfaceInfo>, c: Option<InterfaceInfo>| NetworkChange {
            interface: "wlan0".into(),
            previous: p,
            current: c,
        };
        let up = || Some(info(Some("192.168.1.5"), None));
        let down = || Some(info(Some("192.168.1.5"), Some("down")));
        let elsewhere = || Some(info(Some("10.0.7.5"), None));
        assert_eq!(reattach_for(&change(down(), up())), Some(Reattach::Rebuild));
        assert_eq!(reattach_for(&change(None, up())), Some(Reattach::Rebuild));
        assert_eq!(
            reattach_for(&change(Some(info(None, None)), up())),
            Some(Reattach::Rebuild)
        );
        assert_eq!(
            reattach_for(&change(up(), elsewhere())),
            Some(Reattach::NewNetwork)
        );
        assert_eq!(
            reattach_for(&change(down(), elsewhere())),
            Some(Reattach::NewNetwork)
        );
        assert_eq!(reattach_for(&change(up(), up())), None);
        assert_eq!(reattach_for(&change(up(), down())), None);
        assert_eq!(reattach_for(&change(up(), None)), None);
    }

    #[test]
    fn marks_are_the_originals() {
        let mut o = Map::new();
        mark(&mut o, true);
        assert_eq!(
            Value::Object(o.clone()),
            json!({"_interface_type": "wifi", "_is_wifi": true, "_network_method": "proxy_arp"})
        );
        assert!(vnic::is_proxy_arp(&o));
        mark(&mut o, false);
        assert!(!vnic::is_proxy_arp(&o));
    }

    #[test]
    fn status_shows_the_pseudo_network_and_omits_vnics_without_an_address() {
        let list = vec![
            json!({"name": "w1", "parent_interface": "wlx00c0", "_is_wifi": true,
                   "ip": "10.9.0.7/24", "gateway": "10.9.0.1"}),
            json!({"name": "w2", "parent_interface": "wlan0", "_is_wifi": true, "ip": null,
                   "dhcp_ip": "192.168.1.80", "dhcp_gateway": "192.168.1.1 192.168.1.2"}),
            json!({"name": "w3", "parent_interface": "wlan0", "_is_wifi": true, "ip": null}),
            json!({"name": "w4", "parent_interface": "wlan0", "_is_wifi": true,
                   "dhcp_ip": "192.168.1.81",
                   "_proxy_arp_config": {"ip_address": "192.168.1.82", "gateway": "192.168.1.254"}}),
            json!({"name": "lan", "parent_interface": "eth0", "ip": "10.1.0.2"}),
        ];
        assert_eq!(
            status_networks(&list),
            vec![
                (
                    "wifi_wlx00c0_w1".to_owned(),
                    json!({"ip_address": "10.9.0.7", "mac_address": null, "gateway": "10.9.0.1"})
                ),
                (
                    "wifi_wlan0_w2".to_owned(),
                    json!({"ip_address": "192.168.1.80", "mac_address": null, "gateway": "192.168.1.1"})
                ),
                (
                    "wifi_wlan0_w4".to_owned(),
                    json!({"ip_address": "192.168.1.82", "mac_address": null, "gateway": "192.168.1.254"})
                ),
            ]
        );
    }
}
