//! Helpers shared by the fuzz targets: structure-aware generators of the JSON the peers send, and
//! the oracles the properties are checked against. Nothing here is a copy of the code under test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::{Result, Unstructured};
use orchestrator_agent::fuzzing::HttpCommand;
use serde_json::{Map, Number, Value};

/// How the sidecar reports a netlink snapshot, compiled from its source (netmon is a binary
/// crate): the fuzzers check that what netmon reports is what the agent reads.
#[path = "../../netmon/src/model.rs"]
#[allow(dead_code)]
pub mod netmon_model;

/// netmon's DHCP codec and client state machine, compiled from their sources (pure: no sockets).
#[allow(dead_code)]
pub mod netmon_dhcp;

/// Strings the contracts care about, so generated messages reach the deep checks often.
pub const KNOWN_STRINGS: &[&str] = &[
    "",
    " ",
    "plc-1",
    "eth0",
    "wlan0",
    "eth0.100",
    "bad iface!",
    "dhcp",
    "static",
    "manual",
    "GET",
    "post",
    "DELETE",
    "CONNECT",
    "api/status",
    "/api/upload?x=1",
    "../etc/passwd",
    "%2e%2e/x",
    "http://evil.example/",
    "//evil.example",
    "2025-11-20T20:30:45.123456Z",
    "2025-11-20T20:30:45+00:00",
    "2025-02-30",
    "1h",
    "30m",
    "7d",
    "10,20",
    "10.203.180.5",
    "10.203.180.5/24",
    "10.203.180.0/24",
    "255.255.255.0",
    "10.203.180.1",
    "02:42:ac:11:00:02",
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "content-type",
    "host",
    "\u{e9}t\u{e9} \u{1f600}",
];

/// Field names of every topic's contract (both vNIC generations, both run_command forms).
pub const FIELD_NAMES: &[&str] = &[
    "correlation_id",
    "action",
    "requested_at",
    "device_id",
    "container_name",
    "vnic_configs",
    "runtime_version",
    "serial_configs",
    "dedicated_interface",
    "cpuPeriod",
    "memoryPeriod",
    "include_virtual",
    "detailed",
    "method",
    "api",
    "port",
    "headers",
    "data",
    "instance_id",
];

/// vNIC field names, 3d2c700's and the production cloud's.
pub const VNIC_FIELDS: &[&str] = &[
    "name",
    "parent_interface",
    "parent_subnet",
    "parent_gateway",
    "network_mode",
    "ip_address",
    "ip",
    "subnet",
    "gateway",
    "dns",
    "mac_address",
    "mac",
];

/// A string: mostly one the contracts know, sometimes anything.
pub fn text(u: &mut Unstructured) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(KNOWN_STRINGS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// Any JSON value, nested at most `depth` levels.
pub fn json(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 6 } else { 8 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.int_in_range(0u64..=70_000)?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(text(u)?),
        6 => {
            let mut items = Vec::new();
            u.arbitrary_loop(None, Some(4), |u| {
                items.push(json(u, depth - 1)?);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Array(items)
        }
        _ => {
            let mut map = Map::new();
            u.arbitrary_loop(None, Some(4), |u| {
                let key = if u.arbitrary()? {
                    (*u.choose(FIELD_NAMES)?).to_owned()
                } else {
                    text(u)?
                };
                map.insert(key, json(u, depth - 1)?);
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Object(map)
        }
    })
}

/// An object made of the given field names (each present or not), with values that are mostly of a
/// plausible type and sometimes anything.
pub fn object_of(u: &mut Unstructured, fields: &[&str]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for field in fields {
        if u.ratio(1, 5)? {
            continue;
        }
        let value = if u.ratio(1, 4)? {
            json(u, 2)?
        } else {
            plausible(u, field)?
        };
        map.insert((*field).to_owned(), value);
    }
    Ok(map)
}

fn plausible(u: &mut Unstructured, field: &str) -> Result<Value> {
    Ok(match field {
        "correlation_id" => Value::from(u.arbitrary::<i64>()?),
        "port" => Value::from(u.int_in_range(0u64..=70_000)?),
        "include_virtual" | "detailed" => Value::Bool(u.arbitrary()?),
        "headers" => {
            let mut map = Map::new();
            u.arbitrary_loop(None, Some(4), |u| {
                map.insert(text(u)?, Value::String(text(u)?));
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            Value::Object(map)
        }
        "dns" => Value::Array(vec![Value::String(text(u)?)]),
        // Mostly the values that ask for nothing (accepted), sometimes what is refused.
        "serial_configs" => match u.int_in_range(0..=2)? {
            0 => Value::Null,
            1 => Value::Array(Vec::new()),
            _ => Value::Array(vec![json(u, 2)?]),
        },
        "dedicated_interface" if u.arbitrary()? => Value::Null,
        "data" => json(u, 3)?,
        _ => Value::String(text(u)?),
    })
}

/// JSON equality that forgives the last bits of a float (serde_json's default float parser, without
/// its `float_roundtrip` feature, may be off by an ulp, more for subnormals; that is no bug of
/// ours).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    let scale = x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * scale
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && json_eq(va, vb))
        }
        _ => a == b,
    }
}

/// The run_command property: the HTTP request built for a validated command goes to the
/// runtime's origin and nowhere else, whatever `api`, headers and body were. Checked with the
/// request's own URI, its `Host` header, and the WHATWG URL parser (what a browser or a Python
/// `urllib`-style client would make of it) as an independent oracle.
pub fn assert_stays_on_origin(command: &HttpCommand, ip: Ipv4Addr) {
    let addr = SocketAddr::new(IpAddr::V4(ip), command.port);
    let request = command
        .request(addr)
        .expect("a validated command always builds a request");
    let uri = request.uri();
    assert!(uri.scheme().is_none(), "absolute-form target {uri}");
    assert!(uri.authority().is_none(), "authority in the target {uri}");
    assert!(
        uri.path().starts_with('/'),
        "target {uri} is not origin-form"
    );
    assert!(!uri.path().starts_with("//"), "network-path target {uri}");
    let hosts: Vec<_> = request.headers().get_all("host").iter().collect();
    assert_eq!(hosts.len(), 1, "Host headers {hosts:?}");
    assert_eq!(hosts[0].to_str().ok(), Some(addr.to_string().as_str()));

    let scheme = if command.is_tls() { "https" } else { "http" };
    let full = format!("{scheme}://{addr}{uri}");
    let parsed = url::Url::parse(&full).unwrap_or_else(|e| panic!("{full:?} does not parse: {e}"));
    assert_eq!(parsed.scheme(), scheme, "{full:?}");
    assert_eq!(parsed.host(), Some(url::Host::Ipv4(ip)), "{full:?}");
    assert_eq!(
        parsed.port_or_known_default(),
        Some(command.port),
        "{full:?}"
    );
    assert!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "{full:?}"
    );
    // No dot segment was resolved away: the path the runtime routes is the one that was checked
    // (WHATWG only adds percent-escapes otherwise, which decoding undoes).
    assert_eq!(
        percent_decode(parsed.path()),
        percent_decode(uri.path()),
        "{full:?} normalises to {}",
        parsed.path()
    );
}

/// `%XX` decoding (once; malformed escapes kept as they are).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}
