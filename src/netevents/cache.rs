//! The host interface cache: the one owner of "what the host's interfaces look like now", fed by
//! netmon's events, and the broadcast of [`NetworkChange`]s the runtime side subscribes to for
//! re-homing.
//!
//! Protocol semantics: `network_discovery` replaces the whole cache (interfaces it no longer
//! lists are dropped, unlike the original, upstream §11 item 17); `network_change` updates one
//! interface, where `status: "removed"` deletes it and `status: "down"` / empty `ipv4_addresses`
//! keep it without addresses. Never does I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use netmon_proto::{DeviceAction, DhcpUpdate, Event, InterfaceInfo, InterfaceType, SerialDevice};
use tokio::sync::{broadcast, watch};

/// Interface-name prefixes the agent treats as virtual (upstream §12 item 3).
pub const VIRTUAL_PREFIXES: &[&str] = &[
    "lo",
    "docker",
    "br-",
    "veth",
    "virbr",
    "tailscale",
    "zt",
    "cni",
    "flannel",
    "kube-ipvs",
    "wg",
    "cilium",
    "macvtap",
    "sit",
    "can",
];

/// True when `name` starts with one of [`VIRTUAL_PREFIXES`], whatever the case (`Docker0`,
/// `VETH…`), as the original compares the lower-cased name (upstream-head §9.4).
pub fn is_virtual(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// One interface's state changed (addresses, gateway, status), appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkChange {
    pub interface: String,
    /// `None`: the interface was not known before.
    pub previous: Option<InterfaceInfo>,
    /// `None`: the interface is gone.
    pub current: Option<InterfaceInfo>,
}

impl NetworkChange {
    /// True when the first IPv4 subnet or the gateway differs between before and after: the only
    /// changes a runtime's MACVLAN attachment cares about.
    pub fn subnet_changed(&self) -> bool {
        let subnet =
            |i: &Option<InterfaceInfo>| i.as_ref().and_then(|i| i.subnet().map(str::to_owned));
        let gateway = |i: &Option<InterfaceInfo>| i.as_ref().and_then(|i| i.gateway.clone());
        subnet(&self.previous) != subnet(&self.current)
            || gateway(&self.previous) != gateway(&self.current)
    }
}

/// One IPv4 address of the host and the interface it is on; serializes as
/// `{"interface", "ip_address"}` (upstream-head §9.5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostAddress {
    pub interface: String,
    pub ip_address: String,
}

/// A parent interface a request names that the host does not have, judged from netmon's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingParent {
    /// Its position among the parents checked (the vNIC's index in a create).
    pub index: usize,
    /// The name asked for.
    pub name: String,
    /// The interfaces the host has (netmon's, virtual ones left out), sorted.
    pub host_has: Vec<String>,
}

impl std::fmt::Display for MissingParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interface {} does not exist on this host (", self.name)?;
        if self.host_has.is_empty() {
            write!(f, "it has no other network interface")?;
        } else {
            write!(f, "its interfaces: {}", self.host_has.join(", "))?;
        }
        write!(f, ")")
    }
}

/// The first of `parents` that is not among `interfaces`, a snapshot of the cache; `None` when
/// all are there, and also when `discovered` is false: before netmon's first discovery the cache
/// knows nothing, and a create then waits for the parent as it always did. Any interface netmon
/// reports counts, down or without IPv4 (a MACVLAN parent needs neither), virtual-looking names
/// included (a host bridge such as `br-lan` can be a parent); the list offered instead leaves the
/// virtual ones out.
pub fn missing_parent<'a>(
    discovered: bool,
    interfaces: &[InterfaceInfo],
    parents: impl IntoIterator<Item = &'a str>,
) -> Option<MissingParent> {
    if !discovered {
        return None;
    }
    let (index, name) = parents
        .into_iter()
        .enumerate()
        .find(|(_, p)| !interfaces.iter().any(|i| i.interface == *p))?;
    let mut host_has: Vec<String> = interfaces
        .iter()
        .filter(|i| !is_virtual(&i.interface))
        .map(|i| i.interface.clone())
        .collect();
    host_has.sort();
    host_has.dedup();
    Some(MissingParent {
        index,
        name: name.to_owned(),
        host_has,
    })
}

struct Inner {
    map: RwLock<BTreeMap<String, InterfaceInfo>>,
    changes: broadcast::Sender<NetworkChange>,
    /// Bumped on every update, so waiters can re-check.
    version: watch::Sender<u64>,
    connected: AtomicBool,
    discovered: AtomicBool,
    /// Commands to netmon, written by the listener's connection.
    commands: super::commands::NetmonCommands,
    /// Bumped on every new connection to netmon.
    connections: watch::Sender<u64>,
    /// `dhcp_update` events, for the runtime side (which persists the leases).
    dhcp: broadcast::Sender<DhcpUpdate>,
    /// The host's serial devices as netmon last reported them, keyed by node path, in the order
    /// they were first reported.
    serial: RwLock<Vec<SerialDevice>>,
    /// Serial device events, sent after `serial` is updated, for the runtime side (which makes
    /// the device nodes in its containers).
    devices: broadcast::Sender<DeviceEvent>,
    /// Lines read from netmon: discoveries, changes, other events, lines that did not decode.
    events: [AtomicU64; 4],
}

/// A serial device event, passed on after the device cache took it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A fresh enumeration (each netmon connection): the cache was replaced.
    Discovery,
    /// A device was plugged in.
    Added(SerialDevice),
    /// A device went away; the device as the cache knew it (with its by-id name) when it did.
    Removed(SerialDevice),
}

/// How many lines of each kind the agent read from netmon since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// `network_discovery` events (one per netmon connection).
    pub discovery: u64,
    /// `network_change` events.
    pub change: u64,
    /// Other well-formed events (`dhcp_update`, and those the agent does not handle).
    pub other: u64,
    /// Lines that were not a protocol message or were too long (skipped).
    pub invalid: u64,
}

/// The host interface cache: one owner, cheap to clone (all clones share the state).
#[derive(Clone)]
pub struct InterfaceCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InterfaceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceCache")
            .field("interfaces", &self.list().len())
            .finish()
    }
}

impl Default for InterfaceCache {
    fn default() -> Self {
        Self::new()
    }
}

impl InterfaceCache {
    /// An empty cache. Feed it with [`spawn_listener`](super::spawn_listener) (or [`InterfaceCache::apply`] in tests).
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(256);
        let (version, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                map: RwLock::new(BTreeMap::new()),
                changes,
                version,
                connected: AtomicBool::new(false),
                discovered: AtomicBool::new(false),
                commands: super::commands::NetmonCommands::default(),
                connections: watch::channel(0).0,
                dhcp: broadcast::channel(64).0,
                serial: RwLock::new(Vec::new()),
                devices: broadcast::channel(64).0,
                events: Default::default(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, InterfaceInfo>> {
        // A panic while holding the lock cannot leave the map half-updated (updates are
        // single inserts/removes or a swap), so a poisoned lock is still consistent.
        self.inner.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The interface's last known state.
    pub fn get(&self, iface: &str) -> Option<InterfaceInfo> {
        self.read().get(iface).cloned()
    }

    /// Every known interface, sorted by name.
    pub fn list(&self) -> Vec<InterfaceInfo> {
        self.read().values().cloned().collect()
    }

    /// The host's IPv4 addresses with their interfaces (non-virtual interfaces, no `127.*`), in
    /// interface-name order: `get_consumption_orchestrator.ip_addresses` (upstream-head §9.5).
    pub fn host_ipv4_addresses(&self) -> Vec<HostAddress> {
        self.read()
            .values()
            .filter(|i| !is_virtual(&i.interface))
            .flat_map(|i| {
                i.ipv4_addresses.iter().map(|a| HostAddress {
                    interface: i.interface.clone(),
                    ip_address: a.address.clone(),
                })
            })
            .filter(|a| !a.ip_address.starts_with("127."))
            .collect()
    }

    /// True when `iface` is a Wi-Fi port: netmon's `type`, or the original's name rule when netmon
    /// did not say or does not know the interface.
    pub fn is_wifi(&self, iface: &str) -> bool {
        match self.read().get(iface) {
            Some(info) => info.is_wifi(),
            None => InterfaceType::from_name(iface) == InterfaceType::Wifi,
        }
    }

    /// [`missing_parent`] over the cache as it is now.
    pub fn missing_parent<'a>(
        &self,
        parents: impl IntoIterator<Item = &'a str>,
    ) -> Option<MissingParent> {
        let map = self.read();
        // Read under the lock `apply` sets it under: the flag and the map agree.
        let discovered = self.is_discovered();
        let interfaces: Vec<InterfaceInfo> = map.values().cloned().collect();
        missing_parent(discovered, &interfaces, parents)
    }

    /// [`InterfaceCache::missing_parent`], giving a parent the cache does not know yet up to
    /// `timeout` to appear (netmon reports a new interface once its debounce has passed): only a
    /// parent still missing then is returned.
    pub async fn missing_parent_within(
        &self,
        parents: &[&str],
        timeout: Duration,
    ) -> Option<MissingParent> {
        // Subscribed before the first look, so an update between the two is not missed.
        let mut version = self.inner.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = self.missing_parent(parents.iter().copied())?;
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Some(missing),
            }
        }
    }

    /// Sends `command` to netmon over the listener's connection and waits for its answer
    /// (`success: false` with the original's texts when not connected or on timeout; see
    /// `commands`).
    pub async fn command(&self, command: netmon_proto::Command) -> netmon_proto::Response {
        self.inner.commands.send(command, self.is_connected()).await
    }

    /// The command channel, for the listener.
    pub(super) fn commands(&self) -> &super::commands::NetmonCommands {
        &self.inner.commands
    }

    /// True while the client is connected to netmon.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// True once at least one discovery has been applied.
    pub fn is_discovered(&self) -> bool {
        self.inner.discovered.load(Ordering::Relaxed)
    }

    /// The lines read from netmon so far, by kind.
    pub fn event_counts(&self) -> EventCounts {
        let [discovery, change, other, invalid] = self
            .inner
            .events
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed));
        EventCounts {
            discovery,
            change,
            other,
            invalid,
        }
    }

    /// Counts a line from netmon that was skipped (not a protocol message, or too long).
    pub(crate) fn count_invalid_line(&self) {
        self.inner.events[3].fetch_add(1, Ordering::Relaxed);
    }

    /// Subscribes to interface changes (sent after the cache is updated). A receiver more than
    /// 256 changes behind gets `RecvError::Lagged`: re-read [`InterfaceCache::list`] then.
    pub fn subscribe(&self) -> broadcast::Receiver<NetworkChange> {
        self.inner.changes.subscribe()
    }

    /// Waits up to `timeout` for `iface` to be known with at least one IPv4 address.
    pub async fn wait_for(&self, iface: &str, timeout: Duration) -> Option<InterfaceInfo> {
        let mut version = self.inner.version.subscribe();
        let wait = async {
            loop {
                if let Some(info) = self.get(iface).filter(InterfaceInfo::has_ipv4) {
                    return Some(info);
                }
                if version.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Applies one decoded event and broadcasts what changed. Returns the changes. The listener
    /// is the only caller in production; tests (here and in `runtime`) feed the cache with it.
    pub fn apply(&self, event: Event) -> Vec<NetworkChange> {
        let kind = match event {
            Event::Discovery(_) => 0,
            Event::Change(_) => 1,
            Event::Other
            | Event::DhcpUpdate(_)
            | Event::DeviceDiscovery(_)
            | Event::DeviceChange(..) => 2,
        };
        self.inner.events[kind].fetch_add(1, Ordering::Relaxed);
        let changes = {
            let mut map = self.inner.map.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Other => return Vec::new(),
                // Kept here (what the host has), acted on by the runtime side: passed on.
                Event::DeviceDiscovery(devices) => {
                    drop(map);
                    self.apply_devices(DeviceEvent::Discovery, Some(devices));
                    return Vec::new();
                }
                Event::DeviceChange(action, device) => {
                    drop(map);
                    self.apply_device_change(action, device);
                    return Vec::new();
                }
                // DHCP leases are the runtime's business, not the interface cache's: passed on.
                Event::DhcpUpdate(update) => {
                    // No subscriber yet (start-up) is not an error: the resync at each netmon
                    // connection asks for the leases again.
                    let _ = self.inner.dhcp.send(update);
                    return Vec::new();
                }
                Event::Discovery(list) => {
                    self.inner.discovered.store(true, Ordering::Relaxed);
                    let mut fresh = BTreeMap::new();
                    for info in list {
                        if !info.is_removed() {
                            fresh.insert(info.interface.clone(), info);
                        }
                    }
                    let old = std::mem::replace(&mut *map, fresh);
                    let mut changes = Vec::new();
                    for (name, info) in map.iter() {
                        match old.get(name) {
                            Some(prev) if prev.same_state(info) => {}
                            prev => changes.push(NetworkChange {
                                interface: name.clone(),
                                previous: prev.cloned(),
                                current: Some(info.clone()),
                            }),
                        }
                    }
                    for (name, prev) in old {
                        if !map.contains_key(&name) {
                            changes.push(NetworkChange {
                                interface: name,
                                previous: Some(prev),
                                current: None,
                            });
                        }
                    }
                    changes
                }
                Event::Change(info) => {
                    let name = info.interface.clone();
                    let previous = if info.is_removed() {
                        map.remove(&name)
                    } else {
                        map.insert(name.clone(), info)
                    };
                    let current = map.get(&name).cloned();
                    match (&previous, &current) {
                        (Some(p), Some(c)) if p.same_state(c) => Vec::new(),
                        (None, None) => Vec::new(),
                        _ => vec![NetworkChange {
                            interface: name,
                            previous,
                            current,
                        }],
                    }
                }
            }
        };
        self.inner.version.send_modify(|v| *v += 1);
        for change in &changes {
            // No subscriber is not an error: the runtime may not have subscribed yet.
            let _ = self.inner.changes.send(change.clone());
        }
        changes
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
        if connected {
            self.inner
                .connections
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The host's serial devices as netmon last reported them (devices without a by-id name
    /// included), in the order they were first reported.
    pub fn serial_devices(&self) -> Vec<SerialDevice> {
        self.inner
            .serial
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The serial device events from now on (sent after [`InterfaceCache::serial_devices`]
    /// reflects them). A receiver more than 64 behind gets `Lagged`: resync from the cache then.
    pub fn subscribe_devices(&self) -> broadcast::Receiver<DeviceEvent> {
        self.inner.devices.subscribe()
    }

    fn apply_device_change(&self, action: DeviceAction, device: SerialDevice) {
        let event = {
            let mut list = self.inner.serial.write().unwrap_or_else(|e| e.into_inner());
            match action {
                DeviceAction::Add => {
                    // Keyed by node path: a by-id-less `ttyS` port is a device too (Defect S3).
                    match list.iter_mut().find(|d| d.path == device.path) {
                        Some(d) => *d = device.clone(),
                        None => list.push(device.clone()),
                    }
                    DeviceEvent::Added(device)
                }
                DeviceAction::Remove => {
                    let at = list.iter().position(|d| {
                        d.path == device.path || (device.by_id.is_some() && d.by_id == device.by_id)
                    });
                    // The cached object knows the by-id name a bare remove report lacks.
                    DeviceEvent::Removed(at.map_or(device, |i| list.remove(i)))
                }
            }
        };
        self.apply_devices(event, None);
    }

    /// Replaces the device list (discovery) and passes the event on.
    fn apply_devices(&self, event: DeviceEvent, fresh: Option<Vec<SerialDevice>>) {
        if let Some(devices) = fresh {
            let mut list = self.inner.serial.write().unwrap_or_else(|e| e.into_inner());
            list.clear();
            for d in devices {
                if !list.iter().any(|x| x.path == d.path) {
                    list.push(d);
                }
            }
        }
        // No subscriber yet (start-up) is not an error: the runtime side resyncs from the cache
        // when it starts following.
        let _ = self.inner.devices.send(event);
    }

    /// The `dhcp_update` events netmon sends from now on.
    pub fn subscribe_dhcp(&self) -> broadcast::Receiver<DhcpUpdate> {
        self.inner.dhcp.subscribe()
    }

    /// Changes on every new connection to netmon (commands can be sent from then on): what the
    /// runtime side re-applies after a netmon restart (dedicated NICs) waits on.
    pub fn subscribe_connections(&self) -> watch::Receiver<u64> {
        self.inner.connections.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::netevents::test_lines::{change, discovery, info};

    fn apply(cache: &InterfaceCache, line: &str) -> Vec<NetworkChange> {
        cache.apply(event(line))
    }

    fn event(line: &str) -> Event {
        match netmon_proto::decode_message(line.as_bytes()).expect("a netmon line") {
            netmon_proto::Message::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn serial_devices_are_cached_by_path_with_or_without_by_id_and_passed_on() {
        use netmon_proto::{device_change_line, device_discovery_line};
        let cache = InterfaceCache::new();
        let mut rx = cache.subscribe_devices();
        let dev = |path: &str, by_id: Option<&str>| SerialDevice {
            by_id: by_id.map(str::to_owned),
            major: Some(4),
            minor: Some(64),
            ..SerialDevice::removed(path)
        };
        let s0 = dev("/dev/ttyS0", None);
        let usb = dev("/dev/ttyUSB0", Some("/dev/serial/by-id/usb-x"));
        apply(
            &cache,
            &device_discovery_line(&[s0.clone(), usb.clone()], "t"),
        );
        assert_eq!(cache.serial_devices(), vec![s0.clone(), usb.clone()]);
        assert_eq!(rx.try_recv().unwrap(), DeviceEvent::Discovery);
        // A bare remove report (netmon had no details) still names the cached device.
        apply(
            &cache,
            &device_change_line(DeviceAction::Remove, &SerialDevice::removed("/dev/ttyUSB0")),
        );
        assert_eq!(rx.try_recv().unwrap(), DeviceEvent::Removed(usb.clone()));
        assert_eq!(cache.serial_devices(), vec![s0.clone()]);
        apply(&cache, &device_change_line(DeviceAction::Add, &usb));
        apply(&cache, &device_change_line(DeviceAction::Add, &usb));
        assert_eq!(rx.try_recv().unwrap(), DeviceEvent::Added(usb.clone()));
        assert_eq!(cache.serial_devices(), vec![s0.clone(), usb.clone()]);
        // The interface cache is not touched.
        assert!(cache.list().is_empty() && !cache.is_discovered());
        apply(&cache, &device_discovery_line(&[], "t"));
        assert!(cache.serial_devices().is_empty());
    }

    #[test]
    fn discovery_fills_the_cache_and_drops_stale_interfaces() {
        let cache = InterfaceCache::new();
        let changes = apply(
            &cache,
            &discovery(vec![
                info(
                    "eth0",
                    Some(("10.204.1.5", "10.204.1.0/24")),
                    Some("10.204.1.1"),
                ),
                info("wlan0", Some(("10.204.2.5", "10.204.2.0/24")), None),
            ]),
        );
        assert_eq!(changes.len(), 2);
        assert!(cache.is_discovered());
        assert_eq!(cache.get("eth0").unwrap().subnet(), Some("10.204.1.0/24"));
        assert_eq!(
            cache.get("eth0").unwrap().gateway.as_deref(),
            Some("10.204.1.1")
        );

        let changes = apply(
            &cache,
            &discovery(vec![info(
                "eth0",
                Some(("10.204.1.5", "10.204.1.0/24")),
                Some("10.204.1.1"),
            )]),
        );
        assert_eq!(cache.list().len(), 1);
        assert!(cache.get("wlan0").is_none(), "stale interface dropped");
        assert_eq!(changes.len(), 1, "eth0 unchanged, wlan0 gone: {changes:?}");
        assert_eq!(changes[0].interface, "wlan0");
        assert!(changes[0].current.is_none());
    }

    #[test]
    fn change_updates_one_interface_and_reports_subnet_changes() {
        let cache = InterfaceCache::new();
        apply(
            &cache,
            &discovery(vec![info(
                "eth0",
                Some(("10.204.1.5", "10.204.1.0/24")),
                Some("10.204.1.1"),
            )]),
        );
        let mut rx = cache.subscribe();
        let changes = apply(
            &cache,
            &change(info(
                "eth0",
                Some(("10.204.3.5", "10.204.3.0/24")),
                Some("10.204.3.1"),
            )),
        );
        assert_eq!(changes.len(), 1);
        assert!(changes[0].subnet_changed());
        assert_eq!(rx.try_recv().unwrap(), changes[0]);

        // The same state again (new timestamp only) is not a change.
        let mut same = info(
            "eth0",
            Some(("10.204.3.5", "10.204.3.0/24")),
            Some("10.204.3.1"),
        );
        same["timestamp"] = json!("later");
        assert!(apply(&cache, &change(same)).is_empty());
        assert!(rx.try_recv().is_err());

        // A second address on the same subnet is a change but not a subnet change.
        let mut two = info(
            "eth0",
            Some(("10.204.3.5", "10.204.3.0/24")),
            Some("10.204.3.1"),
        );
        two["ipv4_addresses"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.204.3.6", "prefixlen": 24,
            "subnet": "10.204.3.0/24", "network_address": "10.204.3.0"}));
        let changes = apply(&cache, &change(two));
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].subnet_changed());
    }

    #[test]
    fn down_keeps_the_interface_without_addresses_and_removed_deletes_it() {
        let cache = InterfaceCache::new();
        apply(
            &cache,
            &discovery(vec![info(
                "eth0",
                Some(("10.204.1.5", "10.204.1.0/24")),
                None,
            )]),
        );
        let mut down = info("eth0", None, None);
        down["status"] = json!("down");
        down["operstate"] = json!("DOWN");
        let changes = apply(&cache, &change(down));
        assert!(changes[0].subnet_changed());
        let entry = cache.get("eth0").unwrap();
        assert!(!entry.has_ipv4() && entry.subnet().is_none());
        assert!(cache.host_ipv4_addresses().is_empty());

        let mut removed = info("eth0", None, None);
        removed["status"] = json!("removed");
        let changes = apply(&cache, &change(removed));
        assert_eq!(changes.len(), 1);
        assert!(changes[0].current.is_none());
        assert!(cache.get("eth0").is_none());
        // Removing an unknown interface is no change.
        let mut again = info("eth0", None, None);
        again["status"] = json!("removed");
        assert!(apply(&cache, &change(again)).is_empty());
    }

    #[test]
    fn host_addresses_skip_virtual_interfaces_and_loopback() {
        let cache = InterfaceCache::new();
        apply(
            &cache,
            &discovery(vec![
                info("eth0", Some(("10.204.1.5", "10.204.1.0/24")), None),
                info("br-1234", Some(("172.18.0.1", "172.18.0.0/16")), None),
                info("docker0", Some(("172.17.0.1", "172.17.0.0/16")), None),
                info("Tailscale0", Some(("100.64.0.1", "100.64.0.0/10")), None),
                info("ens3", Some(("127.0.0.2", "127.0.0.0/8")), None),
                info("wlan0", Some(("10.204.2.5", "10.204.2.0/24")), None),
            ]),
        );
        assert_eq!(
            serde_json::to_value(cache.host_ipv4_addresses()).unwrap(),
            json!([
                {"interface": "eth0", "ip_address": "10.204.1.5"},
                {"interface": "wlan0", "ip_address": "10.204.2.5"}
            ])
        );
    }

    #[test]
    fn a_parent_the_host_does_not_have_is_named_with_the_interfaces_it_has() {
        let cache = InterfaceCache::new();
        // Before the first discovery nothing is judged.
        assert_eq!(cache.missing_parent(["eth9"]), None);
        let mut down = info("eth1", None, None);
        down["status"] = json!("down");
        apply(
            &cache,
            &discovery(vec![
                info("wlan0", Some(("10.204.2.5", "10.204.2.0/24")), None),
                info("eth0", Some(("10.204.1.5", "10.204.1.0/24")), None),
                down,
                info("br-lan", Some(("10.204.3.5", "10.204.3.0/24")), None),
                info("docker0", Some(("172.17.0.1", "172.17.0.0/16")), None),
                info("Tailscale0", Some(("100.64.0.1", "100.64.0.0/10")), None),
            ]),
        );
        // Down, without IPv4, or a host bridge: all exist.
        assert_eq!(
            cache.missing_parent(["eth0", "eth1", "br-lan", "wlan0"]),
            None
        );
        let missing = cache
            .missing_parent(["eth0", "eth9", "eth8"])
            .expect("eth9 is missing");
        assert_eq!(
            missing,
            MissingParent {
                index: 1,
                name: "eth9".into(),
                host_has: vec!["eth0".into(), "eth1".into(), "wlan0".into()],
            }
        );
        assert_eq!(
            missing.to_string(),
            "interface eth9 does not exist on this host (its interfaces: eth0, eth1, wlan0)"
        );
        // An empty discovery is a discovery: the host has nothing to offer.
        apply(&cache, &discovery(vec![]));
        assert_eq!(
            cache
                .missing_parent(["eth0"])
                .map(|m| m.to_string())
                .as_deref(),
            Some("interface eth0 does not exist on this host (it has no other network interface)")
        );
        assert_eq!(missing_parent(false, &[], ["eth0"]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parent_that_appears_within_the_wait_is_not_missing() {
        let cache = InterfaceCache::new();
        apply(&cache, &discovery(vec![info("eth0", None, None)]));
        let feeder = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            apply(&feeder, &change(info("eth1", None, None)));
        });
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            cache
                .missing_parent_within(&["eth0", "eth1"], Duration::from_secs(3))
                .await,
            None
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        let missing = cache
            .missing_parent_within(&["eth1", "eth2"], Duration::from_secs(3))
            .await
            .expect("eth2 never appears");
        assert_eq!((missing.index, missing.name.as_str()), (1, "eth2"));
        assert_eq!(t0.elapsed(), Duration::from_millis(3500));
    }

    #[tokio::test]
    async fn wait_for_returns_once_the_interface_gets_an_address() {
        let cache = InterfaceCache::new();
        assert!(
            cache
                .wait_for("eth9", Duration::from_millis(50))
                .await
                .is_none()
        );
        let feeder = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            feeder.apply(event(&change(info("eth9", None, None))));
            tokio::time::sleep(Duration::from_millis(50)).await;
            feeder.apply(event(&change(info(
                "eth9",
                Some(("10.204.9.2", "10.204.9.0/24")),
                None,
            ))));
        });
        let got = cache
            .wait_for("eth9", Duration::from_secs(10))
            .await
            .expect("interface appears");
        assert_eq!(got.subnet(), Some("10.204.9.0/24"));
    }
}
