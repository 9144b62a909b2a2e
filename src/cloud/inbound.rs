//! The pure decision for one inbound WebSocket message of an established session ([`inbound`]):
//! pong, dispatch, refusal (with the answer an event that asked for one gets), end, or nothing.
//! No I/O and no logging: the session's reader performs the effect, and the fuzzers feed this
//! directly.

use serde_json::{Value, json};

use crate::sio::packet::{self, DEFAULT_NSP, EioPacket, SioPacket};

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

/// Decides what `text` calls for. A message over `limit` (the link's,
/// [`MAX_INBOUND_MESSAGE`](super::MAX_INBOUND_MESSAGE)) is
/// refused without being decoded unless it is an event whose topic allows its size
/// (`limit_of(event name)`, see [`Handler::inbound_limit`](super::Handler::inbound_limit)); a refused event that asked for an ack
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

pub(super) fn error_payload(action: Option<String>, error: String) -> Value {
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
pub(super) fn clip(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
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
}
