//! The connection steps after the WebSocket upgrade (open packet, namespace connect) and the
//! namespace session task. Generic over the byte stream, so TLS and plain TCP share it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

use super::packet::{self, EioPacket, OpenInfo, PacketError, SioPacket};

/// Why the Engine.IO open packet (`0{…}`) was not received. The cloud link classifies these into
/// its own errors (a WebSocket I/O error there may be a refused client certificate).
#[derive(Debug)]
pub enum OpenError {
    /// Nothing arrived within the step timeout.
    Timeout,
    /// The connection ended before anything arrived.
    Closed,
    /// The WebSocket failed.
    WebSocket(tungstenite::Error),
    /// The first message was not text.
    Unexpected(Message),
    /// The first packet was another Engine.IO packet.
    NotOpen,
    /// The first packet did not decode.
    Invalid(PacketError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no Engine.IO open packet in time"),
            Self::Closed => f.write_str("the server closed the connection before the open packet"),
            Self::WebSocket(e) => write!(f, "WebSocket error before the open packet: {e}"),
            Self::Unexpected(m) => write!(f, "unexpected first WebSocket message: {m:?}"),
            Self::NotOpen => f.write_str("the server's first packet was not an Engine.IO open"),
            Self::Invalid(e) => write!(f, "invalid Engine.IO open packet: {e}"),
        }
    }
}

/// Reads the server's first message, which must be the Engine.IO open packet.
pub async fn read_open<S>(
    ws: &mut WebSocketStream<S>,
    step: Duration,
) -> Result<OpenInfo, OpenError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(step, ws.next()).await {
        Err(_) => Err(OpenError::Timeout),
        Ok(None) => Err(OpenError::Closed),
        Ok(Some(Err(e))) => Err(OpenError::WebSocket(e)),
        Ok(Some(Ok(Message::Text(t)))) => match packet::decode_eio(t.as_str()) {
            Ok(EioPacket::Open(o)) => Ok(o),
            Ok(_) => Err(OpenError::NotOpen),
            Err(e) => Err(OpenError::Invalid(e)),
        },
        Ok(Some(Ok(other))) => Err(OpenError::Unexpected(other)),
    }
}

/// A write that failed or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The WebSocket refused the write.
    #[error("{0}")]
    Failed(String),
    /// The write took longer than its timeout (seconds).
    #[error("writing to the WebSocket took longer than {0} s")]
    Timeout(u64),
}

/// Sends one text message within `limit`.
pub async fn send_text<S>(
    ws: &mut WebSocketStream<S>,
    text: String,
    limit: Duration,
) -> Result<(), SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(limit, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendError::Failed(e.to_string())),
        Err(_) => Err(SendError::Timeout(limit.as_secs())),
    }
}

/// One inbound EVENT.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// Its arguments (everything after the name).
    pub args: Vec<Value>,
    /// The ack id when the server asked for an answer.
    pub id: Option<u64>,
}

/// A namespace the server accepted.
#[derive(Debug)]
pub struct Joined {
    /// The Socket.IO session id from the CONNECT reply (empty when the server sent none).
    pub sid: String,
    /// Events of the namespace that arrived before the CONNECT reply, in arrival order.
    pub early: Vec<Event>,
}

/// Why a namespace connect failed. The texts are the cloud link's log lines.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No CONNECT reply within the step timeout (seconds).
    #[error("no namespace connect reply within {0} s")]
    Timeout(u64),
    /// A write did not finish in time (seconds).
    #[error("writing to the WebSocket took longer than {0} s")]
    WriteTimeout(u64),
    /// The server answered CONNECT_ERROR with this message.
    #[error("{0}")]
    Refused(String),
    /// The server broke the protocol or went silent past its ping deadline.
    #[error("{0}")]
    Protocol(String),
    /// The WebSocket failed or closed.
    #[error("{0}")]
    WebSocket(String),
}

impl From<SendError> for JoinError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Failed(m) => Self::WebSocket(m),
            SendError::Timeout(s) => Self::WriteTimeout(s),
        }
    }
}

/// Sends the Socket.IO CONNECT for `nsp` (with `auth` as its payload) and waits up to `step` for
/// the reply, answering pings meanwhile (`deadline` is the ping deadline, moved on each ping; the
/// server's cadence holds from the open packet on). Events of `nsp` that come first are kept in
/// [`Joined::early`]; other packets are ignored.
pub async fn join_namespace<S>(
    ws: &mut WebSocketStream<S>,
    nsp: &str,
    auth: Option<Value>,
    ping_window: Duration,
    deadline: &mut Instant,
    step: Duration,
    write_timeout: Duration,
) -> Result<Joined, JoinError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connect = packet::encode_eio(&EioPacket::Message(packet::encode_sio(
        &SioPacket::Connect {
            nsp: nsp.to_owned(),
            data: auth,
        },
    )));
    send_text(ws, connect, write_timeout).await?;
    let ns_deadline = Instant::now() + step;
    let mut early = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = tokio::time::sleep_until(ns_deadline) => return Err(JoinError::Timeout(step.as_secs())),
            () = tokio::time::sleep_until(*deadline) => {
                return Err(JoinError::Protocol(format!(
                    "no ping from the server for {:.1} s (pingInterval + pingTimeout) while waiting for the namespace connect reply",
                    ping_window.as_secs_f64()
                )));
            }
        };
        let text = match msg {
            None => {
                return Err(JoinError::WebSocket(
                    "the server closed the connection before the namespace connect".into(),
                ));
            }
            Some(Err(e)) => return Err(JoinError::WebSocket(e.to_string())),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(JoinError::WebSocket(format!(
                    "the server closed the WebSocket during connect: {frame:?}"
                )));
            }
            Some(Ok(_)) => continue,
        };
        match packet::decode_eio(text.as_str()) {
            Ok(EioPacket::Ping(p)) => {
                *deadline = Instant::now() + ping_window;
                send_text(ws, packet::encode_eio(&EioPacket::Pong(p)), write_timeout).await?;
            }
            Ok(EioPacket::Message(m)) => match packet::decode_sio(&m) {
                Ok(SioPacket::Connect { nsp: got, data }) if got == nsp => {
                    let sid = data
                        .as_ref()
                        .and_then(|d| d.get("sid"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    return Ok(Joined { sid, early });
                }
                Ok(SioPacket::ConnectError { data, .. }) => {
                    let msg = data
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| data.to_string(), str::to_owned);
                    return Err(JoinError::Refused(msg));
                }
                Ok(SioPacket::Event {
                    nsp: got,
                    id,
                    name,
                    args,
                }) if got == nsp => early.push(Event { name, args, id }),
                Ok(other) => debug!(
                    kind = other.kind(),
                    nsp, "ignoring a packet before the namespace connect"
                ),
                Err(e) => {
                    return Err(JoinError::Protocol(format!(
                        "malformed Socket.IO packet during connect: {e}"
                    )));
                }
            },
            Ok(EioPacket::Close) => {
                return Err(JoinError::WebSocket(
                    "the server closed the Engine.IO session during connect".into(),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(JoinError::Protocol(format!(
                    "malformed Engine.IO packet during connect: {e}"
                )));
            }
        }
    }
}

/// What a [`Client`] session delivers, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An EVENT of the session's namespace.
    Event(Event),
    /// The session ended (the last item); says why.
    Closed {
        /// Why, for logs and answers.
        reason: String,
    },
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The WebSocket upgrade failed or took too long.
    #[error("the WebSocket upgrade failed: {0}")]
    Upgrade(String),
    /// No usable Engine.IO open packet.
    #[error("{0}")]
    Open(OpenError),
    /// The namespace connect failed (a refusal carries the server's message as is).
    #[error("{0}")]
    Join(JoinError),
}

/// Bounds of one [`connect`].
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued commands of a session; emits wait when it is full.
const QUEUE: usize = 16;

/// Upgrades `stream` to a WebSocket at `url` (`ws[s]://host:port/socket.io/?EIO=4&transport=websocket`;
/// TLS, if any, is already in `stream`), reads the open packet and joins `nsp` with `auth`, each
/// step within `step`; then runs the session in its own task. Messages over `max_message` bytes
/// end the session.
pub async fn connect<S>(
    stream: S,
    url: &str,
    nsp: &str,
    auth: Option<Value>,
    step: Duration,
    max_message: usize,
) -> Result<(Client, mpsc::Receiver<Incoming>), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(0);
    let (mut ws, _) = timeout(
        step,
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
    )
    .await
    .map_err(|_| ConnectError::Upgrade(format!("no answer within {} s", step.as_secs())))?
    .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
    let open = read_open(&mut ws, step).await.map_err(ConnectError::Open)?;
    let ping_window =
        Duration::from_millis(open.ping_interval_ms.saturating_add(open.ping_timeout_ms));
    let mut deadline = Instant::now() + ping_window;
    let joined = join_namespace(
        &mut ws,
        nsp,
        auth,
        ping_window,
        &mut deadline,
        step,
        WRITE_TIMEOUT,
    )
    .await
    .map_err(ConnectError::Join)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let (in_tx, in_rx) = mpsc::channel(QUEUE + joined.early.len());
    for e in joined.early {
        // Capacity was reserved for them above.
        let _ = in_tx.try_send(Incoming::Event(e));
    }
    let max_out = usize::try_from(open.max_payload).unwrap_or(usize::MAX);
    let task = tokio::spawn(run(
        ws,
        nsp.to_owned(),
        rx,
        in_tx,
        Pacing {
            ping_window,
            deadline,
            max_out,
        },
    ));
    Ok((
        Client {
            nsp: nsp.into(),
            tx,
            task,
        },
        in_rx,
    ))
}

enum Command {
    Emit {
        text: String,
        done: oneshot::Sender<Result<(), String>>,
    },
    Close,
}

/// A namespace session's handle. Dropping it closes the session (with the goodbye packet);
/// [`Client::close`] also waits for that to be sent.
#[derive(Debug)]
pub struct Client {
    nsp: std::sync::Arc<str>,
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Emits `name` with `args` on the session's namespace, once written. Fails when the session
    /// is gone or the packet is over the server's `maxPayload`.
    pub async fn emit(&self, name: &str, args: Vec<Value>) -> Result<(), String> {
        let text = packet::encode_eio(&EioPacket::Message(packet::encode_sio(&SioPacket::Event {
            nsp: self.nsp.to_string(),
            id: None,
            name: name.to_owned(),
            args,
        })));
        let (done, result) = oneshot::channel();
        self.tx
            .send(Command::Emit { text, done })
            .await
            .map_err(|_| "the connection is closed".to_owned())?;
        result
            .await
            .unwrap_or_else(|_| Err("the connection is closed".to_owned()))
    }

    /// Whether the session task has ended (the server closed, the link died).
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    /// Says goodbye to the server (`41<nsp>,`), closes the WebSocket and waits (bounded) for it.
    pub async fn close(self) {
        let Self { tx, mut task, .. } = self;
        let _ = tx.try_send(Command::Close);
        drop(tx);
        if timeout(WRITE_TIMEOUT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

struct Pacing {
    ping_window: Duration,
    deadline: Instant,
    max_out: usize,
}

/// The session task: the only owner of the WebSocket.
async fn run<S>(
    mut ws: WebSocketStream<S>,
    nsp: String,
    mut commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Incoming>,
    mut pacing: Pacing,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = loop {
        let msg = tokio::select! {
            biased;
            c = commands.recv() => match c {
                Some(Command::Emit { text, done }) => {
                    if pacing.max_out > 0 && text.len() > pacing.max_out {
                        let _ = done.send(Err(format!(
                            "a {} byte packet is over the server's limit of {} bytes",
                            text.len(),
                            pacing.max_out
                        )));
                        continue;
                    }
                    match send_text(&mut ws, text, WRITE_TIMEOUT).await {
                        Ok(()) => {
                            let _ = done.send(Ok(()));
                            continue;
                        }
                        Err(e) => {
                            let _ = done.send(Err(e.to_string()));
                            break format!("write failed: {e}");
                        }
                    }
                }
                Some(Command::Close) | None => {
                    let bye = packet::encode_eio(&EioPacket::Message(packet::encode_sio(
                        &SioPacket::Disconnect { nsp: nsp.clone() },
                    )));
                    let _ = timeout(WRITE_TIMEOUT, async {
                        let _ = ws.send(Message::text(bye)).await;
                        let _ = ws.close(None).await;
                    })
                    .await;
                    break "closed by the agent".to_owned();
                }
            },
            () = tokio::time::sleep_until(pacing.deadline) => break format!(
                "no ping from the server for {:.1} s (pingInterval + pingTimeout)",
                pacing.ping_window.as_secs_f64()
            ),
            m = ws.next() => m,
        };
        let text = match msg {
            None => break "the server closed the connection".to_owned(),
            Some(Err(e)) => break format!("WebSocket error: {e}"),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => break "the server closed the WebSocket".to_owned(),
            Some(Ok(_)) => continue,
        };
        match packet::decode_eio(text.as_str()) {
            Ok(EioPacket::Ping(p)) => {
                pacing.deadline = Instant::now() + pacing.ping_window;
                if let Err(e) = send_text(
                    &mut ws,
                    packet::encode_eio(&EioPacket::Pong(p)),
                    WRITE_TIMEOUT,
                )
                .await
                {
                    break format!("write failed: {e}");
                }
            }
            Ok(EioPacket::Message(m)) => match packet::decode_sio(&m) {
                Ok(SioPacket::Event {
                    nsp: got,
                    id,
                    name,
                    args,
                }) if got == nsp => {
                    if incoming
                        .send(Incoming::Event(Event { name, args, id }))
                        .await
                        .is_err()
                    {
                        // Nobody listens any more; the handle's drop closes the session.
                        debug!(%nsp, "dropping an event nobody reads");
                    }
                }
                Ok(SioPacket::Disconnect { nsp: got }) if got == nsp => {
                    break "the server disconnected the namespace".to_owned();
                }
                Ok(other) => debug!(kind = other.kind(), %nsp, "ignoring a packet"),
                Err(e) => debug!(%nsp, error = %e, "ignoring a malformed Socket.IO packet"),
            },
            Ok(EioPacket::Close) => break "the server closed the Engine.IO session".to_owned(),
            Ok(_) => {}
            Err(e) => debug!(%nsp, error = %e, "ignoring a malformed Engine.IO packet"),
        }
    };
    debug!(%nsp, %reason, "Socket.IO session ended");
    let _ = incoming.try_send(Incoming::Closed { reason });
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    /// A scripted server on the other end of an in-memory stream: sends `script` (Engine.IO text)
    /// after the client's CONNECT, then returns what else it received until the client closed.
    async fn server(
        stream: tokio::io::DuplexStream,
        open: &'static str,
        script: Vec<String>,
    ) -> Vec<String> {
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("accept");
        ws.send(Message::text(open)).await.expect("open");
        let mut got = Vec::new();
        let Some(Ok(Message::Text(connect))) = ws.next().await else {
            panic!("no CONNECT");
        };
        got.push(connect.to_string());
        for line in script {
            ws.send(Message::text(line)).await.expect("send");
        }
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                got.push(t.to_string());
            }
        }
        got
    }

    const OPEN: &str = r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":60000,"maxPayload":1000000}"#;

    #[tokio::test]
    async fn events_before_the_connect_reply_are_delivered_first_and_pings_answered() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(server(
            b,
            OPEN,
            vec![
                r#"42/api/debug,["connected",{"status":"ok"}]"#.into(),
                "2".into(),
                r#"40/api/debug,{"sid":"s1"}"#.into(),
                r#"42/api/debug,["debug_response",{"success":true,"data":"41 00 0A"}]"#.into(),
                r#"42["elsewhere",1]"#.into(),
                "41/api/debug,".into(),
            ],
        ));
        let (client, mut rx) = connect(
            a,
            "ws://runtime/socket.io/?EIO=4&transport=websocket",
            "/api/debug",
            Some(json!({"token": "t"})),
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect("connected");
        let mut seen = Vec::new();
        while let Some(item) = rx.recv().await {
            seen.push(item);
        }
        assert_eq!(
            seen,
            vec![
                Incoming::Event(Event {
                    name: "connected".into(),
                    args: vec![json!({"status": "ok"})],
                    id: None
                }),
                Incoming::Event(Event {
                    name: "debug_response".into(),
                    args: vec![json!({"success": true, "data": "41 00 0A"})],
                    id: None
                }),
                Incoming::Closed {
                    reason: "the server disconnected the namespace".into()
                },
            ]
        );
        assert!(client.is_closed());
        drop(client);
        let got = peer.await.expect("server");
        assert_eq!(got[0], r#"40/api/debug,{"token":"t"}"#);
        assert_eq!(got[1], "3", "the ping during the connect is answered");
    }

    #[tokio::test]
    async fn a_refused_connect_carries_the_servers_message_and_close_says_goodbye() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(server(
            b,
            OPEN,
            vec![r#"44/api/debug,{"message":"Connection rejected by server"}"#.into()],
        ));
        let err = connect(
            a,
            "ws://r/socket.io/",
            "/api/debug",
            None,
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(&err, ConnectError::Join(JoinError::Refused(m)) if m == "Connection rejected by server"),
            "{err:?}"
        );

        let (a, b) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(server(b, OPEN, vec![r#"40/api/debug,{"sid":"s"}"#.into()]));
        let (client, _rx) = connect(
            a,
            "ws://r/socket.io/",
            "/api/debug",
            None,
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect("connected");
        client
            .emit("debug_command", vec![json!({"command": "41"})])
            .await
            .expect("sent");
        client.close().await;
        let got = peer.await.expect("server");
        assert_eq!(
            got[1..],
            [
                r#"42/api/debug,["debug_command",{"command":"41"}]"#.to_owned(),
                "41/api/debug,".to_owned()
            ]
        );
    }
}
