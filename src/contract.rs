//! Declarative message contracts, their error messages, and the typed requests they produce.
//!
//! A contract is an ordered list of [`Field`]s; [`check`] walks it in declaration order and stops
//! at the first failure, like the original agent (upstream §3.1). Errors keep the original
//! texts (`Missing required field: 'Missing key: …'`, `Invalid field type: <message>`) and name
//! the offending field by its path (`vnic_configs[1].parent_interface`), see [`ContractError`].
//!
//! This module is pure: no I/O, no clock, no topic dispatch. It knows field shapes, not what a
//! topic does; semantic checks that need more than a type (IPs inside subnets, unicast MACs,
//! container-name rules) belong to the runtime. The `topics` module maps event names to the
//! contracts and request types defined here.
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
}

impl ContractError {
    /// The dotted path of the offending field, when the error is about one field.
    pub fn path(&self) -> Option<&str> {
        match self {
            ContractError::Missing { path } | ContractError::InvalidType { path, .. } => Some(path),
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

fn check_at(
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
// Contracts
// ---------------------------------------------------------------------------------------------

/// `correlation_id` + optional `action`/`requested_at` (upstream §12 item 5: the later, lenient
/// BASE_MESSAGE; when present they must have the right type and be a real date).
pub const BASE_MESSAGE: &[Field] = &[
    req("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
];

/// BASE_MESSAGE + a non-empty `device_id`.
pub const BASE_DEVICE: &[Field] = &[
    req("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::NonEmptyStr),
];

/// One vNIC. Both field generations are accepted (spec README §1): 3d2c700's `ip_address`,
/// `mac_address`, `subnet` CIDR, `parent_subnet`, `parent_gateway`, `network_mode`
/// `manual`|`dhcp`, and the production cloud's `ip`, `mac`, `subnet` netmask, `network_mode`
/// `static`|`dhcp`. Only types and presence are checked here.
pub const VNIC: &[Field] = &[
    req("name", Kind::Str),
    req("parent_interface", Kind::InterfaceName),
    opt("parent_subnet", Kind::Str),
    opt("parent_gateway", Kind::Str),
    req("network_mode", Kind::Str),
    opt("ip_address", Kind::Str),
    opt("ip", Kind::Str),
    opt("subnet", Kind::Str),
    opt("gateway", Kind::Str),
    opt("dns", Kind::List(&Kind::Str)),
    opt("mac_address", Kind::Str),
    opt("mac", Kind::Str),
];

/// `create_new_runtime` (upstream §2.1, §12 item 8).
pub const CREATE_NEW_RUNTIME: &[Field] = &[
    req("correlation_id", Kind::Number),
    req("container_name", Kind::Str),
    req("vnic_configs", Kind::List(&Kind::Object(VNIC))),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    opt("runtime_version", Kind::Str),
];

/// `delete_device` (upstream §2.2).
pub const DELETE_DEVICE: &[Field] = &[
    req("correlation_id", Kind::Number),
    req("device_id", Kind::Str),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
];

/// `get_consumption_orchestrator` (upstream §2.4).
pub const CONSUMPTION_ORCHESTRATOR: &[Field] = &[
    req("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("cpuPeriod", Kind::Period),
    req("memoryPeriod", Kind::Period),
];

/// `get_consumption_device` (upstream §2.5).
pub const CONSUMPTION_DEVICE: &[Field] = &[
    req("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::NonEmptyStr),
    req("cpuPeriod", Kind::Period),
    req("memoryPeriod", Kind::Period),
];

/// `get_host_interfaces` (upstream §12 item 3).
pub const HOST_INTERFACES: &[Field] = &[
    req("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    opt("include_virtual", Kind::Boolean),
    opt("detailed", Kind::Boolean),
];

/// `run_command`, one-object form (upstream §12 item 4).
pub const RUN_COMMAND: &[Field] = &[
    req("correlation_id", Kind::Number),
    req("device_id", Kind::NonEmptyStr),
    req("method", Kind::NonEmptyStr),
    req("api", Kind::Str),
    opt("port", Kind::Port),
    opt("headers", Kind::StringMap),
    opt("data", Kind::Any),
];

/// `run_command`, the command object of the original two-argument form (upstream §6.1).
pub const RUN_COMMAND_LEGACY: &[Field] = &[
    req("method", Kind::NonEmptyStr),
    req("api", Kind::Str),
    opt("port", Kind::Port),
    opt("headers", Kind::StringMap),
    opt("data", Kind::Any),
];

// ---------------------------------------------------------------------------------------------
// Typed requests
// ---------------------------------------------------------------------------------------------

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

fn string(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Option<String> {
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

    fn from_checked(map: &Map<String, Value>) -> Self {
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

/// `create_new_runtime`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRuntimeRequest {
    pub base: BaseMessage,
    /// Non-blank (whitespace is not trimmed away; name rules are the runtime's to check).
    pub container_name: String,
    /// At least one; each object verbatim as received (persisted exactly like that). Read the
    /// fields through [`VnicSpec::from_map`].
    pub vnic_configs: Vec<Map<String, Value>>,
    /// Image tag to run (upstream §12 item 8); `None` means the configured default.
    pub runtime_version: Option<String>,
}

impl CreateRuntimeRequest {
    /// Parses `create_new_runtime` (contract, then upstream's two post-checks with their texts).
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(CREATE_NEW_RUNTIME, map)?;
        let container_name = string(map, "container_name");
        if container_name.trim().is_empty() {
            return Err(ContractError::Semantic(
                "Container name must be a non-empty string",
            ));
        }
        let vnic_configs: Vec<Map<String, Value>> = map
            .get("vnic_configs")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_object).cloned().collect())
            .unwrap_or_default();
        if vnic_configs.is_empty() {
            return Err(ContractError::Semantic(
                "At least one vNIC configuration is required",
            ));
        }
        Ok(Self {
            base: BaseMessage::from_checked(map),
            container_name,
            vnic_configs,
            runtime_version: opt_string(map, "runtime_version"),
        })
    }

    /// The vNICs with both field generations folded into one view.
    pub fn vnics(&self) -> Vec<VnicSpec> {
        self.vnic_configs.iter().map(VnicSpec::from_map).collect()
    }
}

/// How a vNIC gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VnicMode {
    /// `manual` (3d2c700) or `static` (production cloud): the address in `ip`/`ip_address`.
    Static,
    /// `dhcp`.
    Dhcp,
    /// Anything else, as sent (the original treated it like DHCP; the runtime decides).
    Other(String),
}

/// A vNIC read through both field generations. The original map stays the source of truth
/// (it is persisted verbatim); this is a convenience view.
#[derive(Debug, Clone, PartialEq)]
pub struct VnicSpec {
    pub name: String,
    pub parent_interface: String,
    pub mode: VnicMode,
    /// `ip` or `ip_address` (the first non-null wins, `ip` first), verbatim (may carry `/prefix`).
    pub ip: Option<String>,
    /// `mac` or `mac_address`, verbatim.
    pub mac: Option<String>,
    /// `subnet` verbatim: a CIDR (3d2c700) or a dotted netmask (production cloud).
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    /// 3d2c700 only: the MACVLAN subnet (CIDR) for the parent.
    pub parent_subnet: Option<String>,
    /// 3d2c700 only: the MACVLAN gateway for the parent.
    pub parent_gateway: Option<String>,
    pub dns: Vec<String>,
}

impl VnicSpec {
    /// Reads a vNIC object (one that passed [`VNIC`]; missing fields read as empty/`None`).
    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mode = match map
            .get("network_mode")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "manual" | "static" => VnicMode::Static,
            "dhcp" => VnicMode::Dhcp,
            other => VnicMode::Other(other.to_owned()),
        };
        Self {
            name: string(map, "name"),
            parent_interface: string(map, "parent_interface"),
            mode,
            ip: opt_string(map, "ip").or_else(|| opt_string(map, "ip_address")),
            mac: opt_string(map, "mac").or_else(|| opt_string(map, "mac_address")),
            subnet: opt_string(map, "subnet"),
            gateway: opt_string(map, "gateway"),
            parent_subnet: opt_string(map, "parent_subnet"),
            parent_gateway: opt_string(map, "parent_gateway"),
            dns: map
                .get("dns")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// `delete_device`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteDeviceRequest {
    pub base: BaseMessage,
    /// Non-blank.
    pub device_id: String,
}

impl DeleteDeviceRequest {
    /// Parses `delete_device` (contract, then upstream's post-check with its text).
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(DELETE_DEVICE, map)?;
        let device_id = string(map, "device_id");
        if device_id.trim().is_empty() {
            return Err(ContractError::Semantic(
                "Device ID must be a non-empty string",
            ));
        }
        Ok(Self {
            base: BaseMessage::from_checked(map),
            device_id,
        })
    }
}

/// `get_consumption_orchestrator`. The periods are kept as text; the contract has checked that
/// they parse ([`is_period`]): upstream answered a bad one with the last hour, we refuse it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionRequest {
    pub base: BaseMessage,
    pub cpu_period: String,
    pub memory_period: String,
}

impl ConsumptionRequest {
    /// Parses `get_consumption_orchestrator`.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(CONSUMPTION_ORCHESTRATOR, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            cpu_period: string(map, "cpuPeriod"),
            memory_period: string(map, "memoryPeriod"),
        })
    }
}

/// `get_consumption_device`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConsumptionRequest {
    pub base: BaseMessage,
    pub device_id: String,
    /// Period text (parse with `usage::Period::parse_or_last_hour`).
    pub cpu_period: String,
    pub memory_period: String,
}

impl DeviceConsumptionRequest {
    /// Parses `get_consumption_device`.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(CONSUMPTION_DEVICE, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            device_id: string(map, "device_id"),
            cpu_period: string(map, "cpuPeriod"),
            memory_period: string(map, "memoryPeriod"),
        })
    }
}

/// `get_host_interfaces`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInterfacesRequest {
    pub base: BaseMessage,
    /// Default false: virtual interfaces (bridges, veths, tunnels…) are filtered out.
    pub include_virtual: bool,
    /// Default true.
    pub detailed: bool,
}

impl HostInterfacesRequest {
    /// Parses `get_host_interfaces`.
    pub fn parse(map: &Map<String, Value>) -> Result<Self, ContractError> {
        check(HOST_INTERFACES, map)?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            include_virtual: map
                .get("include_virtual")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            detailed: map.get("detailed").and_then(Value::as_bool).unwrap_or(true),
        })
    }
}

/// Which wire form a `run_command` arrived in; decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCommandForm {
    /// `(instance_id, {method, api, headers, data})` (upstream §6): no correlation id; the ack is
    /// the runtime's answer itself.
    Legacy,
    /// `{correlation_id, device_id, method, api, port?, headers?, data?}` (upstream §12 item 4).
    Object,
}

/// `run_command`, either form.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCommandRequest {
    /// `null` for the legacy form.
    pub correlation_id: Value,
    pub form: RunCommandForm,
    /// `device_id` (object form) or `instance_id` (legacy form). Non-blank.
    pub device_id: String,
    /// As sent (non-blank; the runtime applies its method allow-list).
    pub method: String,
    /// As sent (the runtime checks it is a relative path).
    pub api: String,
    /// `None`: the default HTTPS port 8443.
    pub port: Option<u16>,
    pub headers: Map<String, Value>,
    /// `None` when absent or `null`.
    pub data: Option<Value>,
}

impl RunCommandRequest {
    /// Parses either form from the event's argument list.
    pub fn parse(args: &[Value]) -> Result<Self, ContractError> {
        match args {
            [Value::Object(map)] => {
                check(RUN_COMMAND, map)?;
                Ok(Self::from_checked(
                    map.get("correlation_id").cloned().unwrap_or(Value::Null),
                    RunCommandForm::Object,
                    string(map, "device_id"),
                    map,
                ))
            }
            [instance, command] => {
                let device_id = match instance {
                    Value::String(s) if !s.trim().is_empty() => s.clone(),
                    _ => {
                        return Err(ContractError::InvalidType {
                            path: "instance_id".to_owned(),
                            message: Kind::NonEmptyStr.mismatch_message(),
                        });
                    }
                };
                let Value::Object(map) = command else {
                    return Err(ContractError::InvalidType {
                        path: "command".to_owned(),
                        message: Kind::Object(RUN_COMMAND_LEGACY).mismatch_message(),
                    });
                };
                check_at("command", RUN_COMMAND_LEGACY, map)?;
                Ok(Self::from_checked(
                    Value::Null,
                    RunCommandForm::Legacy,
                    device_id,
                    map,
                ))
            }
            [other] => Err(ContractError::NotAnObject {
                got: json_type_name(other),
            }),
            _ => Err(ContractError::Arity {
                expected: "one object or (instance_id, command)",
                got: args.len(),
            }),
        }
    }

    fn from_checked(
        correlation_id: Value,
        form: RunCommandForm,
        device_id: String,
        map: &Map<String, Value>,
    ) -> Self {
        Self {
            correlation_id,
            form,
            device_id,
            method: string(map, "method"),
            api: string(map, "api"),
            port: map
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok()),
            headers: map
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            data: map.get("data").filter(|v| !v.is_null()).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test data must be an object, got {other}"),
        }
    }

    fn vnic_3d2c700() -> Value {
        json!({
            "name": "eth0", "parent_interface": "ens37", "parent_subnet": "192.168.1.0/24",
            "parent_gateway": "192.168.1.1", "network_mode": "manual", "ip_address": "192.168.1.50",
            "subnet": "192.168.1.0/24", "gateway": "192.168.1.1", "dns": ["8.8.8.8"],
            "mac_address": "02:42:ac:11:00:02"
        })
    }

    fn vnic_production() -> Value {
        json!({
            "name": "eth0", "parent_interface": "eth1", "network_mode": "static", "ip": "10.204.0.5",
            "subnet": "255.255.255.0", "gateway": "10.204.0.1", "dns": ["1.1.1.1"],
            "mac": "02:00:00:00:00:01", "extra_key": {"kept": true}
        })
    }

    fn create() -> Value {
        json!({
            "correlation_id": 42, "container_name": "plc1",
            "vnic_configs": [vnic_3d2c700(), vnic_production()],
            "action": "create_new_runtime", "requested_at": "2025-11-20T20:30:45.123Z"
        })
    }

    fn err(contract_result: Result<impl std::fmt::Debug, ContractError>) -> String {
        contract_result
            .expect_err("expected a contract error")
            .to_string()
    }

    #[test]
    fn create_accepts_both_vnic_generations_and_keeps_them_verbatim() {
        let req = CreateRuntimeRequest::parse(&obj(create())).unwrap();
        assert_eq!(req.base.correlation_id, json!(42));
        assert_eq!(req.container_name, "plc1");
        assert_eq!(
            Value::Object(req.vnic_configs[1].clone()),
            vnic_production()
        );
        let vnics = req.vnics();
        assert_eq!(vnics[0].mode, VnicMode::Static);
        assert_eq!(vnics[0].ip.as_deref(), Some("192.168.1.50"));
        assert_eq!(vnics[0].mac.as_deref(), Some("02:42:ac:11:00:02"));
        assert_eq!(vnics[0].parent_subnet.as_deref(), Some("192.168.1.0/24"));
        assert_eq!(vnics[1].mode, VnicMode::Static);
        assert_eq!(vnics[1].ip.as_deref(), Some("10.204.0.5"));
        assert_eq!(vnics[1].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(vnics[1].subnet.as_deref(), Some("255.255.255.0"));
        assert_eq!(vnics[1].dns, vec!["1.1.1.1"]);
    }

    #[test]
    fn create_action_and_requested_at_are_optional_but_checked_when_present() {
        let mut m = obj(create());
        m.remove("action");
        m.remove("requested_at");
        assert!(CreateRuntimeRequest::parse(&m).is_ok());
        m.insert("requested_at".into(), Value::Null);
        assert!(CreateRuntimeRequest::parse(&m).is_ok());
        m.insert("requested_at".into(), json!("yesterday"));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Invalid field type: Value must be a valid ISO datetime string. (field: requested_at)"
        );
        m.insert("requested_at".into(), json!("2025-11-20"));
        m.insert("action".into(), json!(7));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Invalid field type: Value must be a string. (field: action)"
        );
    }

    #[test]
    fn create_reports_each_missing_required_field_in_contract_order() {
        for key in ["correlation_id", "container_name", "vnic_configs"] {
            let mut m = obj(create());
            m.remove(key);
            assert_eq!(
                err(CreateRuntimeRequest::parse(&m)),
                format!("Missing required field: 'Missing key: {key}'")
            );
        }
        let mut m = obj(create());
        m.remove("container_name");
        m.remove("correlation_id");
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Missing required field: 'Missing key: correlation_id'"
        );
    }

    #[test]
    fn create_reports_each_wrong_type() {
        for (key, value, message) in [
            ("correlation_id", json!("42"), "Value must be a number."),
            ("correlation_id", json!(null), "Value must be a number."),
            ("container_name", json!(1), "Value must be a string."),
            ("vnic_configs", json!({}), "Value must be a list."),
            ("runtime_version", json!(2), "Value must be a string."),
        ] {
            let mut m = obj(create());
            m.insert(key.into(), value);
            assert_eq!(
                err(CreateRuntimeRequest::parse(&m)),
                format!("Invalid field type: {message} (field: {key})")
            );
        }
    }

    #[test]
    fn booleans_are_not_numbers() {
        let mut m = obj(create());
        m.insert("correlation_id".into(), json!(true));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Invalid field type: Value must be a number. (field: correlation_id)"
        );
        assert!(
            DeviceRequest::parse(&obj(json!({"correlation_id": 1.5, "device_id": "d"}))).is_ok()
        );
    }

    #[test]
    fn nested_vnic_errors_name_the_path() {
        let mut bad = vnic_production();
        bad["parent_interface"] = json!(5);
        let m = obj(
            json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [vnic_3d2c700(), bad]}),
        );
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Invalid field type: Value must be an interface name \
             (1 to 15 characters from A-Z, a-z, 0-9, '_', '.', '-'). (field: vnic_configs[1].parent_interface)"
        );
        let mut missing = vnic_production();
        missing.as_object_mut().unwrap().remove("network_mode");
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [missing]}));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Missing required field: 'Missing key: vnic_configs[0].network_mode'"
        );
        let mut dns = vnic_3d2c700();
        dns["dns"] = json!(["8.8.8.8", 8]);
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [dns]}));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Invalid field type: Value must be a string. (field: vnic_configs[0].dns[1])"
        );
        for (element, got) in [
            (json!(5), "5"),
            (json!(null), "null"),
            (json!([1]), "[1]"),
            (json!("name"), "\"name\""),
        ] {
            let m =
                obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [element]}));
            assert_eq!(
                err(CreateRuntimeRequest::parse(&m)),
                "Invalid field type: Value must be an object. (field: vnic_configs[0])",
                "element {got}"
            );
        }
    }

    #[test]
    fn vnic_interface_names_longer_than_15_or_with_odd_characters_are_refused() {
        for name in ["", "a234567890123456", "eth 0", "eth0/1", "ét0"] {
            let mut v = vnic_production();
            v["parent_interface"] = json!(name);
            let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [v]}));
            assert!(
                err(CreateRuntimeRequest::parse(&m))
                    .ends_with("(field: vnic_configs[0].parent_interface)")
            );
        }
        assert!(is_interface_name("enp0s31f6.100"));
        assert!(is_interface_name("a23456789012345"));
    }

    #[test]
    fn create_keeps_upstream_post_check_texts() {
        let mut m = obj(create());
        m.insert("container_name".into(), json!("   "));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "Container name must be a non-empty string"
        );
        let mut m = obj(create());
        m.insert("vnic_configs".into(), json!([]));
        assert_eq!(
            err(CreateRuntimeRequest::parse(&m)),
            "At least one vNIC configuration is required"
        );
    }

    #[test]
    fn optional_vnic_fields_accept_null() {
        let v = json!({"name": "n", "parent_interface": "eth0", "network_mode": "dhcp", "ip": null,
                       "mac_address": null, "dns": null, "parent_subnet": null});
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [v]}));
        let req = CreateRuntimeRequest::parse(&m).unwrap();
        let spec = &req.vnics()[0];
        assert_eq!(spec.mode, VnicMode::Dhcp);
        assert_eq!(
            (spec.ip.clone(), spec.mac.clone(), spec.dns.len()),
            (None, None, 0)
        );
    }

    #[test]
    fn delete_device_checks_and_keeps_upstream_text() {
        let ok =
            DeleteDeviceRequest::parse(&obj(json!({"correlation_id": 3, "device_id": "plc1"})))
                .unwrap();
        assert_eq!(ok.device_id, "plc1");
        assert_eq!(
            err(DeleteDeviceRequest::parse(&obj(
                json!({"correlation_id": 3})
            ))),
            "Missing required field: 'Missing key: device_id'"
        );
        assert_eq!(
            err(DeleteDeviceRequest::parse(&obj(
                json!({"correlation_id": 3, "device_id": 4})
            ))),
            "Invalid field type: Value must be a string. (field: device_id)"
        );
        assert_eq!(
            err(DeleteDeviceRequest::parse(&obj(
                json!({"correlation_id": 3, "device_id": " "})
            ))),
            "Device ID must be a non-empty string"
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
        assert_eq!(
            err(DeviceRequest::parse(&obj(json!({"device_id": "x"})))),
            "Missing required field: 'Missing key: correlation_id'"
        );
        let r = DeviceRequest::parse(&obj(json!({"correlation_id": 1, "device_id": "x",
            "action": "start_device", "requested_at": "2025-11-20 20:30:45+03:00"})))
        .unwrap();
        assert_eq!(r.base.action.as_deref(), Some("start_device"));
    }

    #[test]
    fn consumption_requests_need_both_periods_as_strings() {
        let base = json!({"correlation_id": 1, "cpuPeriod": "1h", "memoryPeriod": "2h"});
        let r = ConsumptionRequest::parse(&obj(base.clone())).unwrap();
        assert_eq!(
            (r.cpu_period.as_str(), r.memory_period.as_str()),
            ("1h", "2h")
        );
        let mut m = obj(base.clone());
        m.remove("memoryPeriod");
        assert_eq!(
            err(ConsumptionRequest::parse(&m)),
            "Missing required field: 'Missing key: memoryPeriod'"
        );
        let mut m = obj(base);
        m.insert("cpuPeriod".into(), json!(3600));
        assert_eq!(
            err(ConsumptionRequest::parse(&m)),
            format!("Invalid field type: {PERIOD_MESSAGE} (field: cpuPeriod)")
        );
        let d = obj(
            json!({"correlation_id": 1, "device_id": "plc", "cpuPeriod": "1h", "memoryPeriod": "1h"}),
        );
        assert_eq!(
            DeviceConsumptionRequest::parse(&d).unwrap().device_id,
            "plc"
        );
        let mut d2 = d.clone();
        d2.remove("device_id");
        assert_eq!(
            err(DeviceConsumptionRequest::parse(&d2)),
            "Missing required field: 'Missing key: device_id'"
        );
    }

    const PERIOD_MESSAGE: &str = "Value must be a period string: N (seconds), Nm, Nh or Nd back from now (N >= 0), or \"<start>,<end>\" in unix seconds (start <= end).";

    #[test]
    fn periods_that_do_not_parse_are_refused_naming_the_field() {
        for good in [
            "1h",
            "30m",
            "2d",
            "90",
            " 2h",
            "+5m",
            "0h",
            "1_000",
            "1700000000,1700003600",
            "5,5",
            "1,2,3",
        ] {
            assert!(is_period(good), "{good:?} is a period");
        }
        for bad in [
            "banana",
            "-5x",
            "",
            " ",
            "1.5h",
            "h",
            "5H",
            "-5h",
            "-1",
            "5,3",
            "5,",
            ",5",
            "99999999999999999999h",
            "106751991167301d",
        ] {
            assert!(!is_period(bad), "{bad:?} is not a period");
        }
        let base = json!({"correlation_id": 7, "cpuPeriod": "1h", "memoryPeriod": "1h"});
        for (field, bad) in [("cpuPeriod", "banana"), ("memoryPeriod", "-5x")] {
            let mut m = obj(base.clone());
            m.insert(field.into(), json!(bad));
            assert_eq!(
                err(ConsumptionRequest::parse(&m)),
                format!("Invalid field type: {PERIOD_MESSAGE} (field: {field})")
            );
            m.insert("device_id".into(), json!("plc"));
            assert_eq!(
                err(DeviceConsumptionRequest::parse(&m)),
                format!("Invalid field type: {PERIOD_MESSAGE} (field: {field})")
            );
        }
    }

    #[test]
    fn host_interfaces_flags_default_and_must_be_booleans() {
        let r = HostInterfacesRequest::parse(&obj(json!({"correlation_id": 1}))).unwrap();
        assert!(!r.include_virtual && r.detailed);
        let r = HostInterfacesRequest::parse(&obj(
            json!({"correlation_id": 1, "include_virtual": true, "detailed": false}),
        ))
        .unwrap();
        assert!(r.include_virtual && !r.detailed);
        assert_eq!(
            err(HostInterfacesRequest::parse(&obj(
                json!({"correlation_id": 1, "include_virtual": 1})
            ))),
            "Invalid field type: Value must be a boolean. (field: include_virtual)"
        );
    }

    #[test]
    fn run_command_accepts_both_forms() {
        let legacy = RunCommandRequest::parse(&[
            json!("plc1"),
            json!({"method": "GET", "api": "status", "headers": {"X": "1"}}),
        ])
        .unwrap();
        assert_eq!(legacy.form, RunCommandForm::Legacy);
        assert_eq!(legacy.correlation_id, Value::Null);
        assert_eq!(
            (
                legacy.device_id.as_str(),
                legacy.method.as_str(),
                legacy.api.as_str()
            ),
            ("plc1", "GET", "status")
        );
        assert_eq!(legacy.port, None);
        assert_eq!(legacy.data, None);
        let object = RunCommandRequest::parse(&[
            json!({"correlation_id": 9, "device_id": "plc1", "method": "POST",
            "api": "api/x", "port": 8080, "data": {"a": 1}}),
        ])
        .unwrap();
        assert_eq!(object.form, RunCommandForm::Object);
        assert_eq!(object.correlation_id, json!(9));
        assert_eq!(object.port, Some(8080));
        assert_eq!(object.data, Some(json!({"a": 1})));
    }

    #[test]
    fn run_command_errors_name_the_field() {
        assert_eq!(
            err(RunCommandRequest::parse(&[
                json!("plc1"),
                json!({"api": "x"})
            ])),
            "Missing required field: 'Missing key: command.method'"
        );
        assert_eq!(
            err(RunCommandRequest::parse(&[
                json!(""),
                json!({"method": "GET", "api": "x"})
            ])),
            "Invalid field type: Value must be a non-empty string. (field: instance_id)"
        );
        assert_eq!(
            err(RunCommandRequest::parse(&[json!("plc1"), json!("GET /")])),
            "Invalid field type: Value must be an object. (field: command)"
        );
        // The original crashed on `headers: null`; here it reads as "no headers".
        let null_headers = RunCommandRequest::parse(&[
            json!("plc1"),
            json!({"method": "GET", "api": "x", "headers": null}),
        ])
        .unwrap();
        assert!(null_headers.headers.is_empty());
        assert_eq!(
            err(RunCommandRequest::parse(&[
                json!("plc1"),
                json!({"method": "GET", "api": "x", "headers": []})
            ])),
            "Invalid field type: Value must be an object whose values are strings. (field: command.headers)"
        );
        for port in [
            json!(0),
            json!(70000),
            json!(80.5),
            json!("80"),
            json!(true),
        ] {
            assert!(
                err(RunCommandRequest::parse(&[
                    json!({"correlation_id": 1, "device_id": "d", "method": "GET",
                    "api": "x", "port": port})
                ]))
                .ends_with("(field: port)")
            );
        }
        assert_eq!(
            err(RunCommandRequest::parse(&[
                json!({"correlation_id": 1, "device_id": "d", "method": "GET",
                "api": "x", "headers": {"a": 1}})
            ])),
            "Invalid field type: Value must be an object whose values are strings. (field: headers)"
        );
        assert_eq!(
            err(RunCommandRequest::parse(&[])),
            "Invalid message: expected one object or (instance_id, command), got 0 argument(s)"
        );
        assert_eq!(
            err(RunCommandRequest::parse(&[json!(3)])),
            "Invalid message: expected a JSON object, got a number"
        );
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
        let e = check(VNIC, &obj(json!({"name": "n"}))).unwrap_err();
        assert!(e.is_missing() && !e.is_invalid_type());
        assert_eq!(e.path(), Some("parent_interface"));
    }
}
