//! What the host side gives a runtime each time its container starts, and again whenever netmon
//! (re)connects: a new container process is a new network namespace, so the dedicated NIC must be
//! moved in again, the persisted MACs set again where the engine gave its own, its serial device
//! nodes made again (a fresh `/dev`), and the DHCP clients started for it again. One place, so every path that starts a runtime (create, power actions,
//! the watchdog, the engine's restart policy) does all of it, in order: DHCP last, because netmon's
//! client finds the vNIC by its MAC; Wi-Fi vNICs' proxy-ARP bridges (or their host-side DHCP
//! clients) with them.

use tracing::warn;

use super::{Runtimes, naming};

/// After the runtime's container started: its dedicated NIC into its namespace, its MACs, its
/// serial nodes, then its DHCP clients. Returns what could not be done (each also retried where that makes sense).
pub(super) async fn after_start(rt: &Runtimes, name: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = super::dedicated::ensure_lent(rt, name).await {
        warnings.push(e);
    }
    warnings.extend(super::macfix::ensure(rt, name).await);
    // A new container has a fresh /dev: its serial nodes go in again (Defect S2).
    warnings.extend(super::serial_nodes::ensure(rt, name).await);
    if let Err(e) = super::dhcp::ensure(rt, name).await {
        warnings.push(e);
    }
    warnings.extend(super::wifi::ensure(rt, name).await);
    warnings
}

/// On every connection to netmon (boot; netmon restarted): MACs, then DHCP clients, for every
/// runtime of `runtime_vnics.json` that no operation holds (an operation does it itself once the
/// container runs), so what the engine or a netmon restart undid while the agent was not looking
/// (a device reboot, the engine's restart policy) is set again. Dedicated NICs follow netmon on
/// their own (`dedicated::follow_netmon`).
pub(super) async fn resync(rt: &Runtimes) {
    let names: Vec<String> = rt.state().vnics().await.keys().cloned().collect();
    for name in names {
        if naming::RESERVED_CONTAINER_NAMES.contains(&name.as_str())
            || rt.ops().running(&name).is_some()
        {
            continue;
        }
        for w in super::macfix::ensure(rt, &name).await {
            warn!(runtime = %name, "{w}");
        }
        if let Err(e) = super::dhcp::ensure(rt, &name).await {
            warn!(runtime = %name, "{e}");
        }
        for w in super::wifi::ensure(rt, &name).await {
            warn!(runtime = %name, "{w}");
        }
    }
}

/// Before the runtime's container stops (stop, restart, delete): its DHCP leases released and
/// its Wi-Fi bridges torn down while its vNICs are still there. Returns warnings.
pub(super) async fn before_stop(rt: &Runtimes, name: &str) -> Vec<String> {
    let mut warnings = super::dhcp::stop(rt, name).await;
    warnings.extend(super::wifi::stop(rt, name).await);
    warnings
}
