//! Deleting a runtime ([`Runtimes::delete`]): refuse what is not ours, take the runtime's lock,
//! record the intent, return (accepted), then in the
//! background stop (grace period) and remove the container, drop its state entries, detach the agent
//! from `<name>_internal`, remove that network, and remove the MACVLAN networks of ours it leaves
//! unused. Also used by the self-destruct for every runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use docker_api::RemoveContainerOptions;
use tracing::{Instrument, info_span, warn};

use super::{Error, OpHandle, OpKind, Owned, Runtimes, macvlan, naming};
use crate::state::Intent;

impl Runtimes {
    /// Accepts the deletion of the runtime `name`: refused unless it is ours and idle; `Ok` once
    /// its intent is recorded, the work continuing in the background (its progress and outcome
    /// are the runtime's operation).
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        accept(self, name.to_owned()).await
    }
}

async fn accept(rt: &Runtimes, name: String) -> Result<(), Error> {
    if let Some(kind) = rt.ops().running(&name) {
        return Err(super::Busy { name, kind }.into());
    }
    let owned = rt.owned(&name, "delete").await?;
    let op = rt.ops().try_begin(&name, OpKind::Delete)?;
    // Durable before the stop and before the ack: once the cloud hears `deleting`, a crash can only
    // delay the delete, never revert it (the boot reconcile finishes it).
    let intent = Intent::Delete {
        started_at: crate::timefmt::now_utc_micros(),
        adopted: owned.adopted,
    };
    if let Err(e) = rt.state().set_intent(&name, intent).await {
        let e = Error::from(e);
        op.fail(format!("cannot record the delete: {e}"));
        return Err(e);
    }
    let worker = rt.clone();
    let span = info_span!("delete_runtime", runtime = %name);
    let stop = Stop::Graceful(rt.config().stop_grace);
    rt.spawn(
        async move {
            let done = match remove_runtime(&worker, &owned, stop, &op).await {
                // The intent goes last: a failure before it leaves the delete to be finished.
                Ok(()) => match forget_serial(&worker, &owned.name).await {
                    Ok(()) => worker
                        .state()
                        .clear_intent(&owned.name, None)
                        .await
                        .map_err(Error::from),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => op.succeed(format!(
                    "Runtime container {} and associated resources deleted successfully",
                    owned.name
                )),
                Err(e) => op.fail(e.to_string()),
            }
        }
        .instrument(span),
    );
    Ok(())
}

/// `delete_device` removes the runtime's serial entry (upstream-head §9.2); the shared
/// [`remove_runtime`] does not, because self-destruct leaves it (§7.6).
pub(super) async fn forget_serial(rt: &Runtimes, name: &str) -> Result<(), Error> {
    rt.state().forget_serial(name).await.map_err(Error::from)
}

/// How the container is stopped before it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGTERM, then SIGKILL after this grace period (a runtime that ran: let the PLC shut down).
    Graceful(Duration),
    /// At once (what a create that never committed left: nothing ran that deserves a grace period).
    Kill,
}

/// Removes an owned runtime and everything of ours only it used. The caller holds its lock and
/// clears the runtime's intent once this succeeded (on failure the intent stays, so the delete is
/// retried at the next start rather than forgotten).
pub(super) async fn remove_runtime(
    rt: &Runtimes,
    owned: &Owned,
    stop: Stop,
    op: &OpHandle,
) -> Result<(), Error> {
    let docker = rt.docker();
    let name = owned.name.as_str();
    // Its debug session says goodbye while the runtime still listens.
    rt.debug_sessions().close(name).await;
    // Its dedicated NIC goes back to the host before the container stops (upstream-head §6.5);
    // the record goes in any case.
    for w in super::dedicated::release(rt, name, owned.container.as_ref()).await {
        op.warn(w);
    }
    // Its DHCP leases are released and its Wi-Fi bridges removed while its vNICs are still there.
    for w in super::host_side::before_stop(rt, name).await {
        op.warn(w);
    }
    // The MACVLAN networks it is on, to check afterwards whether anyone else still uses them.
    let mut macvlans: BTreeSet<String> = BTreeSet::new();
    if let Some(c) = &owned.container {
        macvlans.extend(
            c.network_settings
                .networks
                .keys()
                .filter(|n| n.starts_with("macvlan_"))
                .cloned(),
        );
        if let Stop::Graceful(grace) = stop
            && c.state.running
        {
            op.step("stopping", format!("stopping {name}"));
            match docker.stop_container(&c.id, grace).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!(runtime = name, error = %e, "stop failed; removing by force"),
            }
        }
        op.step("removing_container", format!("removing {name}"));
        // A create that never committed may have made anonymous volumes; a runtime that ran keeps
        // its data volumes to the engine's rules (upstream removes the container only).
        let opts = RemoveContainerOptions {
            force: true,
            volumes: stop == Stop::Kill,
        };
        match docker.remove_container(&c.id, opts).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::docker(format!("removing container {name}"))(e)),
        }
    }
    op.step(
        "cleaning_state",
        "removing the runtime from the state files",
    );
    rt.state().forget(name).await?;
    rt.watchdog().reset(name);

    op.step(
        "removing_networks",
        "removing the internal network and unused MACVLAN networks",
    );
    macvlan::remove_internal(rt, name, owned.adopted)
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "container removed, but {} could not be removed: {e}",
                naming::internal_network_name(name)
            ))
        })?;
    let _guard = rt.network_lock().await;
    for n in &macvlans {
        if let Err(e) = macvlan::remove_if_unused(rt, n).await {
            op.warn(format!("could not remove unused MACVLAN network {n}: {e}"));
        }
    }
    Ok(())
}
