//! The `dhcp_update` event (netmon → agent, upstream-head §4.5.4): a DHCP client netmon runs for
//! a container's vNIC got a lease, or its lease changed. Field names, types and order are the
//! original's: `mask` is the prefix length as a string, `gateway` and `dns` are space-separated
//! strings, `lease_time` is seconds as a string, `mac_address` is `null` for Wi-Fi.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `data` of a `dhcp_update` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpUpdate {
    pub container_name: String,
    pub vnic_name: String,
    #[serde(default)]
    pub mac_address: Option<String>,
    pub ip: String,
    /// The prefix length as a string (`"24"`), not a dotted mask.
    #[serde(default)]
    pub mask: String,
    #[serde(default)]
    pub prefix: u8,
    /// The routers, space-separated (the first is the default gateway); `""` when none.
    #[serde(default)]
    pub gateway: String,
    /// The DNS servers, space-separated; `""` when none.
    #[serde(default)]
    pub dns: String,
    /// Seconds, as a string.
    #[serde(default)]
    pub lease_time: String,
    #[serde(default)]
    pub timestamp: String,
    /// Wi-Fi only, when the proxy-ARP bridge was built (upstream-head §5.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_arp_config: Option<Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a DhcpUpdate,
}

/// `{"type": "dhcp_update", "data": {...}}` + `\n`.
pub fn dhcp_update_line(update: &DhcpUpdate) -> String {
    // String keys and plain values: serialisation cannot fail.
    let mut s = serde_json::to_string(&Envelope {
        kind: "dhcp_update",
        data: update,
    })
    .unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_the_originals_keys_in_order() {
        let u = DhcpUpdate {
            container_name: "plc-01".into(),
            vnic_name: "eth0".into(),
            mac_address: Some("3e:9a:12:00:ab:cd".into()),
            ip: "192.168.1.77".into(),
            mask: "24".into(),
            prefix: 24,
            gateway: "192.168.1.1".into(),
            dns: "192.168.1.1 8.8.8.8".into(),
            lease_time: "86400".into(),
            timestamp: "2026-04-10T15:04:05.000000+00:00".into(),
            proxy_arp_config: None,
        };
        let line = dhcp_update_line(&u);
        assert_eq!(
            line,
            "{\"type\":\"dhcp_update\",\"data\":{\"container_name\":\"plc-01\",\"vnic_name\":\"eth0\",\
             \"mac_address\":\"3e:9a:12:00:ab:cd\",\"ip\":\"192.168.1.77\",\"mask\":\"24\",\"prefix\":24,\
             \"gateway\":\"192.168.1.1\",\"dns\":\"192.168.1.1 8.8.8.8\",\"lease_time\":\"86400\",\
             \"timestamp\":\"2026-04-10T15:04:05.000000+00:00\"}}\n"
        );
        let back: serde_json::Value = serde_json::from_str(&line).expect("json");
        let data: DhcpUpdate = serde_json::from_value(back["data"].clone()).expect("shape");
        assert_eq!(data, u);
    }

    #[test]
    fn the_python_netmons_wifi_update_is_read() {
        let data = serde_json::json!({"container_name": "plc", "vnic_name": "wlan", "mac_address": null,
            "ip": "192.168.50.40", "mask": "24", "prefix": 24, "gateway": "192.168.50.1", "dns": "",
            "lease_time": "3600", "timestamp": "t", "proxy_arp_config": {"veth_host": "v"}});
        let u: DhcpUpdate = serde_json::from_value(data).expect("shape");
        assert_eq!(u.mac_address, None);
        assert!(u.proxy_arp_config.is_some());
    }
}
