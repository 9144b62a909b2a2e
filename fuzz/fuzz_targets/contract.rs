//! Every cloud message goes through `topics::validate` first: it must answer, never panic.
//! Input: a topic name, a NUL byte, then the JSON argument array.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_agent::topics;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else { return };
    let (topic, rest) = data.split_at(split);
    let Ok(topic) = std::str::from_utf8(topic) else { return };
    let Ok(serde_json::Value::Array(args)) = serde_json::from_slice(&rest[1..]) else { return };
    let _ = topics::validate(topic, &args);
});
