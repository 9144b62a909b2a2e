//! Client of the `autonomy-netmon` socket and the host interface cache it feeds.
//!
//! Owns: the connection to `<state-dir>/netmon.sock` (JSON lines, upstream §7.3–§7.5), the
//! [`InterfaceCache`] (the one owner of "what the host's interfaces look like now") and the
//! broadcast of [`NetworkChange`]s that the runtime side subscribes to for re-homing.
//!
//! Never does: act on a change (re-homing is the runtime's job), talk to netlink itself, or write
//! to the socket (the protocol is one-way, netmon → agent).
//!
//! Protocol handled: `{"type":"network_discovery","data":{"interfaces":[<info>…],"timestamp"}}`
//! replaces the whole cache (interfaces it no longer lists are dropped, unlike the original,
//! upstream §11 item 17); `{"type":"network_change","data":<info>}` updates one interface, where
//! `status: "removed"` deletes it and `status: "down"` / empty `ipv4_addresses` keep it without
//! addresses. Unknown types are ignored; bad JSON and lines over 64 KiB are logged and skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};

/// Longest accepted line (bytes, without the newline).
pub const MAX_LINE: usize = 64 * 1024;

/// First and last delay between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// True when `name` starts with one of [`VIRTUAL_PREFIXES`].
pub fn is_virtual(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One IPv4 address of an interface, as netmon sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Entry {
    pub address: String,
    #[serde(default)]
    pub prefixlen: u8,
    /// Network in CIDR form with host bits cleared, e.g. `192.168.1.0/24`.
    #[serde(default)]
    pub subnet: String,
    #[serde(default)]
    pub network_address: String,
}

/// What netmon reports about one interface. Unknown keys are ignored so either side can evolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub interface: String,
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub operstate: Option<String>,
    #[serde(default)]
    pub ipv4_addresses: Vec<Ipv4Entry>,
    #[serde(default)]
    pub gateway: Option<String>,
    /// `down` or `removed` when the interface lost its link or disappeared.
    #[serde(default)]
    pub status: Option<String>,
    /// Link hardware address, when netmon sends one.
    #[serde(default, alias = "mac")]
    pub mac_address: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

impl InterfaceInfo {
    /// The subnet (CIDR) of the first IPv4 address, as the original cache kept it.
    pub fn subnet(&self) -> Option<&str> {
        self.ipv4_addresses
            .first()
            .map(|a| a.subnet.as_str())
            .filter(|s| !s.is_empty())
    }

    /// True when the interface has at least one IPv4 address.
    pub fn has_ipv4(&self) -> bool {
        !self.ipv4_addresses.is_empty()
    }

    /// Equal in everything but the timestamp.
    fn same_state(&self, other: &InterfaceInfo) -> bool {
        self.ipv4_addresses == other.ipv4_addresses
            && self.gateway == other.gateway
            && self.status == other.status
            && self.operstate == other.operstate
            && self.index == other.index
            && self.mac_address == other.mac_address
    }
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

/// A decoded netmon line.
#[derive(Debug, Clone, PartialEq)]
pub enum NetmonEvent {
    Discovery(Vec<InterfaceInfo>),
    Change(InterfaceInfo),
    /// A well-formed line of a type this agent does not handle.
    Ignored,
}

/// Why a netmon line was skipped.
#[derive(Debug, thiserror::Error)]
pub enum NetEventsError {
    #[error("netmon line is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("netmon {kind} event has an invalid shape: {source}")]
    BadShape {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("netmon line longer than {MAX_LINE} bytes skipped")]
    LineTooLong,
}

/// Decodes one line (pure; the fuzzable core of the client).
pub fn decode_line(line: &[u8]) -> Result<NetmonEvent, NetEventsError> {
    let value: Value = serde_json::from_slice(line).map_err(NetEventsError::BadJson)?;
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    match value.get("type").and_then(Value::as_str) {
        Some("network_discovery") => {
            #[derive(Deserialize)]
            struct Discovery {
                #[serde(default)]
                interfaces: Vec<Value>,
            }
            let discovery: Discovery =
                serde_json::from_value(data).map_err(|source| NetEventsError::BadShape {
                    kind: "network_discovery",
                    source,
                })?;
            // One malformed entry must not hide the others.
            let interfaces = discovery
                .interfaces
                .into_iter()
                .filter_map(|v| serde_json::from_value::<InterfaceInfo>(v).ok())
                .filter(|i| !i.interface.is_empty())
                .collect();
            Ok(NetmonEvent::Discovery(interfaces))
        }
        Some("network_change") => {
            if data
                .get("interface")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Ok(NetmonEvent::Ignored);
            }
            let info = serde_json::from_value(data).map_err(|source| NetEventsError::BadShape {
                kind: "network_change",
                source,
            })?;
            Ok(NetmonEvent::Change(info))
        }
        _ => Ok(NetmonEvent::Ignored),
    }
}

struct Inner {
    map: RwLock<BTreeMap<String, InterfaceInfo>>,
    changes: broadcast::Sender<NetworkChange>,
    /// Bumped on every update, so waiters can re-check.
    version: watch::Sender<u64>,
    connected: AtomicBool,
    discovered: AtomicBool,
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
    /// An empty cache. Feed it with [`spawn_listener`] (or [`InterfaceCache::apply`] in tests).
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

    /// The host's IPv4 addresses (non-virtual interfaces, no `127.*`), in interface-name order.
    pub fn host_ipv4_addresses(&self) -> Vec<String> {
        self.read()
            .values()
            .filter(|i| !is_virtual(&i.interface))
            .flat_map(|i| i.ipv4_addresses.iter().map(|a| a.address.clone()))
            .filter(|a| !a.starts_with("127."))
            .collect()
    }

    /// True while the client is connected to netmon.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// True once at least one discovery has been applied.
    pub fn is_discovered(&self) -> bool {
        self.inner.discovered.load(Ordering::Relaxed)
    }

    /// Subscribes to interface changes (sent after the cache is updated).
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

    /// Applies one decoded event and broadcasts what changed. Returns the changes.
    pub fn apply(&self, event: NetmonEvent) -> Vec<NetworkChange> {
        let changes = {
            let mut map = self.inner.map.write().unwrap_or_else(|e| e.into_inner());
            match event {
                NetmonEvent::Ignored => return Vec::new(),
                NetmonEvent::Discovery(list) => {
                    self.inner.discovered.store(true, Ordering::Relaxed);
                    let mut fresh = BTreeMap::new();
                    for info in list {
                        if info.status.as_deref() != Some("removed") {
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
                NetmonEvent::Change(info) => {
                    let name = info.interface.clone();
                    let previous = if info.status.as_deref() == Some("removed") {
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

    fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }
}

/// Spawns the listener task: connects to `socket`, feeds `cache`, reconnects forever with a
/// 1 s → 5 s backoff. Abort the handle to stop it.
pub fn spawn_listener(socket: PathBuf, cache: InterfaceCache) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run_listener(&socket, &cache).await })
}

/// The listener loop (never returns; cancel it by dropping/aborting the task).
pub async fn run_listener(socket: &Path, cache: &InterfaceCache) {
    let mut delay = BACKOFF_MIN;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => {
                tracing::info!(socket = %socket.display(), "connected to the network monitor");
                cache.set_connected(true);
                delay = BACKOFF_MIN;
                let outcome = read_stream(stream, cache).await;
                cache.set_connected(false);
                match outcome {
                    Ok(()) => tracing::warn!("network monitor connection closed"),
                    Err(e) => tracing::warn!(error = %e, "network monitor connection failed"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(socket = %socket.display(), "network monitor socket not there yet");
            }
            Err(e) => {
                tracing::warn!(socket = %socket.display(), error = %e, "cannot connect to the network monitor");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Reads lines until EOF (Ok) or an I/O error.
async fn read_stream(stream: UnixStream, cache: &InterfaceCache) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        match read_bounded_line(&mut reader, &mut line).await? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => tracing::warn!("{}", NetEventsError::LineTooLong),
            LineRead::Line => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match decode_line(&line) {
                    Ok(event) => {
                        let changes = cache.apply(event);
                        for c in changes {
                            tracing::info!(
                                interface = %c.interface,
                                subnet = ?c.current.as_ref().and_then(|i| i.subnet().map(str::to_owned)),
                                gateway = ?c.current.as_ref().and_then(|i| i.gateway.clone()),
                                "host interface changed"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping netmon line"),
                }
            }
        }
    }
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line into `line` without ever buffering more than [`MAX_LINE`]
/// bytes: the rest of an over-long line is read and dropped.
async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            // EOF: a final unterminated line is still a line.
            return Ok(if too_long {
                LineRead::TooLong
            } else if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(buf.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}
