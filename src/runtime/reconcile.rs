//! Boot reconcile: make the engine agree with the state files after the agent (or the device)
//! restarted.
//!
//! - a container of ours that `runtime_vnics.json` does not list is what a create interrupted before
//!   its last step (the vNIC entry is written last, so it is the create's commit mark) left: it is
//!   removed with its internal network and registry entry, like a rollback (skipped when a state file
//!   was found corrupt — then "not listed" proves nothing);
//! - an owned runtime whose restart policy is not `unless-stopped` (adopted from the Python agent,
//!   which used `always`) is switched to `unless-stopped`: the engine restarts `always` containers
//!   whenever the daemon starts, so a `stop_device` would not survive a reboot;
//! - an owned runtime that is not running and was not stopped on request is started (Docker's
//!   restart policy does not retry a start that failed at boot, moby#39559);
//! - the agent re-joins each runtime's internal network and the registry gets fresh internal IPs;
//! - internal networks of ours without a runtime, and MACVLAN networks of ours nobody uses, are
//!   removed;
//! - then `rehome` catches up with parent subnets that changed while the agent was down;
//! - finally, after [`SWEEP_AGAIN_AFTER`], leftovers are swept once more: requests the previous
//!   process had in flight when it died can still complete in the engine after the first pass.
//!
//! Every runtime is handled under its operation lock, and the state files are read under that lock,
//! so a command arriving meanwhile is never mistaken for leftovers.

use std::time::Duration;

use docker_api::{ContainerInspect, ContainerUpdate, RestartPolicy, RestartPolicyName};
use tracing::{info, warn};

use super::ops::OpHandle;
use super::{OpKind, Runtimes, delete, macvlan, naming};

/// Delay of the second sweep for leftovers of the previous process.
pub const SWEEP_AGAIN_AFTER: Duration = Duration::from_secs(15);

/// Which pass a runtime is handled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// At start-up: everything.
    Boot,
    /// The later sweep: only leftovers of interrupted creates.
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
    pass(rt, Pass::Boot).await;
    super::rehome::reconcile(rt).await;
    info!("reconcile done");
    tokio::time::sleep(SWEEP_AGAIN_AFTER).await;
    pass(rt, Pass::Sweep).await;
}

async fn pass(rt: &Runtimes, pass: Pass) {
    match rt.owned_runtime_names().await {
        Ok(names) => {
            for name in names {
                reconcile_one(rt, &name, pass).await;
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
}

/// Whether the create of `name` completed (its vNIC entry is written last).
async fn committed(rt: &Runtimes, name: &str) -> bool {
    rt.state().vnics_of(name).await.is_some()
}

async fn reconcile_one(rt: &Runtimes, name: &str, pass: Pass) {
    if pass == Pass::Sweep && committed(rt, name).await {
        return;
    }
    let Ok(op) = rt.ops().try_begin(name, OpKind::Reconcile) else {
        return; // an operation on it runs: it is in good hands
    };
    let owned = match rt.owned(name, "reconcile").await {
        Ok(o) => o,
        Err(e) => {
            op.fail(format!("reconcile: {e}"));
            return;
        }
    };
    // Read under the lock: a create that finished a moment ago is committed by now.
    let committed = committed(rt, name).await;
    // Not committed and ours by label: an interrupted create. Not committed and no container left:
    // an interrupted delete (it forgets the vNIC entry first), whose registry entry and internal
    // network would otherwise stay forever. A committed runtime whose container vanished keeps its
    // vNIC configuration (below): that is what must not be lost.
    if (!owned.adopted || owned.container.is_none()) && !committed {
        if !rt.state().warnings().is_empty() {
            op.warn(format!(
                "container {name} is not in the state files, which were found corrupt; left alone"
            ));
            op.succeed("left alone");
            return;
        }
        info!(
            runtime = name,
            "removing the remains of an interrupted create or delete"
        );
        match delete::remove_runtime(rt, &owned, &op).await {
            Ok(()) => {
                op.succeed("removed the remains of an interrupted create or delete");
                rt.ops().clear_finished(name);
            }
            Err(e) => op.fail(format!(
                "cannot remove the remains of an interrupted create or delete: {e}"
            )),
        }
        return;
    }
    if pass == Pass::Sweep {
        op.succeed("nothing to sweep");
        rt.ops().clear_finished(name);
        return;
    }
    let Some(c) = owned.container.clone() else {
        op.warn(format!(
            "runtime {name} is in the state files but its container does not exist"
        ));
        op.succeed("nothing to start");
        return;
    };
    ensure_unless_stopped(rt, &c, &op).await;
    if !c.state.running && !rt.state().is_stopped(name).await {
        op.step("starting", format!("starting {name}"));
        if let Err(e) = rt.docker().start_container(&c.id).await {
            op.fail(format!("reconcile could not start {name}: {e}"));
            return;
        }
    }
    if let Err(e) = rt.join_internal(name).await {
        op.warn(e.to_string());
    }
    if let Err(e) = rt.refresh_registry(name).await {
        op.warn(format!("could not refresh the internal IP: {e}"));
    }
    op.succeed(format!("{name} reconciled"));
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
        if rt.state().is_known(&runtime).await {
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
