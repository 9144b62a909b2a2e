//! [`DhcpClients`] behind a task of its own, so the command channel can await `start_dhcp`
//! (up to 3 s while the vNIC is not in the namespace yet) without stalling netmon's event loop:
//! [`spawn`] returns a cheap, clonable [`DhcpHandle`]; requests are served one at a time, in
//! order, by the task that owns the clients.

use std::path::PathBuf;

use netmon_proto::DhcpUpdate;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::DhcpClients;
use crate::proxy_arp::SharedBridges;

/// Requests waiting for the task (callers wait when it is full).
const QUEUE: usize = 16;
const GONE: &str = "DHCP service stopped";

enum Request {
    Start {
        container_name: String,
        vnic_name: String,
        mac_address: String,
        container_pid: u32,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Stop {
        container_name: String,
        vnic_name: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Wifi {
        container_name: String,
        vnic_name: String,
        parent: String,
        container_pid: u32,
        client_id: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Status {
        reply: oneshot::Sender<Value>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The way to the DHCP clients; clone it for every connection.
#[derive(Debug, Clone)]
pub struct DhcpHandle {
    tx: mpsc::Sender<Request>,
}

/// Starts the task owning the clients (lease files in `lease_dir`, every lease change sent to
/// `updates`, Wi-Fi leases' bridges built through `bridges`). It ends after [`DhcpHandle::shutdown`] or when every handle is dropped (then it
/// shuts the clients down too).
pub fn spawn(
    lease_dir: PathBuf,
    updates: mpsc::UnboundedSender<DhcpUpdate>,
    bridges: SharedBridges,
) -> (DhcpHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(async move {
        let mut clients = DhcpClients::new(lease_dir, updates, bridges);
        while let Some(request) = rx.recv().await {
            match request {
                Request::Start {
                    container_name,
                    vnic_name,
                    mac_address,
                    container_pid,
                    reply,
                } => {
                    let r = clients
                        .start(&container_name, &vnic_name, &mac_address, container_pid)
                        .await;
                    let _ = reply.send(r);
                }
                Request::Stop {
                    container_name,
                    vnic_name,
                    reply,
                } => {
                    let _ = reply.send(clients.stop(&container_name, &vnic_name).await);
                }
                Request::Wifi {
                    container_name,
                    vnic_name,
                    parent,
                    container_pid,
                    client_id,
                    reply,
                } => {
                    let r = clients
                        .request_wifi(
                            &container_name,
                            &vnic_name,
                            &parent,
                            container_pid,
                            &client_id,
                        )
                        .await;
                    let _ = reply.send(r);
                }
                Request::Status { reply } => {
                    let _ = reply.send(clients.status());
                }
                Request::Shutdown { reply } => {
                    clients.shutdown().await;
                    let _ = reply.send(());
                    return;
                }
            }
        }
        clients.shutdown().await;
    });
    (DhcpHandle { tx }, task)
}

impl DhcpHandle {
    /// `start_dhcp`: `Ok(message)` / `Err(error)`, the original's texts ([`DhcpClients::start`]).
    pub async fn start(
        &self,
        container_name: &str,
        vnic_name: &str,
        mac_address: &str,
        container_pid: u32,
    ) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Start {
            container_name: container_name.to_owned(),
            vnic_name: vnic_name.to_owned(),
            mac_address: mac_address.to_owned(),
            container_pid,
            reply,
        };
        self.ask(request, answer)
            .await
            .unwrap_or_else(|| Err(GONE.into()))
    }

    /// `stop_dhcp` ([`DhcpClients::stop`]).
    pub async fn stop(&self, container_name: &str, vnic_name: &str) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Stop {
            container_name: container_name.to_owned(),
            vnic_name: vnic_name.to_owned(),
            reply,
        };
        self.ask(request, answer)
            .await
            .unwrap_or_else(|| Err(GONE.into()))
    }

    /// `request_wifi_dhcp` ([`DhcpClients::request_wifi`]).
    pub async fn request_wifi(
        &self,
        container_name: &str,
        vnic_name: &str,
        parent: &str,
        container_pid: u32,
        client_id: &str,
    ) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Wifi {
            container_name: container_name.to_owned(),
            vnic_name: vnic_name.to_owned(),
            parent: parent.to_owned(),
            container_pid,
            client_id: client_id.to_owned(),
            reply,
        };
        self.ask(request, answer)
            .await
            .unwrap_or_else(|| Err(GONE.into()))
    }

    /// `get_dhcp_status`'s `status` object ([`DhcpClients::status`]); `{}` once stopped.
    pub async fn status(&self) -> Value {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Status { reply }, answer)
            .await
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()))
    }

    /// netmon is exiting: the clients end keeping their leases ([`DhcpClients::shutdown`]).
    pub async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        let _ = self.ask(Request::Shutdown { reply }, answer).await;
    }

    async fn ask<T>(&self, request: Request, answer: oneshot::Receiver<T>) -> Option<T> {
        self.tx.send(request).await.ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn the_handle_answers_as_the_clients_do_and_after_shutdown_says_so() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let (handle, task) = spawn(PathBuf::from("/nonexistent"), tx, SharedBridges::default());
        let other = handle.clone();
        assert_eq!(
            other.start("plc", "eth0", "02:00:00:00:00:01", 0).await,
            Err("Invalid container PID: 0".into())
        );
        assert_eq!(
            handle.stop("plc", "eth0").await,
            Err("No DHCP client found for plc:eth0".into())
        );
        assert_eq!(handle.status().await, json!({}));
        handle.shutdown().await;
        task.await.expect("the task ends");
        assert_eq!(
            other.start("plc", "eth0", "02:00:00:00:00:01", 1).await,
            Err(GONE.into())
        );
        assert_eq!(other.status().await, json!({}));
    }
}
