//! `delete_device`: refuse what is not ours, take the runtime's lock, answer `deleting`, then in the
//! background stop (grace period) and remove the container, drop its state entries, detach the agent
//! from `<name>_internal`, remove that network, and remove the MACVLAN networks of ours it leaves
//! unused. Also used by the self-destruct for every runtime.

use std::collections::BTreeSet;

use docker_api::RemoveContainerOptions;
use serde_json::{Map, Value, json};
use tracing::{Instrument, info_span, warn};

use super::{Error, OpHandle, OpKind, Owned, Runtimes, macvlan, naming};
use crate::contract::DeleteDeviceRequest;

/// Checks ownership, takes the lock and starts the deletion in the background.
pub(super) async fn accept(
    rt: &Runtimes,
    req: DeleteDeviceRequest,
) -> Result<Map<String, Value>, Error> {
    let name = req.device_id;
    if let Some(kind) = rt.ops().running(&name) {
        return Err(super::Busy { name, kind }.into());
    }
    let owned = rt.owned(&name, "delete").await?;
    let op = rt.ops().try_begin(&name, OpKind::Delete)?;
    let worker = rt.clone();
    let span = info_span!("delete_runtime", runtime = %name);
    rt.spawn(
        async move {
            match remove_runtime(&worker, &owned, &op).await {
                Ok(()) => op.succeed(format!(
                    "Runtime container {} and associated resources deleted successfully",
                    owned.name
                )),
                Err(e) => op.fail(e.to_string()),
            }
        }
        .instrument(span),
    );
    let mut body = Map::new();
    body.insert("status".into(), json!("deleting"));
    body.insert("device_id".into(), json!(name));
    body.insert(
        "message".into(),
        json!(format!("Container deletion started for {name}")),
    );
    Ok(body)
}

/// Removes an owned runtime and everything of ours only it used. The caller holds its lock.
pub(super) async fn remove_runtime(
    rt: &Runtimes,
    owned: &Owned,
    op: &OpHandle,
) -> Result<(), Error> {
    let docker = rt.docker();
    let name = owned.name.as_str();
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
        op.step("stopping", format!("stopping {name}"));
        match docker.stop_container(&c.id, rt.config().stop_grace).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(runtime = name, error = %e, "stop failed; removing by force"),
        }
        op.step("removing_container", format!("removing {name}"));
        let opts = RemoveContainerOptions {
            force: true,
            volumes: false,
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
