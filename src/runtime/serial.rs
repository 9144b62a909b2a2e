//! Serial port passthrough (upstream-head §7), the pure core: validating a create's
//! `serial_configs`, matching a configured `device_id` against the devices netmon reports, and the
//! port records of `data/serial_configs.json` (§7.6) with the shapes `get_device_status` and
//! `get_serial_devices` answer with (§7.7). The I/O (netmon commands, the engine, the state
//! store) is `serial_nodes`'; nothing here does any.
//!
//! Matching compares normalised ids for equality (fixing Defects S3/S4 of the original, which
//! matched substrings: `ttyS1` took `ttyS10`'s events and a short id matched several adapters).

use serde_json::{Map, Value, json};

use super::spec::SpecError;
use crate::netevents::SerialDevice;

/// Where udev puts the stable names of serial devices.
pub const BY_ID_DIR: &str = "/dev/serial/by-id/";
/// Longest `container_path` accepted (a Linux path component limit is 255; the whole path here).
pub const MAX_CONTAINER_PATH: usize = 255;
/// Longest `device_id` accepted (full by-id path included).
pub const MAX_DEVICE_ID: usize = 255;

/// Port status values of the original.
pub const CONNECTED: &str = "connected";
pub const DISCONNECTED: &str = "disconnected";
pub const ERROR: &str = "error";

/// One validated element of `serial_configs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSpec {
    /// Its position in the request (`serial_configs[i]` in texts).
    pub index: usize,
    /// Port name, unique within the runtime (status key).
    pub name: String,
    /// The device it wants: a by-id name or path, or a node (`ttyS1`, `/dev/ttyUSB0`).
    pub device_id: String,
    /// Where the node goes in the container: absolute, under `/dev/`.
    pub container_path: String,
}

/// Validates `serial_configs` elements (types already checked by the topic's contract). `baud_rate`
/// is accepted and not used, as in the original (Defect S6).
pub fn parse_configs(list: &[Map<String, Value>]) -> Result<Vec<SerialSpec>, SpecError> {
    let mut out: Vec<SerialSpec> = Vec::new();
    for (index, o) in list.iter().enumerate() {
        let field = |key: &str| format!("serial_configs[{index}].{key}");
        let text = |key: &str| o.get(key).and_then(Value::as_str).unwrap_or_default();
        let name = text("name");
        if name.trim().is_empty() {
            return Err(SpecError::new(field("name"), "must be a non-empty string"));
        }
        if name.chars().any(char::is_control) {
            return Err(SpecError::new(
                field("name"),
                "must not contain control characters",
            ));
        }
        let device_id = text("device_id");
        check_device_id(device_id).map_err(|m| SpecError::new(field("device_id"), m))?;
        let container_path = text("container_path");
        check_container_path(container_path)
            .map_err(|m| SpecError::new(field("container_path"), m))?;
        if let Some(first) = out.iter().find(|s| s.name == name) {
            return Err(SpecError::new(
                field("name"),
                format!(
                    "{name:?} is already the name of serial_configs[{}]",
                    first.index
                ),
            ));
        }
        if let Some(first) = out.iter().find(|s| s.container_path == container_path) {
            return Err(SpecError::new(
                field("container_path"),
                format!(
                    "{container_path} is already the path of serial_configs[{}]",
                    first.index
                ),
            ));
        }
        out.push(SerialSpec {
            index,
            name: name.to_owned(),
            device_id: device_id.to_owned(),
            container_path: container_path.to_owned(),
        });
    }
    Ok(out)
}

/// Characters of a by-id name (udev replaces others by `_` or escapes them as `\xNN`) or a node
/// name.
fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.:+=@#,\\".contains(&b)
}

/// A `device_id`: a by-id name (`usb-FTDI_…-if00-port0`), the full `/dev/serial/by-id/…` path, a
/// node name (`ttyS1`) or a node path (`/dev/ttyUSB0`). Anything else could never match.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must be a non-empty string".into());
    }
    if id.len() > MAX_DEVICE_ID {
        return Err(format!("must be at most {MAX_DEVICE_ID} bytes"));
    }
    let base = id
        .strip_prefix(BY_ID_DIR)
        .or_else(|| id.strip_prefix("/dev/"))
        .unwrap_or(id);
    if base.is_empty() || base == "." || base == ".." || !base.bytes().all(is_id_char) {
        return Err(format!(
            "{id:?} is not a serial device id: expected a {BY_ID_DIR} name or path, or a device \
             node such as ttyUSB0 or /dev/ttyUSB0 (letters, digits and _-.:+=@#,\\ only)"
        ));
    }
    Ok(())
}

/// A `container_path`: absolute, under `/dev/`, no `.`/`..` components, no `//`, no trailing `/`,
/// at most [`MAX_CONTAINER_PATH`] bytes, no control characters. It is created as root in the
/// container (Defect S5 of the original used it verbatim).
pub fn check_container_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must be a non-empty string".into());
    }
    if path.len() > MAX_CONTAINER_PATH {
        return Err(format!("must be at most {MAX_CONTAINER_PATH} bytes"));
    }
    let Some(rest) = path.strip_prefix("/dev/") else {
        return Err(format!(
            "{path:?} must be an absolute path under /dev/ (e.g. /dev/modbus0)"
        ));
    };
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if rest.is_empty() || path.ends_with('/') {
        return Err(format!("{path:?} must name a file, not end in /"));
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{path:?} must not contain empty, . or .. components"
        ));
    }
    Ok(())
}

/// The comparable part of an id: its last path component, so a by-id name and its full path are
/// the same id, as are `ttyS1` and `/dev/ttyS1`.
pub fn normalise(id: &str) -> &str {
    let id = id.strip_prefix(BY_ID_DIR).unwrap_or(id);
    id.rsplit('/').next().unwrap_or(id)
}

/// Whether the configured `device_id` names `dev`: its by-id name, or its node, by equality of
/// normalised ids (never a substring).
pub fn matches(device_id: &str, dev: &SerialDevice) -> bool {
    let want = normalise(device_id);
    if want.is_empty() {
        return false;
    }
    dev.by_id.as_deref().is_some_and(|b| normalise(b) == want) || dev.node_name() == want
}

/// The device among `devices` that `device_id` names.
pub fn find<'a>(device_id: &str, devices: &'a [SerialDevice]) -> Option<&'a SerialDevice> {
    devices.iter().find(|d| matches(device_id, d))
}

/// The record of a new port (§7.6): `disconnected`, no host path, major or minor. `baud_rate` is
/// not kept (Defect S6, as the original).
pub fn initial_record(s: &SerialSpec) -> Value {
    json!({
        "name": s.name,
        "device_id": s.device_id,
        "container_path": s.container_path,
        "status": DISCONNECTED,
        "current_host_path": null,
        "major": null,
        "minor": null,
    })
}

/// One persisted port, as read back (records of another shape are skipped by readers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub device_id: String,
    pub container_path: String,
    pub status: Option<String>,
    pub current_host_path: Option<String>,
}

impl Port {
    /// Reads a record; `None` without a name, device id or container path.
    pub fn from_record(v: &Value) -> Option<Port> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Port {
            name: text("name")?,
            device_id: text("device_id")?,
            container_path: text("container_path")?,
            status: text("status"),
            current_host_path: text("current_host_path"),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.status.as_deref() == Some(CONNECTED)
    }
}

/// The ports of a runtime's entry value (`{"serial_ports": [...]}`).
pub fn ports_of(entry: &Value) -> Vec<Port> {
    entry
        .get("serial_ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Port::from_record).collect())
        .unwrap_or_default()
}

/// The entry value of a runtime (`{"serial_ports": [...]}`) for a create's ports.
pub fn entry_for(specs: &[SerialSpec]) -> Value {
    json!({"serial_ports": specs.iter().map(initial_record).collect::<Vec<_>>()})
}

/// What a port became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState<'a> {
    /// Its node is in the container for this device.
    Connected(&'a SerialDevice),
    /// No device, or it went away.
    Disconnected,
    /// The node could not be made.
    Error,
}

/// Sets the port `name` of a runtime entry to `state`; returns whether anything changed.
pub fn set_state(entry: &mut Value, name: &str, state: &PortState<'_>) -> bool {
    let Some(o) = entry
        .get_mut("serial_ports")
        .and_then(Value::as_array_mut)
        .and_then(|a| {
            a.iter_mut()
                .filter_map(Value::as_object_mut)
                .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
        })
    else {
        return false;
    };
    let (status, path, major, minor) = match state {
        PortState::Connected(d) => (CONNECTED, json!(d.path), json!(d.major), json!(d.minor)),
        PortState::Disconnected => (DISCONNECTED, Value::Null, Value::Null, Value::Null),
        PortState::Error => (ERROR, Value::Null, Value::Null, Value::Null),
    };
    let mut changed = false;
    for (key, value) in [
        ("status", json!(status)),
        ("current_host_path", path),
        ("major", major),
        ("minor", minor),
    ] {
        if o.get(key) != Some(&value) {
            o.insert(key.to_owned(), value);
            changed = true;
        }
    }
    changed
}

/// `get_device_status.serial_ports` (§7.7): `status` `"unknown"` when missing,
/// `current_host_path` only when set.
pub fn status_entries(entry: &Value) -> Vec<Value> {
    ports_of(entry)
        .into_iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("name".into(), json!(p.name));
            m.insert("device_id".into(), json!(p.device_id));
            m.insert("container_path".into(), json!(p.container_path));
            m.insert(
                "status".into(),
                json!(p.status.as_deref().unwrap_or("unknown")),
            );
            if let Some(h) = p.current_host_path {
                m.insert("current_host_path".into(), json!(h));
            }
            Value::Object(m)
        })
        .collect()
}

/// `get_serial_devices.devices` (§7.7): the devices with a by-id name, in the cache's order.
pub fn listing(devices: &[SerialDevice]) -> Vec<Value> {
    devices
        .iter()
        .filter_map(|d| {
            let by_id = d.by_id.as_deref()?;
            Some(json!({
                "path": d.path,
                "device_id": by_id,
                "vendor_id": d.vendor_id,
                "product_id": d.product_id,
                "serial": d.serial,
                "manufacturer": d.manufacturer,
                "product": d.product,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(path: &str, by_id: Option<&str>, major: u32, minor: u32) -> SerialDevice {
        SerialDevice {
            by_id: by_id.map(str::to_owned),
            major: Some(major),
            minor: Some(minor),
            ..SerialDevice::removed(path)
        }
    }

    fn configs(v: Value) -> Result<Vec<SerialSpec>, SpecError> {
        let list: Vec<Map<String, Value>> = serde_json::from_value(v).unwrap();
        parse_configs(&list)
    }

    const FTDI: &str = "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0";

    #[test]
    fn good_configs_are_accepted_in_every_id_form() {
        let got = configs(json!([
            {"name": "modbus", "device_id": FTDI, "container_path": "/dev/modbus0", "baud_rate": 9600},
            {"name": "b", "device_id": format!("{BY_ID_DIR}{FTDI}"), "container_path": "/dev/tty/b", "baud_rate": null},
            {"name": "c", "device_id": "ttyS1", "container_path": "/dev/c"},
            {"name": "d", "device_id": "/dev/ttyUSB0", "container_path": "/dev/d.e-f_0"},
        ]))
        .unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].device_id, format!("{BY_ID_DIR}{FTDI}"));
        assert_eq!(got[3].index, 3);
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        let ok = json!({"name": "p", "device_id": "ttyS1", "container_path": "/dev/p"});
        let with = |key: &str, value: Value| {
            let mut o = ok.clone();
            o[key] = value;
            configs(json!([o])).unwrap_err()
        };
        for name in ["", "  ", "a\nb"] {
            assert_eq!(with("name", json!(name)).field, "serial_configs[0].name");
        }
        for id in [
            "",
            "a\0b",
            "a\nb",
            "a b",
            "..",
            "/dev/",
            "/dev/serial/by-id/",
            "/dev/../etc/passwd",
            "/etc/ttyS1",
            "dir/ttyS1",
            &"x".repeat(256),
        ] {
            assert_eq!(
                with("device_id", json!(id)).field,
                "serial_configs[0].device_id",
                "{id:?}"
            );
        }
        for path in [
            "",
            "modbus0",
            "/modbus0",
            "/dev",
            "/dev/",
            "/dev/a/",
            "/dev//a",
            "/dev/./a",
            "/dev/../etc/shadow",
            "/dev/a/../../etc",
            "/dev/a\nb",
            "/devx/a",
            &format!("/dev/{}", "x".repeat(251)),
        ] {
            assert_eq!(
                with("container_path", json!(path)).field,
                "serial_configs[0].container_path",
                "{path:?}"
            );
        }
        assert!(check_container_path(&format!("/dev/{}", "x".repeat(250))).is_ok());
        let dup_name = configs(
            json!([ok.clone(), {"name": "p", "device_id": "ttyS2", "container_path": "/dev/q"}]),
        );
        let e = dup_name.unwrap_err();
        assert_eq!(e.field, "serial_configs[1].name");
        assert!(e.message.contains("serial_configs[0]"), "{e}");
        let dup_path =
            configs(json!([ok, {"name": "q", "device_id": "ttyS2", "container_path": "/dev/p"}]));
        assert_eq!(
            dup_path.unwrap_err().field,
            "serial_configs[1].container_path"
        );
    }

    #[test]
    fn ids_match_by_equality_of_normalised_names_never_substrings() {
        let ftdi = dev("/dev/ttyUSB0", Some(&format!("{BY_ID_DIR}{FTDI}")), 188, 0);
        assert!(matches(FTDI, &ftdi));
        assert!(matches(&format!("{BY_ID_DIR}{FTDI}"), &ftdi));
        assert!(matches("ttyUSB0", &ftdi));
        assert!(matches("/dev/ttyUSB0", &ftdi));
        assert!(!matches("ttyUSB", &ftdi));
        // S3: an event for ttyS1 is not ttyS10's, and the other way round.
        let s1 = dev("/dev/ttyS1", None, 4, 65);
        let s10 = dev("/dev/ttyS10", None, 4, 74);
        assert!(matches("ttyS1", &s1) && !matches("ttyS1", &s10));
        assert!(matches("/dev/ttyS10", &s10) && !matches("ttyS10", &s1));
        let devices = [s10.clone(), s1.clone()];
        assert_eq!(find("ttyS1", &devices), Some(&s1));
        // S4: a short id matches neither of two adapters.
        let a = dev(
            "/dev/ttyUSB1",
            Some("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1-if00-port0"),
            188,
            1,
        );
        let b = dev(
            "/dev/ttyUSB2",
            Some("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_B2-if00-port0"),
            188,
            2,
        );
        let two = [a.clone(), b.clone()];
        assert_eq!(find("usb-FTDI", &two), None);
        assert_eq!(find("FT232R", &two), None);
        assert_eq!(
            find("usb-FTDI_FT232R_USB_UART_B2-if00-port0", &two),
            Some(&b)
        );
        assert!(!matches("", &a));
    }

    #[test]
    fn records_have_the_originals_layout_and_follow_the_device() {
        let specs = configs(
            json!([{"name": "modbus", "device_id": FTDI, "container_path": "/dev/modbus0", "baud_rate": 9600}]),
        )
        .unwrap();
        let mut entry = entry_for(&specs);
        assert_eq!(
            entry,
            json!({"serial_ports": [{"name": "modbus", "device_id": FTDI,
                "container_path": "/dev/modbus0", "status": "disconnected",
                "current_host_path": null, "major": null, "minor": null}]})
        );
        let d = dev("/dev/ttyUSB0", Some(&format!("{BY_ID_DIR}{FTDI}")), 188, 0);
        assert!(set_state(&mut entry, "modbus", &PortState::Connected(&d)));
        assert!(!set_state(&mut entry, "modbus", &PortState::Connected(&d)));
        assert!(!set_state(&mut entry, "other", &PortState::Error));
        assert_eq!(
            entry["serial_ports"][0],
            json!({"name": "modbus", "device_id": FTDI, "container_path": "/dev/modbus0",
                "status": "connected", "current_host_path": "/dev/ttyUSB0", "major": 188, "minor": 0})
        );
        assert!(ports_of(&entry)[0].is_connected());
        assert!(set_state(&mut entry, "modbus", &PortState::Disconnected));
        assert_eq!(entry["serial_ports"][0]["major"], Value::Null);
        assert!(set_state(&mut entry, "modbus", &PortState::Error));
        assert_eq!(entry["serial_ports"][0]["status"], "error");
    }

    #[test]
    fn status_entries_default_the_status_and_show_the_host_path_only_when_set() {
        let entry = json!({"serial_ports": [
            {"name": "a", "device_id": "ttyS1", "container_path": "/dev/a", "status": "connected",
             "current_host_path": "/dev/ttyS1", "major": 4, "minor": 65},
            {"name": "b", "device_id": "ttyS2", "container_path": "/dev/b", "current_host_path": null},
            {"name": "broken"}
        ]});
        assert_eq!(
            status_entries(&entry),
            vec![
                json!({"name": "a", "device_id": "ttyS1", "container_path": "/dev/a",
                       "status": "connected", "current_host_path": "/dev/ttyS1"}),
                json!({"name": "b", "device_id": "ttyS2", "container_path": "/dev/b",
                       "status": "unknown"}),
            ]
        );
        // Keys in the original's order.
        let entries = status_entries(&entry);
        let keys: Vec<&String> = entries[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "name",
                "device_id",
                "container_path",
                "status",
                "current_host_path"
            ]
        );
    }

    #[test]
    fn the_listing_has_by_id_devices_only_in_order() {
        let full = SerialDevice {
            vendor_id: Some("0403".into()),
            product_id: Some("6001".into()),
            serial: Some("A50285BI".into()),
            manufacturer: Some("FTDI".into()),
            product: Some("FT232R_USB_UART".into()),
            ..dev("/dev/ttyUSB0", Some(&format!("{BY_ID_DIR}{FTDI}")), 188, 0)
        };
        let got = listing(&[
            dev("/dev/ttyS0", None, 4, 64),
            full,
            dev("/dev/ttyACM0", Some("/dev/serial/by-id/usb-x"), 166, 0),
        ]);
        assert_eq!(
            got,
            vec![
                json!({"path": "/dev/ttyUSB0", "device_id": format!("{BY_ID_DIR}{FTDI}"),
                       "vendor_id": "0403", "product_id": "6001", "serial": "A50285BI",
                       "manufacturer": "FTDI", "product": "FT232R_USB_UART"}),
                json!({"path": "/dev/ttyACM0", "device_id": "/dev/serial/by-id/usb-x",
                       "vendor_id": null, "product_id": null, "serial": null,
                       "manufacturer": null, "product": null}),
            ]
        );
    }
}
