//! Structure-aware messages for every topic: objects made of the contracts' own field names
//! (both vNIC generations, both run_command forms) with values of the right type most of the
//! time, so the fuzzer gets past the type checks to the semantic ones. Properties: validation
//! never panics and is deterministic; an accepted create reads every vNIC through both field
//! generations and keeps it verbatim; an accepted run_command either carries the command's
//! refusal or builds a request that stays on the runtime's origin.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use fuzz_support::{FIELD_NAMES, VNIC_FIELDS, assert_stays_on_origin, json, object_of, text};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{Request, error_ack, topic_names, validate};
use serde_json::Value;

#[derive(Debug)]
struct Message {
    topic: String,
    args: Vec<Value>,
}

impl<'a> Arbitrary<'a> for Message {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let topics: Vec<&str> = topic_names().collect();
        let topic = if u.ratio(15, 16)? {
            (*u.choose(&topics)?).to_owned()
        } else {
            text(u)?
        };
        let mut object = object_of(u, FIELD_NAMES)?;
        if u.ratio(3, 4)? {
            let mut vnics = Vec::new();
            u.arbitrary_loop(None, Some(3), |u| {
                vnics.push(if u.ratio(7, 8)? {
                    Value::Object(object_of(u, VNIC_FIELDS)?)
                } else {
                    json(u, 2)?
                });
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            object.insert("vnic_configs".into(), Value::Array(vnics));
        }
        let args = match u.int_in_range(0..=7)? {
            // The legacy run_command form: (instance_id, command).
            0 => vec![Value::String(text(u)?), Value::Object(object)],
            1 => vec![],
            2 => vec![json(u, 3)?],
            3 => vec![Value::Object(object), json(u, 2)?],
            _ => vec![Value::Object(object)],
        };
        Ok(Message { topic, args })
    }
}

fuzz_target!(|m: Message| {
    let result = validate(&m.topic, &m.args);
    assert_eq!(
        validate(&m.topic, &m.args),
        result,
        "validation is deterministic"
    );
    match result {
        Err(rejection) => {
            let ack = error_ack(
                &m.topic,
                &rejection.correlation_id,
                &rejection.error.to_string(),
            );
            assert_eq!(ack["correlation_id"], rejection.correlation_id);
        }
        Ok(Request::Create(r)) => {
            // Every vNIC was read (through both field generations) and kept verbatim.
            assert_eq!(r.spec.vnics.len(), r.spec.raw_vnics.len());
            for (spec, raw) in r.spec.vnics.iter().zip(&r.spec.raw_vnics) {
                let field = |k: &str| {
                    raw.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                };
                assert_eq!(
                    Some(spec.name.as_str()),
                    raw.get("name").and_then(|v| v.as_str())
                );
                if let Some(ip) = spec.ip {
                    let text = field("ip").or(field("ip_address"));
                    let address = text.and_then(|t| t.split('/').next());
                    assert_eq!(address.and_then(|a| a.parse().ok()), Some(ip));
                }
            }
        }
        Ok(Request::RunCommand(r)) => {
            assert!(!r.device_id.trim().is_empty());
            if let Ok(command) = &r.command {
                assert_stays_on_origin(command, Ipv4Addr::new(172, 30, 0, 2));
            }
        }
        Ok(_) => {}
    }
});
