//! Engine.IO v4 and Socket.IO v5 packet encoding and decoding: pure functions over text.
//!
//! This module owns the wire syntax and nothing else: no I/O, no timers, no logging, so it can be
//! unit tested exhaustively and fed to a fuzzer. Every Socket.IO packet travels inside an Engine.IO
//! `4` (message) packet; a Socket.IO packet is `<type>[<#attachments>-][<nsp>,][<ackId>][JSON]`,
//! with the namespace omitted when it is `/`.
//!
//! Decoding never panics on any input; it returns a [`PacketError`] naming what was wrong.

use serde_json::Value;

/// The default namespace, omitted on the wire.
pub const DEFAULT_NSP: &str = "/";

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEioType(char),
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSioType(char),
    #[error("invalid Engine.IO open payload: {0}")]
    BadOpen(String),
    #[error("invalid ack id")]
    BadAckId,
    #[error("invalid binary attachment count")]
    BadAttachments,
    #[error("invalid JSON payload: {0}")]
    BadJson(String),
    #[error("an EVENT payload must be a non-empty array starting with the event name")]
    BadEventPayload,
    #[error("an ACK payload must be an array")]
    BadAckPayload,
    #[error("a {0} packet must carry an ack id")]
    MissingAckId(&'static str),
    #[error("a {0} packet cannot carry an ack id")]
    UnexpectedAckId(&'static str),
    #[error("invalid {0} payload")]
    BadPayload(&'static str),
}

/// The server's handshake (`0{...}`), as far as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    pub sid: String,
    /// Milliseconds between the server's pings.
    pub ping_interval_ms: u64,
    /// Milliseconds the server waits for a pong; the client adds it to the interval for its deadline.
    pub ping_timeout_ms: u64,
    /// The largest message the server accepts, in bytes (0 when absent).
    pub max_payload: u64,
}

/// An Engine.IO v4 packet carried in one WebSocket text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EioPacket {
    /// `0{json}`: the server's handshake.
    Open(OpenInfo),
    /// `1`: the peer closes the session.
    Close,
    /// `2[payload]`: in v4 the server pings, the client answers with a pong carrying the same payload.
    Ping(String),
    /// `3[payload]`
    Pong(String),
    /// `4<data>`: a Socket.IO packet.
    Message(String),
    /// `5`: transport upgrade (never expected on a WebSocket-only session).
    Upgrade,
    /// `6`: no-op.
    Noop,
}

/// A Socket.IO v5 packet.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `0[nsp,][{data}]`: a client connect request (with optional auth) or the server's reply `{"sid"}`.
    Connect { nsp: String, data: Option<Value> },
    /// `1[nsp,]`
    Disconnect { nsp: String },
    /// `2[nsp,][id]["name", ...args]`
    Event {
        nsp: String,
        id: Option<u64>,
        name: String,
        args: Vec<Value>,
    },
    /// `3[nsp,]id[...args]`
    Ack {
        nsp: String,
        id: u64,
        args: Vec<Value>,
    },
    /// `4[nsp,]{data}`: the server refused the namespace connect.
    ConnectError { nsp: String, data: Value },
    /// `5`/`6`: BINARY_EVENT / BINARY_ACK. Recognised so they can be refused clearly; the
    /// placeholder payload is not decoded.
    Binary {
        ack: bool,
        attachments: u64,
        nsp: String,
        id: Option<u64>,
    },
}

impl SioPacket {
    /// The packet type's name, for log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "CONNECT",
            Self::Disconnect { .. } => "DISCONNECT",
            Self::Event { .. } => "EVENT",
            Self::Ack { .. } => "ACK",
            Self::ConnectError { .. } => "CONNECT_ERROR",
            Self::Binary { ack: false, .. } => "BINARY_EVENT",
            Self::Binary { ack: true, .. } => "BINARY_ACK",
        }
    }
}

/// Decodes one Engine.IO packet from a WebSocket text frame.
pub fn decode_eio(text: &str) -> Result<EioPacket, PacketError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(PacketError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => EioPacket::Open(decode_open(rest)?),
        '1' => EioPacket::Close,
        '2' => EioPacket::Ping(rest.to_owned()),
        '3' => EioPacket::Pong(rest.to_owned()),
        '4' => EioPacket::Message(rest.to_owned()),
        '5' => EioPacket::Upgrade,
        '6' => EioPacket::Noop,
        other => return Err(PacketError::UnknownEioType(other)),
    })
}

fn decode_open(json: &str) -> Result<OpenInfo, PacketError> {
    let v: Value = serde_json::from_str(json).map_err(|e| PacketError::BadOpen(e.to_string()))?;
    let sid = v
        .get("sid")
        .and_then(Value::as_str)
        .ok_or_else(|| PacketError::BadOpen("missing \"sid\"".into()))?
        .to_owned();
    let num = |key: &str| -> Result<u64, PacketError> {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| PacketError::BadOpen(format!("missing or non-integer {key:?}")))
    };
    Ok(OpenInfo {
        sid,
        ping_interval_ms: num("pingInterval")?,
        ping_timeout_ms: num("pingTimeout")?,
        max_payload: v.get("maxPayload").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Encodes one Engine.IO packet as WebSocket text.
pub fn encode_eio(packet: &EioPacket) -> String {
    match packet {
        EioPacket::Open(o) => format!(
            "0{}",
            serde_json::json!({
                "sid": o.sid,
                "upgrades": [],
                "pingInterval": o.ping_interval_ms,
                "pingTimeout": o.ping_timeout_ms,
                "maxPayload": o.max_payload,
            })
        ),
        EioPacket::Close => "1".to_owned(),
        EioPacket::Ping(p) => format!("2{p}"),
        EioPacket::Pong(p) => format!("3{p}"),
        EioPacket::Message(m) => format!("4{m}"),
        EioPacket::Upgrade => "5".to_owned(),
        EioPacket::Noop => "6".to_owned(),
    }
}

/// Encodes a Socket.IO packet as the payload of an Engine.IO message (without the leading `4`).
pub fn encode_sio(packet: &SioPacket) -> String {
    let mut out = String::new();
    let nsp_prefix = |out: &mut String, nsp: &str| {
        if nsp != DEFAULT_NSP && !nsp.is_empty() {
            out.push_str(nsp);
            out.push(',');
        }
    };
    match packet {
        SioPacket::Connect { nsp, data } => {
            out.push('0');
            nsp_prefix(&mut out, nsp);
            if let Some(d) = data {
                out.push_str(&d.to_string());
            }
        }
        SioPacket::Disconnect { nsp } => {
            out.push('1');
            nsp_prefix(&mut out, nsp);
        }
        SioPacket::Event {
            nsp,
            id,
            name,
            args,
        } => {
            out.push('2');
            nsp_prefix(&mut out, nsp);
            if let Some(id) = id {
                out.push_str(&id.to_string());
            }
            let mut arr = Vec::with_capacity(args.len() + 1);
            arr.push(Value::String(name.clone()));
            arr.extend(args.iter().cloned());
            out.push_str(&Value::Array(arr).to_string());
        }
        SioPacket::Ack { nsp, id, args } => {
            out.push('3');
            nsp_prefix(&mut out, nsp);
            out.push_str(&id.to_string());
            out.push_str(&Value::Array(args.clone()).to_string());
        }
        SioPacket::ConnectError { nsp, data } => {
            out.push('4');
            nsp_prefix(&mut out, nsp);
            out.push_str(&data.to_string());
        }
        SioPacket::Binary {
            ack,
            attachments,
            nsp,
            id,
        } => {
            out.push(if *ack { '6' } else { '5' });
            out.push_str(&attachments.to_string());
            out.push('-');
            nsp_prefix(&mut out, nsp);
            if let Some(id) = id {
                out.push_str(&id.to_string());
            }
            out.push_str("[]");
        }
    }
    out
}

/// The prefix of a Socket.IO packet: everything before the JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SioHeader<'a> {
    pub kind: char,
    pub attachments: Option<u64>,
    pub nsp: &'a str,
    pub id: Option<u64>,
    /// The JSON payload that follows the header (may be empty).
    pub payload: &'a str,
}

/// Reads only the header of a Socket.IO packet, without parsing the JSON payload. Used to answer
/// packets that are refused before decoding (e.g. too large) and by [`decode_sio`].
pub fn decode_sio_header(text: &str) -> Result<SioHeader<'_>, PacketError> {
    let kind = text.chars().next().ok_or(PacketError::Empty)?;
    if !('0'..='6').contains(&kind) {
        return Err(PacketError::UnknownSioType(kind));
    }
    let mut rest = &text[1..];
    let mut attachments = None;
    if kind == '5' || kind == '6' {
        let end = rest.find('-').ok_or(PacketError::BadAttachments)?;
        let digits = &rest[..end];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PacketError::BadAttachments);
        }
        attachments = Some(digits.parse().map_err(|_| PacketError::BadAttachments)?);
        rest = &rest[end + 1..];
    }
    let mut nsp = DEFAULT_NSP;
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
    }
    let digits_end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    let id = if digits_end > 0 {
        Some(
            rest[..digits_end]
                .parse()
                .map_err(|_| PacketError::BadAckId)?,
        )
    } else {
        None
    };
    Ok(SioHeader {
        kind,
        attachments,
        nsp,
        id,
        payload: &rest[digits_end..],
    })
}

/// Decodes one Socket.IO packet (the payload of an Engine.IO message).
pub fn decode_sio(text: &str) -> Result<SioPacket, PacketError> {
    let h = decode_sio_header(text)?;
    let nsp = h.nsp.to_owned();
    let json = |s: &str| -> Result<Value, PacketError> {
        serde_json::from_str(s).map_err(|e| PacketError::BadJson(e.to_string()))
    };
    // As socket.io-parser validates: CONNECT carries an optional object, DISCONNECT nothing,
    // CONNECT_ERROR an object or a string, and none of them an ack id.
    if let (Some(_), Some(kind)) = (h.id, no_id_kind(h.kind)) {
        return Err(PacketError::UnexpectedAckId(kind));
    }
    Ok(match h.kind {
        '0' => {
            let data = if h.payload.is_empty() {
                None
            } else {
                Some(json(h.payload)?)
            };
            if data.as_ref().is_some_and(|d| !d.is_object()) {
                return Err(PacketError::BadPayload("CONNECT"));
            }
            SioPacket::Connect { nsp, data }
        }
        '1' => {
            if !h.payload.is_empty() {
                return Err(PacketError::BadPayload("DISCONNECT"));
            }
            SioPacket::Disconnect { nsp }
        }
        '2' => {
            let Value::Array(mut items) = json(h.payload)? else {
                return Err(PacketError::BadEventPayload);
            };
            if items.is_empty() {
                return Err(PacketError::BadEventPayload);
            }
            let Value::String(name) = items.remove(0) else {
                return Err(PacketError::BadEventPayload);
            };
            SioPacket::Event {
                nsp,
                id: h.id,
                name,
                args: items,
            }
        }
        '3' => {
            let id = h.id.ok_or(PacketError::MissingAckId("ACK"))?;
            let Value::Array(args) = json(h.payload)? else {
                return Err(PacketError::BadAckPayload);
            };
            SioPacket::Ack { nsp, id, args }
        }
        '4' => {
            let data = json(h.payload)?;
            if !(data.is_object() || data.is_string()) {
                return Err(PacketError::BadPayload("CONNECT_ERROR"));
            }
            SioPacket::ConnectError { nsp, data }
        }
        // '5' | '6': checked by decode_sio_header.
        kind => SioPacket::Binary {
            ack: kind == '6',
            attachments: h.attachments.unwrap_or(0),
            nsp,
            id: h.id,
        },
    })
}

/// The packet kinds that never carry an ack id, by name.
fn no_id_kind(kind: char) -> Option<&'static str> {
    match kind {
        '0' => Some("CONNECT"),
        '1' => Some("DISCONNECT"),
        '4' => Some("CONNECT_ERROR"),
        _ => None,
    }
}

/// The event name of an EVENT packet's payload, read without parsing the rest of the array: for
/// answering an event that is refused before it is decoded (e.g. because it is too large).
pub fn peek_event_name(payload: &str) -> Option<String> {
    peek_request(payload).event
}

/// What could be read of a request from the start of an EVENT payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPeek {
    /// The event (topic) name.
    pub event: Option<String>,
    /// The top-level `correlation_id` of the first argument, when that argument is an object
    /// holding one (any JSON value, as the topics echo it).
    pub correlation_id: Option<serde_json::Value>,
}

/// Reads the event name and the first argument's `correlation_id` of an EVENT payload
/// (`["name", {..., "correlation_id": ..., ...}, ...]`) in one pass, without building the payload:
/// other values are skipped, not allocated (a multi-megabyte field costs a scan, not a copy).
/// Whatever was read before the text ends or turns invalid is kept, so a truncated or malformed
/// payload still yields the name and an id that came early. For answering a request that is
/// refused before it is decoded (e.g. because it is too large). Never panics.
pub fn peek_request(payload: &str) -> RequestPeek {
    let mut out = RequestPeek::default();
    let Some(rest) = payload.trim_start().strip_prefix('[') else {
        return out;
    };
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let Some(Ok(name)) = stream.next() else {
        return out;
    };
    out.event = Some(name);
    let after = rest.get(stream.byte_offset()..).unwrap_or_default();
    let Some(first) = after.trim_start().strip_prefix(',') else {
        return out;
    };
    if first.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(first);
        // An error after the id was read (truncated text) leaves it in `out`.
        let _ = serde::de::DeserializeSeed::deserialize(
            CorrelationIdSeed(&mut out.correlation_id),
            &mut de,
        );
    }
    out
}

/// Visits an object's top-level keys, keeping `correlation_id` and skipping everything else.
struct CorrelationIdSeed<'a>(&'a mut Option<serde_json::Value>);

impl<'de> serde::de::DeserializeSeed<'de> for CorrelationIdSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CorrelationIdSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "correlation_id" {
                // The last one wins, as when the whole message is decoded.
                *self.0 = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sio_round_trip(p: SioPacket) {
        let text = encode_sio(&p);
        assert_eq!(decode_sio(&text).as_ref(), Ok(&p), "wire text {text:?}");
    }

    #[test]
    fn eio_packets_round_trip() {
        for p in [
            EioPacket::Open(OpenInfo {
                sid: "abc".into(),
                ping_interval_ms: 25000,
                ping_timeout_ms: 20000,
                max_payload: 1_000_000,
            }),
            EioPacket::Close,
            EioPacket::Ping(String::new()),
            EioPacket::Ping("probe".into()),
            EioPacket::Pong(String::new()),
            EioPacket::Message("2[\"x\"]".into()),
            EioPacket::Upgrade,
            EioPacket::Noop,
        ] {
            assert_eq!(decode_eio(&encode_eio(&p)), Ok(p));
        }
    }

    #[test]
    fn eio_open_from_python_socketio_is_understood() {
        let p = decode_eio(
            r#"0{"sid":"Lbo5JLzTotvW3g2LAAAA","upgrades":[],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}"#,
        );
        assert_eq!(
            p,
            Ok(EioPacket::Open(OpenInfo {
                sid: "Lbo5JLzTotvW3g2LAAAA".into(),
                ping_interval_ms: 25000,
                ping_timeout_ms: 20000,
                max_payload: 1_000_000
            }))
        );
    }

    #[test]
    fn eio_rejects_garbage() {
        assert_eq!(decode_eio(""), Err(PacketError::Empty));
        assert_eq!(decode_eio("9"), Err(PacketError::UnknownEioType('9')));
        assert!(matches!(decode_eio("0{}"), Err(PacketError::BadOpen(_))));
        assert!(matches!(decode_eio("0{nope"), Err(PacketError::BadOpen(_))));
    }

    #[test]
    fn sio_packets_round_trip_with_and_without_namespace_and_ack_ids() {
        for nsp in ["/", "/admin"] {
            let nsp = nsp.to_string();
            sio_round_trip(SioPacket::Connect {
                nsp: nsp.clone(),
                data: None,
            });
            sio_round_trip(SioPacket::Connect {
                nsp: nsp.clone(),
                data: Some(json!({"sid": "x"})),
            });
            sio_round_trip(SioPacket::Disconnect { nsp: nsp.clone() });
            for id in [None, Some(0), Some(12), Some(u64::MAX)] {
                sio_round_trip(SioPacket::Event {
                    nsp: nsp.clone(),
                    id,
                    name: "hello".into(),
                    args: vec![json!({"a": 1}), json!("two"), json!([3])],
                });
                sio_round_trip(SioPacket::Event {
                    nsp: nsp.clone(),
                    id,
                    name: "noargs".into(),
                    args: vec![],
                });
                sio_round_trip(SioPacket::Binary {
                    ack: false,
                    attachments: 2,
                    nsp: nsp.clone(),
                    id,
                });
            }
            for id in [0, 7, 123456] {
                sio_round_trip(SioPacket::Ack {
                    nsp: nsp.clone(),
                    id,
                    args: vec![],
                });
                sio_round_trip(SioPacket::Ack {
                    nsp: nsp.clone(),
                    id,
                    args: vec![json!({"status": "ok"}), json!(null)],
                });
                sio_round_trip(SioPacket::Binary {
                    ack: true,
                    attachments: 1,
                    nsp: nsp.clone(),
                    id: Some(id),
                });
            }
            sio_round_trip(SioPacket::ConnectError {
                nsp: nsp.clone(),
                data: json!({"message": "Not authorized"}),
            });
        }
    }

    #[test]
    fn sio_wire_forms_match_the_protocol_examples() {
        assert_eq!(
            encode_sio(&SioPacket::Connect {
                nsp: "/".into(),
                data: None
            }),
            "0"
        );
        assert_eq!(
            encode_sio(&SioPacket::Ack {
                nsp: "/".into(),
                id: 1,
                args: vec![json!("ok")]
            }),
            r#"31["ok"]"#
        );
        assert_eq!(
            decode_sio(r#"212["foo"]"#),
            Ok(SioPacket::Event {
                nsp: "/".into(),
                id: Some(12),
                name: "foo".into(),
                args: vec![]
            })
        );
        assert_eq!(
            decode_sio(r#"2/admin,456["project:delete",123]"#),
            Ok(SioPacket::Event {
                nsp: "/admin".into(),
                id: Some(456),
                name: "project:delete".into(),
                args: vec![json!(123)]
            })
        );
        assert_eq!(
            decode_sio(r#"0{"sid":"abc"}"#),
            Ok(SioPacket::Connect {
                nsp: "/".into(),
                data: Some(json!({"sid": "abc"}))
            })
        );
        assert_eq!(
            decode_sio(r#"4{"message":"Not authorized"}"#),
            Ok(SioPacket::ConnectError {
                nsp: "/".into(),
                data: json!({"message": "Not authorized"})
            })
        );
        assert_eq!(
            decode_sio("1"),
            Ok(SioPacket::Disconnect { nsp: "/".into() })
        );
        assert_eq!(
            decode_sio(r#"51-["upload",{"_placeholder":true,"num":0}]"#),
            Ok(SioPacket::Binary {
                ack: false,
                attachments: 1,
                nsp: "/".into(),
                id: None
            })
        );
    }

    #[test]
    fn sio_rejects_malformed_packets_without_panicking() {
        assert_eq!(decode_sio(""), Err(PacketError::Empty));
        assert_eq!(decode_sio("9"), Err(PacketError::UnknownSioType('9')));
        assert_eq!(decode_sio("2[]"), Err(PacketError::BadEventPayload));
        assert_eq!(decode_sio("2[1]"), Err(PacketError::BadEventPayload));
        assert_eq!(decode_sio("2{}"), Err(PacketError::BadEventPayload));
        assert!(matches!(
            decode_sio("2[\"x\""),
            Err(PacketError::BadJson(_))
        ));
        assert_eq!(decode_sio("3[]"), Err(PacketError::MissingAckId("ACK")));
        assert_eq!(decode_sio("31{}"), Err(PacketError::BadAckPayload));
        assert_eq!(
            decode_sio("299999999999999999999999[\"x\"]"),
            Err(PacketError::BadAckId)
        );
        assert_eq!(decode_sio("5x-[]"), Err(PacketError::BadAttachments));
        assert_eq!(decode_sio("5[]"), Err(PacketError::BadAttachments));
        assert_eq!(
            decode_sio("034"),
            Err(PacketError::UnexpectedAckId("CONNECT"))
        );
        assert_eq!(decode_sio("0 34"), Err(PacketError::BadPayload("CONNECT")));
        assert_eq!(
            decode_sio("1[]"),
            Err(PacketError::BadPayload("DISCONNECT"))
        );
        assert_eq!(
            decode_sio("4[1]"),
            Err(PacketError::BadPayload("CONNECT_ERROR"))
        );
        assert!(matches!(decode_sio("4"), Err(PacketError::BadJson(_))));
        // Multi-byte characters right after the type must not split a char boundary.
        assert!(decode_sio("2é").is_err());
        assert!(decode_sio("é").is_err());
        assert!(decode_eio("é").is_err());
    }

    /// A poor man's fuzzer until the cargo-fuzz targets exist: random strings over the packet
    /// alphabet never panic the decoders, and whatever decodes re-encodes to the same packet.
    #[test]
    fn random_input_never_panics_and_decoded_packets_re_encode_stably() {
        const ALPHABET: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
            "9",
            "-",
            "/",
            ",",
            "[",
            "]",
            "{",
            "}",
            "\"",
            ":",
            "a",
            "x",
            " ",
            "é",
            "\\",
            "null",
            "\"sid\"",
            "\"ev\"",
            "18446744073709551616",
        ];
        for _ in 0..20_000 {
            let len = rand::random_range(0..24);
            let text: String = (0..len)
                .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())])
                .collect();
            let _ = decode_eio(&text);
            let _ = decode_sio_header(&text);
            let _ = peek_event_name(&text);
            let _ = peek_request(&text);
            if let Ok(p) = decode_sio(&text) {
                let again = decode_sio(&encode_sio(&p));
                // BINARY packets re-encode without their placeholder payload; all else is exact.
                if !matches!(p, SioPacket::Binary { .. }) {
                    assert_eq!(again.as_ref(), Ok(&p), "input {text:?}");
                }
            }
        }
    }

    #[test]
    fn event_name_is_peeked_without_parsing_the_payload() {
        assert_eq!(
            peek_event_name(r#"["run_command",{"x":"#),
            Some("run_command".into())
        );
        assert_eq!(peek_event_name(r#" [ "a\"b" , 1]"#), Some("a\"b".into()));
        assert_eq!(peek_event_name(r#"[1,"x"]"#), None);
        assert_eq!(peek_event_name("{}"), None);
        let h = decode_sio_header(r#"27["big",{"#).expect("header");
        assert_eq!((h.kind, h.id, h.nsp), ('2', Some(7), "/"));
    }

    #[test]
    fn the_correlation_id_is_peeked_past_large_fields_and_in_truncated_text() {
        let big = "x".repeat(3 << 20);
        let text = format!(
            r#"["run_command",{{"device_id":"plc","data":"{big}","nested":{{"correlation_id":1}},"correlation_id":"c-9"}}]"#
        );
        let p = peek_request(&text);
        assert_eq!(p.event.as_deref(), Some("run_command"));
        assert_eq!(p.correlation_id, Some(json!("c-9")), "the top-level one");
        // Read from the first bytes only: an early id survives the cut, a late one is unknown.
        let early = format!(r#"["t",{{"correlation_id":{{"a":[1,2]}},"data":"{big}"#);
        assert_eq!(
            peek_request(&early[..1000]).correlation_id,
            Some(json!({"a": [1, 2]}))
        );
        assert_eq!(peek_request(&text[..1000]).correlation_id, None);
        assert_eq!(
            peek_request(&text[..1000]).event.as_deref(),
            Some("run_command")
        );
        // Other shapes: no object first, no argument, not an event array.
        assert_eq!(
            peek_request(r#"["run_command","inst-1",{"correlation_id":3}]"#),
            RequestPeek {
                event: Some("run_command".into()),
                correlation_id: None
            }
        );
        assert_eq!(peek_request(r#"["e"]"#).event.as_deref(), Some("e"));
        assert_eq!(
            peek_request(r#"{"correlation_id":1}"#),
            RequestPeek::default()
        );
        assert_eq!(
            peek_request(r#"["e", {"correlation_id": null}]"#).correlation_id,
            Some(Value::Null)
        );
    }
}
