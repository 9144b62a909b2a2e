//! `delete_orchestrator`: record the intent, answer at once, then remove every runtime this agent owns
//! (with their internal networks; [`CONCURRENCY`] at a time, so twenty runtimes take about one stop
//! grace period, not twenty), the MACVLAN networks of ours left unused, the netmon container, and
//! finally the agent's own container (spec §3; none when on the host). Progress is the operation
//! `delete_orchestrator` of device `__orchestrator__`. A crash on the way is resumed by the next start
//! (the intent is durable); the intent is cleared just before the agent removes its own container, so
//! a reinstall on the same volume never inherits it. If a runtime cannot be removed the agent keeps its
//! own container, reports the error, and tries again at its next start or when asked again.

use std::time::Duration;

use docker_api::RemoveContainerOptions;
use futures_util::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use super::delete::Stop;
use super::{Error, OpHandle, OpKind, Runtimes, SelfContainer, delete, macvlan, naming};
use crate::state::Intent;

/// How long the self-destruct waits for an operation already running on a runtime.
const LOCK_WAIT: Duration = Duration::from_secs(120);
/// Runtimes removed at once. The cost is waiting on the engine (stop grace periods), not work here.
pub const CONCURRENCY: usize = 32;

impl Runtimes {
    /// Accepts removing every runtime, the network monitor and the agent itself (refused while one
    /// runs): `Ok` once the intent is recorded; the work continues in the background as the
    /// operation of device [`naming::ORCHESTRATOR_DEVICE_ID`], after
    /// [`RuntimeConfig::self_destruct_delay`](super::RuntimeConfig::self_destruct_delay) so the
    /// answer leaves first.
    pub async fn self_destruct(&self) -> Result<(), Error> {
        accept(self).await
    }
}

async fn accept(rt: &Runtimes) -> Result<(), Error> {
    let id = naming::ORCHESTRATOR_DEVICE_ID;
    let op = rt
        .ops()
        .try_begin(id, OpKind::SelfDestruct)
        .map_err(|_| Error::Failed("Self-destruct operation already in progress".into()))?;
    op.step("accepted", "self-destruct accepted");
    let intent = Intent::SelfDestruct {
        started_at: crate::timefmt::now_utc_micros(),
    };
    if let Err(e) = rt.state().set_intent(id, intent).await {
        let e = Error::from(e);
        op.fail(format!("cannot record the self-destruct: {e}"));
        return Err(e);
    }
    let worker = rt.clone();
    rt.spawn(async move { run(&worker, op).await }.instrument(info_span!("self_destruct")));
    Ok(())
}

/// Resumes a self-destruct the previous process accepted but did not finish (called by the boot
/// reconcile instead of reconciling runtimes).
pub(super) async fn resume(rt: &Runtimes) {
    let Ok(op) = rt
        .ops()
        .try_begin(naming::ORCHESTRATOR_DEVICE_ID, OpKind::SelfDestruct)
    else {
        return;
    };
    info!("resuming the self-destruct accepted before the agent restarted");
    op.step("resumed", "self-destruct resumed after a restart");
    run(rt, op).await;
}

async fn run(rt: &Runtimes, op: OpHandle) {
    // Let the response emit leave before anything disappears.
    tokio::time::sleep(rt.config().self_destruct_delay).await;
    let mut errors: Vec<String> = Vec::new();

    op.step("deleting_runtimes", "removing every runtime of this agent");
    match rt.owned_runtime_names().await {
        Ok(mut names) => {
            // A create accepted just before this request may not have made its container yet:
            // `delete_one` waits for its operation to end, then removes what it made.
            for creating in rt.ops().running_of(OpKind::Create) {
                if !names.contains(&creating) {
                    names.push(creating);
                }
            }
            let results: Vec<(String, Result<(), Error>)> = futures_util::stream::iter(names)
                .map(|name| async move {
                    let r = delete_one(rt, &name).await;
                    (name, r)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (name, r) in results {
                if let Err(e) = r {
                    errors.push(format!("{name}: {e}"));
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }

    op.step(
        "cleaning_networks",
        "removing the agent's remaining networks",
    );
    match macvlan::list_ours(rt, naming::ROLE_INTERNAL).await {
        Ok(nets) => {
            for n in nets {
                let runtime = n
                    .labels
                    .get(naming::LABEL_RUNTIME)
                    .cloned()
                    .unwrap_or_else(|| n.name.trim_end_matches(naming::INTERNAL_SUFFIX).to_owned());
                if let Err(e) = macvlan::remove_internal(rt, &runtime, false).await {
                    errors.push(e.to_string());
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    {
        let _g = rt.network_lock().await;
        if let Err(e) = macvlan::remove_all_unused(rt).await {
            errors.push(e.to_string());
        }
    }

    if !errors.is_empty() {
        // The intent stays: the next start tries again.
        op.fail(format!(
            "self-destruct stopped before removing the agent: {}",
            errors.join("; ")
        ));
        return;
    }

    // Every bridge netmon still has (the runtimes' went with them; those of runtimes it no longer
    // knows too), while it runs: its stop would do the same, but a netmon stopped by force would not.
    let answer = rt
        .interfaces()
        .command(crate::netevents::NetmonCommand::CleanupAllProxyArp)
        .await;
    if !answer.success && rt.interfaces().is_connected() {
        op.warn(format!(
            "could not remove netmon's Wi-Fi bridges: {}",
            answer.error.unwrap_or_default()
        ));
    }
    let netmon = &rt.config().netmon_container;
    op.step("deleting_netmon", format!("removing {netmon}"));
    let force = RemoveContainerOptions {
        force: true,
        volumes: false,
    };
    match rt.docker().remove_container(netmon, force).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => op.warn(format!("could not remove {netmon}: {e}")),
    }

    // Cleared before the agent's own container goes: its volume may outlive it, and a new agent on
    // that volume must not inherit a self-destruct.
    if let Err(e) = rt
        .state()
        .clear_intent(naming::ORCHESTRATOR_DEVICE_ID, None)
        .await
    {
        op.fail(format!("cannot clear the self-destruct intent: {e}"));
        return;
    }
    match rt.self_container().await {
        SelfContainer::Host => op.succeed(
            "all runtimes and networks removed; the agent runs on the host, so there is no \
             container of its own to remove",
        ),
        SelfContainer::Container { id, name } => {
            op.step(
                "removing_self",
                format!("removing the agent's container {name}"),
            );
            // Removing our own container ends this process; nothing after this line is expected
            // to run when it succeeds.
            match rt.docker().remove_container(&id, force).await {
                Ok(()) => op.succeed(format!("removed the agent's container {name}")),
                Err(e) => op.fail(format!(
                    "could not remove the agent's container {name}: {e}"
                )),
            }
        }
    }
}

/// Deletes one runtime, waiting for an operation already running on it.
async fn delete_one(rt: &Runtimes, name: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let op = loop {
        match rt.ops().try_begin(name, OpKind::Delete) {
            Ok(op) => break op,
            Err(busy) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(runtime = name, "waiting: {busy}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(busy) => return Err(busy.into()),
        }
    };
    let owned = match rt.owned(name, "delete").await {
        Ok(o) => o,
        Err(e) if e.is_not_found() => {
            // Nothing of it is left (e.g. a create that never made its container): only its
            // intent, if any, remains to be dropped.
            rt.state().clear_intent(name, None).await?;
            op.succeed(format!("{name}: nothing to remove"));
            return Ok(());
        }
        Err(e) => {
            op.fail(e.to_string());
            return Err(e);
        }
    };
    let removed =
        match delete::remove_runtime(rt, &owned, Stop::Graceful(rt.config().stop_grace), &op).await
        {
            Ok(()) => rt
                .state()
                .clear_intent(name, None)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
    match removed {
        Ok(()) => {
            op.succeed(format!("{name} removed by the self-destruct"));
            Ok(())
        }
        Err(e) => {
            warn!(runtime = name, error = %e, "self-destruct could not remove a runtime");
            op.fail(e.to_string());
            Err(e)
        }
    }
}
