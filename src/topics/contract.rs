//! The generic message checker: declarative contracts, their error messages, and the parts every
//! request shares (the correlation id, `BASE_MESSAGE`, `BASE_DEVICE`).
//!
//! A contract is an ordered list of [`Field`]s; [`check`] walks it in declaration order and stops
//! at the first failure, like the original agent (upstream §3.1). Errors keep the original
//! texts (`Missing required field: 'Missing key: …'`, `Invalid field type: <message>`) and name
//! the offending field by its path (`vnic_configs[1].parent_interface`), see [`ContractError`].
//!
//! Pure: no I/O, no clock. It knows field shapes, not what a topic does: each topic's contract
//! and typed request live in the topic's own file, and checks that need more than a type (IPs
//! inside subnets, container-name rules) are the runtime's validated types, which the topic builds
//! right after its contract passed.
//!
//! Rules the descriptors implement (spec README §1–2, upstream §3.2):
//! - booleans are not numbers;
//! - a key present with `null` is "present": it passes only when the field is optional;
//! - dates are ISO 8601 / RFC 3339 per [`crate::timefmt::parse_iso8601`];
//! - unknown keys are ignored (and vNIC objects are kept verbatim).

use serde_json::{Map, Value};

use crate::timefmt;

/// The type a field must have.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A JSON number (integer or float), never a boolean.
    Number,
    /// A JSON string, empty allowed.
    Str,
    /// A JSON string with at least one non-whitespace character.
    NonEmptyStr,
    /// `true` or `false`.
    Boolean,
    /// A string holding an ISO 8601 date or date-time.
    Date,
    /// A usage period string ([`is_period`]): `N`, `Nm`, `Nh` or `Nd` back from now, or
    /// `"<start>,<end>"` in unix seconds.
    Period,
    /// A host interface name: 1 to 15 characters of `[A-Za-z0-9_.-]`.
    InterfaceName,
    /// An integer TCP port, 1 to 65535.
    Port,
    /// An object whose values are all strings (HTTP headers).
    StringMap,
    /// Any JSON value.
    Any,
    /// A list whose elements all have the given kind.
    List(&'static Kind),
    /// An object validated against a nested contract.
    Object(&'static [Field]),
}

impl Kind {
    /// The message of a type mismatch for this kind (upstream §3.2 wording where one exists).
    pub fn mismatch_message(&self) -> &'static str {
        match self {
            Kind::Number => "Value must be a number.",
            Kind::Str => "Value must be a string.",
            Kind::NonEmptyStr => "Value must be a non-empty string.",
            Kind::Boolean => "Value must be a boolean.",
            Kind::Date => "Value must be a valid ISO datetime string.",
            Kind::Period => {
                "Value must be a period string: N (seconds), Nm, Nh or Nd back from now (N >= 0), or \"<start>,<end>\" in unix seconds (start <= end)."
            }
            Kind::InterfaceName => {
                "Value must be an interface name (1 to 15 characters from A-Z, a-z, 0-9, '_', '.', '-')."
            }
            Kind::Port => "Value must be a port number (an integer from 1 to 65535).",
            Kind::StringMap => "Value must be an object whose values are strings.",
            Kind::Any => "Value is not allowed.",
            Kind::List(_) => "Value must be a list.",
            Kind::Object(_) => "Value must be an object.",
        }
    }
}

/// One entry of a contract.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The JSON key.
    pub name: &'static str,
    /// The type its value must have.
    pub kind: Kind,
    /// Required fields must be present (and not `null`); optional ones may be absent or `null`.
    pub required: bool,
}

/// A required field.
pub const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

/// An optional field (absent or `null` passes).
pub const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

/// Why a message was refused. `Display` is the text sent in the error ack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// A required key is absent. Renders upstream's text, `Missing required field: 'Missing key:
    /// <path>'` (the inner quotes are literal: upstream formatted a `KeyError`, §3.3).
    #[error("Missing required field: 'Missing key: {path}'")]
    Missing { path: String },
    /// A value has the wrong type. Renders upstream's text, `Invalid field type: <message>`, then
    /// names the field: `Invalid field type: Value must be a number. (field: correlation_id)`.
    #[error("Invalid field type: {message} (field: {path})")]
    InvalidType { path: String, message: &'static str },
    /// The message (top-level argument) is not a JSON object.
    #[error("Invalid message: expected a JSON object, got {got}")]
    NotAnObject { got: &'static str },
    /// The event carried the wrong number of arguments.
    #[error("Invalid message: expected {expected}, got {got} argument(s)")]
    Arity { expected: &'static str, got: usize },
    /// No topic of that name.
    #[error("Unknown topic: {topic}")]
    UnknownTopic { topic: String },
    /// A check after the contract failed (text kept verbatim, e.g. upstream's
    /// `Container name must be a non-empty string`).
    #[error("{0}")]
    Semantic(&'static str),
    /// A value of the right type that the runtime's validation refuses (an address outside its
    /// subnet, a bad container name): `Invalid <field>: <why>`.
    #[error("Invalid {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ContractError {
    /// The dotted path of the offending field, when the error is about one field.
    pub fn path(&self) -> Option<&str> {
        match self {
            ContractError::Missing { path } | ContractError::InvalidType { path, .. } => Some(path),
            ContractError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// True for a missing required key.
    pub fn is_missing(&self) -> bool {
        matches!(self, ContractError::Missing { .. })
    }

    /// True for a type mismatch.
    pub fn is_invalid_type(&self) -> bool {
        matches!(self, ContractError::InvalidType { .. })
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Validates `data` against `contract` (declaration order, first failure wins).
pub fn check(contract: &[Field], data: &Map<String, Value>) -> Result<(), ContractError> {
    check_at("", contract, data)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

pub(crate) fn check_at(
    prefix: &str,
    contract: &[Field],
    data: &Map<String, Value>,
) -> Result<(), ContractError> {
    for field in contract {
        let path = join(prefix, field.name);
        match data.get(field.name) {
            None if field.required => return Err(ContractError::Missing { path }),
            None => {}
            Some(Value::Null) if !field.required => {}
            Some(value) => check_value(&path, &field.kind, value)?,
        }
    }
    Ok(())
}

fn check_value(path: &str, kind: &Kind, value: &Value) -> Result<(), ContractError> {
    let ok = match (kind, value) {
        (Kind::Any, _) => true,
        (Kind::Number, Value::Number(_)) => true,
        (Kind::Str, Value::String(_)) => true,
        (Kind::NonEmptyStr, Value::String(s)) => !s.trim().is_empty(),
        (Kind::Boolean, Value::Bool(_)) => true,
        (Kind::Date, Value::String(s)) => timefmt::is_iso8601(s),
        (Kind::Period, Value::String(s)) => is_period(s),
        (Kind::InterfaceName, Value::String(s)) => is_interface_name(s),
        (Kind::Port, Value::Number(n)) => n.as_u64().is_some_and(|p| (1..=65535).contains(&p)),
        (Kind::StringMap, Value::Object(map)) => map.values().all(Value::is_string),
        (Kind::List(inner), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_value(&format!("{path}[{i}]"), inner, item)?;
            }
            true
        }
        (Kind::Object(fields), Value::Object(map)) => {
            check_at(path, fields, map)?;
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ContractError::InvalidType {
            path: path.to_owned(),
            message: kind.mismatch_message(),
        })
    }
}

/// A Linux interface name as the agent accepts it: 1 to 15 characters of `[A-Za-z0-9_.-]`.
pub fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A `cpuPeriod` / `memoryPeriod` the usage history can answer: the syntax of
/// [`usage::Period::parse`](crate::usage::Period::parse), neither a negative duration (a window in
/// the future) nor a range that ends before it starts. Upstream answered both, and text that does
/// not parse at all, with the last hour as if nothing were wrong.
pub fn is_period(text: &str) -> bool {
    // Parsed against a clock at 0: a relative period that fits there (N × unit does not overflow)
    // fits at any later time too, and `start <= end` then means "not negative".
    crate::usage::Period::parse(text, 0).is_ok_and(|p| p.start <= p.end)
}

// ---------------------------------------------------------------------------------------------
// What every request shares
// ---------------------------------------------------------------------------------------------

/// Optional `correlation_id`, `action`, `requested_at` (upstream-head §1.2: today's BASE_MESSAGE;
/// when present they must have the right type and be a real date). Every topic contract starts
/// with these three, in this order.
pub const BASE_MESSAGE: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
];

/// BASE_MESSAGE + a non-empty `device_id`.
pub const BASE_DEVICE: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::NonEmptyStr),
];

/// Returns `args[0]` as an object when the event carried exactly one argument.
pub fn single_object(args: &[Value]) -> Result<&Map<String, Value>, ContractError> {
    match args {
        [Value::Object(map)] => Ok(map),
        [other] => Err(ContractError::NotAnObject {
            got: json_type_name(other),
        }),
        _ => Err(ContractError::Arity {
            expected: "one object",
            got: args.len(),
        }),
    }
}

/// The correlation id as received (any JSON type), `null` when absent. Used for error acks even
/// when validation fails.
pub fn correlation_id_of(args: &[Value]) -> Value {
    args.iter()
        .find_map(|a| a.as_object().and_then(|m| m.get("correlation_id")).cloned())
        .unwrap_or(Value::Null)
}

/// The string at `key` (empty when absent: for fields the contract made sure of).
pub(crate) fn string(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The string at `key`, if it is one.
pub(crate) fn opt_string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Fields common to every request: the correlation id echoed back exactly as received.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseMessage {
    /// Echoed back verbatim (a number in practice; `null` for the legacy `run_command`).
    pub correlation_id: Value,
    /// `action` as sent, if any (never used for behaviour).
    pub action: Option<String>,
    /// `requested_at` as sent, if any (already checked to be an ISO 8601 date).
    pub requested_at: Option<String>,
}

impl BaseMessage {
    /// Parses BASE_MESSAGE.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(BASE_MESSAGE, map)?;
        Ok(Self::from_checked(map))
    }

    /// Reads a map that passed a contract including BASE_MESSAGE's fields.
    pub(crate) fn from_checked(map: &Map<String, Value>) -> Self {
        Self {
            correlation_id: map.get("correlation_id").cloned().unwrap_or(Value::Null),
            action: opt_string(map, "action"),
            requested_at: opt_string(map, "requested_at"),
        }
    }
}

/// A request naming one device: `start_device`, `stop_device`, `restart_device`,
/// `get_device_status` (BASE_DEVICE).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRequest {
    pub base: BaseMessage,
    /// Non-empty (not checked against the runtimes that exist).
    pub device_id: String,
}

impl DeviceRequest {
    /// Parses BASE_DEVICE.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(BASE_DEVICE, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            device_id: string(map, "device_id"),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test data must be an object, got {other}"),
        }
    }

    fn err(contract_result: Result<impl std::fmt::Debug, ContractError>) -> String {
        contract_result
            .expect_err("expected a contract error")
            .to_string()
    }

    #[test]
    fn booleans_are_not_numbers() {
        assert_eq!(
            err(BaseMessage::parse(&obj(json!({"correlation_id": true})))),
            "Invalid field type: Value must be a number. (field: correlation_id)"
        );
        assert!(
            DeviceRequest::parse(&obj(json!({"correlation_id": 1.5, "device_id": "d"}))).is_ok()
        );
    }

    #[test]
    fn action_and_requested_at_are_optional_but_checked_when_present() {
        let mut m = obj(json!({"correlation_id": 1}));
        assert!(BaseMessage::parse(&m).is_ok());
        m.insert("requested_at".into(), Value::Null);
        assert!(BaseMessage::parse(&m).is_ok());
        m.insert("requested_at".into(), json!("yesterday"));
        assert_eq!(
            err(BaseMessage::parse(&m)),
            "Invalid field type: Value must be a valid ISO datetime string. (field: requested_at)"
        );
        m.insert("requested_at".into(), json!("2025-11-20"));
        m.insert("action".into(), json!(7));
        assert_eq!(
            err(BaseMessage::parse(&m)),
            "Invalid field type: Value must be a string. (field: action)"
        );
    }

    #[test]
    fn base_device_requires_a_non_empty_device_id() {
        assert_eq!(
            err(DeviceRequest::parse(&obj(
                json!({"correlation_id": 1, "device_id": ""})
            ))),
            "Invalid field type: Value must be a non-empty string. (field: device_id)"
        );
        // BASE_MESSAGE is optional at HEAD (upstream-head §1.2): processed, answered with null.
        let r = DeviceRequest::parse(&obj(json!({"device_id": "x"}))).unwrap();
        assert_eq!(r.base.correlation_id, Value::Null);
        let r = DeviceRequest::parse(&obj(json!({"correlation_id": 1, "device_id": "x",
            "action": "start_device", "requested_at": "2025-11-20 20:30:45+03:00"})))
        .unwrap();
        assert_eq!(r.base.action.as_deref(), Some("start_device"));
    }

    #[test]
    fn interface_names_longer_than_15_or_with_odd_characters_are_refused() {
        for name in ["", "a234567890123456", "eth 0", "eth0/1", "ét0"] {
            assert!(!is_interface_name(name), "{name}");
        }
        assert!(is_interface_name("enp0s31f6.100"));
        assert!(is_interface_name("a23456789012345"));
    }

    #[test]
    fn single_object_refuses_non_objects_and_wrong_arity() {
        assert_eq!(
            err(single_object(&[json!([1])])),
            "Invalid message: expected a JSON object, got a list"
        );
        assert_eq!(
            err(single_object(&[json!({}), json!({})])),
            "Invalid message: expected one object, got 2 argument(s)"
        );
        assert!(single_object(&[json!({})]).is_ok());
    }

    #[test]
    fn correlation_id_is_echoed_as_received() {
        assert_eq!(
            correlation_id_of(&[json!({"correlation_id": "abc"})]),
            json!("abc")
        );
        assert_eq!(
            correlation_id_of(&[json!({"correlation_id": 1.25})]),
            json!(1.25)
        );
        assert_eq!(correlation_id_of(&[json!("x")]), Value::Null);
        assert_eq!(correlation_id_of(&[]), Value::Null);
    }

    #[test]
    fn error_predicates_and_paths() {
        let e = check(BASE_DEVICE, &obj(json!({"correlation_id": 1}))).unwrap_err();
        assert!(e.is_missing() && !e.is_invalid_type());
        assert_eq!(e.path(), Some("device_id"));
        let e = ContractError::Invalid {
            field: "vnic_configs[0].ip".into(),
            message: "no".into(),
        };
        assert_eq!(e.path(), Some("vnic_configs[0].ip"));
        assert_eq!(e.to_string(), "Invalid vnic_configs[0].ip: no");
    }
}
