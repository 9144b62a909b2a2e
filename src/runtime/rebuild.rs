//! Rebuilding a runtime's lost `runtime_vnics.json` entry from the engine: the engine is the truth
//! at start-up, so a runtime of ours whose entry is missing (a wiped or restored state dir, a
//! corrupt file kept aside) is kept and its entry written again, never removed.
//!
//! The vNIC objects come from the container's [`naming::LABEL_VNICS`] label (the configuration as
//! received at create), brought up to date with the container's MACVLAN endpoints (a re-home may
//! have moved it to another subnet since). A container without that label (made by an older agent)
//! gets one vNIC per MACVLAN endpoint in the production field generation. [`rebuild`] is pure; the
//! async [`macvlan_endpoints`] gathers its input.
//!
//! This module never changes the engine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use docker_api::ContainerInspect;
use serde_json::{Map, Value, json};

use super::net::{Ipv4Net, MacAddr};
use super::vnic::{PersistedVnic, update_persisted};
use super::{Runtimes, naming};

/// One MACVLAN network the container is on, as the engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanEndpoint {
    /// The network's name.
    pub network: String,
    /// Its parent interface.
    pub parent: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its gateway, when it has one.
    pub gateway: Option<Ipv4Addr>,
    /// The address asked for at create or connect (a static vNIC).
    pub requested_ip: Option<Ipv4Addr>,
    /// The address it has now (none while stopped).
    pub ip: Option<Ipv4Addr>,
    /// The endpoint's MAC address (none while stopped on old engines).
    pub mac: Option<MacAddr>,
}

/// Where a rebuilt entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The create-time label, updated from the live endpoints.
    Label,
    /// Synthesized from the endpoints alone (no label).
    Endpoints,
}

/// The vNIC objects for a container with `labels`, MACVLAN `endpoints` (in any order) and DNS
/// servers `dns`.
pub fn rebuild(
    labels: &BTreeMap<String, String>,
    endpoints: &[MacvlanEndpoint],
    dns: &[String],
) -> (Vec<Value>, Source) {
    let mut endpoints: Vec<&MacvlanEndpoint> = endpoints.iter().collect();
    endpoints.sort_by(|a, b| a.network.cmp(&b.network));
    if let Some(vnics) = labels
        .get(naming::LABEL_VNICS)
        .and_then(|l| serde_json::from_str::<Vec<Value>>(l).ok())
        .filter(|v| v.iter().all(Value::is_object))
    {
        return (from_label(vnics, &endpoints), Source::Label);
    }
    let vnics = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| synthesized(i, ep, dns))
        .collect();
    (vnics, Source::Endpoints)
}

fn from_label(vnics: Vec<Value>, endpoints: &[&MacvlanEndpoint]) -> Vec<Value> {
    let mut used = vec![false; endpoints.len()];
    vnics
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::Object(mut obj) = v else {
                return v;
            };
            let Some(view) = PersistedVnic::read(i, &obj) else {
                return Value::Object(obj);
            };
            // The endpoint on the vNIC's parent, preferring the one holding its static address.
            let candidates: Vec<usize> = (0..endpoints.len())
                .filter(|&k| !used[k] && endpoints[k].parent == view.parent)
                .collect();
            let pick = candidates
                .iter()
                .copied()
                .find(|&k| {
                    view.static_ip.is_some()
                        && (endpoints[k].requested_ip == view.static_ip
                            || endpoints[k].ip == view.static_ip)
                })
                .or_else(|| candidates.first().copied());
            if let Some(k) = pick {
                used[k] = true;
                let ep = endpoints[k];
                let new_ip = view
                    .static_ip
                    .and(ep.requested_ip.or(ep.ip))
                    .filter(|ip| Some(*ip) != view.static_ip);
                update_persisted(&mut obj, ep.subnet, ep.gateway, new_ip);
            }
            Value::Object(obj)
        })
        .collect()
}

fn synthesized(i: usize, ep: &MacvlanEndpoint, dns: &[String]) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(format!("eth{i}")));
    m.insert("parent_interface".into(), json!(ep.parent));
    match ep.requested_ip {
        Some(ip) => {
            m.insert("network_mode".into(), json!("static"));
            m.insert("ip".into(), json!(ip.to_string()));
        }
        None => {
            m.insert("network_mode".into(), json!("dhcp"));
        }
    }
    m.insert(
        "subnet".into(),
        json!(ep.subnet.network().netmask().to_string()),
    );
    m.insert(
        "gateway".into(),
        ep.gateway.map_or(Value::Null, |g| json!(g.to_string())),
    );
    // The MAC it has keeps the LAN's DHCP reservations valid on the next attach.
    m.insert(
        "mac".into(),
        ep.mac.map_or(Value::Null, |mac| json!(mac.to_string())),
    );
    m.insert(
        "dns".into(),
        if dns.is_empty() {
            Value::Null
        } else {
            json!(dns)
        },
    );
    Value::Object(m)
}

/// The MACVLAN endpoints of `c` (networks that cannot be inspected are skipped).
pub async fn macvlan_endpoints(rt: &Runtimes, c: &ContainerInspect) -> Vec<MacvlanEndpoint> {
    let mut out = Vec::new();
    for (name, ep) in &c.network_settings.networks {
        if name.ends_with(naming::INTERNAL_SUFFIX) {
            continue;
        }
        let Ok(n) = rt.docker().inspect_network(name).await else {
            continue;
        };
        if n.driver != "macvlan" {
            continue;
        }
        let Some(parent) = n.options.get("parent").cloned() else {
            continue;
        };
        let Some(pool) = n.ipam.config.iter().find(|p| {
            p.subnet
                .as_deref()
                .is_some_and(|s| s.parse::<Ipv4Net>().is_ok())
        }) else {
            continue;
        };
        let Some(subnet) = pool.subnet.as_deref().and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push(MacvlanEndpoint {
            network: name.clone(),
            parent,
            subnet,
            gateway: pool.gateway.as_deref().and_then(|g| g.parse().ok()),
            requested_ip: ep.ipam_config.as_ref().and_then(|c| c.ipv4_address),
            ip: ep.ip_address.parse().ok(),
            mac: ep.mac_address.parse().ok(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(network: &str, parent: &str, subnet: &str, req: Option<&str>) -> MacvlanEndpoint {
        MacvlanEndpoint {
            network: network.into(),
            parent: parent.into(),
            subnet: subnet.parse().unwrap(),
            gateway: Some(
                subnet
                    .parse::<Ipv4Net>()
                    .unwrap()
                    .network()
                    .addr()
                    .to_bits()
                    .wrapping_add(1)
                    .into(),
            ),
            requested_ip: req.map(|r| r.parse().unwrap()),
            ip: req.map(|r| r.parse().unwrap()),
            mac: Some("02:00:00:00:00:07".parse().unwrap()),
        }
    }

    fn labels(vnics: Value) -> BTreeMap<String, String> {
        BTreeMap::from([(naming::LABEL_VNICS.to_owned(), vnics.to_string())])
    }

    #[test]
    fn the_label_is_brought_up_to_date_with_the_endpoints() {
        // Created on 10.1.0.0/24, re-homed to 10.9.0.0/23 with a new address since.
        let l = labels(json!([
            {"name": "eth0", "parent_interface": "eth0", "network_mode": "static",
             "ip": "10.1.0.5", "subnet": "255.255.255.0", "gateway": "10.1.0.1",
             "vendor_extra": {"kept": true}},
            {"name": "eth1", "parent_interface": "eth1", "network_mode": "dhcp",
             "parent_subnet": "10.2.0.0/24", "parent_gateway": "10.2.0.1"}
        ]));
        let eps = [
            ep("macvlan_eth1_10.2.0.0_24", "eth1", "10.2.0.0/24", None),
            ep(
                "macvlan_eth0_10.9.0.0_23",
                "eth0",
                "10.9.0.0/23",
                Some("10.9.0.5"),
            ),
        ];
        let (v, src) = rebuild(&l, &eps, &[]);
        assert_eq!(src, Source::Label);
        assert_eq!(
            v,
            vec![
                json!({"name": "eth0", "parent_interface": "eth0", "network_mode": "static",
                       "ip": "10.9.0.5", "subnet": "255.255.254.0", "gateway": "10.9.0.1",
                       "vendor_extra": {"kept": true}}),
                json!({"name": "eth1", "parent_interface": "eth1", "network_mode": "dhcp",
                       "parent_subnet": "10.2.0.0/24", "parent_gateway": "10.2.0.1"}),
            ]
        );
    }

    #[test]
    fn a_vnic_without_an_endpoint_is_kept_as_labelled() {
        let vnic = json!({"name": "eth0", "parent_interface": "gone0", "network_mode": "dhcp"});
        let (v, _) = rebuild(&labels(json!([vnic.clone()])), &[], &[]);
        assert_eq!(v, vec![vnic]);
    }

    #[test]
    fn without_a_label_each_endpoint_becomes_a_vnic() {
        let eps = [
            ep(
                "macvlan_eth0_10.1.0.0_24",
                "eth0",
                "10.1.0.0/24",
                Some("10.1.0.5"),
            ),
            ep("macvlan_eth1_10.2.0.0_24", "eth1", "10.2.0.0/24", None),
        ];
        let (v, src) = rebuild(&BTreeMap::new(), &eps, &["1.1.1.1".to_owned()]);
        assert_eq!(src, Source::Endpoints);
        assert_eq!(
            v,
            vec![
                json!({"name": "eth0", "parent_interface": "eth0", "network_mode": "static",
                       "ip": "10.1.0.5", "subnet": "255.255.255.0", "gateway": "10.1.0.1",
                       "mac": "02:00:00:00:00:07", "dns": ["1.1.1.1"]}),
                json!({"name": "eth1", "parent_interface": "eth1", "network_mode": "dhcp",
                       "subnet": "255.255.255.0", "gateway": "10.2.0.1",
                       "mac": "02:00:00:00:00:07", "dns": ["1.1.1.1"]}),
            ]
        );
        // What is synthesized is a valid create vNIC (the next re-home parses it).
        for (i, x) in v.iter().enumerate() {
            super::super::vnic::parse_vnic(i, x).expect("valid vNIC");
        }
    }

    #[test]
    fn a_corrupt_label_falls_back_to_the_endpoints() {
        let l = BTreeMap::from([(naming::LABEL_VNICS.to_owned(), "[{\"na".to_owned())]);
        let (_, src) = rebuild(&l, &[], &[]);
        assert_eq!(src, Source::Endpoints);
    }
}
