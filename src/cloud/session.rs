//! One connection's life once it is up (connecting is `connect`'s): the reader loop until the link
//! dies or shutdown is asked, and the writer task.
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
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use crate::logging::Throttle;

use super::connect::{self, Established, HARD_INBOUND_LIMIT, WRITE_TIMEOUT, Ws};
use super::credentials::Current;
use super::identity::Identity;
use super::inbound::{Inbound, Noisy, error_payload, inbound};
use super::tls::Endpoint;
use super::{
    Error, Handler, Link, LinkStatus, MAX_INBOUND_MESSAGE, MAX_REQUESTS_IN_FLIGHT, Outbound,
};
use crate::sio::packet::{self, DEFAULT_NSP, EioPacket, SioPacket};

/// How long a graceful close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Capacity of the Link's queue.
const OUT_QUEUE: usize = 64;

/// How a connection that reached namespace connect ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown was asked; `41` and a close frame were sent.
    Shutdown,
    /// The connection was lost; `reason` is for the log line.
    Lost { reason: String },
    /// Closed by us to connect again with renewed credentials.
    Renew,
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
/// Connects and runs one session to its end. `connected` is set and `status` marked up once
/// namespace `/` is connected (for the transition log, backoff bookkeeping and the health view);
/// the caller marks it down when this returns.
pub(crate) async fn run_session<F>(
    endpoint: &Endpoint,
    current: Current,
    handler: &Arc<dyn Handler>,
    shutdown: &mut Pin<&mut F>,
    renew: impl Future<Output = ()>,
    connected: &mut Option<Connected>,
    status: &LinkStatus,
) -> Result<SessionEnd, Error>
where
    F: Future<Output = ()>,
{
    let identity: &Identity = &current.identity;
    let Some(established) =
        connect::establish(endpoint, identity, current.config, shutdown).await?
    else {
        return Ok(SessionEnd::Shutdown);
    };
    let Established {
        ws,
        open,
        resumed,
        sid,
        ping_window,
        mut deadline,
    } = established;
    let since = Instant::now();
    *connected = Some(Connected { since });
    status.set_up();
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

    // Bytes of a large upload arriving count as signs of life: the server's pings queue behind it.
    let upload_progress = ws.get_ref().progress();
    let mut upload_seen = 0u64;
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
    let mut renew = std::pin::pin!(renew);

    let end = loop {
        let msg = tokio::select! {
            biased;
            () = shutdown.as_mut() => {
                let _ = ctl_tx.try_send(Control::Close);
                let _ = timeout(CLOSE_TIMEOUT, &mut writer).await;
                break SessionEnd::Shutdown;
            }
            () = renew.as_mut() => {
                let _ = ctl_tx.try_send(Control::Close);
                let _ = timeout(CLOSE_TIMEOUT, &mut writer).await;
                break SessionEnd::Renew;
            }
            () = tokio::time::sleep_until(deadline) => {
                let seen = upload_progress.load(std::sync::atomic::Ordering::Relaxed);
                if seen != upload_seen {
                    upload_seen = seen;
                    deadline = Instant::now() + ping_window;
                    continue;
                }
                break SessionEnd::Lost {
                    reason: format!(
                        "no ping from the server for {:.1} s (pingInterval + pingTimeout): the link is dead",
                        ping_window.as_secs_f64()
                    ),
                };
            }
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
                    let answer = handler.complete_refusal(answer);
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
