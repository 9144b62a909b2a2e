//! One vNIC of a runtime, in its two forms and with one rule each.
//!
//! - A vNIC in a `create_new_runtime` request: [`parse_vnic_map`] validates it completely into a
//!   [`VnicSpec`] (both field generations, every address checked, errors naming the field). The
//!   request's shapes were checked by its contract before; this is the meaning.
//! - A vNIC persisted in `runtime_vnics.json` (written at create as received, or by the Python
//!   agent): [`PersistedVnic::read`] is the one reader, lenient on purpose (a stored runtime is
//!   never refused), and [`update_persisted`] the one writer of a new subnet into it.
//!
//! Both field generations are accepted (spec §1 "vNIC fields"):
//! - upstream 3d2c700: `ip_address`, `mac_address`, `subnet` as a CIDR, `network_mode`
//!   `manual`|`dhcp`, optional `parent_subnet` / `parent_gateway`;
//! - production: `ip`, `mac`, `subnet` as a dotted netmask, `gateway`, `network_mode` `static`|`dhcp`.
//!
//! Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Map, Value};

use super::naming;
use super::net::{self, Ipv4Net, MacAddr};
use super::spec::SpecError;

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
    /// `dhcp`: no address is requested; Docker's IPAM picks one from the MACVLAN subnet (no DHCP
    /// client runs in the container yet).
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

    /// The key the address was given under (`ip` or `ip_address`), for error messages.
    pub(super) fn ip_key(&self) -> &'static str {
        if self.raw.contains_key("ip_address") && !self.raw.contains_key("ip") {
            "ip_address"
        } else {
            "ip"
        }
    }

    /// The key the MAC was given under (`mac` or `mac_address`), for error messages.
    pub(super) fn mac_key(&self) -> &'static str {
        if self.raw.contains_key("mac_address") && !self.raw.contains_key("mac") {
            "mac_address"
        } else {
            "mac"
        }
    }
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
    let field = v.field(v.ip_key());
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

/// Validates one vNIC object (`index` is its position in `vnic_configs`): [`parse_vnic_map`] for
/// a value that may not be an object.
#[cfg(test)]
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

/// A persisted vNIC as re-homing and rebuilding read it ([`PersistedVnic::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedVnic {
    /// Position in the persisted vNIC array.
    pub index: usize,
    /// `parent_interface`.
    pub parent: String,
    /// The configured static address (`manual`/`static` mode), if any.
    pub static_ip: Option<Ipv4Addr>,
    /// The configured MAC, if any.
    pub mac: Option<MacAddr>,
}

/// Reads what re-homing needs from one persisted vNIC object (either field generation), leniently:
/// the object was validated when the runtime was created, or written by the Python agent.
/// `None` when it names no parent interface.
impl PersistedVnic {
    pub fn read(index: usize, vnic: &Map<String, Value>) -> Option<Self> {
        // Not a MACVLAN attachment: re-homing or rebuilding it as one would add an endpoint that
        // passes no traffic next to the original's bridge.
        if is_proxy_arp(vnic) {
            return None;
        }
        let parent = vnic
            .get("parent_interface")
            .and_then(Value::as_str)?
            .to_string();
        let text = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| vnic.get(*k).and_then(Value::as_str))
                .filter(|s| !s.is_empty())
        };
        let mode = vnic
            .get("network_mode")
            .and_then(Value::as_str)
            .unwrap_or("");
        let static_ip = if mode.eq_ignore_ascii_case("dhcp") {
            None
        } else {
            text(["ip", "ip_address"])
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse().ok())
        };
        let mac = text(["mac", "mac_address"]).and_then(|s| s.parse().ok());
        Some(PersistedVnic {
            index,
            parent,
            static_ip,
            mac,
        })
    }
}

/// True for a vNIC the original agent (HEAD) attached through its proxy-ARP bridge on a Wi-Fi
/// parent (`_network_method: "proxy_arp"` or `_is_wifi: true`, upstream-head §5.5): this agent
/// cannot manage it yet and leaves it alone.
pub fn is_proxy_arp(vnic: &Map<String, Value>) -> bool {
    vnic.get("_network_method").and_then(Value::as_str) == Some("proxy_arp")
        || vnic.get("_is_wifi").and_then(Value::as_bool) == Some(true)
}

/// Updates one persisted vNIC object in place for its parent's new subnet, keeping every other key:
/// `parent_subnet` (CIDR) and `parent_gateway` (3d2c700 generation), `subnet` (a CIDR or a dotted
/// netmask, whichever it was) and `gateway` (production generation) when present, and the static
/// address (`ip` / `ip_address`) when it had to be replaced by `new_ip`. Returns whether anything
/// changed.
pub fn update_persisted(
    vnic: &mut Map<String, Value>,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    new_ip: Option<Ipv4Addr>,
) -> bool {
    let subnet = subnet.network();
    let mut changed = false;
    let mut set = |vnic: &mut Map<String, Value>, key: &str, value: String| {
        if vnic.get(key).and_then(Value::as_str) != Some(value.as_str()) {
            vnic.insert(key.to_string(), Value::String(value));
            changed = true;
        }
    };
    if vnic.get("parent_subnet").is_some_and(Value::is_string) {
        set(vnic, "parent_subnet", subnet.to_string());
    }
    if let Some(gw) = gateway {
        if vnic.get("parent_gateway").is_some_and(Value::is_string) {
            set(vnic, "parent_gateway", gw.to_string());
        }
        if vnic.get("gateway").is_some_and(Value::is_string) {
            set(vnic, "gateway", gw.to_string());
        }
    }
    if let Some(old) = vnic.get("subnet").and_then(Value::as_str) {
        let value = if old.contains('/') {
            subnet.to_string()
        } else {
            subnet.netmask().to_string()
        };
        set(vnic, "subnet", value);
    }
    if let Some(ip) = new_ip {
        for key in ["ip", "ip_address"] {
            if let Some(old) = vnic.get(key).and_then(Value::as_str) {
                // Keep a `/prefix` suffix if the address was written with one.
                let value = match old.split_once('/') {
                    Some(_) => format!("{ip}/{}", subnet.prefix()),
                    None => ip.to_string(),
                };
                set(vnic, key, value);
            }
        }
    }
    changed
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

    #[test]
    fn persisted_vnics_are_updated_in_place_for_both_generations() {
        let mut upstream = json!({"name": "v", "parent_interface": "eth1", "network_mode": "manual",
            "ip_address": "10.1.1.50", "subnet": "10.1.1.0/24", "parent_subnet": "10.1.1.0/24",
            "parent_gateway": "10.1.1.1", "dns": ["1.1.1.1"], "extra": null});
        let map = upstream.as_object_mut().expect("object");
        assert!(update_persisted(
            map,
            net("10.1.0.0/23"),
            Some(ip("10.1.0.1")),
            None
        ));
        assert_eq!(
            upstream,
            json!({"name": "v", "parent_interface": "eth1", "network_mode": "manual",
            "ip_address": "10.1.1.50", "subnet": "10.1.0.0/23", "parent_subnet": "10.1.0.0/23",
            "parent_gateway": "10.1.0.1", "dns": ["1.1.1.1"], "extra": null})
        );

        let mut production = json!({"name": "v", "parent_interface": "eth1",
            "network_mode": "static", "ip": "10.1.1.50", "subnet": "255.255.255.0",
            "gateway": "10.1.1.1", "mac": "02:00:00:00:00:01"});
        let map = production.as_object_mut().expect("object");
        assert!(update_persisted(
            map,
            net("10.9.0.0/16"),
            Some(ip("10.9.0.1")),
            Some(ip("10.9.0.2"))
        ));
        assert_eq!(
            production,
            json!({"name": "v", "parent_interface": "eth1", "network_mode": "static",
            "ip": "10.9.0.2", "subnet": "255.255.0.0", "gateway": "10.9.0.1",
            "mac": "02:00:00:00:00:01"})
        );
        let map = production.as_object_mut().expect("object");
        assert!(!update_persisted(
            map,
            net("10.9.0.0/16"),
            Some(ip("10.9.0.1")),
            None
        ));
    }

    #[test]
    fn vnic_views_read_both_generations() {
        let v = PersistedVnic::read(
            1,
            json!({"parent_interface": "eth1", "network_mode": "manual",
                "ip_address": "10.1.1.5/24", "mac_address": "02:00:00:00:00:09"})
            .as_object()
            .expect("object"),
        )
        .expect("view");
        assert_eq!(v.static_ip, Some(ip("10.1.1.5")));
        assert_eq!(
            v.mac.map(|m| m.to_string()),
            Some("02:00:00:00:00:09".into())
        );
        let v = PersistedVnic::read(
            0,
            json!({"parent_interface": "eth1", "network_mode": "dhcp", "ip": "10.1.1.5"})
                .as_object()
                .expect("object"),
        )
        .expect("view");
        assert_eq!(v.static_ip, None);
        assert!(
            PersistedVnic::read(0, json!({"network_mode": "dhcp"}).as_object().expect("o"))
                .is_none()
        );
    }

    #[test]
    fn proxy_arp_vnics_of_the_original_are_left_alone() {
        for stamp in [
            json!({"_network_method": "proxy_arp"}),
            json!({"_is_wifi": true}),
        ] {
            let mut v = json!({"parent_interface": "wlan0", "network_mode": "dhcp"});
            v.as_object_mut()
                .expect("object")
                .extend(stamp.as_object().expect("object").clone());
            let v = v.as_object().expect("object");
            assert!(is_proxy_arp(v) && PersistedVnic::read(0, v).is_none(), "{v:?}");
        }
        let macvlan = json!({"parent_interface": "eth0", "network_mode": "dhcp",
            "_network_method": "macvlan", "_is_wifi": false});
        let macvlan = macvlan.as_object().expect("object");
        assert!(!is_proxy_arp(macvlan) && PersistedVnic::read(0, macvlan).is_some());
    }
}
