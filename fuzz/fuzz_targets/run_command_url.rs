//! The run_command URL builder, as a property: whatever `api`, method, port, headers and body the
//! cloud sends, a command the agent accepts is sent to the runtime's own address and port with the
//! expected scheme, as an origin-form target whose path no dot segment or escape rewrites.
//! `api` is assembled from the pieces URL tricks are made of.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use fuzz_support::{assert_stays_on_origin, json, text};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::HttpCommand;
use serde_json::{Map, Value};

const PIECES: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    "%252e",
    "%2f",
    "%5c",
    "\\",
    "?",
    "#",
    "@",
    ":",
    "http:",
    "https://",
    "evil.example",
    "127.0.0.1",
    ":8443",
    "api",
    "status",
    "%",
    "%%",
    "%0a",
    "%00",
    ";",
    "&",
    "=",
    "[",
    "]",
    "%40",
    "+",
    "~",
    "\t",
    "\u{e9}",
    "%c0%ae",
    "%u002e",
];

#[derive(Debug)]
struct Input {
    method: String,
    api: String,
    port: Option<u16>,
    headers: Map<String, Value>,
    data: Option<Value>,
    ip: Ipv4Addr,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let method =
            (*u.choose(&["GET", "post", "Put", "DELETE", "PATCH", "HEAD", " get "])?).to_owned();
        let mut api = String::new();
        u.arbitrary_loop(None, Some(12), |u| {
            if u.ratio(3, 4)? {
                api.push_str(u.choose(PIECES)?);
            } else {
                api.push_str(&text(u)?);
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let mut headers = Map::new();
        u.arbitrary_loop(None, Some(3), |u| {
            let name = (*u.choose(&[
                "Host",
                "content-type",
                "X-Forwarded-Host",
                "Connection",
                ":authority",
                "x-a",
            ])?)
            .to_owned();
            headers.insert(name, Value::String(text(u)?));
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        Ok(Input {
            method,
            api,
            port: u.arbitrary()?,
            headers,
            data: if u.arbitrary()? {
                Some(json(u, 2)?)
            } else {
                None
            },
            ip: Ipv4Addr::from(u.arbitrary::<u32>()?),
        })
    }
}

fuzz_target!(|i: Input| {
    if let Ok(command) =
        HttpCommand::new(&i.method, &i.api, i.port, Some(&i.headers), i.data.as_ref())
    {
        assert_stays_on_origin(&command, i.ip);
    }
});
