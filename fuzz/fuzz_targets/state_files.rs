//! The state-file loaders (`runtime_vnics.json`, `data/clients.json`): any bytes, never a panic;
//! a file that is a JSON object keeps every entry, so a runtime is never dropped because another
//! entry is odd (modes 0 and 1, raw bytes). Mode 2: a structure-aware map of valid and odd
//! entries, written the way the agent writes these files (Python's `json.dump` format), must load
//! back exactly, entry for entry, in order.
#![no_main]

use arbitrary::Unstructured;
use fuzz_support::{VNIC_FIELDS, json, json_eq, object_of, text};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{decode_clients, decode_vnics, encode_clients, encode_vnics};
use serde_json::{Map, Value};

type Decoder = fn(&[u8]) -> Result<(Map<String, Value>, Vec<String>), String>;

fn keeps_everything(bytes: &[u8], decode: Decoder) {
    let decoded = decode(bytes);
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) {
        let (kept, _) = decoded.unwrap_or_else(|e| panic!("a JSON object refused: {e}"));
        assert!(json_eq(&Value::Object(kept), &Value::Object(map)));
    }
}

fn entries(u: &mut Unstructured, clients: bool) -> arbitrary::Result<Map<String, Value>> {
    let mut map = Map::new();
    u.arbitrary_loop(None, Some(6), |u| {
        let name = text(u)?;
        let value = match (u.int_in_range(0..=3)?, clients) {
            (0, _) => json(u, 2)?,
            (_, true) => serde_json::json!({"ip": text(u)?, "name": name}),
            (_, false) => {
                let mut vnics = Vec::new();
                u.arbitrary_loop(None, Some(3), |u| {
                    vnics.push(Value::Object(object_of(u, VNIC_FIELDS)?));
                    Ok(std::ops::ControlFlow::Continue(()))
                })?;
                Value::Array(vnics)
            }
        };
        map.insert(name, value);
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(map)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => keeps_everything(rest, decode_vnics),
        1 => keeps_everything(rest, decode_clients),
        _ => {
            let mut u = Unstructured::new(rest);
            let clients = u.arbitrary::<bool>().unwrap_or(false);
            let Ok(map) = entries(&mut u, clients) else {
                return;
            };
            let (bytes, decode): (Vec<u8>, Decoder) = if clients {
                (encode_clients(&map), decode_clients)
            } else {
                (encode_vnics(&map), decode_vnics)
            };
            assert!(bytes.is_ascii(), "written like Python's ensure_ascii");
            let (back, _) = decode(&bytes).unwrap_or_else(|e| panic!("own file refused: {e}"));
            assert!(
                json_eq(&Value::Object(back), &Value::Object(map)),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
});
