//! The cloud link: Engine.IO v4 / Socket.IO v5 over one mutual-TLS WebSocket, reconnecting forever.
//!
//! This module owns the connection and nothing else: it knows packets, pings, acks and backoff, not
//! topic names. Inbound events go to a [`Handler`] (the dispatch table in `topics`), each in its own
//! task; what the handler returns is sent back as the ack when the server asked for one. The
//! handler's [`Handler::on_connect`] future runs once per established connection (the heartbeat)
//! and is dropped when that connection ends, so exactly one such loop exists per connection.
//!
//! The wire codec, the Engine.IO open and the namespace connect are [`crate::sio`]'s (shared with
//! the runtime debugger bridge). Submodules: [`backoff`] (pure delay arithmetic), [`identity`]
//! (client certificate, key, agent id), [`tls`] (endpoint URL, rustls config, failure
//! classification), `credentials` (the TLS configuration kept across attempts until its files
//! change), `connect` (TCP, TLS, upgrade, open, namespace), `session` (one connection's reader
//! and writer), `inbound` (the pure decision for one inbound message), `tap` (decodes upload
//! files while their frame arrives, under the WebSocket layer), `probe` (one connection up to the
//! Engine.IO open, for `doctor`) and `reconnect` (the forever loop, [`run`]).
//! The link never exits because the cloud, the certificate or anything else is missing: only a
//! malformed `--server` URL (which no retry can fix) or the shutdown signal end [`run`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;

mod backoff;
mod connect;
mod credentials;
// `pub(crate)` for `certs`, which inspects the same files for `certs status` and `doctor`.
pub(crate) mod identity;
// `pub(crate)` only so the `fuzzing` facade can re-export the pure decision.
pub(crate) mod inbound;
mod probe;
mod reconnect;
mod session;
// `pub(crate)` only so the `fuzzing` facade can reach the tap's byte processing.
pub(crate) mod tap;
mod tls;

pub use probe::{ProbeOk, probe};
pub use reconnect::run;
pub use tls::Endpoint;

/// Inbound WebSocket messages larger than this are refused (answered with an error ack carrying the
/// request's action and `correlation_id` when they are events asking for one), unless their topic
/// allows more ([`Handler::inbound_limit`]).
pub const MAX_INBOUND_MESSAGE: usize = 1 << 20;

/// A boxed, sendable future, as the [`Handler`] methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the link calls for inbound traffic. Implemented by `topics::App`.
pub trait Handler: Send + Sync + 'static {
    /// One inbound EVENT `name` with its arguments (everything after the name in the packet's
    /// array). Runs in its own task. The returned values are the ACK's argument list, sent only when
    /// the server asked for an ack (an empty list is a valid ack).
    fn on_event(&self, name: String, args: Vec<Value>, link: Link) -> BoxFuture<Vec<Value>>;

    /// Called once the namespace `/` is connected. The future lives as long as that connection and
    /// is dropped (cancelled) when it ends.
    fn on_connect(&self, link: Link) -> BoxFuture<()>;

    /// The largest inbound message accepted for event `name`, in bytes: the decision point for
    /// per-topic limits (e.g. a larger one for uploads). The link reads messages up to 48 MiB and
    /// refuses, with an answer, those over this limit.
    fn inbound_limit(&self, name: &str) -> usize {
        let _ = name;
        MAX_INBOUND_MESSAGE
    }

    /// The answer the link sends when it refuses a message itself (too large, malformed, binary),
    /// completed by the topic layer where a topic's answers carry more than
    /// `{action, correlation_id, status, error}`.
    fn complete_refusal(&self, answer: Value) -> Value {
        answer
    }
}

/// Where and as whom the link connects (from the command line).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `--server`: `https://host[:port]`.
    pub server: String,
    /// `--ca-file`: extra trusted roots (PEM), added to the bundled web roots.
    pub ca_file: Option<PathBuf>,
    /// `--mtls-dir`: holds `client.crt` and `client.key`.
    pub mtls_dir: PathBuf,
    /// Where the link publishes the certificate it uses (and a refused replacement), for the
    /// status and the expiry watch.
    pub certificate: crate::certs::InUse,
    /// Where the link publishes whether it is up and how often it connected, for the local
    /// health view and metrics.
    pub status: LinkStatus,
}

/// Whether the link is up and how its connections went: written by the link, read by anyone
/// (cheap to clone; all clones share the counters).
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    inner: Arc<LinkCounters>,
}

#[derive(Debug, Default)]
struct LinkCounters {
    up: AtomicBool,
    connections: AtomicU64,
    failures: AtomicU64,
}

impl LinkStatus {
    /// True while namespace `/` is connected.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Connections established after the first one (each follows a lost connection or a
    /// failed attempt).
    pub fn reconnects(&self) -> u64 {
        self.inner
            .connections
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Connection attempts that failed before the namespace was connected (no certificate yet,
    /// cloud unreachable, TLS refused...).
    pub fn connect_failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn set_up(&self) {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_down(&self) {
        self.inner.up.store(false, Ordering::Relaxed);
    }

    pub(crate) fn attempt_failed(&self) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cheap, cloneable handle for emitting events on the current connection.
#[derive(Clone, Debug)]
pub struct Link {
    tx: tokio::sync::mpsc::Sender<Outbound>,
    agent_id: Arc<str>,
    /// Requests of this connection being handled: bounded, so a flood from the server cannot grow
    /// tasks and memory without limit.
    pub(crate) requests: Arc<tokio::sync::Semaphore>,
}

/// How many inbound requests one connection may have in flight; more get a "busy" error answer.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 128;

/// The connection the [`Link`] belonged to is gone.
#[derive(Debug, thiserror::Error)]
#[error("the cloud connection is closed")]
pub struct LinkClosed;

/// A packet queued for the writer task of a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// `42["event", payload]`
    Event { name: String, payload: Value },
    /// `43<id>[...args]`
    Ack { id: u64, args: Vec<Value> },
}

impl Link {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<Outbound>, agent_id: Arc<str>) -> Self {
        Self {
            tx,
            agent_id,
            requests: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
        }
    }

    /// Emits `event` with one argument. Fails only when the connection is gone.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<(), LinkClosed> {
        self.tx
            .send(Outbound::Event {
                name: event.to_owned(),
                payload,
            })
            .await
            .map_err(|_| LinkClosed)
    }

    /// The agent id (client certificate CN) this connection authenticated with.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub(crate) async fn ack(&self, id: u64, args: Vec<Value>) -> Result<(), LinkClosed> {
        self.tx
            .send(Outbound::Ack { id, args })
            .await
            .map_err(|_| LinkClosed)
    }

    /// A link whose packets land in the returned receiver: for unit tests of handlers.
    #[cfg(test)]
    pub(crate) fn for_test() -> (Self, tokio::sync::mpsc::Receiver<OutboundForTest>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Outbound>(64);
        let (ttx, trx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let Outbound::Event { name, payload } = out else {
                    continue;
                };
                if ttx.send(OutboundForTest { name, payload }).await.is_err() {
                    break;
                }
            }
        });
        (Self::new(tx, Arc::from("test-agent")), trx)
    }
}

/// An emitted event as seen by a test link.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboundForTest {
    pub name: String,
    pub payload: Value,
}

/// Everything that can stop one connection attempt. Only [`Error::BadServerUrl`] is permanent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --server URL {url:?}: {reason}")]
    BadServerUrl { url: String, reason: String },
    #[error("client identity file {} does not exist (yet): the agent waits for it", path.display())]
    IdentityMissing { path: PathBuf },
    #[error("cannot read client identity file {}: {source}", path.display())]
    IdentityUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client certificate {} is unusable: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("client key {} is unusable: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("cannot read --ca-file {}: {source}", path.display())]
    CaFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--ca-file {} is unusable: {reason}", path.display())]
    BadCaFile { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error(
        "the server certificate of {host} is not trusted (unknown issuer: it chains neither to the \
         bundled web roots nor to --ca-file): {detail}"
    )]
    ServerUntrusted { host: String, detail: String },
    #[error("the server certificate is not valid for the host name {host}: {detail}")]
    HostnameMismatch { host: String, detail: String },
    #[error(
        "the server certificate of {host} is expired or not yet valid (check the device clock): {detail}"
    )]
    ServerCertTime { host: String, detail: String },
    #[error("the server refused our client certificate (CN={agent_id}): {detail}")]
    ClientCertRefused { agent_id: String, detail: String },
    #[error("TLS handshake with {host} failed: {detail}")]
    Handshake { host: String, detail: String },
    #[error("the server refused the WebSocket upgrade: HTTP {status}{hint}")]
    UpgradeRefused { status: u16, hint: &'static str },
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    #[error("the server refused the namespace connect (CONNECT_ERROR): {0}")]
    ConnectRefused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out after {secs} s while {during}")]
    Timeout { during: &'static str, secs: u64 },
}

impl Error {
    /// No retry can fix this (a malformed `--server` URL).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::BadServerUrl { .. })
    }

    /// The client certificate or key file does not exist yet.
    pub fn is_identity_missing(&self) -> bool {
        matches!(self, Self::IdentityMissing { .. })
    }

    /// The TLS peer verification failed on either side.
    pub fn is_tls_verification(&self) -> bool {
        matches!(
            self,
            Self::ServerUntrusted { .. }
                | Self::HostnameMismatch { .. }
                | Self::ServerCertTime { .. }
                | Self::ClientCertRefused { .. }
        )
    }
}
