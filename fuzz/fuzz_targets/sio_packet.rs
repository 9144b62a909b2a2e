//! WebSocket text frames from the cloud: Engine.IO / Socket.IO decoding and the decision the
//! session's reader takes for each message (pong, dispatch, error ack, end, ignore), limits
//! included. Properties: nothing panics; what decodes re-encodes to the same packet; a message
//! over the size limit is never dispatched nor answered with anything but an error ack; a
//! dispatched event is exactly the EVENT the frame carried; an error ack answers the frame's id.
#![no_main]

use fuzz_support::json_eq;
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{
    EioPacket, Inbound, MAX_INBOUND_MESSAGE, SioPacket, decode_eio, decode_sio, decode_sio_header,
    encode_eio, encode_sio, inbound,
};

fn same_sio(a: &SioPacket, b: &SioPacket) -> bool {
    match (a, b) {
        (
            SioPacket::Event {
                nsp,
                id,
                name,
                args,
            },
            SioPacket::Event {
                nsp: n2,
                id: i2,
                name: m2,
                args: a2,
            },
        ) => {
            nsp == n2 && id == i2 && name == m2 && json_eq(&args.clone().into(), &a2.clone().into())
        }
        (
            SioPacket::Ack { nsp, id, args },
            SioPacket::Ack {
                nsp: n2,
                id: i2,
                args: a2,
            },
        ) => nsp == n2 && id == i2 && json_eq(&args.clone().into(), &a2.clone().into()),
        (
            SioPacket::Connect { nsp, data: Some(d) },
            SioPacket::Connect {
                nsp: n2,
                data: Some(d2),
            },
        ) => nsp == n2 && json_eq(d, d2),
        (SioPacket::ConnectError { nsp, data }, SioPacket::ConnectError { nsp: n2, data: d2 }) => {
            nsp == n2 && json_eq(data, d2)
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = decode_eio(text) {
        assert_eq!(
            decode_eio(&encode_eio(&p)).as_ref(),
            Ok(&p),
            "EIO round trip of {text:?}"
        );
    }
    if let Ok(p) = decode_sio(text) {
        let again = decode_sio(&encode_sio(&p))
            .unwrap_or_else(|e| panic!("re-encoded {p:?} does not decode: {e}"));
        assert!(
            same_sio(&p, &again),
            "SIO round trip of {text:?}: {p:?} != {again:?}"
        );
    }

    // The reader's decision, with the real limit and with one just below this message's size.
    let frame_id = text
        .strip_prefix('4')
        .and_then(|m| decode_sio_header(m).ok())
        .and_then(|h| h.id);
    // The link's limit, and one just below the size; each topic's own limit below or above it.
    for limit in [MAX_INBOUND_MESSAGE, text.len().saturating_sub(1)] {
        for topic_limit in [limit, text.len()] {
            let is_event = text
                .strip_prefix('4')
                .and_then(|m| decode_sio_header(m).ok())
                .is_some_and(|h| h.kind == '2');
            let oversized = text.len() > limit && !(is_event && text.len() <= topic_limit);
            match inbound(text, limit, |_| topic_limit) {
                Inbound::Pong(pong) => {
                    assert!(!oversized);
                    let Ok(EioPacket::Ping(p)) = decode_eio(text) else {
                        panic!("pong for a non-ping {text:?}")
                    };
                    assert_eq!(decode_eio(&pong), Ok(EioPacket::Pong(p)));
                }
                Inbound::Dispatch { name, args, id } => {
                    assert!(!oversized, "an oversized message was dispatched");
                    let Ok(EioPacket::Message(m)) = decode_eio(text) else {
                        panic!("dispatch of a non-message {text:?}")
                    };
                    let expected = SioPacket::Event {
                        nsp: "/".into(),
                        id,
                        name,
                        args,
                    };
                    let got = decode_sio(&m).expect("a dispatched message decodes");
                    assert!(same_sio(&got, &expected), "{got:?} != {expected:?}");
                }
                Inbound::Refused {
                    warning, answer, ..
                } => {
                    assert!(!warning.is_empty());
                    if let Some((id, answer)) = answer {
                        assert_eq!(Some(id), frame_id, "error ack for another id: {text:?}");
                        assert_eq!(answer["status"], "error");
                    }
                }
                Inbound::End(reason) => {
                    assert!(!oversized);
                    assert!(!reason.is_empty());
                }
                Inbound::Ignore => {
                    assert!(!oversized, "an oversized message was ignored unanswered")
                }
            }
        }
    }
});
