//! Serial device nodes in runtime containers (upstream-head §7.5), the I/O shell around
//! [`super::serial`]: for each configured port whose device netmon reports, netmon creates the
//! character device at the port's `container_path` inside the running container
//! (`provision_serial_node` with the container's PID), and the port record in
//! `data/serial_configs.json` says `connected`; an unplugged device's node is removed
//! (`remove_serial_node`) and its port says `disconnected`. With an older netmon that has no such
//! commands (the Python one) the node is made the original's way, by Docker exec in the runtime.
//!
//! When (fixing Defects S1 and S2 of the original): after every start of the container
//! (`host_side::after_start`, so restarts by any path get their nodes back) and after a create;
//! on `device_discovery` (every netmon connection: all runtimes, absent devices' ports marked
//! `disconnected`); on `device_change add`/`remove` (the ports of that device, in every runtime).
//! Syncs run one at a time (`Runtimes::serial_lock`) and read the device cache once they hold it,
//! so a sync never acts on a device list older than the last event.
//!
//! Never does: touch a container it does not own, delete a runtime's serial entry (only
//! `delete_device` does), or create a node for a device netmon did not report.

use std::time::Duration;

use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::serial::{self, Port, PortState};
use super::{Runtimes, naming, running_pid};
use crate::netevents::{DeviceEvent, NetmonCommand, Pid, SerialDevice};

/// Which ports of a runtime a sync looks at.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// All of them (a start, a discovery).
    All,
    /// Those of this device (plugged in or out): configured for it, or connected to its node.
    Device(&'a SerialDevice),
}

impl Scope<'_> {
    fn covers(&self, port: &Port) -> bool {
        match self {
            Scope::All => true,
            Scope::Device(d) => {
                serial::matches(&port.device_id, d)
                    || port.current_host_path.as_deref() == Some(d.path.as_str())
            }
        }
    }
}

/// After the runtime's container started (or was created): the nodes of all its ports whose
/// device is present. Returns what could not be done.
pub(super) async fn ensure(rt: &Runtimes, name: &str) -> Vec<String> {
    let _one = rt.serial_lock().await;
    sync(rt, name, Scope::All).await
}

/// Every runtime with serial ports, all ports.
async fn resync_all(rt: &Runtimes) {
    let _one = rt.serial_lock().await;
    for name in rt.state().serial_configs().await.keys() {
        for w in sync(rt, name, Scope::All).await {
            warn!(runtime = %name, "{w}");
        }
    }
}

/// Every runtime's ports of one device that was plugged in or out.
async fn device_changed(rt: &Runtimes, device: &SerialDevice) {
    let _one = rt.serial_lock().await;
    for name in rt.state().serial_configs().await.keys() {
        for w in sync(rt, name, Scope::Device(device)).await {
            warn!(runtime = %name, "{w}");
        }
    }
}

/// For the life of the service: follows netmon's serial device events.
pub(super) async fn follow_netmon(rt: Runtimes) {
    let mut events = rt.interfaces().subscribe_devices();
    // A discovery that came before this subscribed is in the cache only.
    if !rt.interfaces().serial_devices().is_empty() {
        resync_all(&rt).await;
    }
    loop {
        match events.recv().await {
            Ok(DeviceEvent::Discovery) => resync_all(&rt).await,
            Ok(DeviceEvent::Added(d)) => {
                info!(path = %d.path, by_id = ?d.by_id, "serial device plugged in");
                device_changed(&rt, &d).await;
            }
            Ok(DeviceEvent::Removed(d)) => {
                info!(path = %d.path, by_id = ?d.by_id, "serial device removed");
                device_changed(&rt, &d).await;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "missed serial device events; syncing every port with the device cache"
                );
                resync_all(&rt).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Brings the ports of `scope` of runtime `name` in line with the device cache. The caller holds
/// the serial lock.
async fn sync(rt: &Runtimes, name: &str, scope: Scope<'_>) -> Vec<String> {
    let Some(entry) = rt.state().serial_entry(name).await else {
        return Vec::new();
    };
    let ports: Vec<Port> = serial::ports_of(&entry)
        .into_iter()
        .filter(|p| scope.covers(p))
        .collect();
    if ports.is_empty() {
        return Vec::new();
    }
    let c = match rt.docker().inspect_container(name).await {
        Ok(c) => c,
        // Gone (being created or deleted): its next start does it.
        Err(e) if e.is_not_found() => return Vec::new(),
        Err(e) => {
            return vec![format!(
                "cannot inspect {name} to set up its serial ports: {e}"
            )];
        }
    };
    let known = rt.state().is_known(name).await;
    if c.short_name() != name || naming::ownership(&c.config.labels, rt.instance(), known).is_none()
    {
        return Vec::new();
    }
    let pid = running_pid(&c);
    let devices = rt.interfaces().serial_devices();
    let mut warnings = Vec::new();
    for port in &ports {
        let state = match serial::find(&port.device_id, &devices) {
            Some(d) => {
                let Some(pid) = pid else {
                    // Not running: the node goes in at its next start.
                    debug!(runtime = name, port = %port.name, "not running: node made at its next start");
                    continue;
                };
                match provision(rt, name, pid, port, d).await {
                    Ok(()) => PortState::Connected(d),
                    Err(e) => {
                        let w = format!(
                            "serial port {} ({} → {}): {e}",
                            port.name, d.path, port.container_path
                        );
                        warn!(runtime = name, "{w}");
                        warnings.push(w);
                        PortState::Error
                    }
                }
            }
            None => {
                // Unplugged: its node must not stay behind (Defect S1).
                if let Some(pid) = pid
                    && port.is_connected()
                    && let Err(e) = remove(rt, name, pid, port).await
                {
                    warnings.push(format!(
                        "serial port {}: could not remove {} from the container: {e}",
                        port.name, port.container_path
                    ));
                }
                PortState::Disconnected
            }
        };
        record(rt, name, port, &state).await;
    }
    warnings
}

/// Persists a port's new state, logging a change.
async fn record(rt: &Runtimes, name: &str, port: &Port, state: &PortState<'_>) {
    let result = rt
        .state()
        .update_serial_entry(name, |e| serial::set_state(e, &port.name, state))
        .await;
    match result {
        Ok(true) => match state {
            PortState::Connected(d) => info!(
                runtime = name, port = %port.name, host = %d.path, container_path = %port.container_path,
                major = ?d.major, minor = ?d.minor, "serial port connected"
            ),
            PortState::Disconnected => {
                info!(runtime = name, port = %port.name, "serial port disconnected")
            }
            PortState::Error => {}
        },
        Ok(false) => {}
        Err(e) => {
            warn!(runtime = name, port = %port.name, "cannot record the serial port's status: {e}")
        }
    }
}

/// How long one command of the Docker-exec fallback may take.
const EXEC_LIMIT: Duration = Duration::from_secs(10);

/// The reason of a failed netmon answer; `None` for an older netmon that has no such command
/// (the Python one), which the caller replaces by Docker exec.
fn failure(answer: netmon_proto::Response) -> Option<String> {
    let e = answer
        .error
        .unwrap_or_else(|| "the network monitor gave no reason".to_owned());
    (!e.starts_with("Unknown command")).then_some(e)
}

/// Runs `argv` in the runtime as root, as the original made nodes (`rm -f`, `mknod`, `chmod`):
/// needs those programs in the runtime's image, which netmon's way does not.
async fn exec(rt: &Runtimes, name: &str, argv: &[&str]) -> Result<(), String> {
    match rt.docker().exec(name, argv, "root", EXEC_LIMIT).await {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!(
            "`{}` in the runtime exited with {code}",
            argv.join(" ")
        )),
        Err(e) => Err(format!("`{}` in the runtime: {e}", argv.join(" "))),
    }
}

async fn provision(
    rt: &Runtimes,
    name: &str,
    pid: u32,
    port: &Port,
    d: &SerialDevice,
) -> Result<(), String> {
    let (Some(major), Some(minor)) = (d.major, d.minor) else {
        return Err(format!(
            "the network monitor reported no device number for {}",
            d.path
        ));
    };
    let answer = rt
        .interfaces()
        .command(NetmonCommand::ProvisionSerialNode {
            container_pid: Pid(pid),
            container_path: port.container_path.clone(),
            major,
            minor,
        })
        .await;
    if answer.success {
        return Ok(());
    }
    if let Some(e) = failure(answer) {
        return Err(e);
    }
    debug!(runtime = name, port = %port.name, "an older netmon: making the node by Docker exec");
    let path = port.container_path.as_str();
    // A failed `rm` is the original's "nothing there"; `mknod` says whether it worked.
    let _ = exec(rt, name, &["rm", "-f", path]).await;
    exec(
        rt,
        name,
        &["mknod", path, "c", &major.to_string(), &minor.to_string()],
    )
    .await?;
    // mknod honours the umask: the mode the original gives, set explicitly.
    exec(rt, name, &["chmod", "666", path]).await
}

async fn remove(rt: &Runtimes, name: &str, pid: u32, port: &Port) -> Result<(), String> {
    let answer = rt
        .interfaces()
        .command(NetmonCommand::RemoveSerialNode {
            container_pid: Pid(pid),
            container_path: port.container_path.clone(),
        })
        .await;
    if answer.success {
        return Ok(());
    }
    match failure(answer) {
        Some(e) => Err(e),
        None => exec(rt, name, &["rm", "-f", &port.container_path]).await,
    }
}
