//! Writing a re-home to `runtime_vnics.json`: the persisted vNICs on the parent get the new
//! subnet, gateway and (when it had to change) address, through [`update_persisted`], the one
//! writer of the persisted form. Failures are logged: the engine side is what matters, and the
//! next change or boot re-checks.

use std::net::Ipv4Addr;

use serde_json::Value;
use tracing::warn;

use crate::runtime::net::Ipv4Net;
use crate::runtime::vnic::update_persisted;
use crate::runtime::{OpKind, Runtimes};

/// Updates the runtime's persisted vNICs on `interface` (failures are logged: the engine side is
/// what matters, and the next change or boot re-checks). The caller holds the runtime's
/// operation, so no create or delete rewrites its entry meanwhile. Returns whether it wrote.
pub(super) async fn persist(
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
        changed |= update_persisted(map, subnet, gateway, new_static_ip);
    }
    changed.then_some(vnics)
}

/// Brings the persisted subnet fields of runtimes already on the right network up to date (e.g.
/// the agent stopped between connecting and writing the file), under their operation lock; a
/// runtime another operation holds is left for the next check.
pub(super) async fn persist_unchanged(
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
