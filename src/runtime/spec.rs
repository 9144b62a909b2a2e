//! The validated model of a `create_new_runtime` request: the runtime name, its vNICs and the image
//! version, checked completely before Docker sees anything.
//!
//! Both vNIC field generations the cloud has sent are accepted (spec §1 "vNIC fields"):
//! - upstream 3d2c700: `ip_address`, `mac_address`, `subnet` as a CIDR, `network_mode`
//!   `manual`|`dhcp`, optional `parent_subnet` / `parent_gateway`;
//! - production: `ip`, `mac`, `subnet` as a dotted netmask, `gateway`, `network_mode` `static`|`dhcp`.
//!
//! Either spelling is read for every field (giving both with different values is an error). The
//! vNIC objects are also kept verbatim ([`VnicSpec::raw`], [`CreateSpec::raw_vnics`]) because
//! `runtime_vnics.json` stores them exactly as received.
//!
//! Every error names the offending field (`vnic_configs[1].mac_address`) — the cloud shows it to a
//! person. Pure: no I/O. The MACVLAN subnet may still be unknown after validation (no subnet in the
//! message): the create workflow then asks netmon's interface cache and re-checks with
//! [`check_static_ip`] and [`check_distinct_networks`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Map, Value};

use super::naming;
use super::net::{self, Ipv4Net, MacAddr};

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
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Which field names a vNIC object used (informational: both are handled the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// `ip_address` / `mac_address` / CIDR `subnet` / `manual`.
    Upstream,
    /// `ip` / `mac` / netmask `subnet` / `static`.
    Production,
}

/// How the vNIC gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A fixed address (`manual` or `static`).
    Static,
    /// `dhcp`: no address is requested; Docker's IPAM picks one from the MACVLAN subnet (real DHCP is
    /// a later milestone).
    Dhcp,
}

/// One validated vNIC.
#[derive(Debug, Clone, PartialEq)]
pub struct VnicSpec {
    /// Position in `vnic_configs` (for error messages).
    pub index: usize,
    /// The vNIC's label (`name`); not an interface name inside the container.
    pub name: String,
    /// Host interface the MACVLAN network hangs off (`parent_interface`).
    pub parent: String,
    /// Static or DHCP.
    pub mode: Mode,
    /// The static address (always `Some` for [`Mode::Static`]; ignored for DHCP).
    pub ip: Option<Ipv4Addr>,
    /// The vNIC's own subnet when the message says enough to know it (CIDR `subnet`, or a netmask
    /// with a gateway or address, or a `/prefix` on the address), host bits cleared.
    pub subnet: Option<Ipv4Net>,
    /// A netmask/prefix given without any address to anchor it (subnet still unknown).
    pub prefix_hint: Option<u8>,
    /// `gateway`.
    pub gateway: Option<Ipv4Addr>,
    /// `parent_subnet` (upstream generation), host bits cleared.
    pub parent_subnet: Option<Ipv4Net>,
    /// `parent_gateway` (upstream generation).
    pub parent_gateway: Option<Ipv4Addr>,
    /// Fixed MAC address for the MACVLAN endpoint.
    pub mac: Option<MacAddr>,
    /// DNS servers (IPv4 or IPv6 literals).
    pub dns: Vec<IpAddr>,
    /// Which spelling was used.
    pub generation: Generation,
    /// The object exactly as received.
    pub raw: Map<String, Value>,
}

impl VnicSpec {
    /// The MACVLAN subnet and gateway the message itself determines: `parent_subnet` (+
    /// `parent_gateway`, else `gateway`), otherwise the vNIC's own subnet (+ `gateway`). `None` means
    /// "ask netmon for the parent's subnet".
    pub fn macvlan_subnet(&self) -> Option<(Ipv4Net, Option<Ipv4Addr>)> {
        if let Some(s) = self.parent_subnet {
            return Some((s, self.parent_gateway.or(self.gateway)));
        }
        self.subnet
            .map(|s| (s, self.gateway.or(self.parent_gateway)))
    }

    /// The field prefix for error messages: `vnic_configs[i]`.
    pub fn field(&self, key: &str) -> String {
        format!("vnic_configs[{}].{key}", self.index)
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
}

/// Validates a create request: the name, every vNIC, and the vNICs against each other.
pub fn parse_create(
    container_name: &str,
    vnic_configs: &[Map<String, Value>],
    runtime_version: Option<&str>,
) -> Result<CreateSpec, SpecError> {
    naming::check_container_name(container_name)
        .map_err(|m| SpecError::new("container_name", m))?;
    if vnic_configs.is_empty() {
        return Err(SpecError::new(
            "vnic_configs",
            "At least one vNIC configuration is required",
        ));
    }
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
                    v.field(mac_key(v)),
                    format!(
                        "MAC address {a} is already used by vnic_configs[{}]",
                        w.index
                    ),
                ));
            }
            if v.mode == Mode::Static && w.mode == Mode::Static && v.ip.is_some() && v.ip == w.ip {
                return Err(SpecError::new(
                    v.field(ip_key(v)),
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

/// A static vNIC's address must be a host address of the MACVLAN subnet it joins, and not its
/// gateway. Also used after the subnet came from netmon.
pub fn check_static_ip(
    v: &VnicSpec,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
) -> Result<(), SpecError> {
    if let Some(g) = gateway
        && !subnet.contains(g)
    {
        return Err(SpecError::new(
            v.field(if v.parent_gateway.is_some() && v.parent_subnet.is_some() {
                "parent_gateway"
            } else {
                "gateway"
            }),
            format!("gateway {g} is outside the subnet {}", subnet.network()),
        ));
    }
    if v.mode != Mode::Static {
        return Ok(());
    }
    let Some(ip) = v.ip else {
        return Ok(());
    };
    let field = v.field(ip_key(v));
    if !subnet.contains(ip) {
        return Err(SpecError::new(
            field,
            format!("address {ip} is outside the subnet {}", subnet.network()),
        ));
    }
    if subnet.is_network_or_broadcast(ip) {
        return Err(SpecError::new(
            field,
            format!(
                "address {ip} is the network or broadcast address of {}",
                subnet.network()
            ),
        ));
    }
    if gateway == Some(ip) {
        return Err(SpecError::new(
            field,
            format!("address {ip} is the subnet's gateway"),
        ));
    }
    Ok(())
}

fn ip_key(v: &VnicSpec) -> &'static str {
    if v.raw.contains_key("ip_address") && !v.raw.contains_key("ip") {
        "ip_address"
    } else {
        "ip"
    }
}

fn mac_key(v: &VnicSpec) -> &'static str {
    if v.raw.contains_key("mac_address") && !v.raw.contains_key("mac") {
        "mac_address"
    } else {
        "mac"
    }
}

/// Reads one optional string field: absent or `null` → `None`; a non-string → error.
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    key: &str,
) -> Result<Option<&'a str>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(SpecError::new(
            format!("{field}.{key}"),
            "Value must be a string.",
        )),
    }
}

/// Reads a field that has two spellings; both given with different values is an error. An empty
/// string counts as absent (the cloud sends `""` for unset fields).
fn either<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    new: &str,
    old: &str,
) -> Result<Option<(&'a str, String)>, SpecError> {
    let a = opt_str(obj, field, new)?.filter(|s| !s.trim().is_empty());
    let b = opt_str(obj, field, old)?.filter(|s| !s.trim().is_empty());
    match (a, b) {
        (Some(a), Some(b)) if a.trim() != b.trim() => Err(SpecError::new(
            format!("{field}.{new}"),
            format!("{new} {a:?} and {old} {b:?} disagree"),
        )),
        (Some(a), _) => Ok(Some((a.trim(), format!("{field}.{new}")))),
        (None, Some(b)) => Ok(Some((b.trim(), format!("{field}.{old}")))),
        (None, None) => Ok(None),
    }
}

/// Validates one vNIC object (`index` is its position in `vnic_configs`). Also usable on the
/// persisted objects of `runtime_vnics.json`.
pub fn parse_vnic(index: usize, value: &Value) -> Result<VnicSpec, SpecError> {
    let obj = value.as_object().ok_or_else(|| {
        SpecError::new(
            format!("vnic_configs[{index}]"),
            "a vNIC configuration must be an object",
        )
    })?;
    parse_vnic_map(index, obj)
}

/// [`parse_vnic`] for an object already known to be one.
pub fn parse_vnic_map(index: usize, obj: &Map<String, Value>) -> Result<VnicSpec, SpecError> {
    let field = format!("vnic_configs[{index}]");
    let fe = |k: &str| format!("{field}.{k}");
    let bad = |k: &str, why: &str, text: &str| SpecError::new(fe(k), format!("{text:?}: {why}"));

    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        None => return Err(SpecError::new(fe("name"), "Missing key: name")),
        Some(_) => return Err(SpecError::new(fe("name"), "Value must be a string.")),
    };
    let parent = match obj.get("parent_interface") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(SpecError::new(
                fe("parent_interface"),
                "Missing key: parent_interface",
            ));
        }
        Some(_) => {
            return Err(SpecError::new(
                fe("parent_interface"),
                "Value must be a string.",
            ));
        }
    };
    naming::check_iface_name(&parent).map_err(|m| SpecError::new(fe("parent_interface"), m))?;

    let mode_text = opt_str(obj, &field, "network_mode")?
        .ok_or_else(|| SpecError::new(fe("network_mode"), "Missing key: network_mode"))?;
    let mode = match mode_text.trim().to_ascii_lowercase().as_str() {
        "manual" | "static" => Mode::Static,
        "dhcp" => Mode::Dhcp,
        _ => {
            return Err(bad(
                "network_mode",
                "must be \"static\" (or \"manual\") or \"dhcp\"",
                mode_text,
            ));
        }
    };

    // The address, possibly with a /prefix (upstream stripped it; we use it as a subnet hint).
    let mut prefix_from_ip = None;
    let ip = match either(obj, &field, "ip", "ip_address")? {
        None => None,
        Some((text, f)) => {
            let (addr, prefix) = match text.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (text, None),
            };
            let ip =
                net::parse_ipv4(addr).map_err(|e| SpecError::new(&f, format!("{text:?}: {e}")))?;
            if let Some(p) = prefix {
                prefix_from_ip = Some(
                    net::parse_prefix(p)
                        .map_err(|e| SpecError::new(&f, format!("{text:?}: {e}")))?,
                );
            }
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
                return Err(SpecError::new(
                    &f,
                    format!("{text:?}: not a usable host address"),
                ));
            }
            Some(ip)
        }
    };
    if mode == Mode::Static && ip.is_none() {
        return Err(SpecError::new(
            fe("ip"),
            "a static (manual) vNIC needs an address (ip or ip_address)",
        ));
    }

    let gateway = match opt_str(obj, &field, "gateway")?.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(g) => Some(net::parse_ipv4(g.trim()).map_err(|e| bad("gateway", e.0, g))?),
    };
    let parent_gateway =
        match opt_str(obj, &field, "parent_gateway")?.filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(g) => Some(net::parse_ipv4(g.trim()).map_err(|e| bad("parent_gateway", e.0, g))?),
        };
    let parent_subnet =
        match opt_str(obj, &field, "parent_subnet")?.filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<Ipv4Net>()
                    .map_err(|e| bad("parent_subnet", e.0, s))?
                    .network(),
            ),
        };

    // `subnet`: a CIDR (upstream) or a dotted netmask (production).
    let mut subnet = None;
    let mut prefix_hint = None;
    let mut netmask_form = false;
    if let Some(s) = opt_str(obj, &field, "subnet")?.filter(|s| !s.trim().is_empty()) {
        let s = s.trim();
        if s.contains('/') {
            let n = s.parse::<Ipv4Net>().map_err(|e| bad("subnet", e.0, s))?;
            subnet = Some(n.network());
        } else {
            netmask_form = true;
            let p = net::parse_netmask(s).map_err(|e| bad("subnet", e.0, s))?;
            prefix_hint = Some(p);
        }
    } else if let Some(p) = prefix_from_ip {
        prefix_hint = Some(p);
    }
    if subnet.is_none()
        && let Some(p) = prefix_hint
    {
        // Anchor the prefix on the gateway (what production does), else on the address.
        let anchor = gateway.or(if mode == Mode::Static { ip } else { None });
        if let Some(a) = anchor {
            subnet = Ipv4Net::new(a, p).map(|n| n.network());
            prefix_hint = None;
        }
    }
    if let (Some(ps), Some(s)) = (parent_subnet, subnet)
        && ps != s
    {
        return Err(SpecError::new(
            fe("subnet"),
            format!("subnet {s} disagrees with parent_subnet {ps}"),
        ));
    }

    let mac = match either(obj, &field, "mac", "mac_address")? {
        None => None,
        Some((text, f)) => Some(
            text.parse::<MacAddr>()
                .map_err(|e| SpecError::new(&f, format!("{text:?}: {e}")))?,
        ),
    };

    let mut dns = Vec::new();
    match obj.get("dns") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (k, d) in items.iter().enumerate() {
                let f = format!("{field}.dns[{k}]");
                let s = d
                    .as_str()
                    .ok_or_else(|| SpecError::new(&f, "Value must be a string."))?;
                let a: IpAddr = s.trim().parse().map_err(|_| {
                    SpecError::new(&f, format!("{s:?}: expected an IPv4 or IPv6 address"))
                })?;
                if a.is_unspecified() || a.is_multicast() {
                    return Err(SpecError::new(
                        &f,
                        format!("{s:?}: not a usable DNS server address"),
                    ));
                }
                dns.push(a);
            }
        }
        Some(_) => return Err(SpecError::new(fe("dns"), "Value must be a list.")),
    }

    let generation = if obj.contains_key("ip")
        || obj.contains_key("mac")
        || mode_text.trim().eq_ignore_ascii_case("static")
        || netmask_form
    {
        Generation::Production
    } else {
        Generation::Upstream
    };

    let v = VnicSpec {
        index,
        name,
        parent,
        mode,
        ip: if mode == Mode::Static { ip } else { None },
        subnet,
        prefix_hint,
        gateway,
        parent_subnet,
        parent_gateway,
        mac,
        dns,
        generation,
        raw: obj.clone(),
    };
    if let Some(s) = v.subnet {
        check_static_ip(&v, s, v.gateway)?;
    }
    if let Some(ps) = v.parent_subnet {
        check_static_ip(&v, ps, v.parent_gateway)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            parse_create("ok", &[], None).unwrap_err().message,
            "At least one vNIC configuration is required"
        );
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
