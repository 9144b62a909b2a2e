//! `run_command` (upstream §6 and §12 item 4): the HTTP proxy from the cloud to a runtime's REST
//! API, in both wire forms. The contract checks the fields' types, then the command is validated
//! once into an [`HttpCommand`] (method allow-list, relative path, headers, body); the runtime
//! service sends it to the OWNED runtime the device id names. The answer's shape depends on the
//! form the request came in ([`object_form_answer`], [`legacy_form_answer`]).
//!
//! `params`, `data` and `files` (an upload, sent as `multipart/form-data`) are the object form's
//! (upstream HEAD §2); an upload's message may be up to [`INBOUND_LIMIT`] long.
//!
//! Logs the method and the path at INFO, the query at DEBUG (it may carry tokens), headers and
//! bodies never.

use serde_json::{Map, Value, json};

use super::contract::{self, ContractError, Field, Kind, json_type_name, opt, req, string};
use super::{Services, Topic};
use crate::runtime::command::{CommandError, Fields, HttpCommand, HttpReply, MAX_UPLOAD_BYTES};
use crate::telemetry::Outcome;

/// The largest `run_command` message the link reads whole: files of [`MAX_UPLOAD_BYTES`] in base64
/// plus 1 MiB for everything else. The link normally decodes upload files while they arrive and
/// hands up a small skeleton (`cloud::tap`); this limit is for the messages it cannot stream
/// (fragmented frames). Up to it, files that decode to more are refused by the command (`upload
/// too large`); over it, the link refuses the message unread but for its correlation id.
pub const INBOUND_LIMIT: usize =
    MAX_UPLOAD_BYTES.div_ceil(3) * 4 + crate::cloud::MAX_INBOUND_MESSAGE;

/// `run_command`, one-object form (upstream §12 item 4).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("device_id", Kind::NonEmptyStr),
    req("method", Kind::NonEmptyStr),
    req("api", Kind::Str),
    opt("port", Kind::Port),
    opt("headers", Kind::StringMap),
    opt("params", Kind::Any),
    opt("data", Kind::Any),
    opt("files", Kind::Any),
];

/// `run_command`, the command object of the original two-argument form (upstream §6.1).
pub const LEGACY_CONTRACT: &[Field] = &[
    req("method", Kind::NonEmptyStr),
    req("api", Kind::Str),
    opt("port", Kind::Port),
    opt("headers", Kind::StringMap),
    opt("data", Kind::Any),
];

/// Which wire form a `run_command` arrived in; decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCommandForm {
    /// `(instance_id, {method, api, headers, data})` (upstream §6): no correlation id; the ack is
    /// the runtime's answer itself.
    Legacy,
    /// `{correlation_id, device_id, method, api, port?, headers?, data?}` (upstream §12 item 4).
    Object,
}

/// A validated `run_command`, either form.
#[derive(Debug)]
pub struct RunCommand {
    /// `null` for the legacy form.
    pub correlation_id: Value,
    pub form: RunCommandForm,
    /// `device_id` (object form) or `instance_id` (legacy form). Non-blank.
    pub device_id: String,
    /// `method` as sent (for the log line).
    pub method: String,
    /// `api` as sent (for the log line).
    pub api: String,
    /// The validated command, or why its values were refused: answered in the request's form,
    /// without asking the runtime.
    pub command: Result<HttpCommand, CommandError>,
    /// `api: "debug"` (object form): the debugger bridge's message, its `data` (`{}` when
    /// absent); the HTTP fields are then unused (upstream-head §2.9).
    pub debug: Option<Value>,
}

impl RunCommand {
    fn from_checked(
        correlation_id: Value,
        form: RunCommandForm,
        device_id: String,
        map: &Map<String, Value>,
    ) -> Self {
        let method = string(map, "method");
        let api = string(map, "api");
        let port = map
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let present = |key: &str| map.get(key).filter(|v| !v.is_null());
        let command = HttpCommand::from_fields(&Fields {
            method: &method,
            api: &api,
            port,
            headers: map.get("headers").and_then(Value::as_object),
            params: present("params"),
            data: present("data"),
            files: present("files"),
        });
        let debug = (form == RunCommandForm::Object && api == "debug")
            .then(|| map.get("data").cloned().unwrap_or_else(|| json!({})));
        Self {
            correlation_id,
            form,
            device_id,
            method,
            api,
            command,
            debug,
        }
    }
}

impl Topic for RunCommand {
    const NAME: &'static str = "run_command";

    /// The one-object form says `"status": "error"`; the legacy form answers the runtime's own
    /// JSON on success, and on failure one of the error objects of [`legacy_form_answer`] (an
    /// `error` key with nothing but its companions).
    fn outcome(ack: &Value) -> Outcome {
        let failed = match ack {
            Value::Object(m) if m.contains_key("action") => {
                m.get("status") == Some(&json!("error"))
            }
            Value::Object(m) => {
                m.contains_key("error")
                    && m.keys().all(|k| {
                        matches!(
                            k.as_str(),
                            "error" | "status_code" | "content_type" | "body"
                        )
                    })
            }
            _ => false,
        };
        if failed { Outcome::Error } else { Outcome::Ok }
    }

    /// Either form from the event's argument list.
    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        match args {
            [Value::Object(map)] => {
                contract::check(CONTRACT, map)?;
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
                        message: Kind::Object(LEGACY_CONTRACT).mismatch_message(),
                    });
                };
                contract::check_at("command", LEGACY_CONTRACT, map)?;
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

    fn device(&self) -> Option<&str> {
        Some(&self.device_id)
    }

    async fn apply(self, services: &Services) -> Value {
        if let Some(data) = &self.debug {
            return debug_answer(services, &self.correlation_id, &self.device_id, data).await;
        }
        // The query string may carry tokens: INFO names the path only, DEBUG has the rest (headers
        // and bodies are never logged).
        let path = self.api.split('?').next().unwrap_or_default();
        let port = self.command.as_ref().ok().map(|c| c.port);
        tracing::info!(method = %self.method, api = %path, port = ?port, "run_command requested");
        tracing::debug!(api = %self.api, "run_command api with its query");
        let result = match self.command {
            Ok(command) => {
                services
                    .runtime
                    .send_command(&self.device_id, &command)
                    .await
            }
            Err(refused) => Err(refused),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "run_command failed");
        }
        match self.form {
            RunCommandForm::Legacy => legacy_form_answer(&result),
            RunCommandForm::Object => object_form_answer(&self.correlation_id, &result),
        }
    }
}

/// `{action, correlation_id, status, debug_response}` for a debug message (the bridge's answer).
async fn debug_answer(
    services: &Services,
    correlation_id: &Value,
    device_id: &str,
    data: &Value,
) -> Value {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
    tracing::info!(device = %device_id, debug = %kind, "run_command debug requested");
    let (status, response) = services.runtime.debug(device_id, Some(data)).await;
    if response["type"] == "debug_error" {
        tracing::warn!(device = %device_id, debug = %kind, error = %response["error"], "run_command debug failed");
    }
    json!({
        "action": RunCommand::NAME,
        "correlation_id": correlation_id,
        "status": status,
        "debug_response": response,
    })
}

/// The `http_response` object of the one-object form, as today's original builds it (upstream-head
/// §2.7): `{status_code, headers, body, ok, content_type}` with header names in the case servers
/// send them (`Content-Type`; hyper hands them over lower-cased, so they are title-cased back, which
/// is what the OpenPLC runtime's server sends) and `content_type` saying how `body` was read:
/// `"application/json"` when it parsed as JSON, else `"text/plain"` (not the server's header).
pub fn http_response(reply: &HttpReply) -> Value {
    let headers: Map<String, Value> = reply
        .headers
        .iter()
        .map(|(n, v)| (title_case(n), Value::String(v.clone())))
        .collect();
    let (body, content_type) = match reply.body_json() {
        Some(v) => (v, "application/json"),
        None => (
            Value::String(String::from_utf8_lossy(&reply.body).into_owned()),
            "text/plain",
        ),
    };
    json!({
        "status_code": reply.status,
        "headers": headers,
        "body": body,
        "ok": reply.ok(),
        "content_type": content_type,
    })
}

/// `content-type` → `Content-Type`.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// The synthetic `http_response` the original answers when no response came from the runtime
/// (upstream-head §2.7): 400 for a refused method, 500 for everything else, the reason as
/// `body.error`; a cloud reading `http_response.body.error` finds it.
fn synthetic_response(error: &CommandError) -> Value {
    let (code, text) = match error {
        CommandError::MethodNotAllowed(m) => (400, format!("Unsupported HTTP method: {m}")),
        CommandError::InvalidValue { .. }
        | CommandError::UploadTooLarge { .. }
        | CommandError::UploadBusy => (400, error.to_string()),
        _ => (500, error.to_string()),
    };
    response_of(code, &text)
}

/// The synthetic `http_response` of a request the link refused before it reached the topic (too
/// large, malformed): a 400, as for every request refused for what it is.
pub fn refusal_response(error: &str) -> Value {
    response_of(400, error)
}

fn response_of(code: u16, text: &str) -> Value {
    json!({
        "status_code": code,
        "headers": {},
        "body": {"error": text},
        "ok": false,
        "content_type": "application/json",
    })
}

/// Answer of the one-object form `{correlation_id, device_id, method, api, ...}`:
/// `{action: "run_command", correlation_id, status, http_response}` when the runtime answered
/// (`status` is `"success"` for HTTP < 400, else `"error"` with `error: "HTTP <code>"`), or
/// `{action, correlation_id, status: "error", error, http_response}` with the original's synthetic
/// response when it did not (no `http_response` for an unknown device, as the original).
pub fn object_form_answer(
    correlation_id: &Value,
    result: &Result<HttpReply, CommandError>,
) -> Value {
    match result {
        Ok(reply) if reply.ok() => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "success",
            "http_response": http_response(reply),
        }),
        Ok(reply) => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "error",
            "error": format!("HTTP {}", reply.status),
            "http_response": http_response(reply),
        }),
        Err(e) if e.is_device_not_found() => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "error",
            "error": e.to_string(),
        }),
        Err(e) => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "error",
            "error": e.to_string(),
            "http_response": synthetic_response(e),
        }),
    }
}

/// Answer of the original two-argument form `(instance_id, {method, api, headers, data})`: the
/// runtime's JSON body itself when it answered HTTP < 400 with JSON (upstream §6.2), otherwise an
/// explicit error object (the original answered an empty ack, which the cloud could not tell from
/// success):
/// - unknown or foreign device: `{"error": "Instance not found"}` (the original's text);
/// - HTTP ≥ 400: `{"error": "HTTP <code>", "status_code", "body"}`;
/// - a body that is not JSON: `{"error": "Response is not JSON", "status_code", "content_type", "body"}`;
/// - anything else: `{"error": "<reason>"}`.
pub fn legacy_form_answer(result: &Result<HttpReply, CommandError>) -> Value {
    match result {
        Ok(reply) if !reply.ok() => json!({
            "error": format!("HTTP {}", reply.status),
            "status_code": reply.status,
            "body": reply.body_value(),
        }),
        Ok(reply) => match reply.body_json() {
            Some(value) => value,
            None => json!({
                "error": "Response is not JSON",
                "status_code": reply.status,
                "content_type": reply.content_type,
                "body": reply.body_value(),
            }),
        },
        Err(CommandError::DeviceNotFound(_)) => json!({"error": "Instance not found"}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn parse(args: &[Value]) -> Result<RunCommand, String> {
        RunCommand::parse(args).map_err(|e| e.to_string())
    }

    #[test]
    fn api_debug_goes_to_the_debugger_bridge_whatever_the_http_fields() {
        let debug = |v: Value| parse(&[v]).unwrap().debug;
        assert_eq!(
            debug(
                json!({"correlation_id": 1, "device_id": "plc1", "method": "FETCH",
                "api": "debug", "data": {"type": "debug_info"}})
            ),
            Some(json!({"type": "debug_info"}))
        );
        assert_eq!(
            debug(
                json!({"correlation_id": 1, "device_id": "plc1", "method": "POST", "api": "debug"})
            ),
            Some(json!({})),
            "absent data is an empty message"
        );
        assert_eq!(
            debug(
                json!({"correlation_id": 1, "device_id": "plc1", "method": "POST",
                "api": "debug", "data": null})
            ),
            Some(Value::Null)
        );
        for api in ["/debug", "debug/", "Debug", "api/debug"] {
            assert_eq!(
                debug(
                    json!({"correlation_id": 1, "device_id": "plc1", "method": "GET", "api": api})
                ),
                None,
                "{api}"
            );
        }
        let legacy = parse(&[json!("plc1"), json!({"method": "POST", "api": "debug"})]).unwrap();
        assert_eq!(
            legacy.debug, None,
            "the original's two-argument form has no debug route"
        );
    }

    #[test]
    fn run_command_accepts_both_forms() {
        let legacy = parse(&[
            json!("plc1"),
            json!({"method": "GET", "api": "status", "headers": {"X": "1"}}),
        ])
        .unwrap();
        assert_eq!(legacy.form, RunCommandForm::Legacy);
        assert_eq!(legacy.correlation_id, Value::Null);
        assert_eq!(legacy.device_id, "plc1");
        let command = legacy.command.unwrap();
        assert_eq!(
            (command.method.as_str(), command.path_and_query.as_str()),
            ("GET", "status")
        );
        assert_eq!(command.port, crate::runtime::command::HTTPS_PORT);
        assert_eq!(command.body, None);
        let object = parse(&[
            json!({"correlation_id": 9, "device_id": "plc1", "method": "POST",
            "api": "api/x", "port": 8080, "data": {"a": 1}}),
        ])
        .unwrap();
        assert_eq!(object.form, RunCommandForm::Object);
        assert_eq!(object.correlation_id, json!(9));
        let command = object.command.unwrap();
        assert_eq!(command.port, 8080);
        assert_eq!(command.body.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn values_the_command_refuses_are_kept_for_the_answer_of_their_form() {
        let r = parse(&[json!("plc1"), json!({"method": "TRACE", "api": "x"})]).unwrap();
        assert!(matches!(r.command, Err(CommandError::MethodNotAllowed(_))));
        let r = parse(&[
            json!({"correlation_id": 1, "device_id": "d", "method": "GET",
            "api": "../etc/passwd"}),
        ])
        .unwrap();
        assert!(r.command.unwrap_err().is_invalid_request());
    }

    #[test]
    fn run_command_errors_name_the_field() {
        assert_eq!(
            parse(&[json!("plc1"), json!({"api": "x"})]).unwrap_err(),
            "Missing required field: 'Missing key: command.method'"
        );
        assert_eq!(
            parse(&[json!(""), json!({"method": "GET", "api": "x"})]).unwrap_err(),
            "Invalid field type: Value must be a non-empty string. (field: instance_id)"
        );
        assert_eq!(
            parse(&[json!("plc1"), json!("GET /")]).unwrap_err(),
            "Invalid field type: Value must be an object. (field: command)"
        );
        // The original crashed on `headers: null`; here it reads as "no headers".
        let null_headers = parse(&[
            json!("plc1"),
            json!({"method": "GET", "api": "x", "headers": null}),
        ])
        .unwrap();
        assert!(null_headers.command.unwrap().headers.is_empty());
        assert_eq!(
            parse(&[
                json!("plc1"),
                json!({"method": "GET", "api": "x", "headers": []})
            ])
            .unwrap_err(),
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
                parse(&[
                    json!({"correlation_id": 1, "device_id": "d", "method": "GET",
                    "api": "x", "port": port})
                ])
                .unwrap_err()
                .ends_with("(field: port)")
            );
        }
        assert_eq!(
            parse(&[
                json!({"correlation_id": 1, "device_id": "d", "method": "GET",
                "api": "x", "headers": {"a": 1}})
            ])
            .unwrap_err(),
            "Invalid field type: Value must be an object whose values are strings. (field: headers)"
        );
        assert_eq!(
            parse(&[]).unwrap_err(),
            "Invalid message: expected one object or (instance_id, command), got 0 argument(s)"
        );
        assert_eq!(
            parse(&[json!(3)]).unwrap_err(),
            "Invalid message: expected a JSON object, got a number"
        );
    }

    fn reply(status: u16, ct: &str, body: &str) -> HttpReply {
        HttpReply {
            status,
            headers: vec![("content-type".into(), ct.into())],
            content_type: Some(ct.into()),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn object_form_wraps_the_runtime_answer() {
        let answer =
            object_form_answer(&json!(7), &Ok(reply(200, "application/json", r#"{"a":1}"#)));
        assert_eq!(
            answer,
            json!({"action": "run_command", "correlation_id": 7, "status": "success",
                "http_response": {"status_code": 200, "headers": {"Content-Type": "application/json"},
                "body": {"a": 1}, "ok": true, "content_type": "application/json"}})
        );
        let answer = object_form_answer(&json!(7), &Ok(reply(500, "text/plain", "boom")));
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["error"], "HTTP 500");
        assert_eq!(answer["http_response"]["body"], "boom");
        assert_eq!(answer["http_response"]["ok"], false);
        assert_eq!(answer["http_response"]["content_type"], "text/plain");
        // How the body was read, not the server's header (upstream-head §2.7).
        let answer = object_form_answer(
            &json!(7),
            &Ok(reply(200, "application/json; charset=utf-8", "not json")),
        );
        assert_eq!(answer["http_response"]["content_type"], "text/plain");
        let answer = object_form_answer(&json!(7), &Ok(reply(200, "text/html", "[1]")));
        assert_eq!(answer["http_response"]["content_type"], "application/json");
        assert_eq!(title_case("x-xss-protection"), "X-Xss-Protection");
    }

    #[test]
    fn object_form_reports_local_errors() {
        let answer =
            object_form_answer(&json!(3), &Err(CommandError::DeviceNotFound("plc".into())));
        assert_eq!(
            answer,
            json!({"action": "run_command", "correlation_id": 3, "status": "error",
                "error": "Device not found: plc"})
        );
        // Nothing came back from the runtime: the original's synthetic responses.
        let answer = object_form_answer(
            &json!(3),
            &Err(CommandError::Timeout {
                after: Duration::from_secs(30),
            }),
        );
        assert_eq!(
            answer["http_response"],
            json!({"status_code": 500, "headers": {}, "ok": false, "content_type": "application/json",
                "body": {"error": "The runtime did not answer within 30 s"}})
        );
        let answer = object_form_answer(
            &json!(3),
            &Err(CommandError::MethodNotAllowed("TRACE".into())),
        );
        assert_eq!(answer["http_response"]["status_code"], 400);
        assert_eq!(
            answer["http_response"]["body"]["error"],
            "Unsupported HTTP method: TRACE"
        );
    }

    #[test]
    fn legacy_form_answers_the_json_body_or_an_explicit_error() {
        assert_eq!(
            legacy_form_answer(&Ok(reply(200, "application/json", r#"[1,2]"#))),
            json!([1, 2])
        );
        assert_eq!(
            legacy_form_answer(&Ok(reply(200, "text/plain", "hi")))["error"],
            "Response is not JSON"
        );
        assert_eq!(
            legacy_form_answer(&Ok(reply(404, "application/json", r#"{"e":1}"#))),
            json!({"error": "HTTP 404", "status_code": 404, "body": {"e": 1}})
        );
        assert_eq!(
            legacy_form_answer(&Err(CommandError::DeviceNotFound("x".into()))),
            json!({"error": "Instance not found"})
        );
        assert_eq!(
            legacy_form_answer(&Err(CommandError::Timeout {
                after: Duration::from_secs(30)
            })),
            json!({"error": "The runtime did not answer within 30 s"})
        );
    }
}
