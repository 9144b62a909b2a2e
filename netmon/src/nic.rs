//! Dedicated NICs (upstream-head §6): moving a host link into a container's network namespace
//! by the container's PID, checking it is there, giving it back, and giving back every link
//! still lent out when netmon stops. Also a runtime's MACVLAN vNIC's MAC (`set_vnic_mac`, ours),
//! which the engine cannot always set. Blocking netlink calls (`netlink::LinkOps`): the daemon
//! runs these on a blocking thread, one at a time. Knows nothing of the socket or of Docker.
//!
//! The link keeps its name; the original's steps, over netlink instead of `ip`/`nsenter`:
//! move = down on the host, into the namespace of `/proc/<pid>/ns/net`, up there; return = down
//! in the container, into netmon's own namespace (`/proc/self/ns/net` at start: netmon runs on
//! the host network), up on the host. Reaching `/proc/<pid>` of a container needs the host PID
//! namespace; setns needs `CAP_SYS_ADMIN`, the link changes `CAP_NET_ADMIN`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use netlink::{ConfigSocket, LinkOps, in_netns};

/// netmon's own network namespace and the links it lent out (name → container PID), so they can
/// be returned at shutdown.
pub struct Nics {
    host: File,
    lent: BTreeMap<String, u32>,
}

impl Nics {
    /// Opens netmon's own network namespace (the host's).
    pub fn new() -> std::io::Result<Self> {
        Ok(Nics {
            host: File::open("/proc/self/ns/net")?,
            lent: BTreeMap::new(),
        })
    }

    fn container_ns(&self, pid: u32) -> Result<File, String> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (a, b) = (
            file.metadata().map_err(|e| e.to_string())?,
            self.host.metadata().map_err(|e| e.to_string())?,
        );
        if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
            return Err(format!(
                "process {pid} is in netmon's own (the host's) network namespace"
            ));
        }
        Ok(file)
    }

    /// Moves host link `name` into the network namespace of `pid` and sets it up there. The
    /// error is the text after `Failed to move NIC: `.
    pub fn move_to_container(&mut self, name: &str, pid: u32) -> Result<(), String> {
        let ns = self.container_ns(pid)?;
        let mut host = LinkOps::new().map_err(|e| e.to_string())?;
        let index = host
            .index_of(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Device \"{name}\" does not exist."))?;
        host.set_up(index, false).map_err(|e| e.to_string())?;
        host.move_to_netns(index, &ns).map_err(|e| e.to_string())?;
        self.lent.insert(name.to_owned(), pid);
        in_netns(&ns, || {
            let mut inside = LinkOps::new()?;
            match inside.index_of(name)? {
                Some(index) => inside.set_up(index, true),
                None => Ok(()),
            }
        })
        .map_err(|e| format!("moved, but not set up in the container: {e}"))
    }

    /// Moves link `name` from the network namespace of `pid` back to netmon's and sets it up.
    /// The error is the text after `Failed to return NIC: `.
    pub fn return_to_host(&mut self, name: &str, pid: u32) -> Result<(), String> {
        let ns = self.container_ns(pid)?;
        let host = &self.host;
        in_netns(&ns, || {
            let mut inside = LinkOps::new()?;
            let Some(index) = inside.index_of(name)? else {
                return Ok(false);
            };
            // Best effort, as the original's `ip link set down` in the container.
            let _ = inside.set_up(index, false);
            inside.move_to_netns(index, host)?;
            Ok(true)
        })
        .map_err(|e| e.to_string())?
        .then_some(())
        .ok_or_else(|| format!("Device \"{name}\" does not exist."))?;
        self.lent.remove(name);
        let mut ops = LinkOps::new().map_err(|e| e.to_string())?;
        if let Some(index) = ops.index_of(name).map_err(|e| e.to_string())? {
            ops.set_up(index, true)
                .map_err(|e| format!("returned, but not set up on the host: {e}"))?;
        }
        Ok(())
    }

    /// Gives the MACVLAN link with MAC `current` in the namespace of `pid` the MAC `wanted`, live
    /// (the kernel takes it on a MACVLAN that is up). A link that already has `wanted` is
    /// success. Only MACVLAN links are touched: the runtime's other links (its internal bridge's
    /// veth, a dedicated NIC) are not the agent's to re-address, and netmon's own namespace is
    /// refused. `Ok` says what was done; the error is the text after `Failed to set vNIC MAC: `.
    pub fn set_vnic_mac(
        &self,
        pid: u32,
        current: [u8; 6],
        wanted: [u8; 6],
    ) -> Result<String, String> {
        let ns = self.container_ns(pid)?;
        let outcome = in_netns(&ns, || {
            let links = ConfigSocket::new()?.links()?;
            let with = |mac: [u8; 6]| links.iter().find(|l| l.mac.as_deref() == Some(&mac[..]));
            let Some(link) = with(wanted).or_else(|| with(current)) else {
                return Ok(MacChange::NoLink);
            };
            if link.kind.as_deref() != Some("macvlan") {
                return Ok(MacChange::NotMacvlan(
                    link.name.clone(),
                    link.kind.clone().unwrap_or_else(|| "physical".to_owned()),
                ));
            }
            if link.mac.as_deref() == Some(&wanted[..]) {
                return Ok(MacChange::Already(link.name.clone()));
            }
            LinkOps::new()?.set_address(link.index, wanted)?;
            Ok(MacChange::Changed(link.name.clone()))
        })
        .map_err(|e| e.to_string())?;
        let (current, wanted) = (mac_text(current), mac_text(wanted));
        match outcome {
            MacChange::Changed(name) => {
                Ok(format!("MAC of {name} changed from {current} to {wanted}"))
            }
            MacChange::Already(name) => Ok(format!("{name} already has MAC {wanted}")),
            MacChange::NoLink => Err(format!(
                "no interface with MAC {current} or {wanted} in the network namespace of process {pid}"
            )),
            MacChange::NotMacvlan(name, kind) => {
                Err(format!("{name} is a {kind} link, not a MACVLAN vNIC"))
            }
        }
    }

    /// Whether link `name` is in the network namespace of `pid` (false when the process is
    /// gone, as the original's `nsenter` failing).
    /// A failure other than "no such process" (missing privileges) is logged: the answer cannot
    /// carry it.
    pub fn in_container(&self, name: &str, pid: u32) -> bool {
        let ns = match self.container_ns(pid) {
            Ok(ns) => ns,
            Err(e) => {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    tracing::debug!(pid, "check_nic_in_container: {e}");
                } else {
                    tracing::warn!(interface = %name, pid, "check_nic_in_container: {e}");
                }
                return false;
            }
        };
        match in_netns(&ns, || LinkOps::new()?.index_of(name)) {
            Ok(index) => index.is_some(),
            Err(e) => {
                tracing::warn!(interface = %name, pid, "check_nic_in_container: {e}");
                false
            }
        }
    }

    /// Returns every link still lent out (netmon is stopping). Links whose container is gone are
    /// already back (a physical port) or gone with its namespace (a veth): forgotten.
    pub fn return_all(&mut self) {
        let lent: Vec<(String, u32)> = self.lent.iter().map(|(n, p)| (n.clone(), *p)).collect();
        for (name, pid) in lent {
            match self.return_to_host(&name, pid) {
                Ok(()) => {
                    tracing::info!(interface = %name, pid, "returned a dedicated NIC to the host")
                }
                Err(e) => {
                    tracing::warn!(interface = %name, pid, "cannot return a dedicated NIC: {e}")
                }
            }
            self.lent.remove(&name);
        }
    }
}

/// What [`Nics::set_vnic_mac`] found in the container's namespace.
enum MacChange {
    Changed(String),
    Already(String),
    NoLink,
    /// The link with the MAC, and its kind.
    NotMacvlan(String, String),
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
