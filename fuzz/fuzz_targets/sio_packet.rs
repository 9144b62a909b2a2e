//! Engine.IO / Socket.IO text frames from the network: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_agent::cloud::packet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = packet::decode_eio(text);
    let _ = packet::decode_sio(text);
});
