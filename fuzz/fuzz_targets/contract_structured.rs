//! Structure-aware messages for every topic: objects made of the contracts' own field names
//! (both vNIC generations, both run_command forms) with values of the right type most of the
//! time, so the fuzzer gets past the type checks to the semantic ones. Properties: validation
//! never panics and is deterministic; an accepted create reads every vNIC through both field
//! generations; an accepted run_command either refuses cleanly in the runtime's validation or
//! builds a request that stays on the runtime's origin.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use fuzz_support::{FIELD_NAMES, VNIC_FIELDS, assert_stays_on_origin, json, object_of, text};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{HttpCommand, Request, error_ack, topic_names, validate};
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
            let specs = r.vnics();
            assert_eq!(specs.len(), r.vnic_configs.len());
            for (spec, raw) in specs.iter().zip(&r.vnic_configs) {
                let field = |k: &str| raw.get(k).and_then(|v| v.as_str());
                assert_eq!(Some(spec.name.as_str()), field("name"));
                let ip = field("ip").or(field("ip_address"));
                assert_eq!(spec.ip.as_deref(), ip);
            }
        }
        Ok(Request::RunCommand(r)) => {
            assert!(!r.device_id.trim().is_empty());
            if let Ok(command) =
                HttpCommand::new(&r.method, &r.api, r.port, Some(&r.headers), r.data.as_ref())
            {
                assert_stays_on_origin(&command, Ipv4Addr::new(172, 30, 0, 2));
            }
        }
        Ok(_) => {}
    }
});
