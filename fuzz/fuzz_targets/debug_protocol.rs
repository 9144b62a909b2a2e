//! The debugger bridge's codec: the cloud's debug message (`data` of `run_command` with
//! `api: "debug"`) and the runtime's hex reply. Input: a JSON object, a NUL byte, the reply text.
//! Properties: nothing panics; a command is at most one protocol frame and starts with its
//! function code; hex round-trips; an answer is a success only for a reply of the request's
//! function code, and every answer is a typed object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{DebugRequest, debug_from_hex, debug_to_hex};

fuzz_target!(|input: &[u8]| {
    let (data, reply) = match input.iter().position(|b| *b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let reply = String::from_utf8_lossy(reply);
    if let Ok(bytes) = debug_from_hex(&reply) {
        assert_eq!(debug_from_hex(&debug_to_hex(&bytes)), Ok(bytes));
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(request) = DebugRequest::parse(&map) else {
        return;
    };
    let Some(command) = request.command() else {
        return;
    };
    assert!(!command.is_empty() && command.len() <= 4096, "{request:?}");
    if let Ok(answer) = request.answer(&reply) {
        let sent = debug_from_hex(&reply).expect("a success came from valid hex");
        assert_eq!(sent.first(), command.first(), "{reply}");
        assert!(answer["type"].as_str().is_some_and(|t| t.ends_with("_response")), "{answer}");
    }
});
