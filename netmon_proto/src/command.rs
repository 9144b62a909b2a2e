//! The command channel (agent → netmon, upstream-head §4.2–§4.3): a request is one line with a
//! `command` key, answered by exactly one response line, in command order on the same connection.
//! A response never has a `type` (that is how a reader tells it from an event) and always has
//! `success`.
//!
//! The shapes are the original's, so the Python netmon can be on either end; this side adds an
//! optional echoed `id` (upstream-head §4.2.2 suggests it: the Python netmon ignores unknown
//! keys and still answers in order). What each command does is netmon's business, not this
//! crate's.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// A process id as the commands carry it: an integer, or a numeric string (the original accepts
/// both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid(pub u32);

impl Serialize for Pid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Pid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Pid)
                .ok_or_else(|| de::Error::custom(format!("Invalid container_pid: {n}"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Pid)
                .map_err(|_| de::Error::custom(format!("Invalid container_pid: {s}"))),
            other => Err(de::Error::custom(format!("Invalid container_pid: {other}"))),
        }
    }
}

fn default_subnet_mask() -> String {
    "255.255.255.0".to_owned()
}

/// `null` as absent: the original agent forwards a vNIC's `subnet: null` (upstream-head §5.2,
/// Defect W4, where the original netmon failed).
fn subnet_mask_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(default_subnet_mask))
}

/// The commands netmon takes (upstream-head §4.3), with their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Run a DHCP client in the container's network namespace on the interface with this MAC.
    StartDhcp {
        container_name: String,
        vnic_name: String,
        mac_address: String,
        container_pid: Pid,
    },
    /// Stop the DHCP client of `container_name:vnic_name`.
    StopDhcp {
        container_name: String,
        vnic_name: String,
    },
    /// Run a DHCP client for a Wi-Fi vNIC on the parent, with the given client id.
    RequestWifiDhcp {
        container_name: String,
        vnic_name: String,
        parent_interface: String,
        container_pid: Pid,
        client_id: String,
    },
    /// The DHCP clients netmon runs.
    GetDhcpStatus,
    /// Build the proxy-ARP bridge of a Wi-Fi vNIC.
    SetupProxyArpBridge {
        container_name: String,
        container_pid: Pid,
        parent_interface: String,
        ip_address: String,
        gateway: String,
        /// `255.255.255.0` when absent or `null`.
        #[serde(
            default = "default_subnet_mask",
            deserialize_with = "subnet_mask_or_default"
        )]
        subnet_mask: String,
    },
    /// Tear down a proxy-ARP bridge; each step runs only when its inputs are given.
    CleanupProxyArpBridge {
        container_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip_address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_interface: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        veth_host: Option<String>,
    },
    /// Tear down every proxy-ARP bridge (self-destruct).
    CleanupAllProxyArp,
    /// Move a dedicated host NIC into the container's network namespace.
    MoveNicToContainer {
        host_interface: String,
        container_pid: Pid,
    },
    /// Give a dedicated NIC back to the host.
    ReturnNicToHost {
        host_interface: String,
        container_pid: Pid,
    },
    /// Whether a dedicated NIC is in the container's namespace (`present`).
    CheckNicInContainer {
        host_interface: String,
        container_pid: Pid,
    },
    /// Ours (the original has no such command; an old netmon answers `Unknown command`): give the
    /// runtime's MACVLAN link whose MAC is `current_mac` the MAC `mac_address`, in the namespace of
    /// `container_pid`. Engines before API 1.54 ignore a MAC on network connect, and before 1.44
    /// honour one on one network only; this keeps a persisted MAC anyway. Already having
    /// `mac_address` is success.
    SetVnicMac {
        container_pid: Pid,
        current_mac: String,
        mac_address: String,
    },
    /// Ours (the original runs `mknod` through Docker exec, which needs a shell in the runtime's
    /// image): create the character device `major:minor` at `container_path` (absolute, under
    /// `/dev/`, no `..`) in the mount namespace of `container_pid`, mode 0666, owner root,
    /// replacing whatever is there. An old netmon answers `Unknown command`.
    ProvisionSerialNode {
        container_pid: Pid,
        container_path: String,
        major: u32,
        minor: u32,
    },
    /// Ours: remove the device node at `container_path` in the mount namespace of
    /// `container_pid` (unplug). Only a character device is removed; nothing there is success.
    RemoveSerialNode {
        container_pid: Pid,
        container_path: String,
    },
    /// Everything netmon runs, in one status object.
    GetStatus,
    /// The netlink reader's state.
    GetNetlinkStatus,
    /// The serial device monitor's state.
    GetDeviceStatus,
    /// A fresh enumeration of serial devices.
    DiscoverDevices,
}

impl Command {
    /// Every command name, as sent in the `command` key.
    pub const NAMES: [&'static str; 17] = [
        "start_dhcp",
        "stop_dhcp",
        "request_wifi_dhcp",
        "get_dhcp_status",
        "setup_proxy_arp_bridge",
        "cleanup_proxy_arp_bridge",
        "cleanup_all_proxy_arp",
        "move_nic_to_container",
        "return_nic_to_host",
        "check_nic_in_container",
        "set_vnic_mac",
        "provision_serial_node",
        "remove_serial_node",
        "get_status",
        "get_netlink_status",
        "get_device_status",
        "discover_devices",
    ];
}

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    #[serde(flatten)]
    pub command: Command,
    /// Echoed in the response when given; responses still come in command order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// One response line: `success`, then `id` when the request had one, then `message` or `error`,
/// then the command's own fields (`status`, `present`, `proxy_arp_config`, `veths_removed`,
/// `devices`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl Response {
    /// `{"success": true}`.
    pub fn ok() -> Self {
        Self {
            success: true,
            id: None,
            message: None,
            error: None,
            data: Map::new(),
        }
    }

    /// `{"success": false, "error": <error>}`.
    pub fn error(error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: Some(error.into()),
            ..Self::ok()
        }
    }

    /// The same response with `key: value` among the command's fields.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.data.insert(key.to_owned(), value);
        self
    }
}

/// Why a command line cannot be run; [`RequestError::response`] is what netmon answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON (the original's text).
    #[error("Invalid JSON")]
    InvalidJson,
    /// JSON, but not an object.
    #[error("Invalid command: expected a JSON object")]
    NotAnObject,
    /// No `command`, or one netmon does not know (the original's text; `None` when absent).
    #[error("Unknown command: {}", .0.as_deref().unwrap_or("None"))]
    UnknownCommand(Option<String>),
    /// A field the original checks by hand, with its text (`Missing host_interface`,
    /// `Missing container_pid`, `Invalid container_pid: <v>`).
    #[error("{error}")]
    Field {
        error: String,
        /// The request's `id`, when it could be read.
        id: Option<u64>,
    },
    /// A known command whose fields are missing or of the wrong type.
    #[error("Invalid {command} command: {reason}")]
    Invalid {
        command: String,
        reason: String,
        /// The request's `id`, when it could be read.
        id: Option<u64>,
    },
}

impl RequestError {
    /// The response to send for this error.
    pub fn response(&self) -> Response {
        let id = match self {
            RequestError::Invalid { id, .. } | RequestError::Field { id, .. } => *id,
            _ => None,
        };
        Response {
            id,
            ..Response::error(self.to_string())
        }
    }
}

/// Reads one command line (without its newline): netmon's side. Pure.
pub fn decode_request(line: &[u8]) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_slice(line).map_err(|_| RequestError::InvalidJson)?;
    let Value::Object(object) = &value else {
        return Err(RequestError::NotAnObject);
    };
    let name = match object.get("command") {
        Some(Value::String(name)) if Command::NAMES.contains(&name.as_str()) => name.clone(),
        Some(Value::String(name)) => return Err(RequestError::UnknownCommand(Some(name.clone()))),
        Some(other) if !other.is_null() => {
            return Err(RequestError::UnknownCommand(Some(other.to_string())));
        }
        _ => return Err(RequestError::UnknownCommand(None)),
    };
    let id = object.get("id").and_then(Value::as_u64);
    if let Some(error) =
        nic_field_error(&name, object).or_else(|| proxy_arp_field_error(&name, object))
    {
        return Err(RequestError::Field { error, id });
    }
    serde_json::from_value(value).map_err(|e| RequestError::Invalid {
        command: name,
        reason: e.to_string(),
        id,
    })
}

/// The original's interface name rule (netmon's and the agent's InterfaceName): 1 to 15 of
/// `[a-zA-Z0-9_.-]`.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Python's falsiness, as the original tests its fields: absent, `null`, `""`, `0`, `false`,
/// `[]`, `{}`.
fn falsy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Bool(b)) => !b,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
    }
}

/// The proxy-ARP commands' own checks, in the original's words (upstream-head §4.3).
fn proxy_arp_field_error(name: &str, object: &Map<String, Value>) -> Option<String> {
    match name {
        "setup_proxy_arp_bridge"
            if [
                "container_name",
                "container_pid",
                "parent_interface",
                "ip_address",
                "gateway",
            ]
            .iter()
            .any(|k| falsy(object.get(*k))) =>
        {
            Some("Missing required parameters for Proxy ARP setup".to_owned())
        }
        "cleanup_proxy_arp_bridge" if falsy(object.get("container_name")) => {
            Some("Missing container_name".to_owned())
        }
        _ => None,
    }
}

/// The dedicated-NIC commands' own checks, in the original's order and words (upstream-head
/// §4.3): "missing" is absent, `null` or falsy (`""`, `0`).
fn nic_field_error(name: &str, object: &Map<String, Value>) -> Option<String> {
    if !matches!(
        name,
        "move_nic_to_container" | "return_nic_to_host" | "check_nic_in_container"
    ) {
        return None;
    }
    match object.get("host_interface") {
        v if falsy(v) => return Some("Missing host_interface".to_owned()),
        Some(Value::String(n)) if !valid_interface_name(n) => {
            return Some(format!("Invalid interface name: {n}"));
        }
        _ => {}
    }
    let pid = object.get("container_pid");
    if falsy(pid) {
        return Some("Missing container_pid".to_owned());
    }
    let shown = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match pid {
        Some(v) if serde_json::from_value::<Pid>(v.clone()).is_err() => {
            Some(format!("Invalid container_pid: {}", shown(v)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::line::{request_line, response_line};

    fn decode(v: Value) -> Result<Request, RequestError> {
        decode_request(v.to_string().as_bytes())
    }

    #[test]
    fn commands_round_trip_in_the_originals_shape() {
        let start = Request {
            command: Command::StartDhcp {
                container_name: "plc-01".into(),
                vnic_name: "eth0".into(),
                mac_address: "3e:9a:12:00:ab:cd".into(),
                container_pid: Pid(4242),
            },
            id: None,
        };
        let line = request_line(&start);
        assert_eq!(
            line,
            "{\"command\":\"start_dhcp\",\"container_name\":\"plc-01\",\"vnic_name\":\"eth0\",\"mac_address\":\"3e:9a:12:00:ab:cd\",\"container_pid\":4242}\n"
        );
        assert_eq!(decode_request(line.trim_end().as_bytes()), Ok(start));
        let status = Request {
            command: Command::GetDhcpStatus,
            id: Some(7),
        };
        let line = request_line(&status);
        assert_eq!(line, "{\"command\":\"get_dhcp_status\",\"id\":7}\n");
        assert_eq!(decode_request(line.trim_end().as_bytes()), Ok(status));
    }

    #[test]
    fn the_originals_leniencies_are_kept() {
        let r = decode(
            json!({"command": "move_nic_to_container", "host_interface": "eth2",
            "container_pid": "77", "extra": 1}),
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::MoveNicToContainer {
                host_interface: "eth2".into(),
                container_pid: Pid(77)
            }
        );
        let r = decode(
            json!({"command": "setup_proxy_arp_bridge", "container_name": "c",
            "container_pid": 5, "parent_interface": "wlan0", "ip_address": "10.0.0.5",
            "gateway": "10.0.0.1"}),
        )
        .unwrap();
        assert!(matches!(
            r.command,
            Command::SetupProxyArpBridge { subnet_mask, .. } if subnet_mask == "255.255.255.0"
        ));
        let r = decode(
            json!({"command": "setup_proxy_arp_bridge", "container_name": "c",
            "container_pid": "5", "parent_interface": "wlan0", "ip_address": "10.0.0.5",
            "gateway": "10.0.0.1", "subnet_mask": null}),
        )
        .unwrap();
        assert!(matches!(
            r.command,
            Command::SetupProxyArpBridge { subnet_mask, container_pid: Pid(5), .. }
                if subnet_mask == "255.255.255.0"
        ));
        let r =
            decode(json!({"command": "cleanup_proxy_arp_bridge", "container_name": "c"})).unwrap();
        assert!(matches!(
            r.command,
            Command::CleanupProxyArpBridge {
                ip_address: None,
                veth_host: None,
                ..
            }
        ));
    }

    #[test]
    fn set_vnic_mac_has_its_fields_and_refuses_a_missing_one() {
        let r = decode(json!({"command": "set_vnic_mac", "container_pid": "42",
            "current_mac": "02:42:0a:00:00:05", "mac_address": "02:00:00:00:00:07"}))
        .unwrap();
        assert_eq!(
            r.command,
            Command::SetVnicMac {
                container_pid: Pid(42),
                current_mac: "02:42:0a:00:00:05".into(),
                mac_address: "02:00:00:00:00:07".into(),
            }
        );
        assert_eq!(
            request_line(&r),
            "{\"command\":\"set_vnic_mac\",\"container_pid\":42,\"current_mac\":\"02:42:0a:00:00:05\",\"mac_address\":\"02:00:00:00:00:07\"}\n"
        );
        let e = decode(json!({"command": "set_vnic_mac", "container_pid": 42,
            "current_mac": "02:42:0a:00:00:05"}))
        .unwrap_err();
        assert!(e.to_string().contains("missing field `mac_address`"), "{e}");
    }

    #[test]
    fn refusals_carry_the_originals_texts() {
        let text = |r: Result<Request, RequestError>| r.unwrap_err().response().error.unwrap();
        assert_eq!(text(decode_request(b"{nope")), "Invalid JSON");
        assert_eq!(
            text(decode(json!({"command": "brew"}))),
            "Unknown command: brew"
        );
        assert_eq!(
            text(decode(json!({"container_name": "c"}))),
            "Unknown command: None"
        );
        assert_eq!(
            text(decode(json!([1]))),
            "Invalid command: expected a JSON object"
        );
        let e = decode(
            json!({"command": "start_dhcp", "id": 3, "container_name": "c",
            "vnic_name": "v", "mac_address": "m", "container_pid": "x"}),
        )
        .unwrap_err();
        assert_eq!(e.response().id, Some(3));
        assert!(e.to_string().contains("Invalid container_pid: x"), "{e}");
        assert!(decode(json!({"command": "stop_dhcp", "container_name": "c"})).is_err());
        let nic = |v: Value| text(decode(v));
        assert_eq!(
            nic(json!({"command": "move_nic_to_container", "container_pid": 5})),
            "Missing host_interface"
        );
        assert_eq!(
            nic(json!({"command": "return_nic_to_host", "host_interface": "", "container_pid": 5})),
            "Missing host_interface"
        );
        assert_eq!(
            nic(json!({"command": "check_nic_in_container", "host_interface": "eth1"})),
            "Missing container_pid"
        );
        assert_eq!(
            nic(
                json!({"command": "move_nic_to_container", "host_interface": "eth1", "container_pid": 0})
            ),
            "Missing container_pid"
        );
        assert_eq!(
            nic(
                json!({"command": "move_nic_to_container", "host_interface": "eth1", "container_pid": "abc"})
            ),
            "Invalid container_pid: abc"
        );
        assert_eq!(
            nic(
                json!({"command": "move_nic_to_container", "host_interface": "a-very-long-ifname0", "container_pid": 5})
            ),
            "Invalid interface name: a-very-long-ifname0"
        );
        for ok in ["eth0", "enp3s0", "a.b-c_d", "fifteen-chars15"] {
            assert!(valid_interface_name(ok), "{ok}");
        }
        for bad in ["", "sixteen-chars-16", "eth 0", "eth0;rm", "ä0", "../x"] {
            assert!(!valid_interface_name(bad), "{bad}");
        }
        let setup = json!({"command": "setup_proxy_arp_bridge", "container_name": "c",
            "container_pid": 5, "parent_interface": "wlan0", "ip_address": "10.0.0.5",
            "gateway": "10.0.0.1"});
        for key in [
            "container_name",
            "container_pid",
            "parent_interface",
            "ip_address",
            "gateway",
        ] {
            for absent in [None, Some(Value::Null), Some(json!("")), Some(json!(0))] {
                let mut v = setup.clone();
                match absent {
                    None => drop(v.as_object_mut().unwrap().remove(key)),
                    Some(a) => v[key] = a,
                }
                assert_eq!(
                    text(decode(v)),
                    "Missing required parameters for Proxy ARP setup",
                    "{key}"
                );
            }
        }
        assert_eq!(
            text(decode(
                json!({"command": "cleanup_proxy_arp_bridge", "container_name": ""})
            )),
            "Missing container_name"
        );
        assert_eq!(
            text(decode(json!({"command": "cleanup_proxy_arp_bridge"}))),
            "Missing container_name"
        );
        let e =
            decode(json!({"command": "move_nic_to_container", "id": 4, "host_interface": "eth1"}))
                .unwrap_err();
        assert_eq!(e.response().id, Some(4));
    }

    #[test]
    fn responses_have_success_first_and_never_a_type() {
        assert_eq!(response_line(&Response::ok()), "{\"success\":true}\n");
        assert_eq!(
            response_line(&Response::error("Missing container_name")),
            "{\"success\":false,\"error\":\"Missing container_name\"}\n"
        );
        let present = Response::ok().with("present", json!(true));
        assert_eq!(
            response_line(&present),
            "{\"success\":true,\"present\":true}\n"
        );
        let echoed = Response {
            id: Some(9),
            message: Some("DHCP client already running".into()),
            ..Response::ok()
        };
        assert_eq!(
            response_line(&echoed),
            "{\"success\":true,\"id\":9,\"message\":\"DHCP client already running\"}\n"
        );
    }

    #[test]
    fn every_command_name_decodes() {
        for name in Command::NAMES {
            let r = decode(json!({"command": name}));
            assert!(
                !matches!(r, Err(RequestError::UnknownCommand(_))),
                "{name}: {r:?}"
            );
        }
    }
}
