//! One debug session with one runtime, as the runtime's web server expects it: log in over its
//! REST API (`POST /api/login`, through the `run_command` exchange: any certificate, timeouts),
//! then a Socket.IO connection (the project's [`crate::sio`] client over a WebSocket) to namespace
//! `/api/debug` with `{"token": …}`, confirmed by the server's `connected` event; each command is
//! a `debug_command` event answered by one `debug_response`.
//!
//! The runtime's replies carry no id, so after a reply timeout the socket is closed and the next
//! command reconnects (a late reply is never taken for the next command); a socket the runtime
//! closed is reopened before the next command; an expired token (`Unauthorized`) is renewed once
//! with the session's credentials. Never logs the password or the token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::protocol::{Request, to_hex};
use crate::runtime::command::{self, HTTPS_PORT, HttpCommand, Limits};
use crate::sio::{self, Client, ConnectError, Incoming, JoinError};

/// The runtime's Socket.IO namespace for the debugger.
pub const NAMESPACE: &str = "/api/debug";
/// How long the runtime has to send `connected` after the namespace connect.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command waits for its `debug_response`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Each connection step (TCP, TLS, upgrade, open, namespace connect).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Debug frames are at most 4 KiB (12 KiB as hex); anything far larger is not the runtime.
const MAX_MESSAGE: usize = 256 * 1024;

/// A logged-in session: the credentials (to renew the token), the token and the socket, if open.
pub(super) struct Session {
    ip: Ipv4Addr,
    port: u16,
    username: String,
    password: String,
    token: String,
    socket: Option<Socket>,
    /// Closed for good (stop, idle, delete): a command that raced with the close must not reopen it.
    ended: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("open", &self.socket.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Logs in and opens the socket. `Err` is the answer's error text.
    pub(super) async fn start(
        ip: Ipv4Addr,
        port: u16,
        username: String,
        password: String,
    ) -> Result<Self, String> {
        let token = login(ip, port, &username, &password).await?;
        let socket = Socket::open(ip, port, &token).await?;
        Ok(Self {
            ip,
            port,
            username,
            password,
            token,
            socket: Some(socket),
            ended: false,
        })
    }

    /// Sends `request`'s command and returns the cloud's answer (`debug_error` included).
    pub(super) async fn run(&mut self, request: &Request) -> Value {
        let Some(command) = request.command() else {
            return super::protocol::error("Unknown debug message type");
        };
        if self.ended {
            return super::protocol::error("No active debug session. Send debug_start first.");
        }
        let hex = to_hex(&command);
        let mut renewed = false;
        let mut resent = false;
        loop {
            let socket = match self.ensure_socket().await {
                Ok(s) => s,
                Err(e) => return super::protocol::error(e),
            };
            match socket.command(&hex).await {
                Ok(reply) => {
                    if reply.get("success").and_then(Value::as_bool) == Some(true) {
                        let data = reply.get("data").and_then(Value::as_str).unwrap_or("");
                        return request.answer(data).unwrap_or_else(super::protocol::error);
                    }
                    let error = reply
                        .get("error")
                        .and_then(Value::as_str)
                        .filter(|e| !e.is_empty())
                        .unwrap_or("Unknown runtime error")
                        .to_owned();
                    // The runtime re-checks the token on every command; it expires (15 min by
                    // default) while the session lives on.
                    if error == "Unauthorized" && !renewed {
                        renewed = true;
                        tracing::info!(runtime = %self.ip, "debug: token refused; logging in again");
                        match login(self.ip, self.port, &self.username, &self.password).await {
                            Ok(token) => {
                                self.token = token;
                                self.close_socket().await;
                                continue;
                            }
                            Err(e) => return super::protocol::error(e),
                        }
                    }
                    return super::protocol::error(error);
                }
                Err(Failure::NotSent(reason)) if !resent => {
                    // The runtime closed the socket since the last command: reopen once.
                    tracing::info!(runtime = %self.ip, %reason, "debug: reconnecting to the runtime");
                    resent = true;
                    self.socket = None;
                }
                Err(Failure::NotSent(reason) | Failure::Lost(reason)) => {
                    self.socket = None;
                    return super::protocol::error(format!(
                        "The runtime's debug connection closed: {reason}"
                    ));
                }
                Err(Failure::Timeout) => {
                    // A reply may still come; it must not answer the next command.
                    self.close_socket().await;
                    return super::protocol::error(format!(
                        "Timeout: No debug_response received within {:.1}s for command: {hex}",
                        REPLY_TIMEOUT.as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Closes the socket (with the Socket.IO goodbye), if open.
    pub(super) async fn close(&mut self) {
        self.ended = true;
        self.close_socket().await;
    }

    async fn close_socket(&mut self) {
        if let Some(s) = self.socket.take() {
            s.client.close().await;
        }
    }

    /// Opens the socket if there is none or the runtime closed it; a refused token is renewed once.
    async fn ensure_socket(&mut self) -> Result<&mut Socket, String> {
        if !self.socket.as_ref().is_some_and(Socket::is_open) {
            self.close_socket().await;
            let socket = match Socket::open(self.ip, self.port, &self.token).await {
                Ok(s) => s,
                Err(Refusal::Refused(_)) => {
                    let token = login(self.ip, self.port, &self.username, &self.password).await?;
                    self.token = token;
                    Socket::open(self.ip, self.port, &self.token).await?
                }
                Err(e) => return Err(e.into()),
            };
            self.socket = Some(socket);
        }
        self.socket
            .as_mut()
            .ok_or_else(|| "Not connected to runtime debug namespace".to_owned())
    }
}

/// `POST /api/login`; the token of a successful answer. `Err` is the answer's error text.
async fn login(ip: Ipv4Addr, port: u16, username: &str, password: &str) -> Result<String, String> {
    let body = json!({"username": username, "password": password});
    let request = HttpCommand::new("POST", "api/login", Some(port), None, Some(&body))
        .map_err(|e| format!("Authentication failed: {e}"))?;
    match command::execute(ip, &request, &Limits::default()).await {
        Ok(reply) if reply.ok() => reply
            .body_json()
            .as_ref()
            .and_then(|b| b.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "No access_token in login response".to_owned()),
        Ok(reply) => Err(format!("Authentication failed: HTTP {}", reply.status)),
        Err(e) => Err(format!("Authentication failed: {e}")),
    }
}

/// Why a command got no reply.
enum Failure {
    /// The socket was already closed: nothing reached the runtime.
    NotSent(String),
    /// The socket closed while waiting for the reply.
    Lost(String),
    /// No reply within [`REPLY_TIMEOUT`].
    Timeout,
}

/// Why a socket could not be opened.
enum Refusal {
    /// The runtime refused the namespace connect (bad or expired token).
    Refused(String),
    /// Anything else (unreachable, TLS, protocol, no confirmation).
    Other(String),
}

impl From<Refusal> for String {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Refused(m) | Refusal::Other(m) => m,
        }
    }
}

/// An open, confirmed `/api/debug` connection.
struct Socket {
    client: Client,
    events: mpsc::Receiver<Incoming>,
    closed: bool,
}

impl Socket {
    /// Connects to the runtime (HTTPS rule of `run_command`: TLS on 8443, any certificate; plain
    /// otherwise) and waits for `connected`.
    async fn open(ip: Ipv4Addr, port: u16, token: &str) -> Result<Self, Refusal> {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let tcp = match timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(Refusal::Other(format!(
                    "Cannot connect to the runtime at {addr}: {e}"
                )));
            }
            Err(_) => {
                return Err(Refusal::Other(format!(
                    "Connecting to the runtime at {addr} timed out after {} s",
                    STEP_TIMEOUT.as_secs()
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        let auth = Some(json!({"token": token}));
        let connected = if port == HTTPS_PORT {
            let config =
                command::runtime_tls_config().map_err(|e| Refusal::Other(e.to_string()))?;
            let tls = timeout(
                STEP_TIMEOUT,
                tokio_rustls::TlsConnector::from(config)
                    .connect(ServerName::IpAddress(IpAddr::V4(ip).into()), tcp),
            )
            .await
            .map_err(|_| Refusal::Other("TLS handshake with the runtime timed out".into()))?
            .map_err(|e| Refusal::Other(format!("TLS handshake with the runtime failed: {e}")))?;
            let url = format!("wss://{addr}/socket.io/?EIO=4&transport=websocket");
            sio::connect(tls, &url, NAMESPACE, auth, STEP_TIMEOUT, MAX_MESSAGE).await
        } else {
            let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
            sio::connect(tcp, &url, NAMESPACE, auth, STEP_TIMEOUT, MAX_MESSAGE).await
        };
        let (client, events) = match connected {
            Ok(c) => c,
            Err(ConnectError::Join(JoinError::Refused(message))) => {
                return Err(Refusal::Refused(message));
            }
            Err(e) => return Err(Refusal::Other(e.to_string())),
        };
        let mut socket = Socket {
            client,
            events,
            closed: false,
        };
        // The runtime sends `connected` from its connect handler: before or after the CONNECT
        // reply (the client keeps events that came first).
        let confirmed = timeout(CONFIRM_TIMEOUT, async {
            loop {
                match socket.events.recv().await {
                    Some(Incoming::Event(e)) if e.name == "connected" => return Ok(()),
                    Some(Incoming::Event(_)) => {}
                    Some(Incoming::Closed { reason }) => return Err(reason),
                    None => return Err("the session ended".to_owned()),
                }
            }
        })
        .await;
        match confirmed {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(reason)) => {
                socket.client.close().await;
                Err(Refusal::Other(format!(
                    "The runtime closed the debug connection before confirming it: {reason}"
                )))
            }
            Err(_) => {
                socket.client.close().await;
                Err(Refusal::Other(format!(
                    "Runtime did not send 'connected' confirmation within {:.1}s",
                    CONFIRM_TIMEOUT.as_secs_f64()
                )))
            }
        }
    }

    fn is_open(&self) -> bool {
        !self.closed && !self.client.is_closed()
    }

    /// Emits `debug_command` and waits for the next `debug_response`.
    async fn command(&mut self, hex: &str) -> Result<Value, Failure> {
        // Nothing is in flight between commands; whatever is queued is stale (or the close).
        while let Ok(item) = self.events.try_recv() {
            if let Incoming::Closed { reason } = item {
                self.closed = true;
                return Err(Failure::NotSent(reason));
            }
        }
        if let Err(reason) = self
            .client
            .emit("debug_command", vec![json!({"command": hex})])
            .await
        {
            self.closed = true;
            return Err(Failure::NotSent(reason));
        }
        let reply = timeout(REPLY_TIMEOUT, async {
            loop {
                match self.events.recv().await {
                    Some(Incoming::Event(e)) if e.name == "debug_response" => {
                        return Ok(e.args.into_iter().next().unwrap_or(Value::Null));
                    }
                    Some(Incoming::Event(_)) => {}
                    Some(Incoming::Closed { reason }) => return Err(Failure::Lost(reason)),
                    None => return Err(Failure::Lost("the session ended".to_owned())),
                }
            }
        })
        .await;
        match reply {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(f)) => {
                self.closed = true;
                Err(f)
            }
            Err(_) => Err(Failure::Timeout),
        }
    }
}
