//! Serial ports (upstream-head §7.2, §7.5): which ones the host has (`sysfs`), when they come and
//! go (`uevent`, the kernel's own broadcasts: no udevd, no libudev), and device nodes for them
//! in runtime containers (`node`). [`Devices`] is the daemon's cache and the lines it sends;
//! [`watch`] turns uevents into [`Change`]s on a task; [`Job`] is what the serial commands do.
//! Knows nothing of the socket or of Docker; never writes the host's `/dev` or `/sys`.

mod node;
mod sysfs;
mod uevent;

#[cfg(test)]
mod kernel_tests;

use std::collections::BTreeMap;

use netmon_proto::{DeviceAction, Response, SerialDevice, device_change_line};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use node::{validate_major, validate_path};
pub use sysfs::{Roots, enumerate};
use uevent::{SerialEvent, UeventSocket};

/// Hot-plug changes waiting for the daemon; a burst beyond this waits in the socket's buffer.
const CHANGE_QUEUE: usize = 64;

/// A port that came or went, as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Described right after its `add` uevent.
    Added(SerialDevice),
    /// Its node path (`/dev/ttyUSB0`).
    Removed(String),
}

/// The daemon's view of serial ports: the last known object per node path, and whether
/// hot-plug events arrive.
#[derive(Debug, Default)]
pub struct Devices {
    cache: BTreeMap<String, SerialDevice>,
    pub watching: bool,
}

impl Devices {
    /// A fresh enumeration replaces what was known.
    pub fn replace(&mut self, devices: &[SerialDevice]) {
        self.cache = devices
            .iter()
            .map(|d| (d.path.clone(), d.clone()))
            .collect();
    }

    /// Notes `change` and gives the `device_change` line for it: a removal reports the object
    /// last known for the path, or the bare one.
    pub fn apply(&mut self, change: Change) -> String {
        match change {
            Change::Added(device) => {
                let line = device_change_line(DeviceAction::Add, &device);
                self.cache.insert(device.path.clone(), device);
                line
            }
            Change::Removed(path) => {
                let device = self
                    .cache
                    .remove(&path)
                    .unwrap_or_else(|| SerialDevice::removed(path));
                device_change_line(DeviceAction::Remove, &device)
            }
        }
    }

    /// `get_device_status`'s `status` (and `get_status`'s `devices`), in the original's keys:
    /// there is no pyudev here, so `pyudev_available` is false; `running` says whether
    /// hot-plug events arrive.
    pub fn status(&self) -> Value {
        json!({
            "running": self.watching,
            "pyudev_available": false,
            "cached_devices": self.cache.len(),
            "devices": self.cache.values().collect::<Vec<_>>(),
        })
    }
}

/// Opens the uevent socket and starts the task that turns serial ports' `add`/`remove` into
/// [`Change`]s (an `add` is described from sysfs and `/dev` at once, off the event loop). The
/// channel closes when the socket fails for good.
pub fn watch(roots: Roots) -> std::io::Result<(mpsc::Receiver<Change>, JoinHandle<()>)> {
    let mut socket = UeventSocket::open()?;
    let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
    let task = tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let datagram = match socket.next().await {
                Ok(d) => {
                    failures = 0;
                    d
                }
                // Overrun: events were lost; the next connection's enumeration is exact.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    tracing::warn!("uevent receive buffer overran; some hot-plug events were lost");
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= 10 {
                        tracing::error!("uevent socket keeps failing ({e}); serial hot-plug off");
                        return;
                    }
                    tracing::warn!("uevent receive failed: {e}");
                    continue;
                }
            };
            let Some(event) = uevent::parse(&datagram).and_then(|u| u.serial()) else {
                continue;
            };
            let change = match event {
                SerialEvent::Added(name) => {
                    let roots = roots.clone();
                    let described =
                        tokio::task::spawn_blocking(move || sysfs::describe(&roots, &name)).await;
                    match described {
                        Ok(Some(device)) => Change::Added(device),
                        // Gone again, or not stat-able: nothing a runtime could use.
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!("describing a new serial port failed: {e}");
                            continue;
                        }
                    }
                }
                SerialEvent::Removed(name) => Change::Removed(format!("/dev/{name}")),
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
    Ok((rx, task))
}

/// What a serial command does, its request validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// `discover_devices`: a fresh enumeration.
    Discover,
    Provision {
        pid: u32,
        path: String,
        major: u32,
        minor: u32,
    },
    Remove {
        pid: u32,
        path: String,
    },
}

impl Job {
    /// `provision_serial_node`, validated (the error is the answer).
    pub fn provision(pid: u32, path: String, major: u32, minor: u32) -> Result<Job, String> {
        validate_path(&path)?;
        validate_major(major)?;
        Ok(Job::Provision {
            pid,
            path,
            major,
            minor,
        })
    }

    /// `remove_serial_node`, validated.
    pub fn remove(pid: u32, path: String) -> Result<Job, String> {
        validate_path(&path)?;
        Ok(Job::Remove { pid, path })
    }

    /// Runs the job (blocking: file system, a namespace thread) and says what to answer.
    pub fn run(self, roots: &Roots) -> Response {
        let answer = |what: &str, r: Result<String, String>| match r {
            Ok(message) => {
                tracing::info!("{message}");
                Response::ok().with("message", Value::String(message))
            }
            Err(e) => {
                tracing::warn!("{what} failed: {e}");
                Response::error(format!("{what} failed: {e}"))
            }
        };
        match self {
            Job::Discover => Response::ok().with("devices", json!(enumerate(roots))),
            Job::Provision {
                pid,
                path,
                major,
                minor,
            } => answer(
                "Provisioning the serial node",
                node::provision(pid, &path, major, minor),
            ),
            Job::Remove { pid, path } => {
                answer("Removing the serial node", node::remove(pid, &path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Tests: a failed expectation is the test's message.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ftdi() -> SerialDevice {
        SerialDevice {
            by_id: Some("/dev/serial/by-id/usb-FTDI_X-if00-port0".into()),
            major: Some(188),
            minor: Some(0),
            ..SerialDevice::removed("/dev/ttyUSB0")
        }
    }

    #[test]
    fn a_removal_reports_the_cached_object_or_the_bare_one() {
        let mut devices = Devices::default();
        devices.replace(&[ftdi()]);
        assert_eq!(devices.status()["cached_devices"], 1);
        let line = devices.apply(Change::Removed("/dev/ttyUSB0".into()));
        assert_eq!(line, device_change_line(DeviceAction::Remove, &ftdi()));
        assert_eq!(devices.status()["cached_devices"], 0);
        let line = devices.apply(Change::Removed("/dev/ttyUSB0".into()));
        assert_eq!(
            line,
            device_change_line(DeviceAction::Remove, &SerialDevice::removed("/dev/ttyUSB0"))
        );
        let line = devices.apply(Change::Added(ftdi()));
        assert_eq!(line, device_change_line(DeviceAction::Add, &ftdi()));
        let status = devices.status();
        assert_eq!(status["devices"][0]["path"], "/dev/ttyUSB0");
        assert_eq!(status["running"], false);
        assert_eq!(status["pyudev_available"], false);
    }

    #[test]
    fn node_requests_are_validated_before_any_work() {
        assert!(Job::provision(7, "/dev/modbus0".into(), 188, 0).is_ok());
        assert!(Job::provision(7, "/dev/modbus0".into(), 204, 64).is_err());
        assert!(Job::provision(7, "/etc/passwd".into(), 4, 64).is_err());
        assert!(Job::remove(7, "/dev/../etc/shadow".into()).is_err());
        assert!(Job::remove(7, "/dev/ttyUSB0".into()).is_ok());
    }
}
