//! Connecting: TCP (each resolved address in turn), TLS with the client certificate, the
//! WebSocket upgrade, the Engine.IO open packet and the Socket.IO namespace connect, each step
//! bounded by [`STEP_TIMEOUT`], and every failure classified into the link's [`Error`] so the log
//! says what to fix (the server's certificate, ours, the network, the URL).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use super::Error;
use super::identity::Identity;
use super::tls::{self, Endpoint, TlsFailure};
use crate::sio::packet::{self, DEFAULT_NSP};
use crate::sio::{self, JoinError, OpenError};

pub(super) type Ws = WebSocketStream<super::tap::Tap<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Each connection step (TCP, TLS, upgrade, open, namespace connect) must finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A single WebSocket write must finish within this, or the connection is considered dead.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message read at all. Messages over the limit of their topic
/// ([`super::Handler::inbound_limit`], [`super::MAX_INBOUND_MESSAGE`] unless a topic allows more)
/// and up to this size are read and refused with an answer naming the request; larger ones make
/// the WebSocket layer drop the connection (it cannot skip a message). 48 MiB leaves room for a
/// topic limit of 32 MiB (a program upload, base64-encoded) plus its envelope. Such a message is
/// held in memory only while it is read and refused.
pub(super) const HARD_INBOUND_LIMIT: usize = 48 << 20;

/// A connection that reached namespace `/`.
pub(super) struct Established {
    pub ws: Ws,
    pub open: packet::OpenInfo,
    /// Whether the TLS session was resumed (a reused configuration offers the previous one).
    pub resumed: bool,
    /// The Socket.IO session id.
    pub sid: String,
    /// pingInterval + pingTimeout: the longest the server may stay silent.
    pub ping_window: Duration,
    /// When the next ping is due at the latest.
    pub deadline: Instant,
}

/// Connects up to namespace `/`; `Ok(None)` when shutdown was asked on the way.
pub(super) async fn establish<F>(
    endpoint: &Endpoint,
    identity: &Identity,
    config: Arc<rustls::ClientConfig>,
    shutdown: &mut Pin<&mut F>,
) -> Result<Option<Established>, Error>
where
    F: Future<Output = ()>,
{
    let (mut ws, open, resumed) = tokio::select! {
        r = open(endpoint, identity, config) => r?,
        () = shutdown.as_mut() => return Ok(None),
    };
    let ping_window =
        Duration::from_millis(open.ping_interval_ms.saturating_add(open.ping_timeout_ms));
    let mut deadline = Instant::now() + ping_window;

    // Namespace connect (the shared client answers the server's pings meanwhile). Events the
    // cloud sends before the CONNECT reply are not dispatched: the link has no writer yet.
    let joined = tokio::select! {
        r = sio::join_namespace(&mut ws, DEFAULT_NSP, None, ping_window, &mut deadline, STEP_TIMEOUT, WRITE_TIMEOUT) => r,
        () = shutdown.as_mut() => return Ok(None),
    };
    let joined = joined.map_err(|e| match e {
        JoinError::Timeout(secs) => Error::Timeout {
            during: "waiting for the namespace connect reply",
            secs,
        },
        JoinError::WriteTimeout(secs) => Error::Timeout {
            during: "writing to the WebSocket",
            secs,
        },
        JoinError::Refused(msg) => Error::ConnectRefused(msg),
        JoinError::Protocol(msg) => Error::Protocol(msg),
        JoinError::WebSocket(msg) => Error::WebSocket(msg),
    })?;
    for e in &joined.early {
        debug!(
            event = %e.name,
            "cloud: ignoring a packet before the namespace connect"
        );
    }
    let sid = joined.sid;

    Ok(Some(Established {
        ws,
        open,
        resumed,
        sid,
        ping_window,
        deadline,
    }))
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
pub(super) async fn open(
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
        tokio_tungstenite::client_async_with_config(
            endpoint.ws_url.as_str(),
            // Upload files are decoded while they arrive, under tungstenite (`tap`).
            super::tap::Tap::new(tls),
            Some(ws_config),
        ),
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

    let open = match sio::read_open(&mut ws, STEP_TIMEOUT).await {
        Ok(open) => open,
        Err(OpenError::Timeout) => {
            return Err(Error::Timeout {
                during: "waiting for the Engine.IO open packet",
                secs: STEP_TIMEOUT.as_secs(),
            });
        }
        Err(OpenError::WebSocket(tungstenite::Error::Io(io))) => {
            return Err(tls_error(&io, true, endpoint, identity));
        }
        Err(OpenError::WebSocket(e)) => return Err(Error::WebSocket(e.to_string())),
        Err(OpenError::Closed) => {
            return Err(Error::ClientCertRefused {
                agent_id: identity.agent_id.clone(),
                detail: "the server closed the connection right after the WebSocket upgrade".into(),
            });
        }
        Err(e @ (OpenError::Unexpected(_) | OpenError::NotOpen | OpenError::Invalid(_))) => {
            return Err(Error::Protocol(e.to_string()));
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
