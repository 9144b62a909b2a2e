//! Client of the `autonomy-netmon` socket and the host interface cache it feeds.
//!
//! Owns: the connection to `<state-dir>/netmon.sock` (JSON lines, upstream §7.3–§7.5), the
//! [`InterfaceCache`] (the one owner of "what the host's interfaces look like now") and the
//! broadcast of [`NetworkChange`]s that the runtime side subscribes to for re-homing.
//!
//! Never does: act on a change (re-homing is the runtime's job), talk to netlink itself, write to
//! the socket (the protocol is one-way, netmon → agent), or read a line from a socket served by a
//! process it does not trust ([`TrustedPeers`]): whoever can write the shared volume could bind
//! `netmon.sock`, and netmon's events move PLCs between networks.
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

    /// True while the client is connected to netmon.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// True once at least one discovery has been applied.
    pub fn is_discovered(&self) -> bool {
        self.inner.discovered.load(Ordering::Relaxed)
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

/// Who may serve the netmon socket: root, the agent's own uid (a process of that uid can already
/// do anything the agent can), and one configured uid (`--netmon-uid`, for a netmon that runs
/// unprivileged). Judged by `SO_PEERCRED` of the connected socket: the uid of the process that
/// created the listening socket, which a client cannot forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedPeers {
    own: u32,
    extra: Option<u32>,
}

impl Default for TrustedPeers {
    /// Root and the agent's own uid.
    fn default() -> Self {
        Self::new(None)
    }
}

impl TrustedPeers {
    /// Root, the agent's own effective uid, and `extra` when given.
    pub fn new(extra: Option<u32>) -> Self {
        Self {
            own: nix::unistd::geteuid().as_raw(),
            extra,
        }
    }

    /// Whether a socket served by `uid` is trusted.
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own || Some(uid) == self.extra
    }

    /// `root, uid 1000 (the agent's), uid 998 (--netmon-uid)`, for the refusal message.
    fn describe(&self) -> String {
        let mut out = "root".to_owned();
        if self.own != 0 {
            out.push_str(&format!(", uid {} (the agent's)", self.own));
        }
        if let Some(uid) = self.extra.filter(|u| *u != 0 && *u != self.own) {
            out.push_str(&format!(", uid {uid} (--netmon-uid)"));
        }
        out
    }
}

/// Why a connected netmon socket is not read: who serves it, or that nobody could tell.
fn untrusted_peer(stream: &UnixStream, trusted: &TrustedPeers) -> Option<String> {
    match stream.peer_cred() {
        Ok(cred) if trusted.allows(cred.uid()) => None,
        Ok(cred) => Some(format!(
            "refusing the network monitor socket: it is served by uid {}{}, which is not trusted \
             (trusted: {}; see --netmon-uid); none of its events are used",
            cred.uid(),
            cred.pid()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
            trusted.describe()
        )),
        Err(e) => Some(format!(
            "refusing the network monitor socket: cannot tell who serves it ({e})"
        )),
    }
}

/// Spawns the listener task trusting root and the agent's own uid (see
/// [`spawn_listener_trusting`]).
pub fn spawn_listener(socket: PathBuf, cache: InterfaceCache) -> tokio::task::JoinHandle<()> {
    spawn_listener_trusting(socket, cache, TrustedPeers::default())
}

/// Spawns the listener task: connects to `socket`, reads it only when `trusted` allows the uid
/// serving it, feeds `cache`, reconnects forever with a 1 s → 5 s backoff. Abort the handle to
/// stop it.
pub fn spawn_listener_trusting(
    socket: PathBuf,
    cache: InterfaceCache,
    trusted: TrustedPeers,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run_listener(&socket, &cache, trusted).await })
}

/// The listener loop (never returns; cancel it by dropping/aborting the task).
///
/// A netmon that stays away (a stale socket file after a crash, or one that accepts and closes),
/// or a socket served by an untrusted process, must not write a WARN line every few seconds to an
/// SD card: a failure is logged at WARN when it is new and again every 10 minutes, at DEBUG in
/// between; the backoff restarts at 1 s only after a connection that lasted 5 s.
pub async fn run_listener(socket: &Path, cache: &InterfaceCache, trusted: TrustedPeers) {
    let mut delay = BACKOFF_MIN;
    let mut repeats = Repeats::default();
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => match untrusted_peer(&stream, &trusted) {
                // Dropped unread: nothing it sent reaches the cache.
                Some(text) => repeats.log(socket, &text),
                None => {
                    if repeats.is_quiet() {
                        tracing::info!(socket = %socket.display(), "connected to the network monitor");
                    } else {
                        tracing::debug!(socket = %socket.display(), "connected to the network monitor");
                    }
                    cache.set_connected(true);
                    let since = tokio::time::Instant::now();
                    let outcome = read_stream(stream, cache).await;
                    cache.set_connected(false);
                    let text = match outcome {
                        Ok(()) => "network monitor connection closed".to_owned(),
                        Err(e) => format!("network monitor connection failed: {e}"),
                    };
                    if since.elapsed() >= HEALTHY_AFTER {
                        repeats = Repeats::default();
                        delay = BACKOFF_MIN;
                    }
                    repeats.log(socket, &text);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(socket = %socket.display(), "network monitor socket not there yet");
            }
            Err(e) => repeats.log(
                socket,
                &format!("cannot connect to the network monitor: {e}"),
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// A connection to netmon that lasted this long was a real one: backoff and log suppression
/// start over.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// A failure that keeps repeating is logged at WARN again after this long.
const REMIND_AFTER: Duration = Duration::from_secs(600);

/// Tells a new failure (log at WARN) from a repeat of the last one (log at DEBUG).
#[derive(Debug, Default)]
struct Repeats {
    last: Option<(String, tokio::time::Instant)>,
}

impl Repeats {
    /// Whether `text` should be logged at WARN: it differs from the last failure, or the last
    /// WARN of it was [`REMIND_AFTER`] ago. Records it when so.
    fn is_new(&mut self, text: &str) -> bool {
        let repeat =
            matches!(&self.last, Some((t, at)) if t == text && at.elapsed() < REMIND_AFTER);
        if !repeat {
            self.last = Some((text.to_owned(), tokio::time::Instant::now()));
        }
        !repeat
    }

    /// No failure since the last healthy connection.
    fn is_quiet(&self) -> bool {
        self.last.is_none()
    }

    /// Logs `text` at WARN when [`Repeats::is_new`], else at DEBUG.
    fn log(&mut self, socket: &Path, text: &str) {
        if self.is_new(text) {
            tracing::warn!(socket = %socket.display(), "{text}");
        } else {
            tracing::debug!(socket = %socket.display(), "{text}");
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    use super::*;

    fn info(name: &str, addr: Option<(&str, &str)>, gateway: Option<&str>) -> Value {
        let addrs: Vec<Value> = addr
            .into_iter()
            .map(|(a, subnet)| json!({"address": a, "prefixlen": 24, "subnet": subnet, "network_address": subnet.split('/').next()}))
            .collect();
        json!({"interface": name, "index": 2, "operstate": "UP", "ipv4_addresses": addrs, "gateway": gateway,
               "timestamp": "2025-11-20T20:30:45.123456"})
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeating_failure_warns_once_then_again_only_after_the_reminder_period() {
        let mut r = Repeats::default();
        assert!(r.is_quiet());
        assert!(r.is_new("refused"));
        assert!(!r.is_quiet());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(5)).await;
            if r.is_new("refused") {
                panic!("a repeat within the reminder period warned again");
            }
        }
        assert!(r.is_new("closed"), "a different failure is new");
        assert!(!r.is_new("closed"));
        tokio::time::advance(REMIND_AFTER).await;
        assert!(r.is_new("closed"), "the reminder is due");
    }

    fn discovery(list: Vec<Value>) -> String {
        json!({"type": "network_discovery", "data": {"interfaces": list, "timestamp": "t"}})
            .to_string()
    }

    fn change(data: Value) -> String {
        json!({"type": "network_change", "data": data}).to_string()
    }

    fn apply(cache: &InterfaceCache, line: &str) -> Vec<NetworkChange> {
        cache.apply(decode_line(line.as_bytes()).unwrap())
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
                info("ens3", Some(("127.0.0.2", "127.0.0.0/8")), None),
                info("wlan0", Some(("10.204.2.5", "10.204.2.0/24")), None),
            ]),
        );
        assert_eq!(
            cache.host_ipv4_addresses(),
            vec!["10.204.1.5", "10.204.2.5"]
        );
    }

    #[test]
    fn decode_ignores_unknown_types_and_changes_without_a_name() {
        assert_eq!(
            decode_line(br#"{"type":"dhcp_update","data":{}}"#).unwrap(),
            NetmonEvent::Ignored
        );
        assert_eq!(
            decode_line(br#"{"success":true}"#).unwrap(),
            NetmonEvent::Ignored
        );
        assert_eq!(
            decode_line(br#"{"type":"network_change","data":{"index":3}}"#).unwrap(),
            NetmonEvent::Ignored
        );
        assert!(matches!(
            decode_line(b"{not json"),
            Err(NetEventsError::BadJson(_))
        ));
        assert!(matches!(
            decode_line(
                br#"{"type":"network_change","data":{"interface":"e","ipv4_addresses":5}}"#
            ),
            Err(NetEventsError::BadShape { .. })
        ));
        // A malformed entry in a discovery is skipped, the others kept.
        let line = discovery(vec![json!({"interface": 5}), info("eth0", None, None)]);
        match decode_line(line.as_bytes()).unwrap() {
            NetmonEvent::Discovery(list) => assert_eq!(list.len(), 1),
            other => panic!("{other:?}"),
        }
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
            feeder.apply(decode_line(change(info("eth9", None, None)).as_bytes()).unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
            feeder.apply(
                decode_line(
                    change(info("eth9", Some(("10.204.9.2", "10.204.9.0/24")), None)).as_bytes(),
                )
                .unwrap(),
            );
        });
        let got = cache
            .wait_for("eth9", Duration::from_secs(10))
            .await
            .expect("interface appears");
        assert_eq!(got.subnet(), Some("10.204.9.0/24"));
    }

    #[tokio::test]
    async fn bounded_reader_skips_overlong_lines() {
        let mut data = Vec::new();
        data.extend_from_slice(b"short\n");
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        data.extend_from_slice(b"\nafter\nlast-unterminated");
        let mut reader = BufReader::with_capacity(1024, &data[..]);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            match read_bounded_line(&mut reader, &mut line).await.unwrap() {
                LineRead::Eof => break,
                LineRead::TooLong => seen.push("<too long>".to_owned()),
                LineRead::Line => seen.push(String::from_utf8(line.clone()).unwrap()),
            }
        }
        assert_eq!(
            seen,
            vec!["short", "<too long>", "after", "last-unterminated"]
        );
    }

    /// Waits until `cond` holds (polling), failing after a generous timeout.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn listener_follows_a_real_socket_skips_bad_lines_and_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netmon.sock");
        let cache = InterfaceCache::new();
        // Start before the socket exists: the client must keep retrying.
        let task = spawn_listener(path.clone(), cache.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = UnixListener::bind(&path).unwrap();

        let (mut conn, _) = listener.accept().await.unwrap();
        let mut script = String::new();
        script.push_str(&discovery(vec![
            info(
                "eth0",
                Some(("10.204.1.5", "10.204.1.0/24")),
                Some("10.204.1.1"),
            ),
            info("eth1", Some(("10.204.2.5", "10.204.2.0/24")), None),
        ]));
        script.push('\n');
        script.push_str("this is not json\n");
        script.push_str(&"y".repeat(MAX_LINE + 1));
        script.push('\n');
        script.push_str(&change(info(
            "eth1",
            Some(("10.204.3.5", "10.204.3.0/24")),
            None,
        )));
        script.push('\n');
        conn.write_all(script.as_bytes()).await.unwrap();
        eventually("the change after the bad lines", || {
            cache
                .get("eth1")
                .and_then(|i| i.subnet().map(str::to_owned))
                .as_deref()
                == Some("10.204.3.0/24")
        })
        .await;
        assert!(cache.is_connected());
        assert_eq!(
            cache.host_ipv4_addresses(),
            vec!["10.204.1.5", "10.204.3.5"]
        );

        // netmon restarts: the client reconnects and the new discovery drops eth1.
        drop(conn);
        eventually("the client to notice the disconnect", || {
            !cache.is_connected()
        })
        .await;
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .unwrap()
            .unwrap();
        let line = discovery(vec![info(
            "eth0",
            Some(("10.204.1.5", "10.204.1.0/24")),
            Some("10.204.1.1"),
        )]) + "\n";
        conn.write_all(line.as_bytes()).await.unwrap();
        eventually("the second discovery", || cache.get("eth1").is_none()).await;
        assert_eq!(cache.list().len(), 1);
        task.abort();
    }
}
