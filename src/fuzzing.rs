//! The pure parsers of untrusted bytes, in one place for the cargo-fuzz targets (`fuzz/`).
//!
//! Not an API: hidden from the docs and free to change. Only re-exports and thin pure wrappers
//! live here, so moving code between modules means changing a `use` line, not the fuzzers. Never
//! does I/O.

pub use crate::cloud::inbound::{Inbound, Noisy, inbound};
pub use crate::cloud::{MAX_INBOUND_MESSAGE, MAX_REQUESTS_IN_FLIGHT};
pub use crate::runtime::command::{Fields, HTTPS_PORT, HttpCommand};
pub use crate::runtime::debug::{
    Request as DebugRequest, from_hex as debug_from_hex, to_hex as debug_to_hex,
};
pub use crate::sio::packet::{
    EioPacket, PacketError, SioPacket, decode_eio, decode_sio, decode_sio_header, encode_eio,
    encode_sio, peek_event_name,
};
pub use crate::state::{decode_clients, decode_vnics, encode_clients, encode_vnics};
pub use crate::timefmt::{IsoDateTime, format_utc_micros, parse_iso8601};
pub use crate::topics::contract::ContractError;
pub use crate::topics::{CreateNewRuntime, Rejection, RunCommand, error_ack, topic_names};
pub use crate::usage::Period;
pub use netmon_proto::{Event as NetmonEvent, InterfaceInfo, Message, decode_message};

use serde_json::{Map, Value};

/// A request [`validate`] accepted, as the fuzzers look at it: the two whose contents they check,
/// and every other one by its debug text.
#[derive(Debug)]
pub enum Request {
    Create(CreateNewRuntime),
    RunCommand(RunCommand),
    Other(String),
}

impl PartialEq for Request {
    /// Requests are plain data: equal when they print the same.
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

/// Runs `pieces` (an HTTP response head, then WebSocket frames) through the cloud link's upload
/// tap, rewriting text frames over `over` bytes (the link uses 1 MiB), and returns what the
/// WebSocket layer above it reads.
pub fn upload_tap(pieces: &[&[u8]], over: u64) -> Vec<u8> {
    crate::cloud::tap::run_pieces(pieces, over)
}

/// Validates an event as the dispatcher does (`topics::validate`).
pub fn validate(topic: &str, args: &[Value]) -> Result<Request, Rejection> {
    let request = crate::topics::validate(topic, args)?;
    let text = format!("{request:?}");
    let any: Box<dyn std::any::Any> = request;
    let any = match any.downcast::<CreateNewRuntime>() {
        Ok(create) => return Ok(Request::Create(*create)),
        Err(any) => any,
    };
    match any.downcast::<RunCommand>() {
        Ok(command) => Ok(Request::RunCommand(*command)),
        Err(_) => Ok(Request::Other(text)),
    }
}

/// The ack of an outcome, as the topics build it (`topics::answer`).
pub fn answer(
    action: &str,
    correlation_id: &Value,
    result: Result<Map<String, Value>, String>,
) -> Value {
    crate::topics::answer(action, correlation_id, result)
}
