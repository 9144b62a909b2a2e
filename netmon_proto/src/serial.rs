//! Serial devices (upstream-head §7.2): netmon reports the host's serial ports with
//! `device_discovery` on every new connection and `device_change` on hot-plug; the agent creates
//! and removes the device nodes in runtime containers through netmon's `provision_serial_node` /
//! `remove_serial_node` commands (ours; see [`crate::Command`]).

use serde::{Deserialize, Serialize};

/// One serial device, as the original's netmon reports it. `major`/`minor` are `null` only in a
/// `remove` for a node netmon had not reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialDevice {
    /// The device node, e.g. `/dev/ttyUSB0`.
    pub path: String,
    /// The `/dev/serial/by-id/…` path udev gives it, or `null` (native `ttyS` ports have none).
    #[serde(default)]
    pub by_id: Option<String>,
    #[serde(default)]
    pub major: Option<u32>,
    #[serde(default)]
    pub minor: Option<u32>,
    #[serde(default)]
    pub vendor_id: Option<String>,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// Always `"tty"`.
    #[serde(default = "tty")]
    pub subsystem: String,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
}

fn tty() -> String {
    "tty".to_owned()
}

impl SerialDevice {
    /// The `remove` report for a node netmon knows nothing more about (the original's shape).
    pub fn removed(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            by_id: None,
            major: None,
            minor: None,
            vendor_id: None,
            product_id: None,
            serial: None,
            subsystem: tty(),
            manufacturer: None,
            product: None,
        }
    }

    /// The node's basename (`ttyUSB0`).
    pub fn node_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// What happened to a device (`device_change.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAction {
    Add,
    Remove,
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: T,
}

#[derive(Serialize)]
struct Discovery<'a> {
    devices: &'a [SerialDevice],
    timestamp: &'a str,
}

#[derive(Serialize)]
struct Change<'a> {
    action: DeviceAction,
    device: &'a SerialDevice,
}

fn line<T: Serialize>(value: &T) -> String {
    // Plain structs with string keys: serialisation cannot fail.
    let mut s = serde_json::to_string(value).unwrap_or_default();
    s.push('\n');
    s
}

/// `{"type": "device_discovery", "data": {"devices": [...], "timestamp": ...}}` + `\n`.
pub fn device_discovery_line(devices: &[SerialDevice], timestamp: &str) -> String {
    line(&Envelope {
        kind: "device_discovery",
        data: Discovery { devices, timestamp },
    })
}

/// `{"type": "device_change", "data": {"action": "add"|"remove", "device": {...}}}` + `\n`.
pub fn device_change_line(action: DeviceAction, device: &SerialDevice) -> String {
    line(&Envelope {
        kind: "device_change",
        data: Change { action, device },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_originals_shape() {
        let d = SerialDevice {
            by_id: Some("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0".into()),
            major: Some(188),
            minor: Some(0),
            vendor_id: Some("0403".into()),
            product_id: Some("6001".into()),
            serial: Some("A50285BI".into()),
            manufacturer: Some("FTDI".into()),
            product: Some("FT232R_USB_UART".into()),
            ..SerialDevice::removed("/dev/ttyUSB0")
        };
        assert_eq!(
            device_change_line(DeviceAction::Add, &d),
            "{\"type\":\"device_change\",\"data\":{\"action\":\"add\",\"device\":{\"path\":\"/dev/ttyUSB0\",\"by_id\":\"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0\",\"major\":188,\"minor\":0,\"vendor_id\":\"0403\",\"product_id\":\"6001\",\"serial\":\"A50285BI\",\"subsystem\":\"tty\",\"manufacturer\":\"FTDI\",\"product\":\"FT232R_USB_UART\"}}}\n"
        );
        assert_eq!(
            device_discovery_line(&[], "t"),
            "{\"type\":\"device_discovery\",\"data\":{\"devices\":[],\"timestamp\":\"t\"}}\n"
        );
        assert_eq!(d.node_name(), "ttyUSB0");
    }
}
