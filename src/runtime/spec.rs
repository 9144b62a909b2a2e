//! The validated model of a `create_new_runtime` request: the runtime name, its vNICs (each read
//! by [`super::vnic`]) and the image version, checked completely before Docker sees anything, and
//! the checks across vNICs.
//!
//! The vNIC objects are also kept verbatim ([`VnicSpec::raw`], [`CreateSpec::raw_vnics`]) because
//! `runtime_vnics.json` stores them exactly as received.
//!
//! Every error names the offending field (`vnic_configs[1].mac_address`) — the cloud shows it to a
//! person. Pure: no I/O. The MACVLAN subnet may still be unknown after validation (no subnet in the
//! message): the create workflow then asks netmon's interface cache and re-checks with
//! [`check_static_ip`] and [`check_distinct_networks`].

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::naming;
use super::net::Ipv4Net;
use super::vnic::parse_vnic_map;
pub use super::vnic::{Mode, VnicSpec, check_static_ip};

/// A request field failed validation. Rendered `Invalid <field>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {field}: {message}")]
pub struct SpecError {
    /// The field path, e.g. `container_name` or `vnic_configs[0].ip`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated `create_new_runtime` request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    /// The runtime (container) name.
    pub name: String,
    /// The vNICs, in request order.
    pub vnics: Vec<VnicSpec>,
    /// All vNICs' DNS servers, de-duplicated keeping first occurrence (the container's DNS).
    pub dns: Vec<IpAddr>,
    /// `runtime_version`: the image tag to use instead of the configured one.
    pub runtime_version: Option<String>,
    /// The `vnic_configs` array exactly as received (persisted in `runtime_vnics.json`).
    pub raw_vnics: Vec<Value>,
    /// `dedicated_interface`: a host NIC to move into the runtime's network namespace
    /// (upstream-head §6); a valid interface name (checked by the topic's contract).
    pub dedicated_interface: Option<String>,
    /// `serial_configs` (upstream-head §7.1), validated by [`super::serial::parse_configs`].
    pub serial: Vec<super::serial::SerialSpec>,
}

/// Validates a create request: the name, every vNIC, and the vNICs against each other.
pub fn parse_create(
    container_name: &str,
    vnic_configs: &[Map<String, Value>],
    runtime_version: Option<&str>,
) -> Result<CreateSpec, SpecError> {
    naming::check_container_name(container_name)
        .map_err(|m| SpecError::new("container_name", m))?;
    if let Some(v) = runtime_version {
        naming::check_tag(v).map_err(|m| SpecError::new("runtime_version", m))?;
    }
    let vnics = vnic_configs
        .iter()
        .enumerate()
        .map(|(i, v)| parse_vnic_map(i, v))
        .collect::<Result<Vec<_>, _>>()?;

    let mut dns: Vec<IpAddr> = Vec::new();
    for d in vnics.iter().flat_map(|v| v.dns.iter()) {
        if !dns.contains(d) {
            dns.push(*d);
        }
    }
    let known: Vec<(usize, Ipv4Net)> = vnics
        .iter()
        .filter_map(|v| v.macvlan_subnet().map(|(s, _)| (v.index, s)))
        .collect();
    check_distinct_networks(&vnics, &known)?;
    check_distinct_addresses(&vnics)?;
    Ok(CreateSpec {
        name: container_name.to_owned(),
        vnics,
        dns,
        runtime_version: runtime_version.map(str::to_owned),
        raw_vnics: vnic_configs.iter().cloned().map(Value::Object).collect(),
        dedicated_interface: None,
        serial: Vec::new(),
    })
}

/// Two vNICs must not land on the same MACVLAN network (a container joins a network once) and must
/// agree on the gateway of a shared subnet. `resolved` gives `(vnic index, MACVLAN subnet)` for the
/// vNICs whose subnet is known so far.
pub fn check_distinct_networks(
    vnics: &[VnicSpec],
    resolved: &[(usize, Ipv4Net)],
) -> Result<(), SpecError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for &(i, subnet) in resolved {
        let Some(v) = vnics.iter().find(|v| v.index == i) else {
            continue;
        };
        let name = naming::macvlan_network_name(&v.parent, subnet);
        if let Some(&first) = seen.get(&name) {
            return Err(SpecError::new(
                format!("vnic_configs[{i}]"),
                format!(
                    "it resolves to MACVLAN network {name}, like vnic_configs[{first}]; a container \
                     can join a network only once"
                ),
            ));
        }
        seen.insert(name, i);
    }
    Ok(())
}

fn check_distinct_addresses(vnics: &[VnicSpec]) -> Result<(), SpecError> {
    for (k, v) in vnics.iter().enumerate() {
        for w in &vnics[..k] {
            if let (Some(a), Some(b)) = (v.mac, w.mac)
                && a == b
            {
                return Err(SpecError::new(
                    v.field(v.mac_key()),
                    format!(
                        "MAC address {a} is already used by vnic_configs[{}]",
                        w.index
                    ),
                ));
            }
            if v.mode == Mode::Static && w.mode == Mode::Static && v.ip.is_some() && v.ip == w.ip {
                return Err(SpecError::new(
                    v.field(v.ip_key()),
                    format!(
                        "address {} is already used by vnic_configs[{}]",
                        v.ip.map(|i| i.to_string()).unwrap_or_default(),
                        w.index
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::vnic::{Generation, parse_vnic};
    use super::*;
    use serde_json::json;

    fn maps(v: &[Value]) -> Vec<Map<String, Value>> {
        v.iter()
            .map(|o| o.as_object().cloned().unwrap_or_default())
            .collect()
    }

    fn one(v: Value) -> Result<CreateSpec, SpecError> {
        if !v.is_object() {
            return parse_vnic(0, &v).map(|_| unreachable!("not an object"));
        }
        parse_create("plc-1", &maps(&[v]), None)
    }

    #[test]
    fn upstream_generation_is_understood() {
        let s = one(json!({
            "name": "eth0", "parent_interface": "ens37", "parent_subnet": "192.168.1.0/24",
            "parent_gateway": "192.168.1.1", "network_mode": "manual",
            "ip_address": "192.168.1.50/24", "mac_address": "02:00:00:00:00:01",
            "dns": ["8.8.8.8", "1.1.1.1"], "extra": {"kept": true}
        }))
        .unwrap();
        let v = &s.vnics[0];
        assert_eq!(v.generation, Generation::Upstream);
        assert_eq!(v.mode, Mode::Static);
        assert_eq!(v.ip, Some(Ipv4Addr::new(192, 168, 1, 50)));
        assert_eq!(
            v.macvlan_subnet(),
            Some((
                "192.168.1.0/24".parse().unwrap(),
                Some(Ipv4Addr::new(192, 168, 1, 1))
            ))
        );
        assert_eq!(v.mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert_eq!(s.dns.len(), 2);
        assert_eq!(s.raw_vnics[0]["extra"]["kept"], json!(true));
    }

    #[test]
    fn production_generation_computes_the_subnet_from_gateway_and_netmask() {
        let s = one(json!({
            "name": "eth0", "parent_interface": "eth0", "network_mode": "static",
            "ip": "10.0.5.20", "subnet": "255.255.255.0", "gateway": "10.0.5.1",
            "mac": "02:11:22:33:44:55", "dns": ["10.0.5.1"]
        }))
        .unwrap();
        let v = &s.vnics[0];
        assert_eq!(v.generation, Generation::Production);
        assert_eq!(v.subnet, Some("10.0.5.0/24".parse().unwrap()));
        assert_eq!(
            v.macvlan_subnet().unwrap().1,
            Some(Ipv4Addr::new(10, 0, 5, 1))
        );
    }

    #[test]
    fn dhcp_without_subnet_leaves_it_to_netmon() {
        let s = one(
            json!({"name": "e", "parent_interface": "eth0", "network_mode": "dhcp",
                           "ip": "", "mac": null, "subnet": "255.255.255.0"}),
        )
        .unwrap();
        assert_eq!(s.vnics[0].macvlan_subnet(), None);
        assert_eq!(s.vnics[0].prefix_hint, Some(24));
    }

    fn err(v: Value) -> SpecError {
        one(v).unwrap_err()
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = |extra: Value| {
            let mut o = json!({"name": "e", "parent_interface": "eth0", "network_mode": "dhcp"});
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            o
        };
        assert_eq!(
            err(base(json!({"parent_interface": "a-very-long-iface0"}))).field,
            "vnic_configs[0].parent_interface"
        );
        assert_eq!(
            err(base(json!({"mac": "01:00:5e:00:00:01"}))).field,
            "vnic_configs[0].mac"
        );
        assert_eq!(
            err(base(json!({"mac_address": "ff:ff:ff:ff:ff:ff"}))).field,
            "vnic_configs[0].mac_address"
        );
        assert_eq!(
            err(base(json!({"parent_subnet": "192.168.1.0/33"}))).field,
            "vnic_configs[0].parent_subnet"
        );
        assert_eq!(
            err(base(json!({"subnet": "255.0.255.0"}))).field,
            "vnic_configs[0].subnet"
        );
        assert_eq!(
            err(base(json!({"dns": ["8.8.8.8", "dns.google"]}))).field,
            "vnic_configs[0].dns[1]"
        );
        assert_eq!(
            err(base(json!({"dns": "8.8.8.8"}))).field,
            "vnic_configs[0].dns"
        );
        assert_eq!(
            err(base(json!({"network_mode": "bridge"}))).field,
            "vnic_configs[0].network_mode"
        );
        assert_eq!(
            err(base(json!({"network_mode": "static"}))).field,
            "vnic_configs[0].ip"
        );
        assert_eq!(
            err(base(json!({"ip": "10.0.0.1", "ip_address": "10.0.0.2"}))).field,
            "vnic_configs[0].ip"
        );
        assert_eq!(
            err(base(json!({"gateway": 5}))).field,
            "vnic_configs[0].gateway"
        );
        assert_eq!(err(json!("eth0")).field, "vnic_configs[0]");
        assert_eq!(
            parse_create("bad name", &maps(&[base(json!({}))]), None)
                .unwrap_err()
                .field,
            "container_name"
        );
        // HEAD accepts a runtime with only its internal network (upstream-head §9.1.1).
        let internal_only = parse_create("ok", &[], None).unwrap();
        assert!(internal_only.vnics.is_empty() && internal_only.raw_vnics.is_empty());
        assert_eq!(
            parse_create("ok", &maps(&[base(json!({}))]), Some("../x"))
                .unwrap_err()
                .field,
            "runtime_version"
        );
    }

    #[test]
    fn a_static_address_must_be_inside_its_subnet() {
        let e = err(
            json!({"name": "e", "parent_interface": "eth0", "network_mode": "manual",
                            "ip_address": "10.9.0.5", "parent_subnet": "10.8.0.0/24"}),
        );
        assert_eq!(e.field, "vnic_configs[0].ip_address");
        assert!(
            e.to_string().contains("outside the subnet 10.8.0.0/24"),
            "{e}"
        );
        let e = err(
            json!({"name": "e", "parent_interface": "eth0", "network_mode": "static",
                            "ip": "10.8.0.255", "subnet": "10.8.0.0/24"}),
        );
        assert!(e.message.contains("broadcast"), "{e}");
        let e = err(
            json!({"name": "e", "parent_interface": "eth0", "network_mode": "static",
                            "ip": "10.8.0.1", "subnet": "255.255.255.0", "gateway": "10.8.0.1"}),
        );
        assert!(e.message.contains("gateway"), "{e}");
        let e = err(
            json!({"name": "e", "parent_interface": "eth0", "network_mode": "dhcp",
                            "parent_subnet": "10.8.0.0/24", "parent_gateway": "10.7.0.1"}),
        );
        assert_eq!(e.field, "vnic_configs[0].parent_gateway");
    }

    #[test]
    fn two_vnics_may_not_share_a_macvlan_network_or_an_address() {
        let a = json!({"name": "a", "parent_interface": "eth0", "network_mode": "dhcp",
                       "parent_subnet": "10.8.0.0/24"});
        let b = json!({"name": "b", "parent_interface": "eth0", "network_mode": "dhcp",
                       "subnet": "10.8.0.0/24"});
        let e = parse_create("p", &maps(&[a.clone(), b]), None).unwrap_err();
        assert_eq!(e.field, "vnic_configs[1]");
        assert!(e.message.contains("macvlan_eth0_10.8.0.0_24"), "{e}");
        let c = json!({"name": "c", "parent_interface": "eth1", "network_mode": "dhcp",
                       "parent_subnet": "10.9.0.0/24", "mac": "02:00:00:00:00:01"});
        let d = json!({"name": "d", "parent_interface": "eth2", "network_mode": "dhcp",
                       "parent_subnet": "10.10.0.0/24", "mac_address": "02:00:00:00:00:01"});
        let e = parse_create("p", &maps(&[c, d]), None).unwrap_err();
        assert_eq!(e.field, "vnic_configs[1].mac_address");
        assert!(parse_create("p", &maps(&[a]), None).is_ok());
    }

    #[test]
    fn dns_is_merged_in_order_without_duplicates() {
        let a = json!({"name": "a", "parent_interface": "eth0", "network_mode": "dhcp",
                       "dns": ["1.1.1.1", "8.8.8.8"]});
        let b = json!({"name": "b", "parent_interface": "eth1", "network_mode": "dhcp",
                       "dns": ["8.8.8.8", "2001:4860:4860::8888"]});
        let s = parse_create("p", &maps(&[a, b]), None).unwrap();
        let got: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
        assert_eq!(got, ["1.1.1.1", "8.8.8.8", "2001:4860:4860::8888"]);
    }
}
