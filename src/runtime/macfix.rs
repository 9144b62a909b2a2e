//! MACs that stay (issue 13): a runtime's MACVLAN vNIC has its persisted MAC (configured, or
//! generated at create) after a re-home and after every start, on every engine. Docker ignores
//! `MacAddress` on network connect before API 1.54, honours a MAC on one network per container at
//! create before 1.44, and gives an endpoint the MAC it stored for it again at each start. Where
//! the endpoint the engine reports has another MAC, netmon sets the persisted one in the runtime's
//! network namespace (`set_vnic_mac`: it has `NET_ADMIN`, `SYS_ADMIN` and the host's PIDs; the
//! agent has none of them). A netmon without the command (the original's) answers `Unknown
//! command`: the MAC then stays the engine's, and the caller warns.
//!
//! The engine keeps reporting its own MAC afterwards. [`Fixed`] remembers, per container run (id
//! and start time), the endpoints netmon set, so the device status reports the MAC the link has;
//! a later start (whose endpoint has the engine's MAC again until fixed) is another run.
//!
//! Never does: change a link itself, act on a container that is not the runtime (checked here
//! too), or fail the operation that called it (a MAC that could not be set is a warning).

use std::collections::BTreeMap;
use std::sync::Mutex;

use docker_api::ContainerInspect;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::net::{Ipv4Net, MacAddr};
use super::vnic::PersistedVnic;
use super::{Runtimes, naming, running_pid};
use crate::netevents::{NetmonCommand, Pid};

/// Per runtime, the container run whose endpoints netmon gave their persisted MAC.
#[derive(Debug, Default)]
pub(crate) struct Fixed(Mutex<BTreeMap<String, Run>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    id: String,
    started_at: String,
    /// Network name → the MAC its endpoint's link has.
    macs: BTreeMap<String, MacAddr>,
}

impl Fixed {
    fn record(&self, runtime: &str, c: &ContainerInspect, network: &str, mac: MacAddr) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let run = runs.entry(runtime.to_owned()).or_insert_with(|| Run {
            id: c.id.clone(),
            started_at: c.state.started_at.clone(),
            macs: BTreeMap::new(),
        });
        if run.id != c.id || run.started_at != c.state.started_at {
            // An earlier run's links are gone with its namespace.
            *run = Run {
                id: c.id.clone(),
                started_at: c.state.started_at.clone(),
                macs: BTreeMap::new(),
            };
        }
        run.macs.insert(network.to_owned(), mac);
    }

    /// The MACs netmon set in the current run of the runtime's container `c`, by network; empty
    /// when it does not run, or was started again since.
    pub(super) fn of(&self, runtime: &str, c: &ContainerInspect) -> BTreeMap<String, MacAddr> {
        if !c.state.running {
            return BTreeMap::new();
        }
        let runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match runs.get(runtime) {
            Some(run) if run.id == c.id && run.started_at == c.state.started_at => run.macs.clone(),
            _ => BTreeMap::new(),
        }
    }
}

/// A persisted MACVLAN vNIC with a MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    index: usize,
    /// Its `name` (for messages).
    label: String,
    parent: String,
    /// `docker_network_name` when the original agent persisted it.
    network: Option<String>,
    mac: MacAddr,
}

fn wanted(vnics: &[Value]) -> Vec<Wanted> {
    vnics
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let o = v.as_object()?;
            let p = PersistedVnic::read(i, o)?;
            let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
            Some(Wanted {
                index: i,
                label: text("name").unwrap_or_default(),
                parent: p.parent,
                network: text("docker_network_name").filter(|n| !n.is_empty()),
                mac: p.mac?,
            })
        })
        .collect()
}

/// Whether `network` is `macvlan_<parent>_<a.b.c.d>_<prefix>` ([`naming::macvlan_network_name`]).
fn is_macvlan_of(network: &str, parent: &str) -> bool {
    let Some(rest) = network
        .strip_prefix("macvlan_")
        .and_then(|r| r.strip_prefix(parent))
        .and_then(|r| r.strip_prefix('_'))
    else {
        return false;
    };
    rest.rsplit_once('_')
        .and_then(|(addr, prefix)| Ipv4Net::new(addr.parse().ok()?, prefix.parse().ok()?))
        .is_some_and(|s| naming::macvlan_network_name(parent, s) == network)
}

/// The network of the container's endpoint for vNIC `w`: its persisted `docker_network_name`
/// when the container is attached to it, else the one named after its parent (one per parent: the
/// engine refuses a second MACVLAN network on a parent).
fn endpoint_of<'a>(c: &'a ContainerInspect, w: &Wanted) -> Option<&'a str> {
    let networks = &c.network_settings.networks;
    if let Some((name, _)) = w.network.as_deref().and_then(|n| networks.get_key_value(n)) {
        return Some(name);
    }
    networks
        .keys()
        .map(String::as_str)
        .find(|n| is_macvlan_of(n, &w.parent))
}

/// Gives the endpoint of `network` in the runtime's running container `c` the MAC `wanted`
/// through netmon, unless the engine already reports it. `Ok(true)` when netmon set it (or found
/// it set), `Ok(false)` when the engine had honoured it; the error says why not, in words for a
/// warning.
pub(super) async fn fix(
    rt: &Runtimes,
    runtime: &str,
    c: &ContainerInspect,
    network: &str,
    wanted: MacAddr,
) -> Result<bool, String> {
    let pid = running_pid(c).ok_or("the runtime is not running")?;
    let reported = c
        .network_settings
        .networks
        .get(network)
        .map(|e| e.mac_address.as_str())
        .ok_or_else(|| format!("the runtime is not attached to {network}"))?;
    let current: MacAddr = reported
        .parse()
        .map_err(|_| format!("the engine reports no usable MAC for it ({reported:?})"))?;
    if current == wanted {
        return Ok(false);
    }
    let r = rt
        .interfaces()
        .command(NetmonCommand::SetVnicMac {
            container_pid: Pid(pid),
            current_mac: current.to_string(),
            mac_address: wanted.to_string(),
        })
        .await;
    if !r.success {
        let e = r
            .error
            .unwrap_or_else(|| "the network monitor gave no reason".to_owned());
        return Err(if e.starts_with("Unknown command") {
            format!("the network monitor cannot set MACs (an older netmon: {e})")
        } else {
            format!("the network monitor could not set it: {e}")
        });
    }
    info!(
        runtime, network, mac = %wanted, engine_mac = %current,
        "vNIC MAC set in the runtime's namespace: {}", r.message.as_deref().unwrap_or("")
    );
    rt.fixed_macs().record(runtime, c, network, wanted);
    Ok(true)
}

/// Makes every persisted MACVLAN vNIC MAC of the running runtime `name` the one its link has
/// ([`fix`] where the engine reports another). Returns a warning per vNIC whose MAC could not be
/// set; nothing when the runtime does not run (the next start does it) or has no persisted MAC.
/// Call it after every start, before netmon's DHCP client is started (it finds the interface by
/// the persisted MAC).
pub(super) async fn ensure(rt: &Runtimes, name: &str) -> Vec<String> {
    let wanted = wanted(&rt.state().vnics_of(name).await.unwrap_or_default());
    if wanted.is_empty() {
        return Vec::new();
    }
    let c = match rt.docker().inspect_container(name).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => return Vec::new(),
        Err(e) => {
            return vec![format!(
                "cannot inspect {name} to check its vNICs' MACs: {e}"
            )];
        }
    };
    if c.short_name() != name || naming::ownership(&c.config.labels, rt.instance(), true).is_none()
    {
        return Vec::new();
    }
    if running_pid(&c).is_none() {
        debug!(
            runtime = name,
            "not running: its vNICs' MACs are set at its next start"
        );
        return Vec::new();
    }
    let mut warnings = Vec::new();
    for w in &wanted {
        // Not attached (e.g. its parent has no subnet now): nothing to set.
        let Some(network) = endpoint_of(&c, w) else {
            continue;
        };
        if let Err(e) = fix(rt, name, &c, network, w.mac).await {
            warn!(runtime = name, network, mac = %w.mac, "cannot set a vNIC's MAC: {e}");
            warnings.push(format!(
                "vnic_configs[{}] ({}): MAC {} is not honoured by the engine on {network} and \
                 could not be set: {e}",
                w.index, w.label, w.mac
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(networks: Value, started_at: &str) -> ContainerInspect {
        serde_json::from_value(json!({
            "Id": "abc", "Name": "/plc",
            "State": {"Status": "running", "Running": true, "Pid": 42, "StartedAt": started_at},
            "NetworkSettings": {"Networks": networks}
        }))
        .unwrap()
    }

    #[test]
    fn a_vnic_maps_to_the_network_named_after_its_parent_or_the_persisted_one() {
        let c = container(
            json!({
                "plc_internal": {"MacAddress": "02:42:ac:1e:00:02"},
                "macvlan_eth1_x_10.1.0.0_24": {"MacAddress": "02:42:0a:01:00:09"},
                "macvlan_eth1_10.1.1.0_24": {"MacAddress": "02:42:0a:01:01:05"},
                "lan": {"MacAddress": "02:42:0a:01:02:05"}
            }),
            "t0",
        );
        let vnics = [
            json!({"name": "eth0", "parent_interface": "eth1", "mac": "02:00:00:00:00:01"}),
            json!({"name": "eth1", "parent_interface": "eth2", "mac_address": "02:00:00:00:00:02",
                "docker_network_name": "lan"}),
            // No MAC persisted, or not a MACVLAN attachment: nothing to keep.
            json!({"name": "eth2", "parent_interface": "eth3"}),
            json!({"name": "eth3", "parent_interface": "wlan0", "mac": "02:00:00:00:00:03",
                "_network_method": "proxy_arp"}),
        ];
        let w = wanted(&vnics);
        assert_eq!(w.len(), 2);
        assert_eq!(endpoint_of(&c, &w[0]), Some("macvlan_eth1_10.1.1.0_24"));
        assert_eq!(endpoint_of(&c, &w[1]), Some("lan"));
        assert_eq!(w[1].mac.to_string(), "02:00:00:00:00:02");
        assert!(is_macvlan_of("macvlan_eth1_x_10.1.0.0_24", "eth1_x"));
        assert!(!is_macvlan_of("macvlan_eth1_x_10.1.0.0_24", "eth1"));
        assert!(
            !is_macvlan_of("macvlan_eth1_10.1.1.5_24", "eth1"),
            "not normalised"
        );
    }

    #[test]
    fn fixed_macs_hold_for_the_container_run_they_were_set_in_only() {
        let fixed = Fixed::default();
        let nets = json!({"macvlan_eth1_10.1.1.0_24": {"MacAddress": "02:42:0a:01:01:05"}});
        let c = container(nets.clone(), "t0");
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        fixed.record("plc", &c, "macvlan_eth1_10.1.1.0_24", mac);
        assert_eq!(
            fixed.of("plc", &c).get("macvlan_eth1_10.1.1.0_24"),
            Some(&mac)
        );
        assert!(fixed.of("other", &c).is_empty());
        // Started again: the engine gave the link its own MAC back.
        assert!(fixed.of("plc", &container(nets.clone(), "t1")).is_empty());
        let mut stopped = c.clone();
        stopped.state.running = false;
        assert!(fixed.of("plc", &stopped).is_empty());
        // A record for the new run replaces the old one.
        fixed.record("plc", &container(nets.clone(), "t1"), "n2", mac);
        let now = fixed.of("plc", &container(nets, "t1"));
        assert_eq!(now.keys().collect::<Vec<_>>(), ["n2"]);
    }
}
