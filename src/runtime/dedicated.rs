//! Dedicated NICs (upstream-head §6): a host interface lent to one runtime, moved into its network
//! namespace by netmon (`move_nic_to_container` with the container's PID), moved again whenever
//! the container (re)starts without it, and given back (`return_nic_to_host`) before the
//! container stops, restarts or goes. The record `dedicated_nics.json` (`{"<runtime>":
//! {"host_interface": "<if>"}}`, the original's file) is written before the first move, so a crash
//! leaves a record the next start acts on.
//!
//! Why back before a stop or restart: a physical port comes back to the host by itself when the
//! container's namespace is destroyed, but a virtual link (a veth end, as in the tests) is
//! destroyed with it, taking its peer along. Giving it back first keeps both kinds.
//!
//! Never does: move a link itself (netmon does, with the privileges), or act on a runtime it does
//! not own (callers checked).

use docker_api::ContainerInspect;
use tracing::{debug, info, warn};

use super::spec::CreateSpec;
use super::{Error, Runtimes, running_pid};
use crate::netevents::{NetmonCommand, Pid, is_virtual};

/// The original's checks (upstream-head §6.2), in its order and words: the interface exists on
/// the host (any link netmon reports, with or without carrier: Defect DN2 fixed), is not Wi-Fi, is
/// not already dedicated, and is not a vNIC parent (of this request, or of a runtime that exists:
/// moving it would cut that runtime off).
pub(super) async fn check(rt: &Runtimes, spec: &CreateSpec) -> Result<(), Error> {
    let Some(nic) = spec.dedicated_interface.as_deref() else {
        return Ok(());
    };
    let records = rt.state().dedicated_nics().await;
    let holder = records.iter().find(|(_, n)| n == nic).map(|(c, _)| c);
    // A lent NIC is in its runtime, not on the host: it exists, and is refused as dedicated below.
    if holder.is_none()
        && let Some(missing) = rt
            .interfaces()
            .missing_parent_within(&[nic], rt.config().subnet_wait)
            .await
    {
        return Err(Error::Failed(format!(
            "Interface '{nic}' not found on host. Available interfaces: {}",
            python_list(&missing.host_has)
        )));
    }
    if rt.interfaces().get(nic).is_some_and(|i| i.is_wifi()) {
        return Err(Error::Failed(format!(
            "Interface '{nic}' is a WiFi interface. Dedicated NIC assignment requires a physical \
             Ethernet interface."
        )));
    }
    if let Some(container) = holder {
        return Err(Error::Failed(format!(
            "Interface '{nic}' is already dedicated to container '{container}'."
        )));
    }
    let parent_here = spec.vnics.iter().any(|v| v.parent == nic);
    let parent_elsewhere = rt.state().vnics().await.values().any(|list| {
        list.as_array().is_some_and(|vs| {
            vs.iter()
                .any(|v| v.get("parent_interface").and_then(|p| p.as_str()) == Some(nic))
        })
    });
    if parent_here || parent_elsewhere {
        return Err(Error::Failed(format!(
            "Interface '{nic}' is configured as a vNIC parent. A dedicated NIC cannot also be used \
             for MACVLAN/Proxy ARP networking."
        )));
    }
    Ok(())
}

/// `['a', 'b']`: how the original lists the interfaces in its error text (Python's list repr).
fn python_list(names: &[String]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .filter(|n| !is_virtual(n))
        .map(|n| format!("'{n}'"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// netmon's answer as a result: its error text on failure.
async fn ask(rt: &Runtimes, command: NetmonCommand) -> Result<netmon_proto::Response, String> {
    let r = rt.interfaces().command(command).await;
    if r.success {
        Ok(r)
    } else {
        Err(r
            .error
            .unwrap_or_else(|| "the network monitor gave no reason".to_owned()))
    }
}

/// Moves `nic` into the running container `c`.
pub(super) async fn lend(rt: &Runtimes, nic: &str, c: &ContainerInspect) -> Result<(), String> {
    let pid = running_pid(c).ok_or("the runtime is not running")?;
    ask(
        rt,
        NetmonCommand::MoveNicToContainer {
            host_interface: nic.to_owned(),
            container_pid: Pid(pid),
        },
    )
    .await
    .map(drop)
}

/// Gives the runtime's dedicated NIC back to the host if the container runs (a stopped one has
/// no namespace: the NIC is already back, or gone with it). The record stays.
pub(super) async fn take_back(
    rt: &Runtimes,
    name: &str,
    c: &ContainerInspect,
) -> Result<(), String> {
    let Some(nic) = rt.state().dedicated_nic(name).await else {
        return Ok(());
    };
    let Some(pid) = running_pid(c) else {
        return Ok(());
    };
    ask(
        rt,
        NetmonCommand::ReturnNicToHost {
            host_interface: nic.clone(),
            container_pid: Pid(pid),
        },
    )
    .await
    .map(|_| info!(runtime = name, interface = %nic, "dedicated NIC returned to the host"))
    .map_err(|e| format!("could not return the dedicated interface '{nic}' to the host: {e}"))
}

/// Gives the NIC back (as [`take_back`]) and drops the record: the runtime is going.
pub(super) async fn release(
    rt: &Runtimes,
    name: &str,
    c: Option<&ContainerInspect>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(c) = c
        && let Err(e) = take_back(rt, name, c).await
    {
        warn!(runtime = name, "{e}");
        warnings.push(e);
    }
    if let Err(e) = rt.state().set_dedicated_nic(name, None).await {
        warnings.push(format!("could not remove the dedicated NIC record: {e}"));
    }
    warnings
}

/// Makes sure the runtime's dedicated NIC is in its running container: asks netmon whether it is
/// (`check_nic_in_container`) and moves it when not. Nothing to do without a record or when the
/// container does not run.
pub(super) async fn ensure_lent(rt: &Runtimes, name: &str) -> Result<(), String> {
    let Some(nic) = rt.state().dedicated_nic(name).await else {
        return Ok(());
    };
    let c = match rt.docker().inspect_container(name).await {
        Ok(c) => c,
        Err(e) => return Err(format!("cannot inspect {name}: {e}")),
    };
    let Some(pid) = running_pid(&c) else {
        return Ok(());
    };
    let present = ask(
        rt,
        NetmonCommand::CheckNicInContainer {
            host_interface: nic.clone(),
            container_pid: Pid(pid),
        },
    )
    .await
    .map(|r| r.data.get("present").and_then(|p| p.as_bool()) == Some(true));
    if present == Ok(true) {
        debug!(runtime = name, interface = %nic, "dedicated NIC in place");
        return Ok(());
    }
    lend(rt, &nic, &c)
        .await
        .map(|()| info!(runtime = name, interface = %nic, "dedicated NIC moved into the runtime"))
        .map_err(|e| format!("could not move the dedicated interface '{nic}' into {name}: {e}"))
}

/// On every connection to netmon (boot, netmon restarted — it gives lent NICs back when it
/// stops): every record's NIC into its running runtime. Records of runtimes that no longer exist
/// are dropped (the original kept them forever, Defect DN1).
pub(super) async fn resync(rt: &Runtimes) {
    for (name, nic) in rt.state().dedicated_nics().await {
        match rt.docker().inspect_container(&name).await {
            Err(e) if e.is_not_found() && rt.ops().running(&name).is_none() => {
                info!(runtime = %name, interface = %nic, "dropping the dedicated NIC record of a runtime that no longer exists");
                if let Err(e) = rt.state().set_dedicated_nic(&name, None).await {
                    warn!(runtime = %name, error = %e, "cannot drop a dedicated NIC record");
                }
            }
            _ if rt.ops().running(&name).is_some() => {}
            _ => {
                if let Err(e) = ensure_lent(rt, &name).await {
                    warn!(runtime = %name, "{e}");
                }
            }
        }
    }
}

/// Runs [`resync`] after every new connection to netmon, for the life of the service.
pub(super) async fn follow_netmon(rt: Runtimes) {
    let mut connections = rt.interfaces().subscribe_connections();
    // A connection made before this subscribed counts too.
    if rt.interfaces().is_connected() {
        resync(&rt).await;
    }
    while connections.changed().await.is_ok() {
        resync(&rt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_listed_as_python_prints_a_list() {
        assert_eq!(
            python_list(&["enp3s0".into(), "veth1".into(), "wlan0".into()]),
            "['enp3s0', 'wlan0']"
        );
        assert_eq!(python_list(&[]), "[]");
    }
}
