//! The run_command URL builder, as a property: whatever `api`, method, port, headers, `params`,
//! body and `files` the cloud sends, a command the agent accepts is sent to the runtime's own
//! address and port with the expected scheme, as an origin-form target whose path no dot segment
//! or escape rewrites (`params` only ever add a query). `api` and string `params` are assembled
//! from the pieces URL tricks are made of. An upload declares exactly one `Content-Type` (its real
//! boundary) and a `Content-Length` equal to the bytes sent.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Result, Unstructured};
use fuzz_support::{assert_stays_on_origin, json, text};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{Fields, HttpCommand};
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
    params: Option<Value>,
    data: Option<Value>,
    files: Option<Value>,
    ip: Ipv4Addr,
}

/// `api`-like text from [`PIECES`] and arbitrary text.
fn pieces(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    u.arbitrary_loop(None, Some(12), |u| {
        if u.ratio(3, 4)? {
            out.push_str(u.choose(PIECES)?);
        } else {
            out.push_str(&text(u)?);
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// `params`: a raw string, an object or a list of pairs, or any JSON.
fn params(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.choose_index(4)? {
        0 => Value::String(pieces(u)?),
        1 => {
            let mut map = Map::new();
            u.arbitrary_loop(None, Some(3), |u| {
                map.insert(pieces(u)?, json(u, 2)?);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Object(map)
        }
        2 => {
            let mut list = Vec::new();
            u.arbitrary_loop(None, Some(3), |u| {
                list.push(Value::Array(vec![Value::String(pieces(u)?), json(u, 1)?]));
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Array(list)
        }
        _ => json(u, 2)?,
    })
}

/// `files`: entries with valid or invalid base64 and arbitrary names, or any JSON.
fn files(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 8)? {
        return json(u, 2);
    }
    let mut map = Map::new();
    u.arbitrary_loop(None, Some(3), |u| {
        let content = if u.arbitrary()? {
            let bytes: Vec<u8> = u.arbitrary()?;
            let mut b64 = data_encoding::BASE64.encode(&bytes);
            if u.ratio(1, 4)? {
                b64.insert_str(b64.len() / 2, &text(u)?);
            }
            Value::String(b64)
        } else {
            json(u, 0)?
        };
        let mut entry = Map::new();
        entry.insert("content_base64".into(), content);
        if u.arbitrary()? {
            entry.insert("filename".into(), Value::String(text(u)?));
        }
        if u.arbitrary()? {
            entry.insert("content_type".into(), Value::String(text(u)?));
        }
        map.insert(text(u)?, Value::Object(entry));
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(Value::Object(map))
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let method =
            (*u.choose(&["GET", "post", "Put", "DELETE", "PATCH", "HEAD", " get "])?).to_owned();
        let api = pieces(u)?;
        let mut headers = Map::new();
        u.arbitrary_loop(None, Some(3), |u| {
            let name = (*u.choose(&[
                "Host",
                "content-type",
                "Content-Type",
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
            params: if u.arbitrary()? {
                Some(params(u)?)
            } else {
                None
            },
            data: if u.arbitrary()? {
                Some(json(u, 2)?)
            } else {
                None
            },
            files: if u.arbitrary()? {
                Some(files(u)?)
            } else {
                None
            },
            ip: Ipv4Addr::from(u.arbitrary::<u32>()?),
        })
    }
}

fuzz_target!(|i: Input| {
    let fields = Fields {
        method: &i.method,
        api: &i.api,
        port: i.port,
        headers: Some(&i.headers),
        params: i.params.as_ref(),
        data: i.data.as_ref(),
        files: i.files.as_ref(),
    };
    let Ok(command) = HttpCommand::from_fields(&fields) else {
        return;
    };
    assert_stays_on_origin(&command, i.ip);
    let sent: u64 = command.body_chunks().iter().map(|c| c.len() as u64).sum();
    assert_eq!(sent, command.body_len());
    if let Some(upload) = &command.multipart {
        let request = command
            .request(std::net::SocketAddr::from((i.ip, command.port)))
            .expect("an accepted command builds");
        let types: Vec<_> = request
            .headers()
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .collect();
        assert_eq!(types.len(), 1, "one Content-Type");
        assert_eq!(types[0].to_str().ok(), Some(upload.content_type().as_str()));
        let length = request.headers().get(http::header::CONTENT_LENGTH);
        assert_eq!(
            length.and_then(|v| v.to_str().ok()),
            Some(sent.to_string().as_str())
        );
    }
});
