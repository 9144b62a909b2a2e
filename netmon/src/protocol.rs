//! The JSON lines the sidecar sends (upstream §7.2/§7.3): one document per line, keys in
//! upstream order. Pure; the server only writes these strings.

use netlink::InterfaceInfo;
use serde::Serialize;

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

fn line<T: Serialize>(kind: &str, data: T) -> String {
    // Plain structs with string keys and no maps: serialisation cannot fail.
    #[allow(clippy::expect_used)]
    let mut s = serde_json::to_string(&Envelope { kind, data })
        .expect("serialising the netmon envelope is infallible");
    s.push('\n');
    s
}

/// `{"type": "network_discovery", "data": {"interfaces": [...], "timestamp": ...}}` + `\n`.
pub fn discovery_line(interfaces: &[InterfaceInfo], timestamp: &str) -> String {
    line(
        "network_discovery",
        Discovery {
            interfaces,
            timestamp,
        },
    )
}

/// `{"type": "network_change", "data": <info>}` + `\n`.
pub fn change_line(info: &InterfaceInfo) -> String {
    line("network_change", info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_and_change_lines_have_upstream_shape() {
        assert_eq!(
            discovery_line(&[], "2025-11-20T20:30:45.123456Z"),
            "{\"type\":\"network_discovery\",\"data\":{\"interfaces\":[],\"timestamp\":\"2025-11-20T20:30:45.123456Z\"}}\n"
        );
        let info = InterfaceInfo::removed("eth1", 3, "t".into());
        assert_eq!(
            change_line(&info),
            "{\"type\":\"network_change\",\"data\":{\"interface\":\"eth1\",\"index\":3,\"operstate\":\"NOTPRESENT\",\"ipv4_addresses\":[],\"gateway\":null,\"timestamp\":\"t\",\"status\":\"removed\"}}\n"
        );
    }
}
