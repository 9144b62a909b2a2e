//! One connection: TCP, TLS, WebSocket upgrade, Engine.IO open, namespace connect, then the reader
//! loop until the link dies or shutdown is asked.
//!
//! The reader never awaits a handler or a full queue: events run in their own tasks, pongs go
//! through a dedicated queue the writer serves first. One writer task owns the WebSocket sink; the
//! [`Link`] handed to the handler feeds it and fails with `LinkClosed` once the connection is gone.
//!
//! Bad traffic from the server (malformed, binary, oversized or foreign-namespace packets) is
//! answered when it asked for an answer, and logged through a [`Throttle`] each: one WARN line per
//! minute with a count, so a misbehaving server cannot fill the SD card.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use crate::logging::Throttle;

use super::identity::Identity;
use super::packet::{self, DEFAULT_NSP, EioPacket, SioPacket};
use super::tls::{self, Endpoint, TlsFailure};
use super::{Error, Handler, Link, MAX_INBOUND_MESSAGE, MAX_REQUESTS_IN_FLIGHT, Outbound};

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Each connection step (TCP, TLS, upgrade, open, namespace connect) must finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A single WebSocket write must finish within this, or the connection is considered dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest message read at all. Messages over the limit of their topic
/// ([`Handler::inbound_limit`], [`MAX_INBOUND_MESSAGE`] unless a topic allows more) and up to this
/// size are read and refused with an answer naming the request; larger ones make the WebSocket
/// layer drop the connection (it cannot skip a message). 48 MiB leaves room for a topic limit of
/// 32 MiB (a program upload, base64-encoded) plus its envelope. Such a message is held in memory
/// only while it is read and refused.
const HARD_INBOUND_LIMIT: usize = 48 << 20;
/// Capacity of the Link's queue.
const OUT_QUEUE: usize = 64;

/// How a connection that reached namespace connect ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown was asked; `41` and a close frame were sent.
    Shutdown,
    /// The connection was lost; `reason` is for the log line.
    Lost { reason: String },
}

/// What a successful connect yields besides the session end.
pub(crate) struct Connected {
    pub(crate) since: Instant,
}

/// The per-connection throttles of the warnings about bad traffic from the server.
#[derive(Default)]
struct Noise {
    malformed: Throttle,
    binary: Throttle,
    oversized: Throttle,
    foreign_nsp: Throttle,
}

impl Noise {
    fn of(&mut self, kind: Noisy) -> &mut Throttle {
        match kind {
            Noisy::Malformed => &mut self.malformed,
            Noisy::Binary => &mut self.binary,
            Noisy::Oversized => &mut self.oversized,
            Noisy::ForeignNamespace => &mut self.foreign_nsp,
        }
    }

    /// Logs the quiet counts whose minute has ended (or all of them, with `force`).
    fn flush(&mut self, force: bool) {
        for (t, what) in [
            (&mut self.malformed, "malformed packets"),
            (&mut self.binary, "binary packets"),
            (&mut self.oversized, "oversized messages"),
            (&mut self.foreign_nsp, "events for other namespaces"),
        ] {
            if let Some(n) = t.flush(force) {
                warn!("cloud: refused {n} more {what} from the server in the last minute");
            }
        }
    }
}

/// Logs `line` at WARN when the throttle allows it (with the count of the quiet ones since the
/// last line), else at DEBUG.
fn warn_throttled(throttle: &mut Throttle, line: std::fmt::Arguments<'_>) {
    match throttle.hit() {
        Some(0) => warn!("{line}"),
        Some(n) => warn!("{line} (and {n} more like it in the last minute)"),
        None => debug!("{line}"),
    }
}

/// Connects and runs one session to its end. `on_connected` is called once namespace `/` is
/// connected (for the transition log and backoff bookkeeping).
pub(crate) async fn run_session<F>(
    endpoint: &Endpoint,
    identity: &Identity,
    config: Arc<rustls::ClientConfig>,
    handler: &Arc<dyn Handler>,
    shutdown: &mut Pin<&mut F>,
    connected: &mut Option<Connected>,
) -> Result<SessionEnd, Error>
where
    F: Future<Output = ()>,
{
    let (mut ws, open, resumed) = tokio::select! {
        r = open(endpoint, identity, config) => r?,
        () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
    };
    let ping_window =
        Duration::from_millis(open.ping_interval_ms.saturating_add(open.ping_timeout_ms));
    let mut deadline = Instant::now() + ping_window;

    // Namespace connect. The server may ping before answering; answer those inline (the writer
    // does not exist yet).
    send_text(
        &mut ws,
        packet::encode_eio(&EioPacket::Message(packet::encode_sio(
            &SioPacket::Connect {
                nsp: DEFAULT_NSP.into(),
                data: None,
            },
        ))),
    )
    .await?;
    let ns_deadline = Instant::now() + STEP_TIMEOUT;
    let sid = loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = tokio::time::sleep_until(ns_deadline) => {
                return Err(Error::Timeout { during: "waiting for the namespace connect reply", secs: STEP_TIMEOUT.as_secs() });
            }
            // The ping cadence applies from the open packet on: a server that goes silent
            // before answering the connect is as dead as one that goes silent later.
            () = tokio::time::sleep_until(deadline) => {
                return Err(Error::Protocol(format!(
                    "no ping from the server for {:.1} s (pingInterval + pingTimeout) while waiting for the namespace connect reply",
                    ping_window.as_secs_f64()
                )));
            }
            () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
        };
        let text = match msg {
            None => {
                return Err(Error::WebSocket(
                    "the server closed the connection before the namespace connect".into(),
                ));
            }
            Some(Err(e)) => return Err(Error::WebSocket(e.to_string())),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(Error::WebSocket(format!(
                    "the server closed the WebSocket during connect: {frame:?}"
                )));
            }
            Some(Ok(_)) => continue,
        };
        match packet::decode_eio(text.as_str()) {
            Ok(EioPacket::Ping(p)) => {
                deadline = Instant::now() + ping_window;
                send_text(&mut ws, packet::encode_eio(&EioPacket::Pong(p))).await?;
            }
            Ok(EioPacket::Message(m)) => match packet::decode_sio(&m) {
                Ok(SioPacket::Connect { nsp, data }) if nsp == DEFAULT_NSP => {
                    break data
                        .as_ref()
                        .and_then(|d| d.get("sid"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                }
                Ok(SioPacket::ConnectError { data, .. }) => {
                    let msg = data
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| data.to_string(), str::to_owned);
                    return Err(Error::ConnectRefused(msg));
                }
                Ok(other) => debug!(
                    kind = other.kind(),
                    "cloud: ignoring a packet before the namespace connect"
                ),
                Err(e) => {
                    return Err(Error::Protocol(format!(
                        "malformed Socket.IO packet during connect: {e}"
                    )));
                }
            },
            Ok(EioPacket::Close) => {
                return Err(Error::WebSocket(
                    "the server closed the Engine.IO session during connect".into(),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "malformed Engine.IO packet during connect: {e}"
                )));
            }
        }
    };

    let since = Instant::now();
    *connected = Some(Connected { since });
    info!(
        sid = %sid,
        "connected as {} to {} (ping every {} ms, timeout {} ms; {})",
        identity.agent_id,
        endpoint.ws_url,
        open.ping_interval_ms,
        open.ping_timeout_ms,
        if resumed {
            "TLS session resumed"
        } else {
            "full TLS handshake"
        }
    );

    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Outbound>(OUT_QUEUE);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Control>(8);
    let max_out = usize::try_from(open.max_payload).unwrap_or(usize::MAX);
    let mut writer = tokio::spawn(writer(sink, out_rx, ctl_rx, max_out));
    let link = Link::new(out_tx, Arc::from(identity.agent_id.as_str()));
    let heartbeat = tokio::spawn(handler.on_connect(link.clone()));
    // Aborts the per-connection tasks however this function ends.
    let _guard = AbortOnDrop(vec![heartbeat.abort_handle(), writer.abort_handle()]);
    let mut noise = Noise::default();

    let end = loop {
        let msg = tokio::select! {
            biased;
            () = shutdown.as_mut() => {
                let _ = ctl_tx.try_send(Control::Close);
                let _ = timeout(CLOSE_TIMEOUT, &mut writer).await;
                break SessionEnd::Shutdown;
            }
            () = tokio::time::sleep_until(deadline) => break SessionEnd::Lost {
                reason: format!(
                    "no ping from the server for {:.1} s (pingInterval + pingTimeout): the link is dead",
                    ping_window.as_secs_f64()
                ),
            },
            r = &mut writer => break SessionEnd::Lost {
                reason: match r {
                    Ok(reason) => reason,
                    Err(e) => format!("the writer task ended: {e}"),
                },
            },
            m = stream.next() => m,
        };
        let text = match msg {
            None => {
                break SessionEnd::Lost {
                    reason: "the server closed the connection".into(),
                };
            }
            Some(Err(e)) => {
                break SessionEnd::Lost {
                    reason: describe_ws_error(&e),
                };
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => {
                warn_throttled(
                    &mut noise.binary,
                    format_args!(
                        "cloud: refused a binary WebSocket frame of {} bytes: binary packets are not supported",
                        b.len()
                    ),
                );
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                break SessionEnd::Lost {
                    reason: format!(
                        "the server closed the WebSocket ({})",
                        close_reason(frame.as_ref())
                    ),
                };
            }
            Some(Ok(_)) => continue, // WebSocket ping/pong frames: tungstenite answers pings itself.
        };
        match inbound(text.as_str(), MAX_INBOUND_MESSAGE, |event| {
            handler.inbound_limit(event)
        }) {
            Inbound::Pong(pong) => {
                deadline = Instant::now() + ping_window;
                // The server's pings pace the summaries of throttled warnings.
                noise.flush(false);
                // A full control queue already holds pongs: one more would add nothing.
                let _ = ctl_tx.try_send(Control::Text(pong));
            }
            Inbound::Dispatch { name, args, id } => {
                dispatch(handler.clone(), link.clone(), name, args, id)
            }
            Inbound::Refused {
                noise: kind,
                warning,
                answer,
            } => {
                warn_throttled(noise.of(kind), format_args!("{warning}"));
                if let Some((id, answer)) = answer {
                    let link = link.clone();
                    tokio::spawn(async move {
                        let _ = link.ack(id, vec![answer]).await;
                    });
                }
            }
            Inbound::End(reason) => break SessionEnd::Lost { reason },
            Inbound::Ignore => {}
        }
    };
    noise.flush(true);
    Ok(end)
}

/// Resolves `host` and tries its addresses in order, each with its own share of
/// [`STEP_TIMEOUT`] (at least [`MIN_ADDRESS_TIMEOUT`]): one timeout over all of them would let a
/// silently dropped first address (IPv6 configured but not routed) use it all up, every attempt.
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, Error> {
    let addr = format!("{host}:{port}");
    let unreachable = |reason: String| Error::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let addrs: Vec<std::net::SocketAddr> =
        match timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Err(_) => {
                return Err(Error::Timeout {
                    during: "resolving the server's name",
                    secs: STEP_TIMEOUT.as_secs(),
                });
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(addrs)) => addrs.collect(),
        };
    let count = u32::try_from(addrs.len()).unwrap_or(u32::MAX).max(1);
    let each = (STEP_TIMEOUT / count).max(MIN_ADDRESS_TIMEOUT);
    let mut last = String::from("the name resolved to no address");
    for a in addrs {
        match timeout(each, TcpStream::connect(a)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: no answer within {} ms", each.as_millis()),
        }
    }
    Err(unreachable(last))
}

/// The least time one resolved address gets to accept the TCP connection.
const MIN_ADDRESS_TIMEOUT: Duration = Duration::from_secs(3);

/// TCP, TLS and the WebSocket upgrade, then the Engine.IO open packet. Also says whether the TLS
/// session was resumed (a reused configuration offers the session of the previous connection).
async fn open(
    endpoint: &Endpoint,
    identity: &Identity,
    config: Arc<rustls::ClientConfig>,
) -> Result<(Ws, packet::OpenInfo, bool), Error> {
    let tcp = connect_tcp(&endpoint.host, endpoint.port).await?;
    let _ = tcp.set_nodelay(true);

    let server_name = endpoint.server_name()?;
    let tls = timeout(
        STEP_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| Error::Timeout {
        during: "the TLS handshake",
        secs: STEP_TIMEOUT.as_secs(),
    })?
    .map_err(|e| tls_error(&e, false, endpoint, identity))?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);

    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(HARD_INBOUND_LIMIT))
        .max_frame_size(Some(HARD_INBOUND_LIMIT))
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut ws, _response) = timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(endpoint.ws_url.as_str(), tls, Some(ws_config)),
    )
    .await
    .map_err(|_| Error::Timeout {
        during: "the WebSocket upgrade",
        secs: STEP_TIMEOUT.as_secs(),
    })?
    .map_err(|e| match e {
        tungstenite::Error::Io(io) => tls_error(&io, true, endpoint, identity),
        tungstenite::Error::Tls(t) => Error::Handshake {
            host: endpoint.host.clone(),
            detail: t.to_string(),
        },
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            // What TLS-terminating proxies answer when the client certificate is missing or bad.
            let hint = if matches!(status, 400 | 401 | 403 | 495 | 496) {
                " (a proxy in front of the cloud may have refused the client certificate)"
            } else {
                ""
            };
            Error::UpgradeRefused { status, hint }
        }
        // A clean close right after the TLS handshake, before any HTTP answer.
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
            Error::ClientCertRefused {
                agent_id: identity.agent_id.clone(),
                detail: "the server closed the connection during the WebSocket upgrade".into(),
            }
        }
        other => Error::WebSocket(format!("the WebSocket upgrade failed: {other}")),
    })?;

    let first = timeout(STEP_TIMEOUT, ws.next())
        .await
        .map_err(|_| Error::Timeout {
            during: "waiting for the Engine.IO open packet",
            secs: STEP_TIMEOUT.as_secs(),
        })?;
    let open = match first {
        Some(Ok(Message::Text(t))) => match packet::decode_eio(t.as_str()) {
            Ok(EioPacket::Open(o)) => o,
            Ok(_) => {
                return Err(Error::Protocol(
                    "the server's first packet was not an Engine.IO open".into(),
                ));
            }
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "invalid Engine.IO open packet: {e}"
                )));
            }
        },
        Some(Ok(other)) => {
            return Err(Error::Protocol(format!(
                "unexpected first WebSocket message: {other:?}"
            )));
        }
        Some(Err(tungstenite::Error::Io(io))) => {
            return Err(tls_error(&io, true, endpoint, identity));
        }
        Some(Err(e)) => return Err(Error::WebSocket(e.to_string())),
        None => {
            return Err(Error::ClientCertRefused {
                agent_id: identity.agent_id.clone(),
                detail: "the server closed the connection right after the WebSocket upgrade".into(),
            });
        }
    };
    Ok((ws, open, resumed))
}

fn tls_error(
    e: &std::io::Error,
    after_handshake: bool,
    endpoint: &Endpoint,
    identity: &Identity,
) -> Error {
    let host = endpoint.host.clone();
    let detail = e.to_string();
    match tls::classify_tls(e, after_handshake) {
        TlsFailure::ServerUntrusted => Error::ServerUntrusted { host, detail },
        TlsFailure::HostnameMismatch => Error::HostnameMismatch { host, detail },
        TlsFailure::ServerCertTime => Error::ServerCertTime { host, detail },
        TlsFailure::ClientCertRefused => Error::ClientCertRefused {
            agent_id: identity.agent_id.clone(),
            detail,
        },
        TlsFailure::Other if after_handshake => {
            Error::WebSocket(format!("the WebSocket upgrade failed: {detail}"))
        }
        TlsFailure::Other => Error::Handshake { host, detail },
    }
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), Error> {
    match timeout(WRITE_TIMEOUT, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::WebSocket(e.to_string())),
        Err(_) => Err(Error::Timeout {
            during: "writing to the WebSocket",
            secs: WRITE_TIMEOUT.as_secs(),
        }),
    }
}

/// What one inbound WebSocket text message of an established session calls for. Decided by
/// [`inbound`], a pure function (no I/O, no logging) that the fuzzers feed directly; the reader loop
/// performs the effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Send this pong text (the answer to an Engine.IO ping) and restart the ping deadline.
    Pong(String),
    /// Run the handler for event `name`; ack with its answer when `id` is set.
    Dispatch {
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
        /// The ack id, when the server asked for an answer.
        id: Option<u64>,
    },
    /// Refused: log `warning` (throttled per kind of noise) and send `answer` to the ack id when
    /// the refused event asked for one.
    Refused {
        /// Which throttle the warning goes through.
        noise: Noisy,
        /// The log line.
        warning: String,
        /// `(ack id, error answer)`.
        answer: Option<(u64, Value)>,
    },
    /// The server ended the session.
    End(String),
    /// Nothing to do (a no-op, a pong, a packet the agent has no use for).
    Ignore,
}

/// The kinds of refused input whose warnings are throttled separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noisy {
    /// Does not decode.
    Malformed,
    /// A binary packet (not supported).
    Binary,
    /// Over its size limit.
    Oversized,
    /// An event for a namespace the agent did not join.
    ForeignNamespace,
}

/// Decides what `text` calls for. A message over `limit` (the link's, [`MAX_INBOUND_MESSAGE`]) is
/// refused without being decoded unless it is an event whose topic allows its size
/// (`limit_of(event name)`, see [`Handler::inbound_limit`]); a refused event that asked for an ack
/// is answered with an error carrying its action and `correlation_id`, read from the first bytes.
pub fn inbound(text: &str, limit: usize, limit_of: impl Fn(&str) -> usize) -> Inbound {
    if text.len() > limit
        && let Some(refusal) = refuse_oversized(text, limit, &limit_of)
    {
        return refusal;
    }
    match packet::decode_eio(text) {
        Ok(EioPacket::Ping(p)) => Inbound::Pong(packet::encode_eio(&EioPacket::Pong(p))),
        Ok(EioPacket::Message(m)) => on_message(&m),
        Ok(EioPacket::Close) => Inbound::End("the server closed the Engine.IO session".into()),
        Ok(EioPacket::Noop | EioPacket::Pong(_) | EioPacket::Open(_) | EioPacket::Upgrade) => {
            Inbound::Ignore
        }
        Err(e) => Inbound::Refused {
            noise: Noisy::Malformed,
            warning: format!("cloud: ignoring a malformed Engine.IO packet: {e}"),
            answer: None,
        },
    }
}

/// Decides what one Socket.IO packet (the payload of an Engine.IO message) calls for.
fn on_message(text: &str) -> Inbound {
    match packet::decode_sio(text) {
        Ok(SioPacket::Event {
            nsp,
            id,
            name,
            args,
        }) => {
            if nsp != DEFAULT_NSP {
                return Inbound::Refused {
                    noise: Noisy::ForeignNamespace,
                    warning: format!(
                        "cloud: ignoring an event {:?} for namespace {:?}, which the agent did not join",
                        clip(&name),
                        clip(&nsp)
                    ),
                    answer: None,
                };
            }
            Inbound::Dispatch { name, args, id }
        }
        Ok(SioPacket::Disconnect { nsp }) if nsp == DEFAULT_NSP => {
            Inbound::End("the server disconnected us from namespace / (DISCONNECT)".into())
        }
        Ok(SioPacket::ConnectError { data, .. }) => {
            Inbound::End(format!("CONNECT_ERROR from the server: {data}"))
        }
        Ok(SioPacket::Binary { ack, nsp, id, .. }) => {
            let name = packet::decode_sio_header(text)
                .ok()
                .and_then(|h| packet::peek_event_name(h.payload));
            let warning = format!(
                "cloud: refused a binary {} packet (event {}, ack id {id:?}, namespace {}): binary payloads are not supported",
                if ack { "ACK" } else { "EVENT" },
                clip(name.as_deref().unwrap_or("?")),
                clip(&nsp),
            );
            let answer = match (ack, id) {
                (false, Some(id)) => Some((
                    id,
                    error_payload(name, "binary payloads are not supported".into()),
                )),
                _ => None,
            };
            Inbound::Refused {
                noise: Noisy::Binary,
                warning,
                answer,
            }
        }
        Ok(_) => Inbound::Ignore,
        Err(e) => {
            let answer = packet::decode_sio_header(text)
                .ok()
                .filter(|h| h.kind == '2')
                .and_then(|h| {
                    let id = h.id?;
                    let peek = packet::peek_request(h.payload);
                    let mut answer = error_payload(peek.event, format!("malformed packet: {e}"));
                    if let Some(cid) = peek.correlation_id {
                        answer["correlation_id"] = cid;
                    }
                    Some((id, answer))
                });
            Inbound::Refused {
                noise: Noisy::Malformed,
                warning: format!("cloud: refused a malformed Socket.IO packet: {e}"),
                answer,
            }
        }
    }
}

/// Runs the handler for one event in its own task and sends its ack when one was asked for.
fn dispatch(
    handler: Arc<dyn Handler>,
    link: Link,
    name: String,
    args: Vec<Value>,
    id: Option<u64>,
) {
    debug!(event = %name, ack_id = ?id, "cloud: event received");
    let Ok(permit) = Arc::clone(&link.requests).try_acquire_owned() else {
        warn!(event = %name, "cloud: {MAX_REQUESTS_IN_FLIGHT} requests already in flight; refusing this one");
        if let Some(id) = id {
            let mut answer = error_payload(
                Some(name),
                format!(
                    "the agent is busy: {MAX_REQUESTS_IN_FLIGHT} requests are already in flight; try again later"
                ),
            );
            // Echo the request's correlation id when it has one (spec §2 error shape).
            if let Some(cid) = args.first().and_then(|a| a.get("correlation_id")) {
                answer["correlation_id"] = cid.clone();
            }
            let link = link.clone();
            tokio::spawn(async move {
                let _ = link.ack(id, vec![answer]).await;
            });
        }
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        // Release builds abort on a panic (see `main`), so there is nothing to catch here.
        let reply = handler.on_event(name.clone(), args, link.clone()).await;
        if let Some(id) = id
            && link.ack(id, reply).await.is_err()
        {
            debug!(event = %name, ack_id = id, "cloud: the connection closed before the ack could be sent");
        }
    });
}

fn error_payload(action: Option<String>, error: String) -> Value {
    json!({ "action": action, "correlation_id": null, "status": "error", "error": error })
}

/// A message over the link's limit: its refusal, or `None` when it is an event whose topic
/// allows its size. Only the first bytes are read (`packet::peek_request`), never the whole message.
fn refuse_oversized(
    text: &str,
    base_limit: usize,
    limit_of: &impl Fn(&str) -> usize,
) -> Option<Inbound> {
    let bytes = text.len();
    let event = text
        .strip_prefix('4')
        .and_then(|m| packet::decode_sio_header(m).ok())
        .filter(|h| h.kind == '2');
    let Some(h) = event else {
        return Some(Inbound::Refused {
            noise: Noisy::Oversized,
            warning: format!(
                "cloud: refused an inbound message of {bytes} bytes (limit {base_limit} bytes)"
            ),
            answer: None,
        });
    };
    let peek = packet::peek_request(h.payload);
    let limit = peek.event.as_deref().map_or(base_limit, limit_of);
    if bytes <= limit {
        return None;
    }
    let warning = format!(
        "cloud: refused an inbound event {:?} of {bytes} bytes (limit {limit} bytes; ack id {:?}, correlation_id {})",
        clip(peek.event.as_deref().unwrap_or("?")),
        h.id,
        peek.correlation_id
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |v| clip(&v.to_string()))
    );
    let answer = h.id.map(|id| {
        let mut answer = error_payload(
            peek.event,
            format!("message too large: {bytes} bytes (limit {limit} bytes)"),
        );
        if let Some(cid) = peek.correlation_id {
            answer["correlation_id"] = cid;
        }
        (id, answer)
    });
    Some(Inbound::Refused {
        noise: Noisy::Oversized,
        warning,
        answer,
    })
}

/// At most 64 characters of `text`, for a log line: what is read from an oversized message may be
/// large itself.
fn clip(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

fn describe_ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Capacity(c) => format!(
            "refused an inbound message over {HARD_INBOUND_LIMIT} bytes ({c}); the connection cannot continue after it"
        ),
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection without a goodbye".into()
        }
        other => format!("WebSocket error: {other}"),
    }
}

fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => format!("code {}", u16::from(f.code)),
        Some(f) => format!("code {}: {}", u16::from(f.code), f.reason),
        None => "no close code".into(),
    }
}

enum Control {
    /// Pre-encoded Engine.IO text (pongs).
    Text(String),
    /// Say goodbye (`41`), close the WebSocket, stop.
    Close,
}

/// The one task that writes to a connection. Returns why it stopped (only meaningful on failure).
async fn writer(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut out: mpsc::Receiver<Outbound>,
    mut ctl: mpsc::Receiver<Control>,
    max_out: usize,
) -> String {
    loop {
        let text = tokio::select! {
            biased;
            c = ctl.recv() => match c {
                Some(Control::Text(t)) => t,
                Some(Control::Close) | None => {
                    let bye = packet::encode_eio(&EioPacket::Message(packet::encode_sio(&SioPacket::Disconnect { nsp: DEFAULT_NSP.into() })));
                    let _ = timeout(CLOSE_TIMEOUT, async {
                        let _ = sink.send(Message::text(bye)).await;
                        let _ = sink.close().await;
                    })
                    .await;
                    return "closed by the agent".into();
                }
            },
            o = out.recv() => match o {
                Some(o) => match encode_outbound(o, max_out) {
                    Some(text) => text,
                    None => continue,
                },
                // Unreachable while the session holds a Link clone; harmless otherwise.
                None => std::future::pending().await,
            },
        };
        match timeout(WRITE_TIMEOUT, sink.send(Message::text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("write failed: {e}"),
            Err(_) => {
                return format!(
                    "a write did not finish within {} s",
                    WRITE_TIMEOUT.as_secs()
                );
            }
        }
    }
}

/// Encodes a queued packet. The server closes the session on a message over its `maxPayload`
/// (from the open packet; 0 means no limit), so such a message is not sent: an event is dropped
/// and an ack is replaced by an error ack, both with a warning.
fn encode_outbound(o: Outbound, max_payload: usize) -> Option<String> {
    let encode = |sio: SioPacket| packet::encode_eio(&EioPacket::Message(packet::encode_sio(&sio)));
    let nsp = || DEFAULT_NSP.to_owned();
    let (text, ack_id) = match o {
        Outbound::Event { name, payload } => {
            let text = encode(SioPacket::Event {
                nsp: nsp(),
                id: None,
                name: name.clone(),
                args: vec![payload],
            });
            if max_payload > 0 && text.len() > max_payload {
                warn!(
                    event = %name,
                    "cloud: not sending a {} byte event over the server's limit of {max_payload} bytes",
                    text.len()
                );
                return None;
            }
            (text, None)
        }
        Outbound::Ack { id, args } => {
            // What the error answer must echo if this one turns out too large (spec §2: every
            // error answer carries the request's action and correlation id).
            let echo: Map<String, Value> = args
                .first()
                .and_then(Value::as_object)
                .map(|answer| {
                    ["action", "correlation_id"]
                        .iter()
                        .filter_map(|k| Some(((*k).to_owned(), answer.get(*k)?.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let text = encode(SioPacket::Ack {
                nsp: nsp(),
                id,
                args,
            });
            (text, Some((id, echo)))
        }
    };
    match ack_id {
        Some((id, mut error)) if max_payload > 0 && text.len() > max_payload => {
            warn!(
                ack_id = id,
                "cloud: an answer of {} bytes is over the server's limit of {max_payload} bytes; sending an error instead",
                text.len()
            );
            error.insert("status".to_owned(), json!("error"));
            error.insert(
                "error".to_owned(),
                json!(format!(
                    "answer too large: {} bytes (server limit {max_payload} bytes)",
                    text.len()
                )),
            );
            Some(encode(SioPacket::Ack {
                nsp: nsp(),
                id,
                args: vec![Value::Object(error)],
            }))
        }
        _ => Some(text),
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_messages_are_decided_without_io_and_limits_come_first() {
        let any = |_: &str| 100;
        assert_eq!(inbound("2probe", 100, any), Inbound::Pong("3probe".into()));
        assert_eq!(
            inbound(r#"427["x",{"a":1}]"#, 100, any),
            Inbound::Dispatch {
                name: "x".into(),
                args: vec![json!({"a": 1})],
                id: Some(7)
            }
        );
        // Over the limit: refused unread, with an error ack carrying the correlation id.
        let big = r#"4212["create_new_runtime",{"correlation_id":9,"pad":"xxxxxxxx"}]"#;
        match inbound(big, 20, |_| 20) {
            Inbound::Refused {
                noise: Noisy::Oversized,
                answer: Some((12, answer)),
                ..
            } => {
                assert_eq!(answer["action"], "create_new_runtime");
                assert_eq!(answer["correlation_id"], 9);
                assert!(
                    answer["error"]
                        .as_str()
                        .unwrap()
                        .starts_with("message too large"),
                    "{answer}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A topic whose limit allows the size goes through.
        assert!(matches!(
            inbound(big, 20, |name| if name == "create_new_runtime" {
                1000
            } else {
                20
            }),
            Inbound::Dispatch { .. }
        ));
        assert!(matches!(
            inbound(r#"42["x",{"a":1}]"#, 5, |_| 5),
            Inbound::Refused { answer: None, .. }
        ));
        assert!(matches!(inbound("41", 100, any), Inbound::End(_)));
        assert!(matches!(
            inbound("4213[", 100, any),
            Inbound::Refused {
                noise: Noisy::Malformed,
                answer: Some((13, _)),
                ..
            }
        ));
    }

    #[test]
    fn long_values_are_clipped_in_log_lines() {
        assert_eq!(clip("run_command"), "run_command");
        let long = "é".repeat(100);
        assert_eq!(clip(&long), format!("{}...", "é".repeat(64)));
    }

    #[test]
    fn outbound_packets_over_the_server_limit_are_not_sent_as_is() {
        let small = Outbound::Event {
            name: "heartbeat".into(),
            payload: json!({"a": 1}),
        };
        assert_eq!(
            encode_outbound(small, 100).as_deref(),
            Some(r#"42["heartbeat",{"a":1}]"#)
        );
        let big = || json!("x".repeat(200));
        assert_eq!(
            encode_outbound(
                Outbound::Event {
                    name: "e".into(),
                    payload: big()
                },
                100
            ),
            None
        );
        assert!(
            encode_outbound(
                Outbound::Event {
                    name: "e".into(),
                    payload: big()
                },
                0
            )
            .is_some()
        );
        let ack = encode_outbound(
            Outbound::Ack {
                id: 7,
                args: vec![big()],
            },
            150,
        )
        .expect("an ack is always sent");
        assert!(
            ack.starts_with("437[{") && ack.contains("answer too large"),
            "{ack}"
        );
        // A topic's answer that is too large: the error still names the request.
        let answer = json!({"action": "run_command", "correlation_id": 42, "status": "success",
                            "http_response": {"body": "x".repeat(300)}});
        let ack = encode_outbound(
            Outbound::Ack {
                id: 8,
                args: vec![answer],
            },
            200,
        )
        .expect("an ack is always sent");
        let sent: Value =
            serde_json::from_str(ack.strip_prefix("438").expect("ack 8")).expect("json");
        let error = &sent[0];
        assert_eq!(error["action"], "run_command", "{ack}");
        assert_eq!(error["correlation_id"], 42, "{ack}");
        assert_eq!(error["status"], "error", "{ack}");
        assert!(
            error["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("answer too large")
        );
        assert_eq!(
            encode_outbound(
                Outbound::Ack {
                    id: 3,
                    args: vec![]
                },
                100
            )
            .as_deref(),
            Some("433[]")
        );
    }
}
