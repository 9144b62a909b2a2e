//! DHCP for the MACVLAN vNICs of runtime containers (upstream-head §4.5), done by netmon itself:
//! no `udhcpc`, no shell. One client per `container:vnic`, each on its own OS thread inside the
//! container's network namespace (`client`), driving a pure RFC 2131 state machine (`machine`)
//! through `dhcproto` (`codec`); leases go to the interface over rtnetlink, to the lease file
//! (`lease_file`) and, when they change, to the agent as `dhcp_update` events.
//!
//! [`DhcpClients`] is what the command channel calls: `start_dhcp`, `stop_dhcp`,
//! `get_dhcp_status`, with the original's answers; [`spawn`] puts it behind a task and gives a
//! clonable [`DhcpHandle`] with the same calls, so awaiting one never stalls the event loop. It must never touch Docker or the agent's
//! state files; it owns the lease files under its lease directory.

mod client;
mod codec;
mod lease_file;
mod machine;
mod service;

#[cfg(test)]
mod kernel_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use netmon_proto::DhcpUpdate;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use client::{Client, Spec};
pub use service::{DhcpHandle, spawn};

/// How long `stop_dhcp` waits for a client to release and end.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The DHCP clients netmon runs, by `container:vnic`.
#[derive(Debug)]
pub struct DhcpClients {
    lease_dir: PathBuf,
    updates: mpsc::UnboundedSender<DhcpUpdate>,
    clients: BTreeMap<String, Client>,
}

/// Parses `3e:9a:12:00:ab:cd` (either case, `:` or `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl DhcpClients {
    /// Lease files go to `lease_dir` (netmon's: `<socket dir>/dhcp`); every lease change is sent
    /// to `updates` (the server broadcasts it as a `dhcp_update` line to every client).
    pub fn new(lease_dir: PathBuf, updates: mpsc::UnboundedSender<DhcpUpdate>) -> Self {
        DhcpClients {
            lease_dir,
            updates,
            clients: BTreeMap::new(),
        }
    }

    /// `start_dhcp`: `Ok(message)` / `Err(error)` as the original answers. A client already
    /// running for the key and the same PID is left alone; one for another PID (the container
    /// was restarted) or one that ended is replaced (the original kept the dead one, N7/N8).
    pub async fn start(
        &mut self,
        container_name: &str,
        vnic_name: &str,
        mac_address: &str,
        container_pid: u32,
    ) -> Result<String, String> {
        let key = format!("{container_name}:{vnic_name}");
        if let Some(existing) = self.clients.get(&key) {
            if existing.is_running() && existing.spec.pid == container_pid {
                // Announced again: the agent asking (its resync after a restart) may have missed
                // it while it was down (the original announced only changes, Defect N11).
                if let Some(update) = existing.status().last_update {
                    let _ = self.updates.send(update);
                }
                return Ok("DHCP client already running".into());
            }
            if let Some(old) = self.clients.remove(&key) {
                // Another instance of the container: its namespace (and lease) went with it.
                old.shutdown(STOP_TIMEOUT).await;
            }
        }
        let mac =
            parse_mac(mac_address).ok_or_else(|| format!("Invalid mac_address: {mac_address}"))?;
        let spec = Spec {
            container_name: container_name.to_owned(),
            vnic_name: vnic_name.to_owned(),
            mac,
            pid: container_pid,
            lease_dir: self.lease_dir.clone(),
        };
        let client = Client::start(spec, self.updates.clone())
            .await
            .map_err(|e| e.to_string())?;
        let message = format!("DHCP client started for {}", client.status().interface);
        self.clients.insert(key, client);
        Ok(message)
    }

    /// `stop_dhcp`: releases the lease, removes it from the interface and deletes the lease file.
    pub async fn stop(&mut self, container_name: &str, vnic_name: &str) -> Result<String, String> {
        let key = format!("{container_name}:{vnic_name}");
        let client = self
            .clients
            .remove(&key)
            .ok_or_else(|| format!("No DHCP client found for {key}"))?;
        client.stop(STOP_TIMEOUT).await;
        Ok(format!("DHCP client stopped for {key}"))
    }

    /// `get_dhcp_status`'s `status` object: `{"<key>": {"running", "pid", "last_ip",
    /// "interface", "container_pid", "state"}}`. `pid` is `null`: there is no udhcpc process.
    pub fn status(&self) -> Value {
        let map = self
            .clients
            .iter()
            .map(|(key, c)| {
                let s = c.status();
                (
                    key.clone(),
                    json!({
                        "running": s.running,
                        "pid": null,
                        "last_ip": s.last_ip,
                        "interface": s.interface,
                        "container_pid": c.spec.pid,
                        "state": s.state,
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>();
        Value::Object(map)
    }

    /// netmon is exiting: every client ends keeping its lease on the interface and in its lease
    /// file, so the agent's resync after the restart finds it (INIT-REBOOT).
    pub async fn shutdown(&mut self) {
        for (_, client) in std::mem::take(&mut self.clients) {
            client.shutdown(STOP_TIMEOUT).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_either_case_and_separator_and_nothing_else() {
        assert_eq!(
            parse_mac("3E:9a:12:00:ab:cd"),
            Some([0x3e, 0x9a, 0x12, 0x00, 0xab, 0xcd])
        );
        assert_eq!(
            parse_mac("3e-9a-12-00-ab-cd"),
            Some([0x3e, 0x9a, 0x12, 0x00, 0xab, 0xcd])
        );
        for bad in [
            "",
            "3e:9a:12:00:ab",
            "3e:9a:12:00:ab:cd:ef",
            "3e:9a:12:00:ab:c",
            "zz:9a:12:00:ab:cd",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn start_refuses_pid_zero_and_a_missing_namespace_with_the_originals_texts() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut clients = DhcpClients::new(PathBuf::from("/nonexistent"), tx);
        assert_eq!(
            clients.start("plc", "eth0", "02:00:00:00:00:01", 0).await,
            Err("Invalid container PID: 0".into())
        );
        assert_eq!(
            clients
                .start("plc", "eth0", "02:00:00:00:00:01", 999_999_999)
                .await,
            Err("Container PID 999999999 network namespace not found".into())
        );
        assert_eq!(
            clients.start("plc", "eth0", "nope", 1).await,
            Err("Invalid mac_address: nope".into())
        );
        assert_eq!(
            clients.stop("plc", "eth0").await,
            Err("No DHCP client found for plc:eth0".into())
        );
        assert_eq!(clients.status(), json!({}));
    }
}
