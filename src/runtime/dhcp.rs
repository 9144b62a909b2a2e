//! Real DHCP leases for `dhcp` vNICs (upstream-head §4.6), leased by netmon inside the runtime's
//! network namespace: the agent asks (`start_dhcp` with the container's PID and the vNIC's MAC),
//! netmon runs the client and reports every lease change (`dhcp_update`), and the agent persists
//! the lease on the vNIC as the original does (`dhcp_ip`, `dhcp_gateway`, `dhcp_dns` in
//! `runtime_vnics.json`), where `get_device_status` reads it.
//!
//! When the agent asks (fixing Defects N8, N15 and N17 of the original):
//! - after every start of the container (create, `start_device`, `restart_device`, the watchdog,
//!   the engine's restart policy, a re-home): a new container process is a new namespace, so the
//!   old client cannot serve it; netmon replaces a client whose PID changed;
//! - on every connection to netmon (agent or netmon restarted): every running runtime again
//!   (netmon answers "already running" for the clients it has);
//! - a failed request is retried with backoff (1 s doubling to 5 min, ±30 % jitter) while the
//!   runtime runs;
//! - before a stop, restart or delete: `stop_dhcp`, so the lease is released while the vNIC is
//!   still there.
//!
//! A lease is written to the vNIC under the state store's lock (read-modify-write), so a
//! concurrent writer cannot erase it. Wi-Fi (proxy-ARP) vNICs lease on the host's Wi-Fi instead
//! (`super::wifi`); their leases are recorded here too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use docker_api::{ContainerInspect, EndpointSettings};
use rand::RngExt;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Runtimes, running_pid, vnic};
use crate::netevents::{DhcpUpdate, NetmonCommand, Pid};

/// First retry delay and the cap of the backoff.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// One `dhcp` vNIC of a runtime, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DhcpVnic {
    /// Position in the persisted list (`vnic_configs[i]` in texts).
    pub index: usize,
    /// `name`: the key netmon knows the client by.
    pub name: String,
    pub parent: String,
    /// The persisted MAC (`mac_address` or `mac`), lower case.
    pub mac: Option<String>,
    /// `docker_network_name`, when the original persisted it.
    pub network: Option<String>,
}

/// The vNICs of a persisted list that get their address from DHCP: `network_mode` `dhcp` (the
/// original's default when the key is missing), a name and a parent, not a Wi-Fi (proxy-ARP) one.
pub(super) fn dhcp_vnics(list: &[Value]) -> Vec<DhcpVnic> {
    list.iter()
        .enumerate()
        .filter_map(|(index, v)| {
            let o = v.as_object()?;
            if vnic::is_proxy_arp(o) || text(o, "network_mode").unwrap_or("dhcp") != "dhcp" {
                return None;
            }
            Some(DhcpVnic {
                index,
                name: text(o, "name")?.to_owned(),
                parent: text(o, "parent_interface")?.to_owned(),
                mac: text(o, "mac_address")
                    .or_else(|| text(o, "mac"))
                    .map(str::to_ascii_lowercase),
                network: text(o, "docker_network_name").map(str::to_owned),
            })
        })
        .collect()
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The container's endpoint for the vNIC: on its persisted `docker_network_name`, else on the
/// MACVLAN network of its parent (`macvlan_<parent>_…`; the `_` keeps `eth1` from matching
/// `eth10`, Defect N16).
pub(super) fn endpoint<'a>(
    c: &'a ContainerInspect,
    v: &DhcpVnic,
) -> Option<(&'a String, &'a EndpointSettings)> {
    let nets = &c.network_settings.networks;
    if let Some(n) = &v.network
        && let Some(found) = nets.get_key_value(n)
    {
        return Some(found);
    }
    let prefix = format!("macvlan_{}_", v.parent);
    nets.iter().find(|(name, _)| name.starts_with(&prefix))
}

/// Whether the persisted vNIC object `o` is the network `network`'s vNIC (for the status).
pub(super) fn serves(o: &Map<String, Value>, network: &str) -> bool {
    text(o, "docker_network_name") == Some(network)
        || text(o, "parent_interface")
            .is_some_and(|p| network.starts_with(&format!("macvlan_{p}_")))
}

/// Retries of failed `start_dhcp` requests, by runtime.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    due: Mutex<BTreeMap<String, (u32, Instant)>>,
    changed: Notify,
}

impl Retries {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u32, Instant)>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules the next attempt for `name`: 1 s after the first failure, then doubling up to
    /// 5 min, each ±30 % so a fleet that lost its DHCP server does not retry in step.
    pub(super) fn schedule(&self, name: &str) {
        let mut due = self.lock();
        let attempt = due.get(name).map_or(0, |(a, _)| a + 1);
        let base = RETRY_FIRST
            .saturating_mul(1u32 << attempt.min(9))
            .min(RETRY_MAX);
        let jitter = rand::rng().random_range(0.7..1.3);
        let delay = base.mul_f64(jitter).max(RETRY_FIRST);
        due.insert(name.to_owned(), (attempt, Instant::now() + delay));
        drop(due);
        self.changed.notify_one();
    }

    fn clear(&self, name: &str) {
        self.lock().remove(name);
    }

    fn next(&self) -> Option<Instant> {
        self.lock().values().map(|(_, at)| *at).min()
    }

    /// The runtimes whose retry is due now (they stay scheduled until an attempt clears them or
    /// schedules the next one).
    fn due_now(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Pending retries (status, tests).
    #[cfg(test)]
    pub(crate) fn pending(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// Asks netmon to run (or keep running) a DHCP client for every `dhcp` vNIC of the runtime, if
/// its container runs. On failure a retry is scheduled and the error says which vNICs and why.
pub(super) async fn ensure(rt: &Runtimes, name: &str) -> Result<(), String> {
    let vnics = dhcp_vnics(&rt.state().vnics_of(name).await.unwrap_or_default());
    if vnics.is_empty() {
        rt.dhcp_retries().clear(name);
        return Ok(());
    }
    let c = match rt.docker().inspect_container(name).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            rt.dhcp_retries().clear(name);
            return Ok(());
        }
        Err(e) => {
            rt.dhcp_retries().schedule(name);
            return Err(format!("DHCP not started: cannot inspect {name}: {e}"));
        }
    };
    let Some(pid) = running_pid(&c) else {
        rt.dhcp_retries().clear(name);
        return Ok(());
    };
    let mut errors = Vec::new();
    for v in &vnics {
        if let Err(e) = start_one(rt, name, &c, pid, v).await {
            errors.push(format!("vnic_configs[{}] ({}): {e}", v.index, v.name));
        }
    }
    if errors.is_empty() {
        rt.dhcp_retries().clear(name);
        Ok(())
    } else {
        rt.dhcp_retries().schedule(name);
        Err(format!(
            "DHCP not started (retrying): {}",
            errors.join("; ")
        ))
    }
}

async fn start_one(
    rt: &Runtimes,
    name: &str,
    c: &ContainerInspect,
    pid: u32,
    v: &DhcpVnic,
) -> Result<(), String> {
    let (network, ep) = endpoint(c, v)
        .ok_or_else(|| format!("not attached to a MACVLAN network of {}", v.parent))?;
    // netmon finds the link by its MAC: the persisted one (what the link has when the engine
    // honoured it, or once it was set in the namespace), else the engine's.
    let engine_mac = ep.mac_address.to_ascii_lowercase();
    let mut macs: Vec<&str> = v.mac.iter().map(String::as_str).collect();
    if !engine_mac.is_empty() && !macs.contains(&engine_mac.as_str()) {
        macs.push(&engine_mac);
    }
    let mut last = format!("no MAC known for the endpoint on {network}");
    for mac in macs {
        let answer = rt
            .interfaces()
            .command(NetmonCommand::StartDhcp {
                container_name: name.to_owned(),
                vnic_name: v.name.clone(),
                mac_address: mac.to_owned(),
                container_pid: Pid(pid),
            })
            .await;
        if answer.success {
            debug!(runtime = name, vnic = %v.name, mac, message = ?answer.message, "DHCP client running");
            return Ok(());
        }
        last = answer
            .error
            .unwrap_or_else(|| "the network monitor gave no reason".to_owned());
        // Only a MAC that is not on any link is worth trying the next one for.
        if !last.contains("not found in container") {
            break;
        }
    }
    Err(last)
}

/// Stops netmon's DHCP clients of the runtime (the lease is released while the vNIC is still
/// there) and forgets the lease on its vNICs. Returns warnings; a client that was not running is
/// not one.
pub(super) async fn stop(rt: &Runtimes, name: &str) -> Vec<String> {
    rt.dhcp_retries().clear(name);
    let vnics = dhcp_vnics(&rt.state().vnics_of(name).await.unwrap_or_default());
    let mut warnings = Vec::new();
    for v in &vnics {
        let answer = rt
            .interfaces()
            .command(NetmonCommand::StopDhcp {
                container_name: name.to_owned(),
                vnic_name: v.name.clone(),
            })
            .await;
        if !answer.success {
            let e = answer.error.unwrap_or_default();
            if !e.starts_with("No DHCP client found") {
                warnings.push(format!(
                    "vnic_configs[{}] ({}): could not stop its DHCP client: {e}",
                    v.index, v.name
                ));
            }
        }
    }
    if !vnics.is_empty() {
        let forgot = rt
            .state()
            .update_vnics(name, |list| {
                let mut changed = false;
                for v in &vnics {
                    if let Some(o) = list.get_mut(v.index).and_then(Value::as_object_mut) {
                        // As the original on a failed start: the address and gateway go, the
                        // DNS servers stay (the next lease brings them again).
                        changed |= o.remove("dhcp_ip").is_some();
                        changed |= o.remove("dhcp_gateway").is_some();
                    }
                }
                changed
            })
            .await;
        if let Err(e) = forgot {
            warnings.push(format!("could not forget the released DHCP leases: {e}"));
        }
    }
    warnings
}

/// Persists a lease netmon reported on the runtime's vNIC of that name. Updates for runtimes or
/// vNICs the agent does not know, or without an address, are ignored (logged).
pub(super) async fn record(rt: &Runtimes, update: &DhcpUpdate) {
    let (runtime, vnic_name) = (&update.container_name, &update.vnic_name);
    if runtime.is_empty() || vnic_name.is_empty() || update.ip.is_empty() {
        debug!(
            ?update,
            "ignoring a dhcp_update without runtime, vNIC or address"
        );
        return;
    }
    let result = rt
        .state()
        .update_vnics(runtime, |list| {
            // Wi-Fi vNICs' leases too: netmon's host-side client (`request_wifi_dhcp`).
            let Some(o) = list
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .find(|o| o.get("name").and_then(Value::as_str) == Some(vnic_name.as_str()))
            else {
                return false;
            };
            let mut changed = false;
            let mut set = |key: &str, value: Value| {
                if o.get(key) != Some(&value) {
                    o.insert(key.to_owned(), value);
                    changed = true;
                }
            };
            set("dhcp_ip", json!(update.ip));
            set("dhcp_gateway", json!(update.gateway));
            set("dhcp_dns", json!(update.dns));
            if let Some(p) = &update.proxy_arp_config {
                set("_proxy_arp_config", p.clone());
            }
            changed
        })
        .await;
    match result {
        Ok(true) => info!(
            runtime = %runtime, vnic = %vnic_name, ip = %update.ip, gateway = %update.gateway,
            dns = %update.dns, "DHCP lease recorded"
        ),
        Ok(false) => {
            debug!(runtime = %runtime, vnic = %vnic_name, "dhcp_update: nothing to record")
        }
        Err(e) => {
            warn!(runtime = %runtime, vnic = %vnic_name, error = %e, "cannot record a DHCP lease")
        }
    }
}

/// For the life of the service: records the leases netmon reports, brings the host side of every
/// runtime back on each new connection to netmon ([`super::host_side::resync`]: MACs, then DHCP
/// clients), and runs the retries.
pub(super) async fn follow_netmon(rt: Runtimes) {
    let mut connections = rt.interfaces().subscribe_connections();
    let mut updates = rt.interfaces().subscribe_dhcp();
    if rt.interfaces().is_connected() {
        super::host_side::resync(&rt).await;
    }
    loop {
        let next = rt.dhcp_retries().next();
        let retry = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                super::host_side::resync(&rt).await;
            }
            update = updates.recv() => match update {
                Ok(u) => record(&rt, &u).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // netmon announces a lease again only when it changes: ask for every client
                    // again, which re-announces a fresh lease after a restart of the client.
                    warn!(missed = n, "missed DHCP lease updates");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = rt.dhcp_retries().changed.notified() => {}
            () = retry => {
                for name in rt.dhcp_retries().due_now() {
                    if rt.ops().running(&name).is_some() {
                        // The operation asks itself once the container runs; look again later.
                        rt.dhcp_retries().schedule(&name);
                        continue;
                    }
                    if let Err(e) = ensure(&rt, &name).await {
                        warn!(runtime = %name, "{e}");
                    }
                    for w in super::wifi::ensure(&rt, &name).await {
                        warn!(runtime = %name, "{w}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_vnics_are_the_dhcp_mode_ones_with_a_name_and_parent_and_not_wifi() {
        let list = vec![
            json!({"name": "eth0", "parent_interface": "ens1", "network_mode": "dhcp",
                   "mac_address": "02:AA:00:00:00:01"}),
            json!({"name": "eth1", "parent_interface": "ens1", "network_mode": "static",
                   "ip": "10.0.0.5"}),
            // The original's default mode is dhcp.
            json!({"name": "eth2", "parent_interface": "ens2", "mac": "02:aa:00:00:00:02",
                   "docker_network_name": "macvlan_ens2_10.0.0.0_24"}),
            json!({"name": "w", "parent_interface": "wlan0", "network_mode": "dhcp",
                   "_network_method": "proxy_arp"}),
            json!({"parent_interface": "ens1", "network_mode": "dhcp"}),
            json!("junk"),
        ];
        let got = dhcp_vnics(&list);
        assert_eq!(
            got,
            vec![
                DhcpVnic {
                    index: 0,
                    name: "eth0".into(),
                    parent: "ens1".into(),
                    mac: Some("02:aa:00:00:00:01".into()),
                    network: None,
                },
                DhcpVnic {
                    index: 2,
                    name: "eth2".into(),
                    parent: "ens2".into(),
                    mac: Some("02:aa:00:00:00:02".into()),
                    network: Some("macvlan_ens2_10.0.0.0_24".into()),
                },
            ]
        );
    }

    #[test]
    fn a_vnic_serves_its_named_network_or_its_parents_macvlan_only() {
        let o = json!({"parent_interface": "eth1"});
        let o = o.as_object().unwrap();
        assert!(serves(o, "macvlan_eth1_10.0.0.0_24"));
        assert!(!serves(o, "macvlan_eth10_10.0.0.0_24"));
        let named = json!({"parent_interface": "eth1", "docker_network_name": "lan"});
        assert!(serves(named.as_object().unwrap(), "lan"));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_from_one_second_to_five_minutes_with_jitter() {
        let r = Retries::default();
        let start = Instant::now();
        r.schedule("plc");
        let first = r.next().unwrap() - start;
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_millis(1300));
        for _ in 0..12 {
            r.schedule("plc");
        }
        let late = r.next().unwrap() - start;
        assert!(late >= Duration::from_secs(210) && late <= Duration::from_secs(390));
        assert!(r.due_now().is_empty());
        tokio::time::advance(Duration::from_secs(400)).await;
        assert_eq!(r.due_now(), vec!["plc".to_string()]);
        r.clear("plc");
        assert!(!r.pending("plc") && r.next().is_none());
    }
}
