//! The development cloud server: Socket.IO v5 (socketioxide) over HTTP/1.1 over mutual TLS.
//!
//! Every accepted TCP stream goes through the freeze [`Gate`], then a rustls handshake that requires
//! a client certificate chaining to the configured client CA. The client certificate's subject CN is
//! the agent's identity: it is read from the TLS session and put into every HTTP request's
//! extensions, where the Socket.IO connect handler finds it (`socket.req_parts().extensions`).
//!
//! This module owns the listener, the connection tasks and the list of connected agents. It never
//! interprets topics: it moves events and acks and reports what it saw.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, Event, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::gate::{Gate, Gated};
use crate::pki::{self, PkiPaths};
use crate::wire::{InArgs, OutArgs};

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for Socket.IO to say goodbye before it cuts connections.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown lets connections finish on their own after the close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// Largest Engine.IO message accepted from an agent (the agent itself refuses more than 1 MiB inbound;
/// what it sends, e.g. consumption series, may be larger).
const MAX_PAYLOAD: u64 = 8 * 1024 * 1024;
/// Events buffered per subscriber before a slow subscriber starts losing the oldest.
const EVENT_BUFFER: usize = 4096;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`DevCloud::local_addr`]).
    pub listen: SocketAddr,
    /// PEM server certificate (chain) and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// PEM CA that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Engine.IO ping cadence sent to clients (the agent's dead-link detection is derived from it).
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

impl ServerConfig {
    /// The usual configuration for a PKI directory made by [`pki::generate`], with Socket.IO's
    /// default ping cadence (25 s interval, 20 s timeout).
    pub fn from_pki(pki: &PkiPaths, listen: SocketAddr) -> Self {
        Self {
            listen,
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
            client_ca: pki.ca_cert.clone(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

/// One event an agent emitted.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEvent {
    /// CN of the agent's client certificate.
    pub agent_cn: String,
    /// Socket.IO session id.
    pub sid: String,
    /// Event name.
    pub name: String,
    /// Every argument, in order.
    pub args: Vec<Value>,
    #[serde(skip)]
    pub received_at: SystemTime,
}

/// What happened on the server, in order, for [`DevCloud::subscribe`].
#[derive(Debug, Clone)]
pub enum CloudEvent {
    /// An agent joined namespace `/`.
    Connected { cn: String, sid: String },
    /// An agent's Socket.IO session ended (`reason` is socketioxide's `DisconnectReason`).
    Disconnected {
        cn: String,
        sid: String,
        reason: String,
    },
    /// An agent emitted an event.
    Event(AgentEvent),
}

/// The agent identity taken from the TLS session, attached to every HTTP request of the connection.
#[derive(Debug, Clone)]
struct PeerIdentity {
    cn: String,
}

/// One connected Socket.IO session.
struct Agent {
    cn: String,
    socket: SocketRef,
}

/// State the Socket.IO handlers share with the [`DevCloud`] handle.
struct Shared {
    events: broadcast::Sender<CloudEvent>,
    /// Sessions in connection order; the newest is last.
    agents: Mutex<Vec<Agent>>,
}

impl Shared {
    fn agents(&self) -> std::sync::MutexGuard<'_, Vec<Agent>> {
        // The list stays consistent even if a holder panicked (every update is a single push/retain).
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running development cloud. Cheap to clone; every clone drives the same server.
#[derive(Clone)]
pub struct DevCloud {
    inner: Arc<Inner>,
}

struct Inner {
    io: SocketIo,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A handle dropped without shutdown() must not leave a listener behind (tests run many).
        let _ = self.stop.send(true);
        self.gate.thaw();
        if let Some(task) = lock(&self.accept_task).take() {
            task.abort();
        }
        lock(&self.conns).abort_all();
        // Upgraded websocket sessions live in socketioxide's own tasks; close them too.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let io = self.io.clone();
            rt.spawn(async move { io.close().await });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DevCloud {
    /// Loads the certificates, binds `cfg.listen` and starts serving.
    pub async fn start(cfg: ServerConfig) -> Result<DevCloud> {
        let tls = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || tls_config(&cfg))
                .await
                .map_err(|e| Error::Tls(format!("loading TLS files: {e}")))??
        };
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;

        let (svc, io) = SocketIo::builder()
            .ping_interval(cfg.ping_interval)
            .ping_timeout(cfg.ping_timeout)
            .max_payload(MAX_PAYLOAD)
            .build_with_inner_svc(NotFound);

        let shared = Arc::new(Shared {
            events: broadcast::channel(EVENT_BUFFER).0,
            agents: Mutex::new(Vec::new()),
        });
        {
            let on_connect = {
                let shared = shared.clone();
                move |socket: SocketRef| {
                    announce(socket, &shared);
                    std::future::ready(())
                }
            };
            let middleware = {
                let shared = shared.clone();
                move |socket: SocketRef| std::future::ready(register_handlers(&socket, &shared))
            };
            io.ns("/", on_connect.with(middleware));
        }

        let gate = Arc::new(Gate::default());
        let (stop, stop_rx) = watch::channel(false);
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            svc,
            gate.clone(),
            conns.clone(),
            stop_rx,
        ));
        tracing::info!(addr = %local_addr, "devcloud listening (Socket.IO over mTLS)");
        Ok(DevCloud {
            inner: Arc::new(Inner {
                io,
                shared,
                gate,
                local_addr,
                stop,
                accept_task: Mutex::new(Some(accept_task)),
                conns,
            }),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The URL an agent uses: `https://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.inner.local_addr.port())
    }

    /// Connection, disconnection and event notifications from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CloudEvent> {
        self.inner.shared.events.subscribe()
    }

    /// CNs of the connected agents, oldest session first, each once.
    pub fn connected_agents(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.inner.shared.agents().iter() {
            if !out.contains(&a.cn) {
                out.push(a.cn.clone());
            }
        }
        out
    }

    /// Waits until an agent (the one with CN `agent`, or any) is connected and returns its CN.
    pub async fn wait_for_agent(&self, agent: Option<&str>, timeout: Duration) -> Result<String> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribed before looking, so a connection between the two is not missed.
            if let Ok(cn) = self.resolve_agent(agent) {
                return Ok(cn);
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    return Err(match agent {
                        Some(cn) => Error::AgentNotConnected(cn.to_owned()),
                        None => Error::NoAgent,
                    });
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Error::NoAgent),
                Ok(_) => {}
            }
        }
    }

    /// Emits `topic` with `args` (each element one Socket.IO argument) to an agent and waits for its
    /// ack; returns every value of the ack. `agent` is a CN; `None` means the most recently
    /// connected agent.
    pub async fn emit_with_ack(
        &self,
        agent: Option<&str>,
        topic: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let socket = self.pick(agent)?;
        tracing::info!(sid = %socket.id, topic, args = %json_text(&args), "emit with ack");
        let ack = socket
            .timeout(timeout)
            .emit_with_ack::<_, InArgs>(topic, &OutArgs(&args))
            .map_err(|e| Error::Send(e.to_string()))?;
        // socketioxide enforces the timeout; the outer one only guards against a lost wake-up.
        match tokio::time::timeout(timeout + Duration::from_secs(1), ack).await {
            Err(_) | Ok(Err(socketioxide::AckError::Timeout)) => Err(Error::AckTimeout(timeout)),
            Ok(Err(e)) => Err(Error::Send(e.to_string())),
            Ok(Ok(InArgs(values))) => {
                tracing::info!(sid = %socket.id, topic, ack = %json_text(&values), "ack");
                Ok(values)
            }
        }
    }

    /// Emits `topic` with `args` to an agent without asking for an ack.
    pub fn emit(&self, agent: Option<&str>, topic: &str, args: Vec<Value>) -> Result<()> {
        let socket = self.pick(agent)?;
        tracing::info!(sid = %socket.id, topic, args = %json_text(&args), "emit");
        socket
            .emit(topic, &OutArgs(&args))
            .map_err(|e| Error::Send(e.to_string()))
    }

    /// Stops all I/O on every connection (TCP stays open): pings, pongs, acks and handshakes stall.
    /// For testing how the agent handles a server that stops answering.
    ///
    /// The server's own heartbeat still runs: after `ping_interval + ping_timeout` it ends the
    /// Socket.IO session on its side (a `Disconnected` notification, reason `HeartbeatTimeout`), yet
    /// the TCP connection stays open and silent until [`DevCloud::thaw`] or [`DevCloud::shutdown`].
    /// New connections are accepted by the kernel but their TLS handshake stalls; they too stay
    /// open and silent until thawed.
    pub fn freeze(&self) {
        tracing::info!("freezing all connections");
        self.inner.gate.freeze();
    }

    /// Undoes [`DevCloud::freeze`]: stalled I/O resumes; connections whose session already ended
    /// while frozen are closed now.
    pub fn thaw(&self) {
        tracing::info!("thawing all connections");
        self.inner.gate.thaw();
    }

    /// Whether [`DevCloud::freeze`] is in effect.
    pub fn is_frozen(&self) -> bool {
        self.inner.gate.is_frozen()
    }

    /// Sends every agent a Socket.IO DISCONNECT and keeps listening. Note that socket.io clients do
    /// not reconnect on their own after a server-side disconnect; to test reconnection use
    /// [`DevCloud::shutdown`] and start again on the same address.
    pub fn disconnect_all(&self) {
        let sockets: Vec<SocketRef> = self
            .inner
            .shared
            .agents()
            .iter()
            .map(|a| a.socket.clone())
            .collect();
        for s in sockets {
            let _ = s.disconnect();
        }
    }

    /// Graceful stop: closes the listener (the port is free when this returns), tells every agent
    /// goodbye (Socket.IO disconnect) and closes every connection. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let task = lock(&self.inner.accept_task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // A frozen server cannot say goodbye; let the data flow for the close.
        self.inner.gate.thaw();
        // Like a real cloud going down (socket.io's io.close()): the transport closes, there is no
        // Socket.IO DISCONNECT (after one, socket.io clients do not reconnect).
        if tokio::time::timeout(CLOSE_TIMEOUT, self.inner.io.close())
            .await
            .is_err()
        {
            tracing::warn!("Socket.IO close timed out; cutting connections");
        }
        let mut conns = std::mem::take(&mut *lock(&self.inner.conns));
        // Give the goodbyes a moment to reach the wire, then cut whatever is left.
        let drained = tokio::time::timeout(CLOSE_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
        // socketioxide's close does not run disconnect handlers; report the sessions it ended.
        let ended = std::mem::take(&mut *self.inner.shared.agents());
        for a in ended {
            tracing::info!(cn = %a.cn, sid = %a.socket.id, "agent disconnected (server shutdown)");
            let _ = self.inner.shared.events.send(CloudEvent::Disconnected {
                cn: a.cn,
                sid: a.socket.id.to_string(),
                reason: format!("{:?}", DisconnectReason::ClosingServer),
            });
        }
        tracing::info!(addr = %self.inner.local_addr, "devcloud stopped");
    }

    /// The CN [`DevCloud::emit_with_ack`] would talk to for `agent` (None = the most recent agent).
    pub fn resolve_agent(&self, agent: Option<&str>) -> Result<String> {
        let agents = self.inner.shared.agents();
        match agent {
            Some(cn) if agents.iter().any(|a| a.cn == cn) => Ok(cn.to_owned()),
            Some(cn) => Err(Error::AgentNotConnected(cn.to_owned())),
            None => agents.last().map(|a| a.cn.clone()).ok_or(Error::NoAgent),
        }
    }

    /// The session to talk to: the newest one of `agent`, or the newest of all.
    fn pick(&self, agent: Option<&str>) -> Result<SocketRef> {
        let agents = self.inner.shared.agents();
        let found = match agent {
            Some(cn) => agents.iter().rev().find(|a| a.cn == cn),
            None => agents.last(),
        };
        match (found, agent) {
            (Some(a), _) => Ok(a.socket.clone()),
            (None, Some(cn)) => Err(Error::AgentNotConnected(cn.to_owned())),
            (None, None) => Err(Error::NoAgent),
        }
    }
}

/// The Socket.IO service as mounted: anything that is not `/socket.io/` gets a 404.
type Svc = socketioxide::service::SocketIoService<NotFound>;

/// Answers 404 to every request outside the Socket.IO path.
#[derive(Debug, Clone)]
struct NotFound;

impl hyper::service::Service<Request<Incoming>> for NotFound {
    type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn call(&self, _req: Request<Incoming>) -> Self::Future {
        let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"not found: Socket.IO is served at /socket.io/\n",
        )));
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
        std::future::ready(Ok(resp))
    }
}

/// Compact JSON text of an argument list, for logs.
fn json_text(values: &[Value]) -> String {
    serde_json::to_string(values).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

fn tls_config(cfg: &ServerConfig) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in pki::load_certs(&cfg.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| Error::bad_pem(&cfg.client_ca, e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Tls(format!("client CA {}: {e}", cfg.client_ca.display())))?;
    let chain = pki::load_certs(&cfg.server_cert)?;
    let key = pki::load_private_key(&cfg.server_key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("server certificate/key: {e}")))?;
    // Engine.IO's websocket upgrade is HTTP/1.1 only.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    svc: Svc,
    gate: Arc<Gate>,
    conns: Arc<Mutex<JoinSet<()>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends are transient; do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = serve_connection(tcp, peer, acceptor.clone(), svc.clone(), gate.clone());
        let mut set = lock(&conns);
        // Reap finished connections so the set does not grow with every reconnect.
        while set.try_join_next().is_some() {}
        set.spawn(conn);
    }
    tracing::debug!("accept loop stopped");
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    svc: Svc,
    gate: Arc<Gate>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(Gated::new(tcp, gate)))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, "TLS handshake refused: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(pki::common_name);
    let Some(cn) = cn else {
        // The verifier demands a certificate, so this is a certificate without a usable CN.
        tracing::warn!(%peer, "client certificate has no CN; closing");
        return;
    };
    tracing::info!(%peer, %cn, "TLS client connected");
    let identity = PeerIdentity { cn: cn.clone() };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(identity.clone());
        hyper::service::Service::call(&svc, req)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await;
    match served {
        Ok(()) => tracing::debug!(%peer, %cn, "connection closed"),
        Err(e) => tracing::debug!(%peer, %cn, "connection ended: {e}"),
    }
}

/// Connect middleware: runs before socketioxide sends the CONNECT answer, so the event and
/// disconnect handlers are in place before the agent can send anything. Refuses a session without a
/// TLS identity (only possible if the service were mounted without the TLS wrapper).
///
/// The handlers do their work in the closure body, which socketioxide runs synchronously when the
/// packet arrives (only the returned future is spawned): events are published in arrival order.
fn register_handlers(socket: &SocketRef, shared: &Arc<Shared>) -> Result<(), String> {
    let Some(identity) = socket.req_parts().extensions.get::<PeerIdentity>().cloned() else {
        tracing::warn!(sid = %socket.id, "Socket.IO session without a TLS identity; refused");
        return Err("no client certificate identity".to_owned());
    };
    let cn = identity.cn;
    let sid = socket.id.to_string();
    {
        let shared = shared.clone();
        let cn = cn.clone();
        socket.on_fallback(
            move |Event(name): Event, Data(InArgs(args)): Data<InArgs>, ack: AckSender| {
                tracing::info!(%cn, event = %name, args = %json_text(&args), "event from agent");
                // An agent that asks for an ack gets an empty one (what a handler returning
                // nothing answers in python-socketio); without an ack id this does nothing.
                let _ = ack.send(&OutArgs(&[]));
                let _ = shared.events.send(CloudEvent::Event(AgentEvent {
                    agent_cn: cn,
                    sid,
                    name,
                    args,
                    received_at: SystemTime::now(),
                }));
                std::future::ready(())
            },
        );
    }
    let shared = shared.clone();
    socket.on_disconnect(move |s: SocketRef, reason: DisconnectReason| {
        let sid = s.id.to_string();
        tracing::info!(%cn, %sid, ?reason, "agent disconnected");
        let was_listed = {
            let mut agents = shared.agents();
            let before = agents.len();
            agents.retain(|a| a.socket.id != s.id);
            agents.len() != before
        };
        // Sessions removed by shutdown() were already reported.
        if was_listed {
            let _ = shared.events.send(CloudEvent::Disconnected {
                cn,
                sid,
                reason: format!("{reason:?}"),
            });
        }
        std::future::ready(())
    });
    Ok(())
}

/// Connect handler: runs right after the CONNECT answer is queued; lists and announces the agent.
fn announce(socket: SocketRef, shared: &Shared) {
    let Some(identity) = socket.req_parts().extensions.get::<PeerIdentity>() else {
        return; // refused by register_handlers
    };
    if !socket.connected() {
        return; // already gone; nothing to list
    }
    let cn = identity.cn.clone();
    let sid = socket.id.to_string();
    tracing::info!(%cn, %sid, "agent connected");
    shared.agents().push(Agent {
        cn: cn.clone(),
        socket,
    });
    let _ = shared.events.send(CloudEvent::Connected { cn, sid });
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
