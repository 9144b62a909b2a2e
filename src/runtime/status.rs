//! `get_device_status` (upstream §12 items 1–2): a tracked create/delete (in progress or failed) is
//! reported as such; otherwise the container's live state with its MACVLAN networks (internal
//! bridges hidden), internal IP, uptime, and the last operation (e.g. a re-home or a power action,
//! running or finished, with its warnings or error). `__orchestrator__` reports the self-destruct
//! and state-file warnings.
//!
//! A network's `mac_address` is the MAC its link has: the engine's, unless netmon set the
//! persisted one in the container's current run (`macfix`; the engine keeps reporting its own).
//! Only a set that succeeded counts, so a MAC shown is one the link was given.

use std::collections::BTreeMap;

use docker_api::{ContainerInspect, ContainerStatus};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::net::MacAddr;
use super::ops::{OpKind, OpRecord, Outcome};
use super::{Error, Runtimes, internal_ip_of, naming, vnic};

impl Runtimes {
    /// The status of `device_id`: the document `get_device_status` answers with (upstream §12
    /// shape: `status`, the container's state and networks or the operation in progress, its
    /// warnings, `last_operation`), or an error for a device this agent must not report on.
    pub async fn device_status(&self, device_id: &str) -> Result<Map<String, Value>, Error> {
        device_status(self, device_id).await
    }
}

async fn device_status(rt: &Runtimes, device_id: &str) -> Result<Map<String, Value>, Error> {
    if device_id == naming::ORCHESTRATOR_DEVICE_ID {
        return Ok(orchestrator(rt));
    }
    let record = rt.ops().get(device_id);
    // A create, delete or clean-up in progress, or one that failed, is the device's status (upstream
    // shape): a container on its way out is never reported as `success`. Short operations
    // (start/stop/restart, reconcile, re-home) leave the container's live state in front and show up
    // under `last_operation`, running or finished.
    if let Some(r) = record.as_ref().filter(|r| is_device_status(r)) {
        return Ok(r.to_status(device_id));
    }
    let owned = match rt.owned(device_id, "report on").await {
        Ok(o) => o,
        Err(Error::NotFound(_)) => return Ok(not_found(device_id, record.as_ref())),
        Err(e) => return Err(e),
    };
    let Some(c) = owned.container else {
        return Ok(not_found(device_id, record.as_ref()));
    };
    let fixed = rt.fixed_macs().of(device_id, &c);
    let mut body = container_status(device_id, &c, &fixed);
    // Ours (HEAD reports nothing): the host NIC lent to it (upstream-head §6).
    if let Some(nic) = rt.state().dedicated_nic(device_id).await {
        body.insert("dedicated_interface".into(), json!(nic));
    }
    // upstream-head §7.7: only when it has ports.
    if let Some(entry) = rt.state().serial_entry(device_id).await {
        let ports = super::serial::status_entries(&entry);
        if !ports.is_empty() {
            body.insert("serial_ports".into(), json!(ports));
        }
    }
    // What the watchdog knows (crash loop, recent crashes, last exit code, log tail).
    body.extend(rt.watchdog().status_fields(device_id));
    // Standing warnings read from the container and the state files, so they survive agent
    // restarts; then the last operation's.
    let vnics = rt.state().vnics_of(device_id).await;
    show_leases(&mut body, vnics.as_deref().unwrap_or_default());
    let mut warnings = standing_warnings(&c, vnics.as_deref(), &fixed);
    if c.state.running {
        warnings.extend(lease_warnings(vnics.as_deref().unwrap_or_default()));
    }
    // The original's pseudo-networks of Wi-Fi vNICs (they have no Docker network).
    if let Some(Value::Object(networks)) = body.get_mut("networks") {
        for (name, shown) in super::wifi::status_networks(vnics.as_deref().unwrap_or_default()) {
            networks.insert(name, shown);
        }
    }
    if let Some(r) = record {
        for w in &r.warnings {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
        body.insert("last_operation".into(), Value::Object(last_operation(&r)));
    }
    if !warnings.is_empty() {
        body.insert("warnings".into(), json!(warnings));
    }
    Ok(body)
}

/// The leases of `dhcp` vNICs in place of the engine's placeholder addresses (upstream-head
/// §9.3): a network's `ip_address` and `gateway` are its vNIC's `dhcp_ip` and first
/// `dhcp_gateway` when it has a lease.
fn show_leases(body: &mut Map<String, Value>, vnics: &[Value]) {
    let Some(Value::Object(networks)) = body.get_mut("networks") else {
        return;
    };
    for (network, shown) in networks.iter_mut() {
        let Some(lease) = vnics.iter().filter_map(Value::as_object).find(|o| {
            o.get("dhcp_ip")
                .is_some_and(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
                && !vnic::is_proxy_arp(o)
                && super::dhcp::serves(o, network)
        }) else {
            continue;
        };
        let Some(shown) = shown.as_object_mut() else {
            continue;
        };
        shown.insert("ip_address".into(), lease["dhcp_ip"].clone());
        if let Some(gw) = lease
            .get("dhcp_gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.split_whitespace().next())
        {
            shown.insert("gateway".into(), json!(gw));
        }
    }
}

/// A `dhcp` vNIC of a running runtime without a lease yet: the address shown is the engine's
/// placeholder, which netmon removes once the lease arrives.
fn lease_warnings(vnics: &[Value]) -> Vec<String> {
    super::dhcp::dhcp_vnics(vnics)
        .into_iter()
        .filter(|v| {
            vnics[v.index]
                .get("dhcp_ip")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .map(|v| {
            format!(
                "vnic_configs[{}] ({}): no DHCP lease yet (the address shown is the engine's \
                 placeholder)",
                v.index, v.name
            )
        })
        .chain(
            super::wifi::wifi_vnics(vnics)
                .into_iter()
                .filter(|v| {
                    v.fixed.is_none()
                        && vnics[v.index]
                            .get("dhcp_ip")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                })
                .map(|v| {
                    format!(
                        "vnic_configs[{}] ({}): no DHCP lease yet on the Wi-Fi {} (no address, no \
                 bridge until the LAN's server answers)",
                        v.index, v.name, v.parent
                    )
                }),
        )
        .collect()
}

/// What the runtime runs without although it was asked for: the real-time ulimits (an engine that
/// refuses them), a persisted MAC no endpoint has (`fixed`: the MACs netmon set, by network).
fn standing_warnings(
    c: &ContainerInspect,
    vnics: Option<&[Value]>,
    fixed: &BTreeMap<String, MacAddr>,
) -> Vec<String> {
    let mut out = Vec::new();
    let missing: Vec<String> = super::body::realtime_ulimits()
        .into_iter()
        .map(|u| u.name)
        .filter(|n| !c.host_config.ulimits.iter().any(|u| &u.name == n))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "ulimit {} not applied (the engine refused it at create, or an older agent created \
             the runtime)",
            missing.join(" and ")
        ));
    }
    let in_use: Vec<String> = c
        .network_settings
        .networks
        .iter()
        .map(|(n, e)| link_mac(n, &e.mac_address, fixed))
        .collect();
    for (i, v) in vnics.unwrap_or_default().iter().enumerate() {
        let Some(o) = v.as_object() else { continue };
        let Some(mac) = o
            .get("mac")
            .or_else(|| o.get("mac_address"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        else {
            continue;
        };
        if !in_use.contains(&mac.to_ascii_lowercase()) {
            let name = o.get("name").and_then(Value::as_str).unwrap_or("");
            out.push(format!(
                "vnic_configs[{i}] ({name}): MAC {mac} is not honoured by the engine (the \
                 endpoint has another)"
            ));
        }
    }
    out
}

/// Whether the operation record, rather than the container, is the device's status: a create,
/// delete or clean-up that runs or failed.
fn is_device_status(r: &OpRecord) -> bool {
    matches!(r.kind, OpKind::Create | OpKind::Delete | OpKind::Cleanup)
        && r.outcome != Outcome::Succeeded
}

fn not_found(device_id: &str, record: Option<&OpRecord>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("status".into(), json!("not_found"));
    m.insert("device_id".into(), json!(device_id));
    let deleted =
        record.is_some_and(|r| r.kind == OpKind::Delete && r.outcome == Outcome::Succeeded);
    m.insert(
        "message".into(),
        json!(if deleted {
            format!("Container {device_id} was deleted")
        } else {
            // Today's original's text (upstream-head §9.3).
            format!("Container {device_id} does not exist")
        }),
    );
    m
}

fn last_operation(r: &OpRecord) -> Map<String, Value> {
    let mut m = r.to_status("");
    m.remove("device_id");
    m
}

/// How many of this agent's runtimes were in each state when the usage sampler last looked (every
/// 5 s): the runtimes-by-state metric, without an engine call per scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    counts: [u64; Census::STATES.len()],
}

impl Census {
    /// The states, in the order [`Census::iter`] reports them: the engine's container states,
    /// `unknown` (a state this agent does not know) and `missing` (a runtime of the state files
    /// without a container).
    pub const STATES: [&'static str; 9] = [
        "running",
        "paused",
        "restarting",
        "created",
        "exited",
        "dead",
        "removing",
        "unknown",
        "missing",
    ];

    /// Counts one runtime: its container's state, or `None` when it has no container.
    pub fn add(&mut self, status: Option<ContainerStatus>) {
        let state = status.map_or("missing", status_str);
        if let Some(i) = Self::STATES.iter().position(|s| *s == state) {
            self.counts[i] += 1;
        }
    }

    /// Every state with its count (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::STATES.iter().copied().zip(self.counts)
    }
}

fn status_str(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Paused => "paused",
        ContainerStatus::Restarting => "restarting",
        ContainerStatus::Removing => "removing",
        ContainerStatus::Exited => "exited",
        ContainerStatus::Dead => "dead",
        _ => "unknown",
    }
}

/// The MAC the link of network `network` has: the one netmon set, else the engine's (lowercase).
fn link_mac(network: &str, engine: &str, fixed: &BTreeMap<String, MacAddr>) -> String {
    fixed
        .get(network)
        .map_or_else(|| engine.to_ascii_lowercase(), MacAddr::to_string)
}

/// The upstream success shape from an inspect; `fixed`: the MACs netmon set, by network.
pub(super) fn container_status(
    device_id: &str,
    c: &ContainerInspect,
    fixed: &BTreeMap<String, MacAddr>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("status".into(), json!("success"));
    m.insert("device_id".into(), json!(device_id));
    m.insert("container_status".into(), json!(status_str(c.state.status)));
    m.insert("is_running".into(), json!(c.state.running));
    let mut networks = Map::new();
    for (name, ep) in &c.network_settings.networks {
        if name.ends_with(naming::INTERNAL_SUFFIX) {
            continue;
        }
        let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        let mac = fixed
            .get(name)
            .map_or_else(|| ep.mac_address.clone(), MacAddr::to_string);
        networks.insert(
            name.clone(),
            json!({
                "ip_address": opt(&ep.ip_address),
                "mac_address": opt(&mac),
                "gateway": opt(&ep.gateway),
            }),
        );
    }
    m.insert("networks".into(), Value::Object(networks));
    m.insert("restart_count".into(), json!(c.restart_count));
    if let Some(ip) = internal_ip_of(c, device_id) {
        m.insert("internal_ip".into(), json!(ip.to_string()));
    }
    if c.state.running {
        if let Some(up) = uptime_seconds(&c.state.started_at) {
            m.insert("uptime_seconds".into(), json!(up));
        }
    } else {
        m.insert("exit_code".into(), json!(c.state.exit_code));
    }
    if let Some(h) = c.state.health.as_ref().filter(|h| !h.status.is_empty()) {
        m.insert("health_status".into(), json!(h.status));
    }
    m
}

fn uptime_seconds(started_at: &str) -> Option<i64> {
    let t =
        OffsetDateTime::parse(started_at, &time::format_description::well_known::Rfc3339).ok()?;
    Some((OffsetDateTime::now_utc() - t).whole_seconds().max(0))
}

fn orchestrator(rt: &Runtimes) -> Map<String, Value> {
    let id = naming::ORCHESTRATOR_DEVICE_ID;
    let mut m = match rt.ops().get(id) {
        Some(r) => r.to_status(id),
        None => {
            let mut m = Map::new();
            m.insert("status".into(), json!("idle"));
            m.insert("device_id".into(), json!(id));
            m.insert(
                "message".into(),
                json!("No self-destruct operation has been requested"),
            );
            m
        }
    };
    let state_warnings = rt.state().warnings();
    if !state_warnings.is_empty() {
        m.insert("state_warnings".into(), json!(state_warnings));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ops::Operations;

    #[test]
    fn dhcp_vnics_without_a_lease_are_named_wifi_ones_too() {
        let vnics = vec![
            json!({"name": "lan", "parent_interface": "eth1", "network_mode": "dhcp"}),
            json!({"name": "w1", "parent_interface": "wlan0", "network_mode": "dhcp",
                   "_is_wifi": true}),
            json!({"name": "w2", "parent_interface": "wlan0", "network_mode": "dhcp",
                   "_is_wifi": true, "dhcp_ip": "192.168.1.7"}),
            json!({"name": "w3", "parent_interface": "wlan0", "network_mode": "static",
                   "ip": "192.168.1.9", "gateway": "192.168.1.1", "_is_wifi": true}),
        ];
        assert_eq!(
            lease_warnings(&vnics),
            [
                "vnic_configs[0] (lan): no DHCP lease yet (the address shown is the engine's \
                 placeholder)",
                "vnic_configs[1] (w1): no DHCP lease yet on the Wi-Fi wlan0 (no address, no \
                 bridge until the LAN's server answers)"
            ]
        );
    }

    #[test]
    fn the_census_counts_every_state_and_runtimes_without_a_container() {
        let mut c = Census::default();
        for s in [
            Some(ContainerStatus::Running),
            Some(ContainerStatus::Running),
            Some(ContainerStatus::Exited),
            Some(ContainerStatus::Unknown),
            None,
        ] {
            c.add(s);
        }
        let counts: Vec<(&str, u64)> = c.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            counts,
            [
                ("running", 2),
                ("exited", 1),
                ("unknown", 1),
                ("missing", 1)
            ]
        );
        assert_eq!(
            c.iter().count(),
            Census::STATES.len(),
            "zeros are reported too"
        );
    }

    #[test]
    fn a_clean_up_in_progress_is_the_status_not_the_live_container() {
        let ops = Operations::new();
        let op = ops.try_begin("plc", OpKind::Cleanup).unwrap();
        op.step(
            "removing_container",
            "removing what the interrupted create made",
        );
        let r = ops.get("plc").unwrap();
        assert!(is_device_status(&r));
        let s = r.to_status("plc");
        assert_eq!(s["status"], "cleaning_up");
        assert_eq!(s["operation"], "cleanup");
        assert_eq!(s["step"], "removing_container");
        op.succeed("removed");
        assert!(!is_device_status(&ops.get("plc").unwrap()));
        // A reconcile or a power action leaves the live state in front.
        let _r = ops.try_begin("other", OpKind::Reconcile).unwrap();
        assert!(!is_device_status(&ops.get("other").unwrap()));
    }

    #[test]
    fn success_shape_hides_internal_networks() {
        let c: ContainerInspect = serde_json::from_value(json!({
            "Id": "abc", "Name": "/plc",
            "State": {"Status": "running", "Running": true, "StartedAt": "2026-01-01T00:00:00.123456789Z"},
            "RestartCount": 2,
            "NetworkSettings": {"Networks": {
                "plc_internal": {"IPAddress": "172.30.0.2", "MacAddress": "02:42:ac:1e:00:02"},
                "macvlan_eth0_10.0.0.0_24": {"IPAddress": "10.0.0.5", "MacAddress": "02:00:00:00:00:05", "Gateway": "10.0.0.1"}
            }}
        }))
        .unwrap();
        let s = container_status("plc", &c, &BTreeMap::new());
        assert_eq!(s["status"], "success");
        assert_eq!(s["container_status"], "running");
        assert_eq!(s["is_running"], true);
        assert_eq!(s["internal_ip"], "172.30.0.2");
        assert_eq!(s["restart_count"], 2);
        assert!(s["uptime_seconds"].as_i64().unwrap() > 0);
        assert_eq!(
            s["networks"],
            json!({"macvlan_eth0_10.0.0.0_24": {"ip_address": "10.0.0.5",
                   "mac_address": "02:00:00:00:00:05", "gateway": "10.0.0.1"}})
        );
        assert!(s.get("exit_code").is_none());
    }

    #[test]
    fn a_mac_netmon_set_is_the_one_reported_and_no_longer_a_warning() {
        let c: ContainerInspect = serde_json::from_value(json!({
            "Id": "abc", "Name": "/plc",
            "State": {"Status": "running", "Running": true},
            "NetworkSettings": {"Networks": {
                "macvlan_eth0_10.0.0.0_24": {"IPAddress": "10.0.0.5", "MacAddress": "02:42:0A:00:00:05"}
            }}
        }))
        .unwrap();
        let vnics =
            [json!({"name": "eth0", "parent_interface": "eth0", "mac": "02:00:00:00:00:07"})];
        let macs = |fixed: &BTreeMap<String, MacAddr>| -> Vec<String> {
            standing_warnings(&c, Some(&vnics), fixed)
                .into_iter()
                .filter(|w| w.contains("MAC"))
                .collect()
        };
        assert_eq!(
            macs(&BTreeMap::new()),
            [
                "vnic_configs[0] (eth0): MAC 02:00:00:00:00:07 is not honoured by the engine (the \
              endpoint has another)"
            ]
        );
        let net = "macvlan_eth0_10.0.0.0_24";
        assert_eq!(
            container_status("plc", &c, &BTreeMap::new())["networks"][net]["mac_address"],
            "02:42:0A:00:00:05"
        );
        let fixed = BTreeMap::from([(net.to_owned(), "02:00:00:00:00:07".parse().unwrap())]);
        assert!(macs(&fixed).is_empty());
        assert_eq!(
            container_status("plc", &c, &fixed)["networks"][net]["mac_address"],
            "02:00:00:00:00:07"
        );
    }
}
