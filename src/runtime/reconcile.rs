//! Boot reconcile: make the engine agree with what was asked, after the agent (or the device)
//! restarted. The engine is the truth about what exists; the intent journal
//! (`pending_operations.json`, see [`crate::state`]) says what was asked and not finished. Nothing is
//! ever removed because a file or an entry is missing.
//!
//! Per runtime, under its operation lock:
//! - a recorded **delete** (acked `deleting`) is finished, never reverted: the stop gets what is left
//!   of its grace period, then container, state entries and networks go;
//! - a recorded **create** that committed (its vNIC entry exists) only has its intent cleared; one that
//!   did not is undone at once (kill, remove, no grace period: nothing committed ran), its create id
//!   remembered so a late engine request of the dead process is removed too;
//! - a container of ours whose create id is remembered as undone is removed;
//! - a container of ours **without a vNIC entry** (a wiped, restored or corrupt state dir) keeps
//!   running: its entry is rebuilt from the engine ([`rebuild`]) and persisted, and the state
//!   warnings say so;
//! - no container and no vNIC entry, only a registry entry or an internal network: the remains of a
//!   delete interrupted by an agent older than the intent journal; they are cleaned;
//! - an owned runtime whose restart policy is not `unless-stopped` (adopted from the Python agent,
//!   which used `always`) is switched to `unless-stopped`;
//! - a runtime stopped on request that runs is stopped (a stop interrupted by a crash), a recorded
//!   **restart** that did not happen is done; one that should run and does not (Docker's restart
//!   policy does not retry a start that failed at boot, moby#39559) is started once the network is
//!   ready: after netmon's first discovery (or [`DISCOVERY_WAIT`](super::rehome::DISCOVERY_WAIT))
//!   and the boot re-home, so it comes up on its parent's current subnet; the watchdog's starts are
//!   held until then too;
//! - the agent re-joins each runtime's internal network and the registry (`data/clients.json`) gets
//!   fresh internal IPs (which also rebuilds a lost registry).
//!
//! Then internal networks of ours without a runtime and MACVLAN networks of ours nobody uses are
//! removed, and `rehome` catches up with parent subnets that changed while the agent was down. After
//! [`SWEEP_AGAIN_AFTER`] a second, narrower pass removes leftovers of undone creates that the engine
//! completed late and rebuilds entries of containers that appeared meanwhile.
//!
//! A recorded `delete_orchestrator` replaces all of this: the self-destruct is resumed.

use std::time::Duration;

use docker_api::{ContainerInspect, ContainerUpdate, RestartPolicy, RestartPolicyName};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::delete::Stop;
use super::ops::OpHandle;
use super::{OpKind, Owned, Runtimes, delete, macvlan, naming, rebuild, selfdestruct};
use crate::state::Intent;

/// Delay of the second sweep for leftovers of the previous process.
pub const SWEEP_AGAIN_AFTER: Duration = Duration::from_secs(15);

/// Which pass a runtime is handled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// At start-up: everything.
    Boot,
    /// The later sweep: leftovers of undone creates, entries of containers that appeared late.
    Sweep,
}

/// Runs the reconcile once the engine answers.
pub(super) async fn run(rt: &Runtimes) {
    let mut delay = Duration::from_secs(1);
    loop {
        match rt.docker().api_version().await {
            Ok(v) => {
                info!(api = %v, "Docker engine reachable; reconciling runtimes");
                break;
            }
            Err(e) => {
                warn!(error = %e, "Docker engine not reachable yet; reconcile retries in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    if rt
        .state()
        .intent(naming::ORCHESTRATOR_DEVICE_ID)
        .await
        .is_some()
    {
        selfdestruct::resume(rt).await;
        return;
    }
    let held = pass(rt, Pass::Boot).await;
    if !held.is_empty() {
        info!(
            runtimes = ?held,
            "starting runtimes that should run once the network is ready (netmon's discovery, at most {:?})",
            super::rehome::DISCOVERY_WAIT
        );
    }
    // Waits for netmon's discovery (or its timeout) and re-homes what moved while we were down.
    super::rehome::reconcile(rt).await;
    rt.watchdog().open_starts();
    for name in held {
        if should_run(rt, &name).await {
            super::watchdog::start_if_down(rt, &name, OpKind::Reconcile).await;
        }
    }
    info!("reconcile done");
    tokio::time::sleep(SWEEP_AGAIN_AFTER).await;
    pass(rt, Pass::Sweep).await;
}

/// One pass over every runtime; returns the runtimes that should run and do not, whose start
/// waits for the network.
async fn pass(rt: &Runtimes, pass: Pass) -> Vec<String> {
    let mut held = Vec::new();
    match rt.owned_runtime_names().await {
        Ok(names) => {
            for name in names {
                if reconcile_one(rt, &name, pass).await == Wanted::Start {
                    held.push(name);
                }
            }
        }
        Err(e) => warn!(error = %e, "reconcile: cannot list the runtimes"),
    }
    remove_orphan_internal_networks(rt).await;
    let _g = rt.network_lock().await;
    match macvlan::remove_all_unused(rt).await {
        Ok(removed) if !removed.is_empty() => info!(?removed, "removed unused MACVLAN networks"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "reconcile: cannot clean MACVLAN networks"),
    }
    held
}

/// What a runtime still needs after its reconcile.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Nothing,
    /// It should run and does not: started once the network is ready.
    Start,
}

/// Whether a held runtime should still be started (nothing asked otherwise meanwhile).
async fn should_run(rt: &Runtimes, name: &str) -> bool {
    !rt.state().is_stopped(name).await
        && rt.state().intent(name).await.is_none()
        && rt.state().is_known(name).await
}

async fn reconcile_one(rt: &Runtimes, name: &str, pass: Pass) -> Wanted {
    // The kind shows in `get_device_status` while it runs; read again under the lock below.
    let kind = match rt.state().intent(name).await {
        Some(Intent::Delete { .. }) => OpKind::Delete,
        Some(Intent::Create { .. }) if rt.state().vnics_of(name).await.is_none() => OpKind::Cleanup,
        _ => match rt.docker().inspect_container(name).await {
            Ok(c) if c.short_name() == name && rt.is_aborted_leftover(&c).await => OpKind::Cleanup,
            _ => OpKind::Reconcile,
        },
    };
    let Ok(op) = rt.ops().try_begin(name, kind) else {
        return Wanted::Nothing; // an operation on it runs: it is in good hands
    };
    match rt.state().intent(name).await {
        Some(Intent::Delete {
            started_at,
            adopted,
        }) => {
            finish_delete(rt, name, &started_at, adopted, op).await;
            return Wanted::Nothing;
        }
        Some(Intent::Create { create_id, .. }) => {
            if rt.state().vnics_of(name).await.is_none() {
                undo_create(rt, name, &create_id, op).await;
                return Wanted::Nothing;
            }
            // Committed just before the crash: only the intent is left to clear.
            if let Err(e) = rt.state().clear_intent(name, None).await {
                op.warn(format!("cannot clear the create intent: {e}"));
            }
        }
        Some(Intent::Restart { .. } | Intent::SelfDestruct { .. }) | None => {}
    }
    let owned = match rt.owned(name, "reconcile").await {
        Ok(o) => o,
        Err(e) => {
            op.fail(format!("reconcile: {e}"));
            return Wanted::Nothing;
        }
    };
    if let Some(c) = &owned.container
        && rt.is_aborted_leftover(c).await
    {
        remove_leftover(rt, name, c, op).await;
        return Wanted::Nothing;
    }
    let committed = rt.state().vnics_of(name).await.is_some();
    match &owned.container {
        Some(c) if !owned.adopted && !committed => rebuild_entry(rt, name, c, &op).await,
        Some(_) => {}
        None if !committed => {
            finish_old_delete(rt, &owned, op).await;
            return Wanted::Nothing;
        }
        None => {
            op.warn(format!(
                "runtime {name} is in the state files but its container does not exist"
            ));
            op.succeed("nothing to start");
            return Wanted::Nothing;
        }
    }
    // A twin of its internal network (a create of a killed agent that the engine completed late)
    // would make every later lookup by name fail.
    if let Err(e) = macvlan::dedupe_internal(rt, name, None).await {
        op.warn(e.to_string());
    }
    if pass == Pass::Sweep {
        op.succeed("nothing to sweep");
        rt.ops().clear_finished(name);
        return Wanted::Nothing;
    }
    let wanted = match owned.container {
        Some(c) => bring_to_wanted_state(rt, name, &c, &op).await,
        None => Wanted::Nothing,
    };
    op.succeed(match wanted {
        Wanted::Start => format!("{name} reconciled; it starts once the network is ready"),
        Wanted::Nothing => format!("{name} reconciled"),
    });
    wanted
}

/// Stops or restarts the container as the last request asked (a start waits for the network: the
/// answer says so), re-joins its internal network and refreshes its registry entry.
async fn bring_to_wanted_state(
    rt: &Runtimes,
    name: &str,
    c: &ContainerInspect,
    op: &OpHandle,
) -> Wanted {
    ensure_unless_stopped(rt, c, op).await;
    let restart = match rt.state().intent(name).await {
        Some(Intent::Restart { started_at }) => Some(started_at),
        _ => None,
    };
    let docker = rt.docker();
    let mut wanted = Wanted::Nothing;
    if rt.state().is_stopped(name).await {
        if c.state.running {
            op.step(
                "stopping",
                format!("finishing the requested stop of {name}"),
            );
            if let Err(e) = docker.stop_container(&c.id, rt.config().stop_grace).await {
                op.warn(format!("reconcile could not stop {name}: {e}"));
            }
        }
    } else if !c.state.running {
        wanted = Wanted::Start;
    } else if let Some(asked) = &restart
        && started_before(&c.state.started_at, asked)
    {
        op.step(
            "restarting",
            format!("finishing the requested restart of {name}"),
        );
        if let Err(e) = docker
            .restart_container(&c.id, rt.config().stop_grace)
            .await
        {
            op.warn(format!("reconcile could not restart {name}: {e}"));
        }
    }
    if restart.is_some()
        && let Err(e) = rt.state().clear_intent(name, None).await
    {
        op.warn(format!("cannot clear the restart intent: {e}"));
    }
    if !rt.state().is_stopped(name).await {
        if let Err(e) = rt.join_internal(name).await {
            op.warn(e.to_string());
        }
        if let Err(e) = rt.refresh_registry(name).await {
            op.warn(format!("could not refresh the internal IP: {e}"));
        }
    }
    wanted
}

/// Whether a container that started at `started_at` (engine RFC 3339) started before `asked`.
fn started_before(started_at: &str, asked: &str) -> bool {
    let parse =
        |t: &str| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
    match (parse(started_at), parse(asked)) {
        (Some(started), Some(asked)) => started < asked,
        // Unknown: restarting once more is the safe side of a restart that was asked for.
        _ => true,
    }
}

/// Writes the vNIC entry of a labelled runtime that has none, from the engine.
async fn rebuild_entry(rt: &Runtimes, name: &str, c: &ContainerInspect, op: &OpHandle) {
    let endpoints = rebuild::macvlan_endpoints(rt, c).await;
    let dns = c.host_config.dns.clone();
    let (vnics, source) = rebuild::rebuild(&c.config.labels, &endpoints, &dns);
    let from = match source {
        rebuild::Source::Label => "its create-time configuration and live endpoints",
        rebuild::Source::Endpoints => "its live MACVLAN endpoints",
    };
    op.step(
        "rebuilding_state",
        format!("rebuilding the state entry of {name}"),
    );
    let n = vnics.len();
    match rt.state().set_vnics(name, vnics).await {
        Ok(()) => {
            let msg = format!(
                "runtime {name} was missing from {}; its entry ({n} vNIC{}) was rebuilt from                  {from} and the runtime was kept",
                crate::state::VNICS_FILE,
                if n == 1 { "" } else { "s" },
            );
            warn!(runtime = name, "{msg}");
            rt.state().add_warning(msg.clone());
            op.warn(msg);
        }
        Err(e) => op.warn(format!(
            "runtime {name} is missing from {} and its rebuilt entry could not be written: {e};              the runtime is kept",
            crate::state::VNICS_FILE
        )),
    }
}

/// Finishes a delete the previous process acked.
async fn finish_delete(rt: &Runtimes, name: &str, started_at: &str, adopted: bool, op: OpHandle) {
    info!(
        runtime = name,
        "finishing a delete interrupted by a restart"
    );
    let container = match rt.docker().inspect_container(name).await {
        Ok(c)
            if c.short_name() == name
                && naming::ownership(&c.config.labels, rt.instance(), adopted).is_some() =>
        {
            Some(c)
        }
        Ok(_) => None,
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            op.fail(format!("cannot finish the delete of {name} yet: {e}"));
            return;
        }
    };
    let owned = Owned {
        name: name.to_owned(),
        container,
        adopted,
    };
    let grace = remaining(rt.config().stop_grace, started_at);
    let stop = if grace.is_zero() {
        Stop::Kill
    } else {
        Stop::Graceful(grace)
    };
    let done = match delete::remove_runtime(rt, &owned, stop, &op).await {
        Ok(()) => match delete::forget_serial(rt, name).await {
            Ok(()) => rt
                .state()
                .clear_intent(name, None)
                .await
                .map_err(super::Error::from),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => op.succeed(format!(
            "Runtime container {name} and associated resources deleted successfully (finished              after an agent restart)"
        )),
        Err(e) => op.fail(format!("cannot finish the delete of {name}: {e}")),
    }
}

/// What is left of `grace` when the stop was asked at `started_at`.
fn remaining(grace: Duration, started_at: &str) -> Duration {
    let Ok(t) = OffsetDateTime::parse(started_at, &time::format_description::well_known::Rfc3339)
    else {
        return grace;
    };
    let elapsed = (OffsetDateTime::now_utc() - t).max(time::Duration::ZERO);
    grace.saturating_sub(elapsed.try_into().unwrap_or(Duration::MAX))
}

/// Undoes a create that did not commit: only objects labelled with its create id are removed.
async fn undo_create(rt: &Runtimes, name: &str, create_id: &str, op: OpHandle) {
    info!(runtime = name, "removing what an interrupted create left");
    op.step(
        "removing_container",
        format!("removing what the interrupted create of {name} made"),
    );
    let mut errors = Vec::new();
    match rt.docker().inspect_container(name).await {
        Ok(c)
            if c.short_name() == name
                && naming::is_ours(&c.config.labels, rt.instance())
                && c.config
                    .labels
                    .get(naming::LABEL_CREATE_ID)
                    .map(String::as_str)
                    == Some(create_id) =>
        {
            if let Err(e) = super::kill_and_remove(rt, &c.id).await {
                errors.push(format!("removing container {name}: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => errors.push(format!("inspecting container {name}: {e}")),
    }
    if errors.is_empty() {
        op.step("removing_networks", "removing the internal network");
        if let Err(e) = rt.state().forget(name).await {
            errors.push(e.to_string());
        }
        if let Err(e) = macvlan::remove_internal(rt, name, false).await {
            errors.push(e.to_string());
        }
    }
    if !errors.is_empty() {
        op.fail(format!(
            "cannot remove what the interrupted create left: {}",
            errors.join("; ")
        ));
        return;
    }
    // The id is remembered in the same write that drops the intent: a late container of this
    // create is removed when it shows up, never adopted.
    match rt.state().clear_intent(name, Some(create_id)).await {
        Ok(()) => {
            op.succeed("removed what an interrupted create left");
            rt.ops().clear_finished(name);
        }
        Err(e) => op.fail(format!("cannot clear the create intent: {e}")),
    }
}

/// Removes a container an undone create made after its clean-up.
async fn remove_leftover(rt: &Runtimes, name: &str, c: &ContainerInspect, op: OpHandle) {
    info!(runtime = name, "removing a leftover of an undone create");
    op.step(
        "removing_container",
        format!("removing the leftover {name}"),
    );
    if let Err(e) = super::kill_and_remove(rt, &c.id).await {
        op.fail(format!("cannot remove the leftover {name}: {e}"));
        return;
    }
    if !rt.state().is_known(name).await
        && let Err(e) = macvlan::remove_internal(rt, name, false).await
    {
        op.warn(e.to_string());
    }
    op.succeed("removed a leftover of an undone create");
    rt.ops().clear_finished(name);
}

/// No container and no vNIC entry, but a registry entry or an internal network: what a delete of an
/// agent without the intent journal left after a crash (it forgot the vNIC entry first).
async fn finish_old_delete(rt: &Runtimes, owned: &Owned, op: OpHandle) {
    let name = owned.name.as_str();
    info!(
        runtime = name,
        "cleaning the remains of an interrupted delete"
    );
    match delete::remove_runtime(rt, owned, Stop::Kill, &op).await {
        Ok(()) => {
            op.succeed("removed the remains of an interrupted delete");
            rt.ops().clear_finished(name);
        }
        Err(e) => op.fail(format!(
            "cannot remove the remains of an interrupted delete: {e}"
        )),
    }
}

/// The restart policy of every runtime: the engine restarts the container when the daemon starts
/// unless it was stopped on request, so a `stop_device` survives a reboot.
const WANTED_POLICY: RestartPolicy = RestartPolicy {
    name: RestartPolicyName::UnlessStopped,
    maximum_retry_count: 0,
};

/// Gives the runtime container `c` the restart policy `unless-stopped` when inspect shows another
/// one (a runtime adopted from the Python agent, created with `always`). Runtimes this agent created
/// already have it, so for them this is a comparison and no engine call. A failure is recorded as a
/// warning of `op` (the stop or reconcile goes on: the runtime works, only a requested stop may not
/// survive a reboot). Returns whether the policy was changed.
pub(super) async fn ensure_unless_stopped(
    rt: &Runtimes,
    c: &ContainerInspect,
    op: &OpHandle,
) -> bool {
    let current = &c.host_config.restart_policy.name;
    if current == "unless-stopped" {
        return false;
    }
    let name = c.short_name();
    let update = ContainerUpdate {
        restart_policy: Some(WANTED_POLICY),
    };
    match rt.docker().update_container(&c.id, &update).await {
        Ok(answer) => {
            let shown = if current.is_empty() { "no" } else { current };
            op.step(
                "restart_policy",
                format!("restart policy of {name} changed from {shown} to unless-stopped"),
            );
            for w in answer.warnings {
                op.warn(format!("updating the restart policy of {name}: {w}"));
            }
            true
        }
        Err(e) => {
            op.warn(format!(
                "cannot set the restart policy of {name} to unless-stopped (a stop may not \
                 survive a reboot): {e}"
            ));
            false
        }
    }
}

/// Internal networks of ours whose runtime has neither a container nor a committed create (an
/// interrupted create that had not yet made its container).
async fn remove_orphan_internal_networks(rt: &Runtimes) {
    let nets = match macvlan::list_ours(rt, naming::ROLE_INTERNAL).await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "reconcile: cannot list internal networks");
            return;
        }
    };
    for n in nets {
        let Some(runtime) = n.labels.get(naming::LABEL_RUNTIME).cloned() else {
            continue;
        };
        if rt.state().is_known(&runtime).await || rt.state().intent(&runtime).await.is_some() {
            continue;
        }
        let Ok(op) = rt.ops().try_begin(&runtime, OpKind::Reconcile) else {
            continue;
        };
        if rt.state().is_known(&runtime).await {
            op.succeed("internal network in use");
            rt.ops().clear_finished(&runtime);
            continue;
        }
        match rt.docker().inspect_container(&runtime).await {
            Err(e) if e.is_not_found() => match macvlan::remove_internal(rt, &runtime, false).await
            {
                Ok(()) => op.succeed("removed an orphan internal network"),
                Err(e) => op.fail(e.to_string()),
            },
            _ => op.succeed("internal network in use"),
        }
        rt.ops().clear_finished(&runtime);
    }
}
