//! Writing lines: one JSON object, then `\n`. Every type written here has string keys only, so
//! serialising cannot fail.

use serde::Serialize;

use crate::command::{Request, Response};
use crate::interface::InterfaceInfo;

/// Longest line a reader accepts (bytes, without the newline); the rest of a longer one is
/// dropped. The original agent's limit, far above any real discovery.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

#[derive(Serialize)]
struct Discovery<'a> {
    interfaces: &'a [InterfaceInfo],
    timestamp: &'a str,
}

fn line<T: Serialize>(value: &T) -> String {
    // Plain structs, string keys, no maps with other keys: serialisation cannot fail.
    #[allow(clippy::expect_used)]
    let mut s = serde_json::to_string(value).expect("serialising a netmon line is infallible");
    s.push('\n');
    s
}

/// `{"type": "network_discovery", "data": {"interfaces": [...], "timestamp": ...}}` + `\n`.
pub fn discovery_line(interfaces: &[InterfaceInfo], timestamp: &str) -> String {
    line(&Envelope {
        kind: "network_discovery",
        data: Discovery {
            interfaces,
            timestamp,
        },
    })
}

/// `{"type": "network_change", "data": <info>}` + `\n`.
pub fn change_line(info: &InterfaceInfo) -> String {
    line(&Envelope {
        kind: "network_change",
        data: info,
    })
}

/// A command line + `\n`.
pub fn request_line(request: &Request) -> String {
    line(request)
}

/// A response line + `\n`.
pub fn response_line(response: &Response) -> String {
    line(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::InterfaceStatus;

    #[test]
    fn discovery_and_change_lines_have_upstream_shape() {
        assert_eq!(
            discovery_line(&[], "2025-11-20T20:30:45.123456+00:00"),
            "{\"type\":\"network_discovery\",\"data\":{\"interfaces\":[],\"timestamp\":\"2025-11-20T20:30:45.123456+00:00\"}}\n"
        );
        let removed = InterfaceInfo {
            interface: "eth1".into(),
            index: Some(3),
            operstate: Some("NOTPRESENT".into()),
            kind: None,
            ipv4_addresses: Vec::new(),
            gateway: None,
            timestamp: Some("t".into()),
            status: Some(InterfaceStatus::Removed),
            mac_address: None,
        };
        assert_eq!(
            change_line(&removed),
            "{\"type\":\"network_change\",\"data\":{\"interface\":\"eth1\",\"index\":3,\"operstate\":\"NOTPRESENT\",\"ipv4_addresses\":[],\"gateway\":null,\"timestamp\":\"t\",\"status\":\"removed\"}}\n"
        );
    }
}
