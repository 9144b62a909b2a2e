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
mod wifi;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod wifi_kernel_tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netmon_proto::{DhcpUpdate, valid_interface_name};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use client::{Client, Spec, Target};
pub use wifi::Wifi;

use crate::proxy_arp::SharedBridges;
pub use service::{DhcpHandle, spawn};

/// How long `stop_dhcp` waits for a client to release and end.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Option 61 is at most 255 bytes long.
pub const CLIENT_ID_MAX: usize = 255;
const WIFI_MISSING: &str = "Missing required parameters for WiFi DHCP";

/// The DHCP clients netmon runs, by `container:vnic`.
#[derive(Debug)]
pub struct DhcpClients {
    lease_dir: PathBuf,
    updates: mpsc::UnboundedSender<DhcpUpdate>,
    clients: BTreeMap<String, Client>,
    /// Where Wi-Fi leases become bridges (the registry the proxy-ARP commands use too).
    bridges: SharedBridges,
    /// The namespace Wi-Fi clients run in; `None`: netmon's own (the host's).
    host_netns: Option<Arc<File>>,
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
    /// Wi-Fi leases build their bridges through `bridges`.
    pub fn new(
        lease_dir: PathBuf,
        updates: mpsc::UnboundedSender<DhcpUpdate>,
        bridges: SharedBridges,
    ) -> Self {
        DhcpClients {
            lease_dir,
            updates,
            clients: BTreeMap::new(),
            bridges,
            host_netns: None,
        }
    }

    /// Wi-Fi clients run in `netns` instead of netmon's own namespace (the tests' "host").
    #[cfg(test)]
    pub fn with_host_netns(mut self, netns: File) -> Self {
        self.host_netns = Some(Arc::new(netns));
        self
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
            if existing.is_running()
                && existing.spec.pid == container_pid
                && existing.spec.target.wifi().is_none()
            {
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
            target: Target::Vnic { mac },
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

    /// `request_wifi_dhcp` (upstream-head §5.3): a client on the host's Wi-Fi `parent` with
    /// option 61 = `client_id`; its leases become the vNIC's proxy-ARP bridge into the
    /// container `container_pid`. Already running for the key: the original's answer, but a new
    /// PID (the container was restarted) gets its bridge rebuilt from the lease held at once and
    /// announced (W5/W6); a running client of another parent or client id is replaced.
    pub async fn request_wifi(
        &mut self,
        container_name: &str,
        vnic_name: &str,
        parent: &str,
        container_pid: u32,
        client_id: &str,
    ) -> Result<String, String> {
        if container_name.trim().is_empty() || vnic_name.trim().is_empty() || client_id.is_empty() {
            return Err(WIFI_MISSING.into());
        }
        if !valid_interface_name(parent) {
            return Err(format!("Invalid interface name: {parent}"));
        }
        if client_id.len() > CLIENT_ID_MAX {
            return Err(format!(
                "Invalid client_id: {} bytes, at most {CLIENT_ID_MAX}",
                client_id.len()
            ));
        }
        if container_pid == 0 {
            return Err(client::StartError::InvalidPid(0).to_string());
        }
        // The container must be there (its namespace is where the bridge goes).
        client::container_netns(container_pid).map_err(|e| e.to_string())?;
        let key = format!("{container_name}:{vnic_name}");
        if let Some(existing) = self.clients.get_mut(&key) {
            let same = existing
                .spec
                .target
                .wifi()
                .is_some_and(|w| w.parent == parent && w.client_id == client_id.as_bytes());
            if existing.is_running() && same {
                if existing.spec.pid != container_pid {
                    existing.spec.pid = container_pid;
                    if let Some(w) = existing.spec.target.wifi().cloned() {
                        let (name, ns) = (container_name.to_owned(), Arc::clone(&w.netns));
                        let built = tokio::task::spawn_blocking(move || {
                            netlink::in_netns(&ns, || Ok(w.moved(&name, container_pid)))
                        })
                        .await;
                        let bridge = match built {
                            Ok(Ok(bridge)) => bridge,
                            Ok(Err(e)) => {
                                tracing::warn!(key, "rebuilding a Wi-Fi bridge: {e}");
                                None
                            }
                            Err(e) => {
                                tracing::warn!(key, "rebuilding a Wi-Fi bridge: {e}");
                                None
                            }
                        };
                        if let (Some(bridge), Some(mut update)) =
                            (bridge, existing.status().last_update)
                        {
                            update.proxy_arp_config = Some(bridge.config());
                            existing.set_last_update(update);
                        }
                    }
                }
                // Announced again, as `start_dhcp` does: the agent asking may have missed it.
                if let Some(update) = existing.status().last_update {
                    let _ = self.updates.send(update);
                }
                return Ok("WiFi DHCP client already running".into());
            }
            if let Some(old) = self.clients.remove(&key) {
                // Another parent or client id is another lease: the old one goes back.
                old.stop(STOP_TIMEOUT).await;
            }
        }
        let netns = match &self.host_netns {
            Some(ns) => Arc::clone(ns),
            None => Arc::new(
                File::open("/proc/self/ns/net")
                    .map_err(|e| format!("Cannot open netmon's network namespace: {e}"))?,
            ),
        };
        let spec = Spec {
            container_name: container_name.to_owned(),
            vnic_name: vnic_name.to_owned(),
            target: Target::Wifi(Wifi::new(
                parent.to_owned(),
                client_id.as_bytes().to_vec(),
                container_pid,
                netns,
                self.bridges.clone(),
            )),
            pid: container_pid,
            lease_dir: self.lease_dir.clone(),
        };
        let client = Client::start(spec, self.updates.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.clients.insert(key, client);
        Ok(format!("WiFi DHCP client started on {parent}"))
    }

    /// `stop_dhcp`: releases the lease, removes it from the interface (Wi-Fi: removes its bridge)
    /// and deletes the lease file.
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
    /// "interface", "container_pid", "state"}}`, Wi-Fi clients also `"wifi": true`,
    /// `"parent_interface"` and `"bridged"`. `pid` is `null`: there is no udhcpc process.
    pub fn status(&self) -> Value {
        let map = self
            .clients
            .iter()
            .map(|(key, c)| {
                let s = c.status();
                let mut entry = json!({
                    "running": s.running,
                    "pid": null,
                    "last_ip": s.last_ip,
                    "interface": s.interface,
                    "container_pid": c.spec.pid,
                    "state": s.state,
                });
                if let Some(w) = c.spec.target.wifi() {
                    entry["wifi"] = json!(true);
                    entry["parent_interface"] = json!(w.parent);
                    entry["bridged"] = json!(w.has_bridge());
                }
                (key.clone(), entry)
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
        let mut clients =
            DhcpClients::new(PathBuf::from("/nonexistent"), tx, SharedBridges::default());
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

    #[tokio::test]
    async fn request_wifi_refuses_bad_fields_with_clear_texts() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut c = DhcpClients::new(PathBuf::from("/nonexistent"), tx, SharedBridges::default());
        let long = "x".repeat(256);
        for (container, vnic, parent, pid, id, error) in [
            ("", "eth1", "wlan0", 1, "c:eth1", WIFI_MISSING.to_owned()),
            ("c", "eth1", "wlan0", 1, "", WIFI_MISSING.to_owned()),
            (
                "c",
                "eth1",
                "wlan0; rm",
                1,
                "c:eth1",
                "Invalid interface name: wlan0; rm".to_owned(),
            ),
            (
                "c",
                "eth1",
                "wlan0",
                1,
                &long,
                "Invalid client_id: 256 bytes, at most 255".to_owned(),
            ),
            (
                "c",
                "eth1",
                "wlan0",
                0,
                "c:eth1",
                "Invalid container PID: 0".to_owned(),
            ),
            (
                "c",
                "eth1",
                "wlan0",
                999_999_999,
                "c:eth1",
                "Container PID 999999999 network namespace not found".to_owned(),
            ),
        ] {
            assert_eq!(
                c.request_wifi(container, vnic, parent, pid, id).await,
                Err(error)
            );
        }
        assert_eq!(c.status(), json!({}));
    }
}
