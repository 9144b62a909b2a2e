//! What the host side gives a runtime each time its container starts, and takes back before it
//! stops: a new container process is a new network namespace, so the dedicated NIC must be moved
//! in again and the DHCP clients started for it again. One place, so every path that starts a
//! runtime (create, power actions, the watchdog, the engine's restart policy) does all of it, in
//! order.

use super::Runtimes;

/// After the runtime's container started: its dedicated NIC into its namespace, then its DHCP
/// clients. Returns what could not be done (each also retried where that makes sense).
pub(super) async fn after_start(rt: &Runtimes, name: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = super::dedicated::ensure_lent(rt, name).await {
        warnings.push(e);
    }
    if let Err(e) = super::dhcp::ensure(rt, name).await {
        warnings.push(e);
    }
    warnings
}
