//! Re-homing the runtimes of one parent interface ([`rehome_interface`]): read the state files and
//! the engine ([`super::views`]), plan ([`super::plan`], pure), then, under the network lock and each
//! runtime's operation lock, disconnect, remove the old networks nobody uses, get or create the
//! new one, connect (at most [`ENGINE_CONCURRENCY`] engine calls at once), persist and record.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use docker_api::{EndpointConfig, EndpointIpamConfig};
use tracing::{debug, info, warn};

use super::persist::{persist, persist_unchanged};
use super::plan::{self, ParentState, Plan, RuntimeView};
use super::views::{is_adoptable, macvlans_on, persisted_views, with_endpoints};
use crate::runtime::net::{Ipv4Net, MacAddr};
use crate::runtime::vnic::PersistedVnic;
use crate::runtime::{Error, OpHandle, OpKind, Outcome, Runtimes, macfix, macvlan, naming};

/// End of the status message recorded when a parent goes down.
const DOWN_SUFFIX: &str = "; nothing changed";

/// What one re-home did, for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The parent interface.
    pub interface: String,
    /// Runtimes attached to the new network: `(runtime, network, address)`.
    pub rehomed: Vec<(String, String, Option<Ipv4Addr>)>,
    /// Runtimes whose re-home failed: `(runtime, error)`.
    pub failed: Vec<(String, String)>,
    /// Runtimes already on the right subnet.
    pub unchanged: Vec<String>,
    /// Runtimes on a parent that is down (recorded only).
    pub down: Vec<String>,
    /// Runtimes skipped because another operation held them.
    pub busy: Vec<String>,
    /// Old networks removed.
    pub removed_networks: Vec<String>,
}

/// Re-homes the runtimes on `interface` according to netmon's current view of it (the interface
/// cache). Safe to call any time: a runtime already on the right subnet is left alone.
pub async fn rehome_interface(rt: &Runtimes, interface: &str) -> Report {
    let started = std::time::Instant::now();
    let mut report = Report {
        interface: interface.to_string(),
        ..Report::default()
    };
    if !persisted_views(rt)
        .await
        .iter()
        .any(|r| r.vnics.iter().any(|v| v.parent == interface))
    {
        return report; // most changes concern interfaces no runtime uses
    }
    // Everything from reading the engine to the last connect happens under the network lock, so
    // the plan is made on what the engine really has and no create or clean-up interleaves.
    let _net = rt.network_lock().await;
    let state = ParentState::from_info(rt.interfaces().get(interface).as_ref());
    let runtimes: Vec<RuntimeView> = persisted_views(rt)
        .await
        .into_iter()
        .filter(|r| r.vnics.iter().any(|v| v.parent == interface))
        .collect();
    let (runtimes, ids) = with_endpoints(rt, runtimes).await;
    let networks = match macvlans_on(rt, interface).await {
        Ok(n) => n,
        Err(e) => {
            warn!(interface, error = %e, "re-home: cannot list MACVLAN networks");
            for r in &runtimes {
                report.failed.push((r.name.clone(), e.to_string()));
            }
            return report;
        }
    };
    let mac_on_connect = match rt.docker().api_version().await {
        Ok(v) => v.honours_mac_on_connect(),
        Err(_) => false,
    };
    let plan = plan::plan(interface, &state, &runtimes, &networks, mac_on_connect);
    debug!(
        interface,
        elapsed_ms = started.elapsed().as_millis(),
        "re-home planned"
    );
    report.unchanged = plan.unchanged.clone();
    if let ParentState::Up { subnet, gateway } = &state {
        persist_unchanged(rt, &plan.unchanged, interface, *subnet, *gateway).await;
    }
    record_down(rt, &plan, &mut report);
    record_back_up(rt, &plan, &state);
    if plan.is_noop() {
        debug!(interface, unchanged = ?plan.unchanged, "re-home: nothing to do");
        return report;
    }
    execute(rt, &state, plan, &ids, &mut report).await;
    report
}

fn record_down(rt: &Runtimes, plan: &Plan, report: &mut Report) {
    for (name, reason) in &plan.down {
        report.down.push(name.clone());
        match rt.ops().try_begin(name, OpKind::Rehome) {
            Ok(op) => {
                op.warn(format!(
                    "parent interface {} is {reason}; the runtime was left as it is and will be \
                     re-attached when the interface has an IPv4 subnet again",
                    plan.interface
                ));
                op.succeed(format!(
                    "parent interface {} is {reason}{DOWN_SUFFIX}",
                    plan.interface
                ));
            }
            Err(busy) => debug!(runtime = %name, %busy, "not recording interface down"),
        }
    }
}

/// A runtime whose last record says its parent went down, and which needs nothing now that the
/// parent is back with the same subnet, gets a record saying so (the status must not keep saying
/// "down").
fn record_back_up(rt: &Runtimes, plan: &Plan, state: &ParentState) {
    let ParentState::Up { subnet, .. } = state else {
        return;
    };
    let down_prefix = format!("parent interface {} is ", plan.interface);
    for name in &plan.unchanged {
        let was_down = rt.ops().get(name).is_some_and(|r| {
            r.kind == OpKind::Rehome
                && r.outcome == Outcome::Succeeded
                && r.message.starts_with(&down_prefix)
                && r.message.ends_with(DOWN_SUFFIX)
        });
        if was_down && let Ok(op) = rt.ops().try_begin(name, OpKind::Rehome) {
            op.succeed(format!(
                "parent interface {} is up again with {subnet}; the runtime's attachment is unchanged",
                plan.interface
            ));
        }
    }
}

/// `ids`: runtime name → the id of its container as [`with_endpoints`] verified it; every engine
/// call names the container by id, so a container that took the name meanwhile is not touched.
async fn execute(
    rt: &Runtimes,
    state: &ParentState,
    mut plan: Plan,
    ids: &BTreeMap<String, String>,
    report: &mut Report,
) {
    let ParentState::Up { subnet, gateway } = *state else {
        return;
    };
    let interface = plan.interface.clone();
    let Some(target) = plan.target.clone() else {
        return;
    };
    // One operation per runtime: skip (and report) runtimes another operation holds.
    let mut ops: BTreeMap<String, OpHandle> = BTreeMap::new();
    for name in plan.affected() {
        match rt.ops().try_begin(&name, OpKind::Rehome) {
            Ok(op) => {
                op.step(
                    "reconnecting_network",
                    format!(
                        "{interface} moved to {subnet}; re-attaching to {}",
                        target.network
                    ),
                );
                ops.insert(name, op);
            }
            Err(busy) => {
                warn!(runtime = %name, %busy, "re-home skipped: runtime busy");
                report.busy.push(name);
            }
        }
    }
    plan.disconnects.retain(|(r, _)| ops.contains_key(r));
    plan.connects.retain(|c| ops.contains_key(&c.runtime));
    info!(
        interface, subnet = %subnet, network = %target.network,
        runtimes = ?ops.keys().collect::<Vec<_>>(), "re-homing runtimes"
    );

    let phase = std::time::Instant::now();
    // 1. Disconnect, concurrently (bounded).
    // Owned items: futures that borrow from their closure's argument trip rustc's higher-ranked
    // `Send` inference once the caller is spawned.
    let disconnects: Vec<(String, String, String)> = plan
        .disconnects
        .iter()
        .filter_map(|(runtime, network)| {
            let id = ids.get(runtime)?.clone();
            Some((runtime.clone(), network.clone(), id))
        })
        .collect();
    let disconnected = bounded(disconnects, |(runtime, network, id)| async move {
        let r = rt.docker().disconnect_network(&network, &id, true).await;
        (runtime, network, r)
    })
    .await;
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for (runtime, network, r) in disconnected {
        match r {
            Ok(()) => debug!(runtime = %runtime, network = %network, "disconnected"),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                failed.insert(
                    runtime.clone(),
                    format!("cannot disconnect from {network}: {e}"),
                );
            }
        }
    }

    debug!(
        elapsed_ms = phase.elapsed().as_millis(),
        "re-home: old endpoints disconnected"
    );
    // 2. Remove the old networks nobody uses any more.
    for name in &plan.remove {
        match remove_if_empty(rt, name).await {
            Ok(true) => {
                info!(network = %name, "removed the old MACVLAN network");
                report.removed_networks.push(name.clone());
            }
            Ok(false) => debug!(network = %name, "old network still in use; kept"),
            Err(e) => warn!(network = %name, error = %e, "cannot remove the old network"),
        }
    }

    debug!(
        elapsed_ms = phase.elapsed().as_millis(),
        "re-home: old networks removed"
    );
    // 3. Get or create the new subnet's network.
    let connects: Vec<_> = plan
        .connects
        .iter()
        .filter(|c| !failed.contains_key(&c.runtime))
        .cloned()
        .collect();
    let network = if connects.is_empty() {
        None
    } else {
        match macvlan::ensure(rt, &interface, subnet, gateway).await {
            Ok(n) => Some(n.name),
            Err(e) => {
                // Never leave a runtime without its LAN: go back to the old network when it is
                // still there (e.g. it could not be removed, so the engine refused a second
                // MACVLAN network on the parent).
                let back = bounded(connects.clone(), |c| async move {
                    let back = go_back(rt, &c, ids).await;
                    (c, back)
                });
                for (c, back) in back.await {
                    failed.insert(
                        c.runtime.clone(),
                        format!("cannot get or create {}: {e}; {back}", target.network),
                    );
                }
                None
            }
        }
    };

    // The persisted gateway follows the new network's, so the stored vNIC never keeps a gateway
    // outside its subnet: netmon's default route, else the network's configured gateway, else the
    // subnet's first host address (what Docker's IPAM takes when none is given).
    let gateway = match (&network, gateway) {
        (_, Some(g)) => Some(g),
        (Some(net), None) => match network_gateway(rt, net).await {
            Some(g) => Some(g),
            None => first_host(subnet),
        },
        (None, None) => None,
    };

    debug!(
        elapsed_ms = phase.elapsed().as_millis(),
        "re-home: target network ready"
    );
    // 4. Connect, concurrently (bounded).
    let mut attached: BTreeMap<String, Option<Ipv4Addr>> = BTreeMap::new();
    if let Some(network) = &network {
        let work: Vec<(plan::Connect, String)> = connects
            .iter()
            .filter_map(|c| Some((c.clone(), ids.get(&c.runtime)?.clone())))
            .collect();
        let results = bounded(work, |(c, id)| async move {
            let r = connect(rt, network, &c, &id).await;
            (c, r)
        })
        .await;
        for (c, r) in results {
            match r {
                Ok((ip, extra_warnings)) => {
                    if let Some(op) = ops.get(&c.runtime) {
                        for w in c.warnings.iter().chain(extra_warnings.iter()) {
                            op.warn(w.clone());
                        }
                    }
                    attached.insert(c.runtime.clone(), ip);
                }
                Err(e) => {
                    failed.insert(
                        c.runtime.clone(),
                        format!("cannot connect to {network}: {e}"),
                    );
                }
            }
        }
    }

    debug!(
        elapsed_ms = phase.elapsed().as_millis(),
        "re-home: runtimes connected"
    );
    // 5. Persist and record.
    for (name, op) in ops {
        if let Some(error) = failed.remove(&name) {
            report.failed.push((name.clone(), error.clone()));
            op.fail(format!(
                "re-attaching after {interface} moved to {subnet} failed: {error}"
            ));
            continue;
        }
        let connect = connects.iter().find(|c| c.runtime == name);
        let ip = attached.get(&name).copied().flatten();
        let new_static = connect.and_then(|c| c.replaces_static_ip.and(ip));
        persist(rt, &name, &interface, subnet, gateway, new_static).await;
        match (connect, &network) {
            (Some(_), Some(net)) => {
                // A new endpoint is a new link in the runtime: its DHCP client starts again.
                if let Err(e) = crate::runtime::dhcp::ensure(rt, &name).await {
                    op.warn(e);
                }
                report.rehomed.push((name.clone(), net.clone(), ip));
                let addr = ip.map_or("an address from Docker".to_string(), |i| i.to_string());
                op.succeed(format!(
                    "{interface} moved to {subnet}: re-attached to {net} with {addr}"
                ));
            }
            _ => op.succeed(format!(
                "{interface} moved to {subnet}: detached from the old network (already on {})",
                target.network
            )),
        }
    }
    info!(
        interface,
        rehomed = report.rehomed.len(),
        failed = report.failed.len(),
        "re-home done"
    );
}

/// Engine calls one re-home makes at once (inspects, disconnects, connects): enough to keep the
/// engine busy (it serialises much of the network work anyway), few enough that a parent with a
/// hundred runtimes does not put a hundred requests on the engine at once.
pub const ENGINE_CONCURRENCY: usize = 8;

/// Runs `work` on every item, at most [`ENGINE_CONCURRENCY`] at a time, in this task; results in
/// completion order.
pub(super) async fn bounded<T, R, F, Fut>(items: impl IntoIterator<Item = T>, work: F) -> Vec<R>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = R>,
{
    use futures_util::stream::{self, StreamExt};
    stream::iter(items)
        .map(work)
        .buffer_unordered(ENGINE_CONCURRENCY)
        .collect()
        .await
}

/// Reconnects a runtime to the network it was detached from; says how that went.
async fn go_back(rt: &Runtimes, c: &plan::Connect, ids: &BTreeMap<String, String>) -> String {
    let (Some((network, ip)), Some(id)) = (&c.previous, ids.get(&c.runtime)) else {
        return "the runtime has no MACVLAN attachment on this parent now".into();
    };
    let endpoint = EndpointConfig {
        ipam_config: ip.map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip),
        }),
        ..Default::default()
    };
    match rt.docker().connect_network(network, id, &endpoint).await {
        Ok(()) => format!("the runtime was put back on {network}"),
        Err(e) => format!(
            "putting it back on {network} failed too ({e}); it has no MACVLAN attachment on this parent now"
        ),
    }
}

/// Connects one runtime; a requested address that the engine refuses (e.g. taken) is retried
/// with an IPAM-assigned one. A MAC to keep that the engine did not give the endpoint (it ignores
/// MacAddress on connect before API 1.54) is set by netmon in the running container
/// ([`macfix::fix`]); a stopped one gets its persisted MACs at its next start. Returns the address
/// the endpoint got and what could not be kept (address, MAC). `id` is the runtime's container id.
async fn connect(
    rt: &Runtimes,
    network: &str,
    c: &plan::Connect,
    id: &str,
) -> Result<(Option<Ipv4Addr>, Vec<String>), docker_api::Error> {
    let docker = rt.docker();
    let endpoint = |ip: Option<Ipv4Addr>| EndpointConfig {
        ipam_config: ip.map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip),
        }),
        mac_address: c.mac.map(|m| m.to_string()),
        ..Default::default()
    };
    let mut warning = None;
    match docker.connect_network(network, id, &endpoint(c.ip)).await {
        Ok(()) => {}
        Err(e) if c.ip.is_some() && !e.is_not_found() && !e.is_transport() => {
            let ip = c.ip.map(|i| i.to_string()).unwrap_or_default();
            warning = Some(format!(
                "address {ip} could not be kept on {network} ({e}); Docker assigned one"
            ));
            docker.connect_network(network, id, &endpoint(None)).await?;
        }
        Err(e) => return Err(e),
    }
    let inspected = docker.inspect_container(id).await.ok();
    let endpoint = inspected
        .as_ref()
        .and_then(|i| i.network_settings.networks.get(network).cloned());
    let ip = endpoint
        .as_ref()
        .and_then(|e| e.ip_address.parse().ok())
        .or(c.ip);
    let mut warnings: Vec<String> = warning.into_iter().collect();
    if let Some(wanted) = c.keep_mac {
        let got: Option<MacAddr> = endpoint.as_ref().and_then(|e| e.mac_address.parse().ok());
        let fixed = match inspected.as_ref() {
            _ if got == Some(wanted) => None,
            Some(i) if i.state.running => {
                Some(macfix::fix(rt, &c.runtime, i, network, wanted).await)
            }
            // Stopped: a persisted MAC is set by the start hook when it starts.
            _ if persisted_mac(rt, c).await == Some(wanted) => Some(Ok(false)),
            _ => None,
        };
        if got != Some(wanted) && !matches!(fixed, Some(Ok(_))) {
            let now = got.map_or("another MAC".to_string(), |m| m.to_string());
            let netmon = match fixed {
                Some(Err(e)) => format!("; {e}"),
                _ => String::new(),
            };
            warnings.push(if c.mac.is_some() {
                format!("MAC {wanted} was requested but the endpoint has {now}{netmon}")
            } else {
                format!(
                    "MAC {wanted} could not be kept: this engine ignores MacAddress on network \
                     connect (honoured from API 1.54){netmon}; the endpoint now has {now}"
                )
            });
        }
    }
    Ok((ip, warnings))
}

/// The MAC persisted for the vNIC `c` connects.
async fn persisted_mac(rt: &Runtimes, c: &plan::Connect) -> Option<MacAddr> {
    let vnics = rt.state().vnics_of(&c.runtime).await?;
    let vnic = vnics.get(c.vnic_index)?.as_object()?;
    PersistedVnic::read(c.vnic_index, vnic)?.mac
}

/// The first host address of `subnet` (none for /31 and /32).
fn first_host(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    (subnet.prefix() < 31).then(|| Ipv4Addr::from(u32::from(subnet.network().addr()) + 1))
}

/// The IPv4 gateway configured on `network`, when it was given at creation.
async fn network_gateway(rt: &Runtimes, network: &str) -> Option<Ipv4Addr> {
    let n = rt.docker().inspect_network(network).await.ok()?;
    n.ipam
        .config
        .iter()
        .find_map(|c| c.gateway.as_deref()?.parse().ok())
}

/// Removes the network `name` when no container is attached. Ours are removed through the
/// runtime service's helper; unlabelled upstream-named ones (the Python agent's) directly.
async fn remove_if_empty(rt: &Runtimes, name: &str) -> Result<bool, Error> {
    let n = match rt.docker().inspect_network(name).await {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(Error::docker(format!("inspecting network {name}"))(e)),
    };
    if macvlan::has_configured_containers(rt, &n).await? {
        return Ok(false);
    }
    if naming::is_ours(&n.labels, rt.instance()) {
        return macvlan::remove_if_unused(rt, name).await;
    }
    if !n.containers.is_empty() || !is_adoptable(&n) {
        return Ok(false);
    }
    match rt.docker().remove_network(&n.id).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() || e.is_conflict() || e.status() == Some(403) => Ok(false),
        Err(e) => Err(Error::docker(format!("removing network {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn engine_work_runs_concurrently_but_never_more_than_the_bound_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let t0 = tokio::time::Instant::now();
        let mut done = bounded(0..20, |i| {
            let (now, peak) = (&now, &peak);
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .await;
        done.sort();
        assert_eq!(done, (0..20).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), ENGINE_CONCURRENCY);
        // 20 calls of 100 ms, 8 at a time: three rounds, not twenty.
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
    }
}
