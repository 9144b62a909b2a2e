//! Every cloud message goes through `topics::validate` first: whatever the bytes, it answers (a
//! typed request or a rejection echoing the correlation id), never panics.
//! Input: a topic name, a NUL byte, then the JSON argument array (as a Socket.IO EVENT carries it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{answer, error_ack, validate};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (topic, rest) = data.split_at(split);
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let Ok(Value::Array(args)) = serde_json::from_slice(&rest[1..]) else {
        return;
    };
    match validate(topic, &args) {
        Ok(request) => {
            // Validation is a pure function of the message.
            assert_eq!(validate(topic, &args).ok(), Some(request));
            let cid = args
                .first()
                .and_then(|a| a.get("correlation_id"))
                .cloned()
                .unwrap_or(Value::Null);
            let ack = answer(topic, &cid, Ok(Map::new()));
            assert_eq!(ack["action"], topic);
        }
        Err(rejection) => {
            let ack = error_ack(
                topic,
                &rejection.correlation_id,
                &rejection.error.to_string(),
            );
            assert_eq!(ack["status"], "error");
            assert_eq!(ack["correlation_id"], rejection.correlation_id);
        }
    }
});
