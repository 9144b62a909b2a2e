//! Re-homing runtimes when the subnet of their MACVLAN parent interface changes (spec §2 "Network
//! changes"; fixes upstream §7.6 and §11 items 2 and 11).
//!
//! Owns: the subscription to netevents' interface changes ([`spawn`]), the boot catch-up
//! ([`reconcile`]) and the execution of a re-home plan ([`rehome_interface`]). The decisions —
//! what to disconnect, remove, create and connect, which IP and MAC to ask for, how to update the
//! persisted vNIC objects — are the pure functions of [`plan`].
//!
//! Behaviour:
//! - acts at once on a change netmon reports, but at most once per parent interface per
//!   `--rehome-window` (default 3 s, netmon's debounce): changes inside the window are coalesced
//!   into one re-home with the interface's state when the window ends ([`limit`]), and their
//!   number is logged once; a flapping link or a stream of forged events cannot move runtimes
//!   more often;
//! - compares the parent's new subnet with the subnet of the MACVLAN network(s) each runtime is
//!   really attached to on that parent: nothing happens when they match (no churn);
//! - otherwise, under the service's network lock and each runtime's operation lock:
//!   force-disconnect every affected runtime from the old network(s) of that parent, remove the
//!   old networks nobody uses any more (an overlapping new subnet, e.g. a /24 widened to a /23,
//!   cannot be created while they exist, and engines before 27.0.1 allow one MACVLAN network per
//!   parent), get-or-create the new subnet's network, connect all affected runtimes keeping a
//!   static IP that lies in the new subnet (else Docker's IPAM assigns one and the status says so)
//!   and the MAC where the engine honours it (API ≥ 1.54; the endpoint's MAC is checked after the
//!   connect and the status says when it could not be kept), update `runtime_vnics.json` in place
//!   (one write at a time: the state store serialises them), and record the outcome as the
//!   runtime's `rehome` operation (visible in `get_device_status`). Inspects, disconnects and
//!   connects run for many runtimes at once, at most [`ENGINE_CONCURRENCY`] at a time;
//! - an interface that went down, lost its IPv4 or disappeared: recorded in the status of the
//!   runtimes on it, nothing is changed on the engine.
//!
//! Must never: touch containers or networks the agent does not own (runtimes come from the state
//! files, and a name's container is acted on — by id — only when it is exactly that name and not
//! labelled for another manager or instance; only networks with our labels, or unlabelled ones
//! named by the upstream convention, are removed), act on a runtime another operation holds, or
//! block the async runtime.

pub mod limit;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use docker_api::{EndpointConfig, EndpointIpamConfig, Filters, NetworkInspect};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use self::plan::{EndpointView, MacvlanView, ParentState, Plan, RuntimeView};
use super::net::{Ipv4Net, MacAddr};
use super::{Error, OpHandle, OpKind, Outcome, Runtimes, macvlan, naming};

/// Default of `--rehome-window`: netmon's default debounce.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);

/// How long [`reconcile`] waits for netmon's first discovery before giving up for this boot.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(60);

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

/// Subscribes to netevents' changes and re-homes the runtimes of each changed interface, in a task
/// owned by the service, at most once per interface per `rehome_window` ([`limit`]). Call once at
/// start-up, after [`Runtimes`] is built. A lagging subscriber (changes lost) re-checks every
/// parent interface.
pub fn spawn(rt: &Runtimes) {
    let changes = rt.interfaces().subscribe();
    let window = rt.config().rehome_window;
    let (parents_rt, act_rt) = (rt.clone(), rt.clone());
    rt.spawn(async move {
        run_limited(
            changes,
            window,
            move || {
                let rt = parents_rt.clone();
                async move { parents(&rt).await.into_iter().collect() }
            },
            move |interface| {
                let rt = act_rt.clone();
                async move {
                    rehome_interface(&rt, &interface).await;
                }
            },
        )
        .await;
    });
}

/// The shell around [`limit::Limiter`]: feeds it the changes, runs `act(interface)` for what it
/// lets through (each in a task of this loop's own, so a shutdown that drops the loop stops
/// them), tells it when a run ended, and runs the coalesced re-homes when their window ends,
/// logging how many changes each one stands for. On a lagging subscription every interface
/// `parents()` names counts as changed. Returns when the change channel closes and the runs ended.
async fn run_limited<P, PF, A, AF>(
    mut changes: tokio::sync::broadcast::Receiver<crate::netevents::NetworkChange>,
    window: Duration,
    parents: P,
    act: A,
) where
    P: Fn() -> PF,
    PF: Future<Output = Vec<String>>,
    A: Fn(String) -> AF,
    AF: Future<Output = ()> + Send + 'static,
{
    let mut limiter = limit::Limiter::new(window);
    let mut runs = Runs::default();
    loop {
        let deadline = limiter.next_deadline();
        tokio::select! {
            received = changes.recv() => {
                let interfaces = match received {
                    Ok(change) => vec![change.interface],
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "missed network changes; re-checking every parent interface");
                        parents().await
                    }
                    Err(RecvError::Closed) => break,
                };
                let now = tokio::time::Instant::now();
                for interface in interfaces {
                    match limiter.change(&interface, now) {
                        limit::Decision::Now => {
                            debug!(interface = %interface, "network change: re-homing");
                            runs.start(act(interface.clone()), interface);
                        }
                        limit::Decision::Later => debug!(
                            interface = %interface,
                            "network change within the re-home window: coalesced"
                        ),
                    }
                }
            }
            Some(interface) = runs.next_ended() => {
                limiter.finished(&interface, tokio::time::Instant::now());
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                for due in limiter.take_due(tokio::time::Instant::now()) {
                    warn!(
                        interface = %due.interface,
                        dropped = due.coalesced,
                        "dropped {} network change(s) for {} within {:?} of its last re-home; \
                         re-homing once with its latest state",
                        due.coalesced,
                        due.interface,
                        limiter.window()
                    );
                    runs.start(act(due.interface.clone()), due.interface);
                }
            }
        }
    }
    while runs.next_ended().await.is_some() {}
}

/// The re-homes [`run_limited`] started, by interface.
#[derive(Default)]
struct Runs {
    tasks: tokio::task::JoinSet<()>,
    interfaces: BTreeMap<tokio::task::Id, String>,
}

impl Runs {
    fn start(&mut self, run: impl Future<Output = ()> + Send + 'static, interface: String) {
        let handle = self.tasks.spawn(run);
        self.interfaces.insert(handle.id(), interface);
    }

    /// Waits for a run to end and names its interface; `None` at once when none runs.
    async fn next_ended(&mut self) -> Option<String> {
        loop {
            let id = match self.tasks.join_next_with_id().await? {
                Ok((id, ())) => id,
                Err(e) => {
                    warn!(error = %e, "a re-home task ended abnormally");
                    e.id()
                }
            };
            if let Some(interface) = self.interfaces.remove(&id) {
                return Some(interface);
            }
        }
    }
}

/// Boot catch-up: once netmon's first discovery arrived (up to [`DISCOVERY_WAIT`]), re-homes the
/// runtimes whose parent subnet changed while the agent was down. Interfaces netmon does not know
/// (down or gone) are logged, not recorded as events.
pub async fn reconcile(rt: &Runtimes) {
    let waited = tokio::time::timeout(DISCOVERY_WAIT, async {
        while !rt.interfaces().is_discovered() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if waited.is_err() {
        warn!("no network discovery from netmon yet; skipping the boot re-home check");
        return;
    }
    rehome_all(rt).await;
}

/// Every parent interface a persisted runtime uses.
async fn parents(rt: &Runtimes) -> BTreeSet<String> {
    persisted_views(rt)
        .await
        .iter()
        .flat_map(|r| r.vnics.iter().map(|v| v.parent.clone()))
        .collect()
}

async fn rehome_all(rt: &Runtimes) {
    let mut set = tokio::task::JoinSet::new();
    for parent in parents(rt).await {
        let rt = rt.clone();
        set.spawn(async move { rehome_interface(&rt, &parent).await });
    }
    while set.join_next().await.is_some() {}
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
            let r = connect(rt.docker(), network, &c, &id).await;
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
async fn bounded<T, R, F, Fut>(items: impl IntoIterator<Item = T>, work: F) -> Vec<R>
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
/// with an IPAM-assigned one. Returns the address the endpoint got and what could not be kept
/// (address, MAC). `id` is the runtime's container id.
async fn connect(
    docker: &docker_api::Docker,
    network: &str,
    c: &plan::Connect,
    id: &str,
) -> Result<(Option<Ipv4Addr>, Vec<String>), docker_api::Error> {
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
    let endpoint = docker
        .inspect_container(id)
        .await
        .ok()
        .and_then(|i| i.network_settings.networks.get(network).cloned());
    let ip = endpoint
        .as_ref()
        .and_then(|e| e.ip_address.parse().ok())
        .or(c.ip);
    let mut warnings: Vec<String> = warning.into_iter().collect();
    if let Some(wanted) = c.keep_mac {
        let got: Option<MacAddr> = endpoint.as_ref().and_then(|e| e.mac_address.parse().ok());
        if got != Some(wanted) {
            let now = got.map_or("another MAC".to_string(), |m| m.to_string());
            warnings.push(if c.mac.is_some() {
                format!("MAC {wanted} was requested but the endpoint has {now}")
            } else {
                format!(
                    "MAC {wanted} could not be kept: this engine ignores MacAddress on network \
                     connect (honoured from API 1.54); the endpoint now has {now}"
                )
            });
        }
    }
    Ok((ip, warnings))
}

/// Updates the runtime's persisted vNICs on `interface` (failures are logged: the engine side is
/// what matters, and the next change or boot re-checks). The caller holds the runtime's
/// operation, so no create or delete rewrites its entry meanwhile. Returns whether it wrote.
async fn persist(
    rt: &Runtimes,
    runtime: &str,
    interface: &str,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    new_static_ip: Option<Ipv4Addr>,
) -> bool {
    let Some(vnics) = updated_vnics(rt, runtime, interface, subnet, gateway, new_static_ip).await
    else {
        return false;
    };
    match rt.state().set_vnics(runtime, vnics).await {
        Ok(()) => true,
        Err(e) => {
            warn!(runtime, error = %e, "re-home: cannot update runtime_vnics.json");
            false
        }
    }
}

/// The runtime's persisted vNICs with those on `interface` updated, or `None` when nothing
/// changes (or it has no entry).
async fn updated_vnics(
    rt: &Runtimes,
    runtime: &str,
    interface: &str,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    new_static_ip: Option<Ipv4Addr>,
) -> Option<Vec<Value>> {
    let mut vnics = rt.state().vnics_of(runtime).await?;
    let mut changed = false;
    for vnic in vnics.iter_mut() {
        let Some(map) = vnic.as_object_mut() else {
            continue;
        };
        if map.get("parent_interface").and_then(Value::as_str) != Some(interface) {
            continue;
        }
        changed |= plan::update_vnic_json(map, subnet, gateway, new_static_ip);
    }
    changed.then_some(vnics)
}

/// Brings the persisted subnet fields of runtimes already on the right network up to date (e.g.
/// the agent stopped between connecting and writing the file), under their operation lock; a
/// runtime another operation holds is left for the next check.
async fn persist_unchanged(
    rt: &Runtimes,
    names: &[String],
    interface: &str,
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
) {
    for name in names {
        if updated_vnics(rt, name, interface, subnet, gateway, None)
            .await
            .is_none()
        {
            continue;
        }
        let Ok(op) = rt.ops().try_begin(name, OpKind::Rehome) else {
            continue;
        };
        if persist(rt, name, interface, subnet, gateway, None).await {
            op.succeed(format!(
                "runtime_vnics.json brought up to date with {interface}'s subnet {subnet}"
            ));
        } else {
            op.succeed(format!("{interface} is on {subnet}; nothing to change"));
        }
    }
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

/// An unlabelled MACVLAN network named `macvlan_<parent>_<subnet>` after its own parent and
/// subnet: made by the Python agent this one replaced.
fn is_adoptable(n: &NetworkInspect) -> bool {
    n.driver == "macvlan"
        && !n.labels.contains_key(naming::LABEL_MANAGED_BY)
        && n.options.get("parent").is_some_and(|parent| {
            subnets(n)
                .iter()
                .any(|s| naming::macvlan_network_name(parent, *s) == n.name)
        })
}

fn subnets(n: &NetworkInspect) -> Vec<Ipv4Net> {
    n.ipam
        .config
        .iter()
        .filter_map(|c| c.subnet.as_deref()?.parse::<Ipv4Net>().ok())
        .map(|s| s.network())
        .collect()
}

/// Every runtime in `runtime_vnics.json` with its vNICs (no endpoints yet).
async fn persisted_views(rt: &Runtimes) -> Vec<RuntimeView> {
    rt.state()
        .vnics()
        .await
        .into_iter()
        .filter(|(name, _)| !naming::RESERVED_CONTAINER_NAMES.contains(&name.as_str()))
        .map(|(name, vnics)| {
            let vnics = vnics
                .as_array()
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .filter_map(|(i, v)| plan::vnic_view(i, v.as_object()?))
                        .collect()
                })
                .unwrap_or_default();
            RuntimeView {
                name,
                vnics,
                endpoints: Vec::new(),
            }
        })
        .collect()
}

/// Whether the inspected container `c` is the runtime `name` of `runtime_vnics.json` by the rule
/// of [`Runtimes::owned`]: exactly that name (Docker also resolves ids and id prefixes), and ours
/// by labels or without a managed-by label (adopted from the Python agent) — never another agent
/// instance's.
fn is_runtime_container(c: &docker_api::ContainerInspect, name: &str, instance: &str) -> bool {
    c.short_name() == name
        && (naming::is_ours(&c.config.labels, instance)
            || !c.config.labels.contains_key(naming::LABEL_MANAGED_BY))
}

/// Fills in each runtime's current endpoints (container inspect, concurrently), with the name →
/// container id map every later engine call uses. Runtimes whose container does not exist are
/// dropped (there is nothing to attach), and so are names whose container is not the runtime
/// ([`is_runtime_container`]): the state may outlive a runtime removed outside the agent.
async fn with_endpoints(
    rt: &Runtimes,
    runtimes: Vec<RuntimeView>,
) -> (Vec<RuntimeView>, BTreeMap<String, String>) {
    let names: Vec<(usize, String)> = runtimes
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.name.clone()))
        .collect();
    let inspected = bounded(names, |(i, name)| async move {
        (i, rt.docker().inspect_container(&name).await)
    })
    .await;
    let mut found: BTreeMap<usize, Vec<EndpointView>> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, result) in inspected {
        match result {
            Ok(c) if !is_runtime_container(&c, &runtimes[i].name, rt.instance()) => {
                warn!(
                    runtime = %runtimes[i].name, container = %c.id,
                    "re-home: the container of that name is not this agent's runtime; not touching it"
                );
            }
            Ok(c) => {
                ids.insert(runtimes[i].name.clone(), c.id.clone());
                let endpoints = c
                    .network_settings
                    .networks
                    .iter()
                    .map(|(net, e)| EndpointView {
                        network: net.clone(),
                        ip: e.ip_address.parse().ok(),
                        mac: e.mac_address.parse().ok(),
                    })
                    .collect();
                found.insert(i, endpoints);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(runtime = %runtimes[i].name, error = %e, "re-home: cannot inspect"),
        }
    }
    let runtimes = runtimes
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut r)| {
            r.endpoints = found.remove(&i)?;
            Some(r)
        })
        .collect();
    (runtimes, ids)
}

/// The MACVLAN networks on `interface`, with their containers (the list call leaves them out).
async fn macvlans_on(rt: &Runtimes, interface: &str) -> Result<Vec<MacvlanView>, Error> {
    let list = rt
        .docker()
        .list_networks(&Filters::new().driver("macvlan"))
        .await
        .map_err(Error::docker("listing MACVLAN networks"))?;
    let mut out = Vec::new();
    for n in list
        .into_iter()
        .filter(|n| n.options.get("parent").is_some_and(|p| p == interface))
    {
        let n = match rt.docker().inspect_network(&n.id).await {
            Ok(n) => n,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(Error::docker(format!("inspecting network {}", n.name))(e)),
        };
        out.push(MacvlanView {
            subnets: subnets(&n),
            containers: n.containers.values().map(|c| c.name.clone()).collect(),
            removable: naming::is_ours(&n.labels, rt.instance()) || is_adoptable(&n),
            parent: interface.to_string(),
            name: n.name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use crate::netevents::NetworkChange;

    fn change(interface: &str) -> NetworkChange {
        NetworkChange {
            interface: interface.into(),
            previous: None,
            current: None,
        }
    }

    /// Runs [`run_limited`] with a fake re-home taking `takes`, feeding `feed` (offset,
    /// interface) and closing the channel after `close_after`; returns (start offset, interface)
    /// of every run.
    async fn limited_runs(
        window: Duration,
        takes: Duration,
        capacity: usize,
        feed: Vec<(Duration, &'static str)>,
        close_after: Duration,
    ) -> Vec<(Duration, String)> {
        let t0 = tokio::time::Instant::now();
        let (tx, rx) = tokio::sync::broadcast::channel(capacity);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let recorded = starts.clone();
        let shell = tokio::spawn(run_limited(
            rx,
            window,
            || async { vec!["eth0".to_string(), "eth1".to_string()] },
            move |interface| {
                let recorded = recorded.clone();
                async move {
                    recorded.lock().unwrap().push((t0.elapsed(), interface));
                    tokio::time::sleep(takes).await;
                }
            },
        ));
        for (at, interface) in feed {
            tokio::time::sleep_until(t0 + at).await;
            let _ = tx.send(change(interface));
        }
        tokio::time::sleep_until(t0 + close_after).await;
        drop(tx);
        shell.await.unwrap();
        starts.lock().unwrap().clone()
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_flapping_parent_is_rehomed_once_at_once_and_once_more_when_the_window_ends() {
        let ms = Duration::from_millis;
        // Ten changes 100 ms apart on eth0, one on eth1 in between.
        let mut feed: Vec<(Duration, &str)> = (0..10).map(|i| (ms(i * 100), "eth0")).collect();
        feed.push((ms(450), "eth1"));
        feed.sort();
        let runs = limited_runs(Duration::from_secs(3), ms(500), 64, feed, ms(10_000)).await;
        assert_eq!(
            runs,
            vec![
                (ms(0), "eth0".to_string()),
                (ms(450), "eth1".to_string()),
                (ms(3000), "eth0".to_string()),
            ],
            "eth0: the first change at once, the other nine coalesced into one at the window's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_spaced_wider_than_the_window_each_rehome_at_once() {
        let ms = Duration::from_millis;
        let feed = vec![(ms(0), "eth0"), (ms(3500), "eth0"), (ms(7000), "eth0")];
        let runs = limited_runs(Duration::from_secs(3), ms(200), 64, feed, ms(12_000)).await;
        let at: Vec<Duration> = runs.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![ms(0), ms(3500), ms(7000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_subscription_rechecks_every_parent_once() {
        let ms = Duration::from_millis;
        // Five changes at once into a channel of two: the shell lags and re-checks both parents.
        let feed = (0..5).map(|_| (ms(0), "eth0")).collect();
        let runs = limited_runs(Duration::from_secs(3), ms(100), 2, feed, ms(10_000)).await;
        let mut interfaces: Vec<&str> = runs.iter().map(|(_, i)| i.as_str()).collect();
        interfaces.sort();
        assert!(
            interfaces == ["eth0", "eth0", "eth1"] || interfaces == ["eth0", "eth1"],
            "{runs:?}"
        );
        assert!(
            runs.iter().all(|(t, _)| *t == ms(0) || *t == ms(3000)),
            "{runs:?}"
        );
    }

    fn container(name: &str, labels: serde_json::Value) -> docker_api::ContainerInspect {
        serde_json::from_value(serde_json::json!({
            "Id": "0123456789abcdef",
            "Name": format!("/{name}"),
            "State": {"Status": "running", "Running": true},
            "Config": {"Labels": labels},
        }))
        .expect("test inspect parses")
    }

    #[test]
    fn only_the_runtimes_own_container_is_rehomed() {
        let ours = serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/me",
        });
        let other = serde_json::json!({
            naming::LABEL_MANAGED_BY: naming::MANAGED_BY_VALUE,
            naming::LABEL_INSTANCE: "/other",
        });
        assert!(is_runtime_container(
            &container("plc1", ours.clone()),
            "plc1",
            "/me"
        ));
        // Adopted from the Python agent: unlabelled (or other labels, no managed-by).
        assert!(is_runtime_container(
            &container("plc1", serde_json::json!({})),
            "plc1",
            "/me"
        ));
        assert!(is_runtime_container(
            &container("plc1", serde_json::json!({"x": "y"})),
            "plc1",
            "/me"
        ));
        // Another agent instance's container of that name.
        assert!(!is_runtime_container(
            &container("plc1", other),
            "plc1",
            "/me"
        ));
        // Docker resolved the name as an id prefix of another container.
        assert!(!is_runtime_container(
            &container("web", ours),
            "0123",
            "/me"
        ));
    }
}
