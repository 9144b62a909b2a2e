//! `get_host_interfaces` (upstream §12 item 3, upstream-head §9.4): the host's interfaces as
//! netmon last reported them (the interface cache), virtual ones left out unless asked for.

use serde_json::{Map, Value, json};

use super::contract::{self, BaseMessage, ContractError, Field, Kind, opt, single_object};
use super::{Services, Topic, error_ack, wrap};
use crate::netevents::{self, InterfaceInfo};

/// `get_host_interfaces` (upstream §12 item 3).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    opt("include_virtual", Kind::Boolean),
    opt("detailed", Kind::Boolean),
];

/// A validated `get_host_interfaces`.
#[derive(Debug, Clone, PartialEq)]
pub struct GetHostInterfaces {
    pub base: BaseMessage,
    /// Default false: virtual interfaces (bridges, veths, tunnels…) are filtered out.
    pub include_virtual: bool,
    /// Default true.
    pub detailed: bool,
}

impl Topic for GetHostInterfaces {
    const NAME: &'static str = "get_host_interfaces";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        let map = single_object(args)?;
        contract::check(CONTRACT, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            include_virtual: map
                .get("include_virtual")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            detailed: map.get("detailed").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    async fn apply(self, services: &Services) -> Value {
        let cache = &services.interfaces;
        let all = cache.list();
        if all.is_empty() {
            let why = if cache.is_connected() {
                "No host interfaces known yet (the network monitor reported none)"
            } else {
                "No host interfaces known: the network monitor is not connected"
            };
            return error_ack(Self::NAME, &self.base.correlation_id, why);
        }
        let dedicated = services.runtime.state().dedicated_nics().await;
        let holder = |name: &str| {
            dedicated
                .iter()
                .find(|(_, nic)| nic == name)
                .map(|(runtime, _)| runtime.as_str())
        };
        let mut interfaces: Vec<(String, Value)> = all
            .iter()
            .filter(|i| self.include_virtual || !netevents::is_virtual(&i.interface))
            .map(|i| {
                let entry = describe(i, self.detailed, holder(&i.interface));
                (i.interface.clone(), entry)
            })
            .collect();
        // A lent NIC is in its runtime's namespace, so netmon no longer reports it: listed as the
        // original lists a recorded NIC it has no entry for (upstream-head §6.6).
        for (runtime, nic) in &dedicated {
            if !all.iter().any(|i| &i.interface == nic) && !interfaces.iter().any(|(n, _)| n == nic)
            {
                interfaces.push((
                    nic.clone(),
                    json!({"name": nic, "ip_address": null, "ipv4_addresses": [],
                           "mac_address": null, "dedicated_to": runtime}),
                ));
            }
        }
        interfaces.sort_by(|a, b| a.0.cmp(&b.0));
        let interfaces: Vec<Value> = interfaces.into_iter().map(|(_, v)| v).collect();
        let mut body = Map::new();
        body.insert("status".to_owned(), json!("success"));
        body.insert("interfaces".to_owned(), Value::Array(interfaces));
        wrap(Self::NAME, &self.base.correlation_id, body)
    }
}

/// HEAD's entry (upstream-head §9.4, §6.6): `{name, ip_address (first address not `127.*`),
/// ipv4_addresses, mac_address, dedicated_to?, dedicated_only?}`, with `detailed` also `subnet`
/// and `gateway` (null when unknown); `dedicated_to` names the runtime the NIC is lent to. Ours
/// besides: `type` always; with `detailed`, `operstate`, `status` and the address entries as
/// netmon sent them.
fn describe(info: &InterfaceInfo, detailed: bool, dedicated_to: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("name".to_owned(), json!(info.interface));
    out.insert(
        "ip_address".to_owned(),
        json!(
            info.ipv4_addresses
                .iter()
                .map(|a| &a.address)
                .find(|a| !a.starts_with("127."))
        ),
    );
    out.insert(
        "ipv4_addresses".to_owned(),
        json!(
            info.ipv4_addresses
                .iter()
                .map(|a| &a.address)
                .collect::<Vec<_>>()
        ),
    );
    out.insert("mac_address".to_owned(), json!(info.mac_address));
    let kind = if info.is_wifi() { "wifi" } else { "ethernet" };
    out.insert("type".to_owned(), json!(kind));
    if detailed {
        out.insert("subnet".to_owned(), json!(info.subnet()));
        out.insert("gateway".to_owned(), json!(info.gateway));
    }
    if let Some(runtime) = dedicated_to {
        out.insert("dedicated_to".to_owned(), json!(runtime));
    }
    // An Ethernet port without IPv4 can only be handed to one runtime whole (HEAD's rule).
    if kind == "ethernet" && !info.has_ipv4() {
        out.insert("dedicated_only".to_owned(), json!(true));
    }
    if detailed {
        out.insert("operstate".to_owned(), json!(info.operstate));
        out.insert(
            "status".to_owned(),
            json!(info.status.map_or("up", |s| s.as_str())),
        );
        out.insert("addresses".to_owned(), json!(info.ipv4_addresses));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interfaces_flags_default_and_must_be_booleans() {
        let r = GetHostInterfaces::parse(&[json!({"correlation_id": 1})]).unwrap();
        assert!(!r.include_virtual && r.detailed);
        let r = GetHostInterfaces::parse(&[
            json!({"correlation_id": 1, "include_virtual": true, "detailed": false}),
        ])
        .unwrap();
        assert!(r.include_virtual && !r.detailed);
        assert!(GetHostInterfaces::parse(&[json!({})]).is_ok());
        assert_eq!(
            GetHostInterfaces::parse(&[json!({"correlation_id": 1, "include_virtual": 1})])
                .unwrap_err()
                .to_string(),
            "Invalid field type: Value must be a boolean. (field: include_virtual)"
        );
    }
}
