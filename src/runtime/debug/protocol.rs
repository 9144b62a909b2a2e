//! The debugger bridge's pure half: the cloud's debug messages (`run_command` with `api: "debug"`,
//! upstream-head §3.3) into typed requests, requests into OpenPLC debug protocol commands (§3.6,
//! uppercase space-separated hex), and the runtime's replies into the cloud's answers. The texts
//! are the original's, byte for byte (en dash in "0–65535", Python reprs in the messages).
//!
//! Never does I/O. Commands are built from typed requests only: no raw hex reaches the runtime
//! from the cloud, so the runtime's admin-only function codes (license, 0x48–0x4A) stay
//! unreachable. A reply that is malformed, truncated or answers another function code is an
//! error, never an empty success (the original's G4/G5).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// `debug_get_list` takes at most this many indexes.
pub const MAX_INDEXES: usize = 256;
/// The protocol's largest frame.
pub const MAX_FRAME: usize = 4096;

const FC_INFO: u8 = 0x41;
const FC_SET: u8 = 0x42;
const FC_GET_LIST: u8 = 0x44;
const FC_GET_MD5: u8 = 0x45;
const SUCCESS: u8 = 0x7E;

/// One debug message of the cloud, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Log in to the runtime and open its debug socket.
    Start {
        /// Runtime login (default `dev`).
        username: String,
        /// Runtime password (default `dev`).
        password: String,
        /// The runtime's port (default 8443, which also means HTTPS).
        port: u16,
    },
    /// The running program's MD5.
    GetMd5,
    /// The number of debug variables.
    Info,
    /// The values of these variables.
    GetList {
        /// 1 to [`MAX_INDEXES`] variable indexes.
        indexes: Vec<u16>,
    },
    /// Force (or release) one variable.
    Set {
        /// The variable.
        index: u16,
        /// Force (`true`) or release.
        force: bool,
        /// The raw value bytes.
        value: Vec<u8>,
    },
    /// Close the session.
    Stop,
}

impl Request {
    /// Validates `data`, the `data` object of the `run_command`. `Err` is the answer's error text.
    pub fn parse(data: &Map<String, Value>) -> Result<Self, String> {
        let kind = data.get("type").map_or_else(String::new, py_str);
        match kind.as_str() {
            "debug_start" => Ok(Self::Start {
                username: text_field(data, "username")?,
                password: text_field(data, "password")?,
                port: match data.get("port") {
                    None | Some(Value::Null) => crate::runtime::command::HTTPS_PORT,
                    Some(v) => v
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            format!(
                                "Invalid port: must be an integer 1–65535, got {}",
                                py_repr(v)
                            )
                        })?,
                },
            }),
            "debug_get_md5" => Ok(Self::GetMd5),
            "debug_info" => Ok(Self::Info),
            "debug_stop" => Ok(Self::Stop),
            "debug_get_list" => {
                let indexes = match data.get("indexes") {
                    None => &[][..],
                    Some(Value::Array(a)) => a.as_slice(),
                    Some(v) => {
                        return Err(format!(
                            "indexes must be a list of integers 0–65535, got {}",
                            py_repr(v)
                        ));
                    }
                };
                if indexes.is_empty() {
                    return Err("indexes must not be empty".into());
                }
                if indexes.len() > MAX_INDEXES {
                    return Err(format!("indexes must not exceed {MAX_INDEXES} entries"));
                }
                let indexes = indexes.iter().map(index).collect::<Result<_, _>>()?;
                Ok(Self::GetList { indexes })
            }
            "debug_set" => {
                let index = index(data.get("index").unwrap_or(&Value::Null))?;
                let force = data.get("force").is_none_or(truthy);
                let value = match data.get("value") {
                    None => vec![0],
                    Some(Value::String(s)) => from_hex(s).map_err(|reason| {
                        format!(
                            "Invalid value hex string: {} ({reason})",
                            py_repr(&json!(s))
                        )
                    })?,
                    Some(v) => {
                        return Err(format!(
                            "Invalid value hex string: {} (fromhex() argument must be str, not {})",
                            py_repr(v),
                            py_type(v)
                        ));
                    }
                };
                // 42 <idx:2> <force:1> <len:2> <value>
                if value.len() > MAX_FRAME - 6 {
                    return Err(format!(
                        "Invalid value hex string: {} bytes is over the protocol's frame of {MAX_FRAME} bytes",
                        value.len()
                    ));
                }
                Ok(Self::Set {
                    index,
                    force,
                    value,
                })
            }
            other => Err(format!("Unknown debug message type: {other}")),
        }
    }

    /// The protocol command for this request (`None` for start and stop, which send none).
    pub fn command(&self) -> Option<Vec<u8>> {
        match self {
            Self::Start { .. } | Self::Stop => None,
            Self::GetMd5 => Some(vec![FC_GET_MD5, 0xDE, 0xAD, 0x00, 0x00]),
            Self::Info => Some(vec![FC_INFO]),
            Self::GetList { indexes } => {
                let mut c = Vec::with_capacity(3 + 2 * indexes.len());
                c.push(FC_GET_LIST);
                // At most MAX_INDEXES, checked by `parse`.
                c.extend_from_slice(
                    &u16::try_from(indexes.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for i in indexes {
                    c.extend_from_slice(&i.to_be_bytes());
                }
                Some(c)
            }
            Self::Set {
                index,
                force,
                value,
            } => {
                let mut c = Vec::with_capacity(6 + value.len());
                c.push(FC_SET);
                c.extend_from_slice(&index.to_be_bytes());
                c.push(u8::from(*force));
                // At most MAX_FRAME - 6, checked by `parse`.
                c.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
                c.extend_from_slice(value);
                Some(c)
            }
        }
    }

    /// The cloud's answer to the runtime's `reply` (hex) to [`Request::command`]; `Err` is the
    /// error text.
    pub fn answer(&self, reply: &str) -> Result<Value, String> {
        let malformed = || format!("Malformed reply from the runtime: {}", shorten(reply));
        let bytes = from_hex(reply).map_err(|_| malformed())?;
        let expected = self.command().and_then(|c| c.first().copied());
        if bytes.first().copied() != expected || expected.is_none() {
            return Err(malformed());
        }
        if let Self::Info = self {
            // 41 <count:u16be>, no status byte.
            return match bytes.as_slice() {
                [_, hi, lo] => Ok(
                    json!({"type": "debug_info_response", "variable_count": u16::from_be_bytes([*hi, *lo])}),
                ),
                _ => Err(malformed()),
            };
        }
        let status = *bytes.get(1).ok_or_else(malformed)?;
        if status != SUCCESS {
            return Err(status_name(status));
        }
        let rest = &bytes[2..];
        match self {
            Self::GetMd5 => {
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let md5: String = rest[..end]
                    .iter()
                    .map(|b| {
                        if b.is_ascii() {
                            char::from(*b)
                        } else {
                            '\u{FFFD}'
                        }
                    })
                    .collect();
                Ok(json!({"type": "debug_md5_response", "md5": md5}))
            }
            Self::GetList { .. } => {
                // <last:u16> <tick:u32> <len:u16> <data[len]>
                let [_, _, t0, t1, t2, t3, l0, l1, data @ ..] = rest else {
                    return Err(malformed());
                };
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                let data = data.get(..len).ok_or_else(malformed)?;
                Ok(json!({
                    "type": "debug_values_response",
                    "tick": u32::from_be_bytes([*t0, *t1, *t2, *t3]),
                    "data": to_hex(data),
                }))
            }
            Self::Set { .. } => Ok(json!({"type": "debug_set_response", "success": true})),
            Self::Info | Self::Start { .. } | Self::Stop => Err(malformed()),
        }
    }
}

/// `{"type": "debug_error", "error": text}`.
pub fn error(text: impl Into<String>) -> Value {
    json!({"type": "debug_error", "error": text.into()})
}

/// Bytes as the protocol's text: uppercase two-digit hex separated by single spaces.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Python's `bytes.fromhex`: hex pairs in any case, whitespace allowed between pairs. `Err` is
/// Python's reason text.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut i = 0;
    let bad = |at: usize| format!("non-hexadecimal number found in fromhex() arg at position {at}");
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let hi = nibble(b[i]).ok_or_else(|| bad(i))?;
        let lo = b
            .get(i + 1)
            .and_then(|c| nibble(*c))
            .ok_or_else(|| bad(i + 1))?;
        out.push(hi << 4 | lo);
        i += 2;
    }
    Ok(out)
}

fn nibble(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn status_name(status: u8) -> String {
    match status {
        0x81 => "ERROR_OUT_OF_BOUNDS".into(),
        0x82 => "ERROR_OUT_OF_MEMORY".into(),
        other => format!("UNKNOWN(0x{other:02X})"),
    }
}

/// At most 64 bytes of a reply in an error text.
fn shorten(reply: &str) -> String {
    const MAX: usize = 64 * 3;
    if reply.len() <= MAX {
        return reply.to_owned();
    }
    let mut end = MAX;
    while !reply.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reply[..end])
}

fn index(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|i| u16::try_from(i).ok())
        .ok_or_else(|| {
            format!(
                "Invalid index: must be an integer 0–65535, got {}",
                py_repr(v)
            )
        })
}

/// `username`/`password`: a string, `dev` when absent or null.
fn text_field(data: &Map<String, Value>, key: &str) -> Result<String, String> {
    match data.get(key) {
        None | Some(Value::Null) => Ok("dev".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!(
            "Invalid {key}: must be a string, got {}",
            py_type(v)
        )),
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a JSON value (a string as itself).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `repr()` of a JSON value as the original decoded it.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::with_capacity(s.len() + 2);
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                        let _ = write!(out, "\\x{:02x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&json!(k)), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<Request, String> {
        Request::parse(v.as_object().expect("object"))
    }

    fn command_hex(v: Value) -> String {
        to_hex(&req(v).expect("valid").command().expect("a command"))
    }

    #[test]
    fn commands_are_the_spec_vectors() {
        assert_eq!(
            command_hex(json!({"type": "debug_get_md5"})),
            "45 DE AD 00 00"
        );
        assert_eq!(command_hex(json!({"type": "debug_info"})), "41");
        assert_eq!(
            command_hex(json!({"type": "debug_get_list", "indexes": [0, 5, 10]})),
            "44 00 03 00 00 00 05 00 0A"
        );
        assert_eq!(
            command_hex(json!({"type": "debug_set", "index": 5, "value": "2A 00"})),
            "42 00 05 01 00 02 2A 00"
        );
        assert_eq!(
            command_hex(json!({"type": "debug_set", "index": 5, "force": false})),
            "42 00 05 00 00 01 00"
        );
        assert_eq!(
            command_hex(json!({"type": "debug_get_list", "indexes": [65535]})),
            "44 00 01 FF FF"
        );
    }

    #[test]
    fn replies_are_the_spec_vectors() {
        let md5 = req(json!({"type": "debug_get_md5"})).expect("valid");
        assert_eq!(
            md5.answer("45 7E 61 62 63 00"),
            Ok(json!({"type": "debug_md5_response", "md5": "abc"}))
        );
        let info = req(json!({"type": "debug_info"})).expect("valid");
        assert_eq!(
            info.answer("41 00 0A"),
            Ok(json!({"type": "debug_info_response", "variable_count": 10}))
        );
        let list = req(json!({"type": "debug_get_list", "indexes": [0, 5, 10]})).expect("valid");
        assert_eq!(
            list.answer("44 7E 00 0A 00 00 00 42 00 03 01 2A 00"),
            Ok(json!({"type": "debug_values_response", "tick": 66, "data": "01 2A 00"}))
        );
        assert_eq!(
            list.answer("44 7e 00 0a 00 00 00 42 00 00"),
            Ok(json!({"type": "debug_values_response", "tick": 66, "data": ""}))
        );
        assert_eq!(list.answer("44 81"), Err("ERROR_OUT_OF_BOUNDS".into()));
        assert_eq!(list.answer("44 82"), Err("ERROR_OUT_OF_MEMORY".into()));
        assert_eq!(list.answer("44 5A"), Err("UNKNOWN(0x5A)".into()));
        let set = req(json!({"type": "debug_set", "index": 5})).expect("valid");
        assert_eq!(
            set.answer("42 7E"),
            Ok(json!({"type": "debug_set_response", "success": true}))
        );
    }

    #[test]
    fn malformed_truncated_or_foreign_replies_are_errors() {
        let list = req(json!({"type": "debug_get_list", "indexes": [1]})).expect("valid");
        for reply in [
            "",
            "zz",
            "44",
            "44 7E 00 01",
            "44 7E 00 0A 00 00 00 42 00 03 01",
            "45 7E",
        ] {
            assert!(
                list.answer(reply)
                    .is_err_and(|e| e.starts_with("Malformed reply from the runtime")),
                "{reply:?}"
            );
        }
        let info = req(json!({"type": "debug_info"})).expect("valid");
        assert!(info.answer("41 00").is_err());
        assert!(info.answer("45 7E 61").is_err());
        let long = "44 ".repeat(1000);
        assert!(list.answer(&long).expect_err("malformed").chars().count() < 300);
    }

    #[test]
    fn validation_texts_are_the_originals() {
        let err = |v: Value| req(v).expect_err("refused");
        assert_eq!(
            err(json!({"type": "debug_get_list", "indexes": []})),
            "indexes must not be empty"
        );
        assert_eq!(
            err(json!({"type": "debug_get_list"})),
            "indexes must not be empty"
        );
        assert_eq!(
            err(json!({"type": "debug_get_list", "indexes": vec![1; 257]})),
            "indexes must not exceed 256 entries"
        );
        assert!(req(json!({"type": "debug_get_list", "indexes": vec![1; 256]})).is_ok());
        for (bad, repr) in [
            (json!(70000), "70000"),
            (json!(-1), "-1"),
            (json!("5"), "'5'"),
            (json!(true), "True"),
            (json!(null), "None"),
            (json!(1.5), "1.5"),
        ] {
            assert_eq!(
                err(json!({"type": "debug_get_list", "indexes": [0, bad]})),
                format!("Invalid index: must be an integer 0\u{2013}65535, got {repr}")
            );
        }
        assert_eq!(
            err(json!({"type": "debug_set"})),
            "Invalid index: must be an integer 0–65535, got None"
        );
        assert_eq!(
            err(json!({"type": "debug_set", "index": 1, "value": "2G"})),
            "Invalid value hex string: '2G' (non-hexadecimal number found in fromhex() arg at position 1)"
        );
        assert_eq!(
            err(json!({"type": "debug_set", "index": 1, "value": 5})),
            "Invalid value hex string: 5 (fromhex() argument must be str, not int)"
        );
        assert_eq!(
            err(json!({"type": "nope"})),
            "Unknown debug message type: nope"
        );
        assert_eq!(err(json!({})), "Unknown debug message type: ");
        assert_eq!(err(json!({"type": 5})), "Unknown debug message type: 5");
        assert_eq!(
            req(json!({"type": "debug_start"})),
            Ok(Request::Start {
                username: "dev".into(),
                password: "dev".into(),
                port: 8443
            })
        );
        assert!(err(json!({"type": "debug_start", "port": 70000})).starts_with("Invalid port"));
        // Truthiness of force, as Python's.
        for (force, want) in [
            (json!(0), false),
            (json!(""), false),
            (json!("x"), true),
            (json!(null), false),
        ] {
            let Ok(Request::Set { force: got, .. }) =
                req(json!({"type": "debug_set", "index": 1, "force": force}))
            else {
                panic!("valid");
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn hex_round_trips_and_reprs_quote_like_python() {
        assert_eq!(from_hex(" 2a\t00 "), Ok(vec![0x2A, 0]));
        assert_eq!(to_hex(&[0x2A, 0, 0xFF]), "2A 00 FF");
        assert!(from_hex("2 A").is_err());
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
        assert_eq!(py_repr(&json!([1, "a"])), "[1, 'a']");
    }
}
