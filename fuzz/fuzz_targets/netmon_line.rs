//! JSON lines from the netmon socket (shared volume: any container could write there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = orchestrator_agent::netevents::decode_line(data);
});
