//! What a Wi-Fi vNIC's DHCP client (`request_wifi_dhcp`, upstream-head §5.3) has besides the
//! common client: it runs in the host's namespace on the Wi-Fi parent with the host's MAC and
//! option 61 = the vNIC's client id, so the LAN server leases one address per vNIC; the lease
//! never goes on the parent (the host keeps its own address and routes), it becomes the vNIC's
//! proxy-ARP bridge (`crate::proxy_arp`) into the container instead.
//!
//! The bridge is built from two places: the client's thread (a lease, a changed address) and
//! the clients' owner (the container was restarted: same lease, new PID, W5/W6). Both go
//! through [`Wifi`]'s state lock, then the shared bridge registry's. Blocking: call it on a
//! thread in the host's namespace.

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::proxy_arp::{Bridge, Setup, SharedBridges};

use super::machine::Lease;

/// A Wi-Fi client's settings and its bridge.
#[derive(Debug, Clone)]
pub struct Wifi {
    /// The Wi-Fi interface, by name, in `netns`.
    pub parent: String,
    /// Option 61's bytes.
    pub client_id: Vec<u8>,
    /// The namespace the client runs in: the host's (netmon's own), where the parent is.
    pub netns: Arc<File>,
    pub bridges: SharedBridges,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The container's PID now (it changes when the container restarts).
    pid: u32,
    /// The lease held, to rebuild the bridge from.
    lease: Option<Lease>,
    bridge: Option<Bridge>,
}

impl Wifi {
    pub fn new(
        parent: String,
        client_id: Vec<u8>,
        pid: u32,
        netns: Arc<File>,
        bridges: SharedBridges,
    ) -> Wifi {
        Wifi {
            parent,
            client_id,
            netns,
            bridges,
            state: Arc::new(Mutex::new(State {
                pid,
                ..State::default()
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a bridge stands for the lease held.
    pub fn has_bridge(&self) -> bool {
        self.state().bridge.is_some()
    }

    /// A lease was bound (new, renewed or changed): the bridge for it, built (or rebuilt) when
    /// `rebuild` or when there is none; the one of another address goes first. `Some` when a
    /// bridge was built now.
    pub fn bound(&self, container_name: &str, lease: &Lease, rebuild: bool) -> Option<Bridge> {
        let mut st = self.state();
        st.lease = Some(lease.clone());
        if !rebuild && st.bridge.is_some() {
            return None;
        }
        self.build(&mut st, container_name)
    }

    /// The container was restarted (a new PID): its bridge went with its namespace; built again
    /// at once from the lease held (the original waited for a new address that never came, W5/W6).
    pub fn moved(&self, container_name: &str, pid: u32) -> Option<Bridge> {
        let mut st = self.state();
        st.pid = pid;
        st.lease.as_ref()?;
        self.build(&mut st, container_name)
    }

    /// The lease is gone (released, expired, refused): so is its bridge.
    pub fn lost(&self, container_name: &str) {
        let mut st = self.state();
        st.lease = None;
        self.tear_down(&mut st, container_name);
    }

    fn build(&self, st: &mut State, container_name: &str) -> Option<Bridge> {
        let lease = st.lease.clone()?;
        if st.bridge.as_ref().is_some_and(|b| b.ip != lease.ip) {
            self.tear_down(st, container_name);
        }
        // No router: nothing to route the container through (the original sent the event
        // without a bridge too).
        let gateway = lease.gateway()?;
        let setup = Setup::parse(
            container_name,
            st.pid,
            &self.parent,
            &lease.ip.to_string(),
            &gateway.to_string(),
            &lease.prefix.to_string(),
        );
        let built = setup.and_then(|s| self.bridges.lock().setup(&s));
        match built {
            Ok(bridge) => {
                tracing::info!(
                    container = container_name,
                    ip = %lease.ip,
                    veth_host = %bridge.veth_host,
                    "proxy-ARP bridge built for a Wi-Fi lease"
                );
                st.bridge = Some(bridge.clone());
                Some(bridge)
            }
            Err(e) => {
                tracing::warn!(container = container_name, ip = %lease.ip, "proxy-ARP bridge for a Wi-Fi lease failed: {e}");
                None
            }
        }
    }

    fn tear_down(&self, st: &mut State, container_name: &str) {
        let Some(old) = st.bridge.take() else {
            return;
        };
        let r = self.bridges.lock().cleanup(
            container_name,
            Some(old.ip),
            Some(&old.parent),
            Some(&old.veth_host),
        );
        match r {
            Ok(()) => {
                tracing::info!(container = container_name, ip = %old.ip, "proxy-ARP bridge of a Wi-Fi lease removed")
            }
            Err(e) => {
                tracing::warn!(container = container_name, ip = %old.ip, "cannot remove the proxy-ARP bridge of a Wi-Fi lease: {e}")
            }
        }
    }
}
