//! Boot reconcile: make the engine agree with the state files after the agent (or the device)
//! restarted.
//!
//! - a container of ours that the state files do not know is what a create interrupted before its
//!   last step (registry + vNIC entry) left: it is removed with its internal network, like a rollback
//!   (skipped when a state file was found corrupt — then "unknown" proves nothing);
//! - an owned runtime that is not running and was not stopped on request is started (Docker's
//!   restart policy does not retry a start that failed at boot, moby#39559);
//! - the agent re-joins each runtime's internal network and the registry gets fresh internal IPs;
//! - MACVLAN networks of ours that nobody uses are removed;
//! - finally `rehome` catches up with parent subnets that changed while the agent was down.
//!
//! Every runtime is handled under its operation lock, so a command arriving meanwhile is never
//! mistaken for leftovers.

use std::time::Duration;

use tracing::{info, warn};

use super::{OpKind, Runtimes, delete, macvlan, naming};

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
    let names = match rt.owned_runtime_names().await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "reconcile: cannot list the runtimes");
            return;
        }
    };
    let known = rt.state().known_runtimes().await;
    let state_trusted = rt.state().warnings().is_empty();
    for name in names {
        reconcile_one(rt, &name, known.contains(&name), state_trusted).await;
    }
    remove_orphan_internal_networks(rt, &known).await;
    {
        let _g = rt.network_lock().await;
        match macvlan::remove_all_unused(rt).await {
            Ok(removed) if !removed.is_empty() => {
                info!(?removed, "removed unused MACVLAN networks")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reconcile: cannot clean MACVLAN networks"),
        }
    }
    super::rehome::reconcile(rt).await;
    info!("reconcile done");
}

async fn reconcile_one(rt: &Runtimes, name: &str, known: bool, state_trusted: bool) {
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
    let Some(c) = owned.container.clone() else {
        op.warn(format!(
            "runtime {name} is in the state files but its container does not exist"
        ));
        op.succeed("nothing to start");
        return;
    };
    if !known && !owned.adopted {
        if !state_trusted {
            op.warn(format!(
                "container {name} is not in the state files, which were found corrupt; left alone"
            ));
            op.succeed("left alone");
            return;
        }
        info!(
            runtime = name,
            "removing the remains of an interrupted create"
        );
        match delete::remove_runtime(rt, &owned, &op).await {
            Ok(()) => {
                op.succeed("removed the remains of an interrupted create");
                rt.ops().clear_finished(name);
            }
            Err(e) => op.fail(format!(
                "cannot remove the remains of an interrupted create: {e}"
            )),
        }
        return;
    }
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

/// Internal networks of ours whose runtime neither exists nor is known (an interrupted create that
/// had not yet made its container).
async fn remove_orphan_internal_networks(rt: &Runtimes, known: &[String]) {
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
        if known.contains(&runtime) {
            continue;
        }
        let Ok(op) = rt.ops().try_begin(&runtime, OpKind::Reconcile) else {
            continue;
        };
        match rt.docker().inspect_container(&runtime).await {
            Err(e) if e.is_not_found() => {
                match macvlan::remove_internal(rt, &runtime, false).await {
                    Ok(()) => op.succeed("removed an orphan internal network"),
                    Err(e) => op.fail(e.to_string()),
                }
                rt.ops().clear_finished(&runtime);
            }
            _ => op.succeed("internal network in use"),
        }
    }
}
