//! Reading what netmon sends (the agent's side): events, told apart from command responses by
//! their top-level `type` (upstream-head §4.1).

use serde::Deserialize;
use serde_json::Value;

use crate::command::Response;
use crate::dhcp::DhcpUpdate;
use crate::interface::InterfaceInfo;
use crate::serial::{DeviceAction, SerialDevice};

/// An event netmon sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `network_discovery`: every interface the host has, sent on each new connection. Replaces
    /// what the reader knew.
    Discovery(Vec<InterfaceInfo>),
    /// `network_change`: one interface changed, appeared, went down or was removed.
    Change(InterfaceInfo),
    /// `dhcp_update`: a runtime vNIC's DHCP lease was granted or changed (upstream-head §4.5.4).
    /// Only with a container, a vNIC and an address (§4.6.4: others are ignored).
    DhcpUpdate(DhcpUpdate),
    /// `device_discovery`: every serial device the host has, sent on each new connection.
    /// Malformed entries are skipped.
    DeviceDiscovery(Vec<SerialDevice>),
    /// `device_change`: a serial device was plugged in or removed.
    DeviceChange(DeviceAction, SerialDevice),
    /// A well-formed event this side does not handle: another `type`, a change that names no
    /// interface, a `dhcp_update` without an address, a `device_change` of another action.
    Other,
}

/// A line netmon sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A line with a `type`.
    Event(Event),
    /// A line without one: the answer to the oldest command not yet answered.
    Response(Response),
}

/// Why a line from netmon was skipped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("netmon line is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("netmon line is not a JSON object")]
    NotAnObject,
    #[error("netmon {kind} has an invalid shape: {source}")]
    BadShape {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Decodes one line (without its newline). Pure; the fuzzable core of the agent's reader.
///
/// Lenient where the sender may be the Python netmon: one malformed interface of a discovery is
/// skipped, not the whole discovery; unknown keys and event types are ignored.
pub fn decode_message(line: &[u8]) -> Result<Message, DecodeError> {
    let value: Value = serde_json::from_slice(line).map_err(DecodeError::BadJson)?;
    let Value::Object(mut object) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let kind = match object.remove("type") {
        None | Some(Value::Null) => {
            let response = serde_json::from_value(Value::Object(object)).map_err(|source| {
                DecodeError::BadShape {
                    kind: "response",
                    source,
                }
            })?;
            return Ok(Message::Response(response));
        }
        Some(kind) => kind,
    };
    let data = object.remove("data").unwrap_or(Value::Null);
    let event = match kind.as_str() {
        Some("network_discovery") => discovery(data)?,
        Some("network_change") => change(data)?,
        Some("dhcp_update") => dhcp_update(data)?,
        Some("device_discovery") => device_discovery(data)?,
        Some("device_change") => device_change(data)?,
        _ => Event::Other,
    };
    Ok(Message::Event(event))
}

fn discovery(data: Value) -> Result<Event, DecodeError> {
    #[derive(Deserialize)]
    struct Discovery {
        #[serde(default)]
        interfaces: Vec<Value>,
    }
    let discovery: Discovery =
        serde_json::from_value(data).map_err(|source| DecodeError::BadShape {
            kind: "network_discovery",
            source,
        })?;
    // One malformed entry must not hide the others.
    let interfaces = discovery
        .interfaces
        .into_iter()
        .filter_map(|v| serde_json::from_value::<InterfaceInfo>(v).ok())
        .filter(|i| !i.interface.is_empty())
        .collect();
    Ok(Event::Discovery(interfaces))
}

fn device_discovery(data: Value) -> Result<Event, DecodeError> {
    #[derive(Deserialize)]
    struct Discovery {
        #[serde(default)]
        devices: Vec<Value>,
    }
    let discovery: Discovery =
        serde_json::from_value(data).map_err(|source| DecodeError::BadShape {
            kind: "device_discovery",
            source,
        })?;
    let devices = discovery
        .devices
        .into_iter()
        .filter_map(|v| serde_json::from_value::<SerialDevice>(v).ok())
        .filter(|d| !d.path.is_empty())
        .collect();
    Ok(Event::DeviceDiscovery(devices))
}

fn device_change(data: Value) -> Result<Event, DecodeError> {
    #[derive(Deserialize)]
    struct Change {
        action: Value,
        device: SerialDevice,
    }
    let change: Change = serde_json::from_value(data).map_err(|source| DecodeError::BadShape {
        kind: "device_change",
        source,
    })?;
    // The original ignores other udev actions; so does this side.
    let Ok(action) = serde_json::from_value::<DeviceAction>(change.action) else {
        return Ok(Event::Other);
    };
    if change.device.path.is_empty() {
        return Ok(Event::Other);
    }
    Ok(Event::DeviceChange(action, change.device))
}

fn dhcp_update(data: Value) -> Result<Event, DecodeError> {
    let named = |key: &str| {
        data.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !(named("container_name") && named("vnic_name") && named("ip")) {
        return Ok(Event::Other);
    }
    let update = serde_json::from_value(data).map_err(|source| DecodeError::BadShape {
        kind: "dhcp_update",
        source,
    })?;
    Ok(Event::DhcpUpdate(update))
}

fn change(data: Value) -> Result<Event, DecodeError> {
    if data
        .get("interface")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Ok(Event::Other);
    }
    let info = serde_json::from_value(data).map_err(|source| DecodeError::BadShape {
        kind: "network_change",
        source,
    })?;
    Ok(Event::Change(info))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::interface::{InterfaceStatus, Ipv4Entry};
    use crate::line::{change_line, discovery_line};

    fn info(name: &str) -> InterfaceInfo {
        InterfaceInfo {
            interface: name.into(),
            index: Some(2),
            operstate: Some("UP".into()),
            kind: None,
            ipv4_addresses: vec![Ipv4Entry {
                address: "192.168.1.50".into(),
                prefixlen: 24,
                subnet: "192.168.1.0/24".into(),
                network_address: "192.168.1.0".into(),
            }],
            gateway: Some("192.168.1.1".into()),
            timestamp: Some("2025-11-20T20:30:45.123456+00:00".into()),
            status: None,
            mac_address: None,
        }
    }

    fn decode(line: &str) -> Message {
        decode_message(line.trim_end().as_bytes()).expect("decodes")
    }

    #[test]
    fn what_netmon_writes_is_read_back_field_for_field() {
        let mut removed = info("eth1");
        removed.ipv4_addresses.clear();
        removed.gateway = None;
        removed.status = Some(InterfaceStatus::Removed);
        let sent = vec![info("eth0"), removed.clone()];
        assert_eq!(
            decode(&discovery_line(&sent, "t")),
            Message::Event(Event::Discovery(sent))
        );
        assert_eq!(
            decode(&change_line(&removed)),
            Message::Event(Event::Change(removed))
        );
    }

    #[test]
    fn the_python_netmons_short_reports_are_read() {
        let line = json!({"type": "network_change", "data": {"interface": "eth1",
            "ipv4_addresses": [], "status": "down", "type": "ethernet"}});
        let Message::Event(Event::Change(i)) = decode(&line.to_string()) else {
            panic!("a change")
        };
        assert_eq!(i.status, Some(InterfaceStatus::Down));
        assert_eq!((i.index, i.operstate, i.timestamp), (None, None, None));
        let odd = json!({"type": "network_change", "data": {"interface": "e", "status": "gone"}});
        let Message::Event(Event::Change(i)) = decode(&odd.to_string()) else {
            panic!("a change")
        };
        assert_eq!(i.status, Some(InterfaceStatus::Unknown));
        assert!(!i.is_reportable() && !i.is_removed());
    }

    #[test]
    fn lines_without_a_type_are_responses() {
        assert_eq!(
            decode(r#"{"success": true, "present": false}"#),
            Message::Response(Response::ok().with("present", json!(false)))
        );
        assert_eq!(
            decode(r#"{"type": null, "success": false, "error": "Invalid JSON"}"#),
            Message::Response(Response::error("Invalid JSON"))
        );
    }

    #[test]
    fn dhcp_updates_are_read_and_those_without_an_address_ignored() {
        let update = crate::DhcpUpdate {
            container_name: "plc-01".into(),
            vnic_name: "eth0".into(),
            mac_address: Some("3e:9a:12:00:ab:cd".into()),
            ip: "192.168.1.77".into(),
            mask: "24".into(),
            prefix: 24,
            gateway: "192.168.1.1".into(),
            dns: "192.168.1.1".into(),
            lease_time: "86400".into(),
            timestamp: "2026-04-10T15:00:04+00:00".into(),
            proxy_arp_config: None,
        };
        assert_eq!(
            decode(&crate::dhcp_update_line(&update)),
            Message::Event(Event::DhcpUpdate(update))
        );
        // The Python netmon's spacing (upstream-head §14.3).
        let python = r#"{"type": "dhcp_update", "data": {"container_name": "plc-01", "vnic_name": "eth0", "mac_address": "3e:9a:12:00:ab:cd", "ip": "192.168.1.77", "mask": "24", "prefix": 24, "gateway": "192.168.1.1", "dns": "192.168.1.1", "lease_time": "86400", "timestamp": "2026-04-10T15:00:04+00:00"}}"#;
        assert!(matches!(
            decode(python),
            Message::Event(Event::DhcpUpdate(_))
        ));
        let no_ip = r#"{"type": "dhcp_update", "data": {"container_name": "plc-01", "vnic_name": "eth0", "ip": ""}}"#;
        assert_eq!(decode(no_ip), Message::Event(Event::Other));
    }

    #[test]
    fn device_events_are_read_back() {
        let d = SerialDevice {
            major: Some(188),
            minor: Some(1),
            ..SerialDevice::removed("/dev/ttyUSB1")
        };
        assert_eq!(
            decode(&crate::device_change_line(DeviceAction::Add, &d)),
            Message::Event(Event::DeviceChange(DeviceAction::Add, d.clone()))
        );
        // The Python netmon's remove of an unknown node.
        let python = r#"{"type": "device_change", "data": {"action": "remove", "device": {"path": "/dev/ttyUSB1", "by_id": null, "major": null, "minor": null, "subsystem": "tty"}}}"#;
        assert_eq!(
            decode(python),
            Message::Event(Event::DeviceChange(
                DeviceAction::Remove,
                SerialDevice::removed("/dev/ttyUSB1")
            ))
        );
        let bind = r#"{"type": "device_change", "data": {"action": "bind", "device": {"path": "/dev/ttyUSB1"}}}"#;
        assert_eq!(decode(bind), Message::Event(Event::Other));
        let line = crate::device_discovery_line(std::slice::from_ref(&d), "t");
        assert_eq!(
            decode(&line),
            Message::Event(Event::DeviceDiscovery(vec![d]))
        );
        let odd = r#"{"type": "device_discovery", "data": {"devices": [{"path": 5}, {"path": "/dev/ttyS4"}]}}"#;
        let Message::Event(Event::DeviceDiscovery(list)) = decode(odd) else {
            panic!("a discovery")
        };
        assert_eq!(list, vec![SerialDevice::removed("/dev/ttyS4")]);
    }

    #[test]
    fn unknown_types_and_nameless_changes_are_other_events() {
        assert_eq!(
            decode(r#"{"type":"dhcp_update","data":{}}"#),
            Message::Event(Event::Other)
        );
        assert_eq!(
            decode(r#"{"type":"network_change","data":{"index":3}}"#),
            Message::Event(Event::Other)
        );
        assert_eq!(decode(r#"{"type":5}"#), Message::Event(Event::Other));
    }

    #[test]
    fn bad_lines_are_errors_and_bad_discovery_entries_are_skipped() {
        assert!(matches!(
            decode_message(b"{not json"),
            Err(DecodeError::BadJson(_))
        ));
        assert!(matches!(
            decode_message(b"[1]"),
            Err(DecodeError::NotAnObject)
        ));
        assert!(matches!(
            decode_message(
                br#"{"type":"network_change","data":{"interface":"e","ipv4_addresses":5}}"#
            ),
            Err(DecodeError::BadShape { .. })
        ));
        assert!(matches!(
            decode_message(br#"{"success": "yes"}"#),
            Err(DecodeError::BadShape {
                kind: "response",
                ..
            })
        ));
        let line = json!({"type": "network_discovery", "data": {"interfaces": [
            {"interface": 5}, {"interface": ""}, {"interface": "eth0"}]}});
        let Message::Event(Event::Discovery(list)) = decode(&line.to_string()) else {
            panic!("a discovery")
        };
        assert_eq!(list.len(), 1);
    }
}
