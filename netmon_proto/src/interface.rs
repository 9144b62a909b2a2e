//! What netmon reports about one host interface (upstream §7.3 and upstream-head §4.4, field for
//! field). Both ends use this one type: netmon fills every field; the agent also reads the
//! Python netmon's shorter `down`/`removed` reports, which leave out `index`, `operstate`,
//! `gateway` and `timestamp`.

use serde::{Deserialize, Serialize};

/// One IPv4 address of an interface, keys in upstream order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Entry {
    /// Dotted quad.
    pub address: String,
    #[serde(default)]
    pub prefixlen: u8,
    /// The network in CIDR form with host bits cleared, e.g. `192.168.1.0/24`.
    #[serde(default)]
    pub subnet: String,
    /// The network address, dotted.
    #[serde(default)]
    pub network_address: String,
}

/// Why an interface is reported without addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceStatus {
    /// The link exists but is not operational or has no IPv4 address.
    Down,
    /// The link is gone (also when a NIC moved into a container's namespace).
    Removed,
    /// A status this side does not know; read as "not usable".
    #[serde(other)]
    Unknown,
}

impl InterfaceStatus {
    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceStatus::Down => "down",
            InterfaceStatus::Removed => "removed",
            InterfaceStatus::Unknown => "unknown",
        }
    }
}

/// What kind of port an interface is (upstream-head §5.1): the original knows exactly these two.
/// A Wi-Fi parent cannot carry MACVLAN traffic (one MAC per station).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    Ethernet,
    Wifi,
    /// A value this side does not know; read as Ethernet, like the original.
    #[serde(other)]
    Other,
}

impl InterfaceType {
    /// The original's name rule, its last resort after sysfs: `wlan*`, `wlp*`, `wlx*` are Wi-Fi.
    pub fn from_name(name: &str) -> Self {
        if ["wlan", "wlp", "wlx"].iter().any(|p| name.starts_with(p)) {
            InterfaceType::Wifi
        } else {
            InterfaceType::Ethernet
        }
    }

    /// The wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceType::Ethernet => "ethernet",
            InterfaceType::Wifi => "wifi",
            InterfaceType::Other => "other",
        }
    }
}

/// One interface; keys serialize in upstream order, `status` only on down/removed reports (an
/// extension of upstream 3d2c700, which sent nothing in that case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The kernel's operational state (`UP`, `DOWN`, `UNKNOWN`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operstate: Option<String>,
    /// `wifi` or `ethernet` (upstream-head §4.4); absent from 3d2c700's netmon and from
    /// down/removed reports of the Python one.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<InterfaceType>,
    #[serde(default)]
    pub ipv4_addresses: Vec<Ipv4Entry>,
    /// The default gateway through this interface (main table), dotted.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InterfaceStatus>,
    /// The link's hardware address, when the sender knows it.
    #[serde(default, alias = "mac", skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

impl InterfaceInfo {
    /// True when the interface is usable: reported without a down/removed status.
    pub fn is_reportable(&self) -> bool {
        self.status.is_none()
    }

    /// True for a report that the interface is gone.
    pub fn is_removed(&self) -> bool {
        self.status == Some(InterfaceStatus::Removed)
    }

    /// True for a Wi-Fi port: the reported `type`, or the original's name rule when the sender
    /// did not say (a 3d2c700 netmon; upstream-head defect W10 assumed Ethernet instead).
    pub fn is_wifi(&self) -> bool {
        self.kind
            .unwrap_or_else(|| InterfaceType::from_name(&self.interface))
            == InterfaceType::Wifi
    }

    /// The subnet (CIDR) of the first IPv4 address, as the original cache kept it.
    pub fn subnet(&self) -> Option<&str> {
        self.ipv4_addresses
            .first()
            .map(|a| a.subnet.as_str())
            .filter(|s| !s.is_empty())
    }

    /// True when the interface has at least one IPv4 address.
    pub fn has_ipv4(&self) -> bool {
        !self.ipv4_addresses.is_empty()
    }

    /// Equal in everything but the timestamp: the same state reported at another time.
    pub fn same_state(&self, other: &InterfaceInfo) -> bool {
        self.interface == other.interface
            && self.index == other.index
            && self.operstate == other.operstate
            && self.kind == other.kind
            && self.ipv4_addresses == other.ipv4_addresses
            && self.gateway == other.gateway
            && self.status == other.status
            && self.mac_address == other.mac_address
    }
}
