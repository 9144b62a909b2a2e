//! The pure parsers of untrusted bytes, in one place for the cargo-fuzz targets (`fuzz/`).
//!
//! Not an API: hidden from the docs and free to change. Only re-exports and thin pure wrappers
//! live here, so moving code between modules means changing a `use` line, not the fuzzers. Never
//! does I/O.

pub use crate::cloud::packet::{
    EioPacket, PacketError, SioPacket, decode_eio, decode_sio, decode_sio_header, encode_eio,
    encode_sio, peek_event_name,
};
pub use crate::cloud::session::{Inbound, Noisy, inbound};
pub use crate::cloud::{MAX_INBOUND_MESSAGE, MAX_REQUESTS_IN_FLIGHT};
pub use crate::contract::{RunCommandForm, RunCommandRequest, VnicSpec};
pub use crate::netevents::{InterfaceInfo, NetmonEvent, decode_line};
pub use crate::runtime::command::{HTTPS_PORT, HttpCommand};
pub use crate::state::{decode_clients, decode_vnics, encode_clients, encode_vnics};
pub use crate::timefmt::{IsoDateTime, format_utc_micros, parse_iso8601};
pub use crate::topics::{Request, answer, error_ack, topic_names, validate};
pub use crate::usage::Period;
