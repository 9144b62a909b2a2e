//! `run_command`: the HTTP proxy from the cloud to a runtime's REST API (spec §2 "run_command",
//! upstream §6 and §12 item 4).
//!
//! Owns: validating the command ([`HttpCommand`], pure, in `validate`), the HTTP/1.1 exchange with
//! the runtime over its internal bridge address (`http`: HTTPS on 8443 by default with any
//! certificate accepted, plain HTTP on another port; connect and total timeouts; response cap), and
//! shaping the answers of both request forms ([`object_form_answer`], [`legacy_form_answer`]).
//!
//! Must never: resolve which runtime a device id names or decide ownership (the runtime service
//! does that and passes an address of an OWNED runtime), talk to any address but the one given,
//! follow redirects, block (every call is async with timeouts), or log header values or bodies
//! (they may carry credentials).
//!
//! The runtime service's `RuntimeOps::run_command` is [`handle`]`(&rt, req)`. The pieces are public
//! for other callers and tests: [`run_request`] (with any address resolver), [`HttpCommand::new`],
//! [`execute`], [`object_form_answer`] / [`legacy_form_answer`].

mod http;
mod validate;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::contract::{RunCommandForm, RunCommandRequest};
use crate::runtime::Runtimes;
use crate::topics::OpError;

pub use validate::{
    ALLOWED_METHODS, HTTPS_PORT, HttpCommand, MAX_API_LEN, validate_api, validate_method,
};

/// Limits on one exchange with a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect and, for HTTPS, the TLS handshake (each).
    pub connect_timeout: Duration,
    /// The whole exchange, from connect to the last body byte.
    pub total_timeout: Duration,
    /// Largest response body accepted; a larger one is an error, not a truncated answer (the cloud
    /// link refuses messages over 1 MiB anyway).
    pub max_response_bytes: usize,
}

impl Default for Limits {
    /// 5 s connect, 30 s total, 1 MiB response.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// A complete answer from a runtime (any status code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in arrival order, names lower-case, repeated headers joined with `", "`.
    pub headers: Vec<(String, String)>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body (at most [`Limits::max_response_bytes`]).
    pub body: Bytes,
}

impl HttpReply {
    /// `true` for a status below 400 (the meaning of `ok` in Python `requests`, which the cloud knows).
    pub fn ok(&self) -> bool {
        self.status < 400
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as JSON when it parses, else as (lossy UTF-8) text.
    pub fn body_value(&self) -> Value {
        self.body_json()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// The `http_response` object of the one-object form:
    /// `{status_code, headers, body, ok, content_type}` (upstream §12 item 4).
    pub fn to_json(&self) -> Value {
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "status_code": self.status,
            "headers": headers,
            "body": self.body_value(),
            "ok": self.ok(),
            "content_type": self.content_type,
        })
    }
}

/// Why a `run_command` produced no answer from the runtime. The messages are sent to the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A required field of the command is absent or null.
    #[error("Missing required field: 'Missing key: {0}'")]
    MissingField(&'static str),
    /// A field has the wrong JSON type (same wording as the message contracts).
    #[error("Invalid field type: Value must be {expected}. (field: {field})")]
    InvalidType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field has the right type but a refused value (e.g. an `api` that is not a relative path).
    #[error("Invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The method is not in [`ALLOWED_METHODS`].
    #[error("Method not allowed: {0:?} (allowed: GET, POST, PUT, DELETE, PATCH)")]
    MethodNotAllowed(String),
    /// No runtime of ours has this name (also for containers we do not own: we do not reveal them).
    #[error("Device not found: {0}")]
    DeviceNotFound(String),
    /// The runtime is ours but has no address on its internal network (never attached).
    #[error("Device {0} has no internal IP address")]
    NoInternalIp(String),
    /// The runtime is ours but its container is not running.
    #[error("Device {0} is not running")]
    NotRunning(String),
    /// The runtime could not be looked up (engine error).
    #[error("Cannot look up device {device_id}: {reason}")]
    Lookup {
        /// The device.
        device_id: String,
        /// Why.
        reason: String,
    },
    /// TCP connect failed (refused, unreachable...).
    #[error("Cannot connect to the runtime at {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect or TLS handshake took longer than [`Limits::connect_timeout`].
    #[error("Connecting to the runtime at {addr} timed out after {} s", after.as_secs_f32())]
    ConnectTimeout {
        /// Where.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with the runtime failed: {0}")]
    Tls(String),
    /// The HTTP exchange failed (connection reset, malformed response...).
    #[error("HTTP exchange with the runtime failed: {0}")]
    Http(String),
    /// The runtime did not answer completely within [`Limits::total_timeout`].
    #[error("The runtime did not answer within {} s", after.as_secs_f32())]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The response body is larger than [`Limits::max_response_bytes`].
    #[error("The runtime's response exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl CommandError {
    /// The request itself was refused (bad field, method or path) before anything was sent.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Self::MissingField(_)
                | Self::InvalidType { .. }
                | Self::InvalidValue { .. }
                | Self::MethodNotAllowed(_)
        )
    }

    /// The device is unknown or not ours.
    pub fn is_device_not_found(&self) -> bool {
        matches!(self, Self::DeviceNotFound(_))
    }

    /// A connect or total timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::ConnectTimeout { .. })
    }
}

/// Sends `command` to the runtime at `ip` (its address on its internal network) and returns its
/// answer. The caller guarantees `ip` belongs to a runtime this agent owns.
///
/// Cancel-safe and bounded by `limits`: a hung runtime costs one task for at most
/// `limits.total_timeout`, and nothing else waits on it.
pub async fn execute(
    ip: Ipv4Addr,
    command: &HttpCommand,
    limits: &Limits,
) -> Result<HttpReply, CommandError> {
    let path = command.path_and_query.split('?').next().unwrap_or_default();
    let started = tokio::time::Instant::now();
    let result = http::exchange(ip, command, limits).await;
    let elapsed_ms = started.elapsed().as_millis();
    match &result {
        Ok(reply) => tracing::info!(
            method = %command.method, port = command.port, path, status = reply.status,
            bytes = reply.body.len(), elapsed_ms, "run_command answered"
        ),
        Err(e) => tracing::warn!(
            method = %command.method, port = command.port, path, elapsed_ms, error = %e,
            "run_command failed"
        ),
    }
    result
}

/// `RuntimeOps::run_command` of the runtime service: [`run_request`] with [`Limits::default`],
/// resolving the device to the internal IP of an OWNED, running runtime. Unknown devices and
/// containers the agent does not own (`orchestrator_agent`, `autonomy_netmon`, anything without
/// our labels or state entry) are both `Device not found: <id>`.
pub async fn handle(rt: &Runtimes, req: RunCommandRequest) -> Result<Value, OpError> {
    run_request(&req, |device_id| resolve(rt, device_id), &Limits::default()).await
}

async fn resolve(rt: &Runtimes, device_id: String) -> Result<Ipv4Addr, CommandError> {
    let owned = match rt.owned(&device_id, "send a command to").await {
        Ok(o) => o,
        Err(e) if e.is_not_found() || e.is_not_owned() => {
            return Err(CommandError::DeviceNotFound(device_id));
        }
        Err(e) => {
            return Err(CommandError::Lookup {
                device_id,
                reason: e.to_string(),
            });
        }
    };
    let c = match &owned.container {
        Some(c) if c.state.running => c,
        _ => return Err(CommandError::NotRunning(device_id)),
    };
    // Adopted runtimes attached before this agent knew them: the registry has the address, but
    // only while the container still has it (a stale entry may be another container's now).
    let registry = rt.state().client(&device_id).await.map(|c| c.ip);
    crate::runtime::reachable_ip(c, &device_id, registry.as_deref())
        .ok_or(CommandError::NoInternalIp(device_id))
}

/// The whole `run_command` for [`crate::topics::RuntimeOps::run_command`]: validates the request
/// (before any Docker call), asks `resolve` for the internal IP of the OWNED runtime named by
/// `req.device_id` (it must answer [`CommandError::DeviceNotFound`] for unknown devices and for
/// containers the agent does not own, e.g. `orchestrator_agent`), performs the exchange and shapes
/// the answer for the request's form:
/// - object form: `Ok(body)` with `{status, http_response[, error]}` when the runtime answered
///   (the dispatcher adds `action` and `correlation_id`), `Err(OpError)` otherwise;
/// - legacy form: always `Ok(value)`, the whole ack ([`legacy_form_answer`]), never an empty ack.
pub async fn run_request<F, Fut>(
    req: &RunCommandRequest,
    resolve: F,
    limits: &Limits,
) -> Result<Value, OpError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Ipv4Addr, CommandError>>,
{
    let result = async {
        let command = HttpCommand::new(
            &req.method,
            &req.api,
            req.port,
            Some(&req.headers),
            req.data.as_ref(),
        )?;
        let ip = resolve(req.device_id.clone()).await?;
        execute(ip, &command, limits).await
    }
    .await;
    match req.form {
        RunCommandForm::Legacy => Ok(legacy_form_answer(&result)),
        RunCommandForm::Object => match result {
            Err(e) => Err(OpError::new(e.to_string())),
            ok => {
                let mut answer = object_form_answer(&req.correlation_id, &ok);
                if let Some(map) = answer.as_object_mut() {
                    map.remove("action");
                    map.remove("correlation_id");
                }
                Ok(answer)
            }
        },
    }
}

/// Answer of the one-object form `{correlation_id, device_id, method, api, ...}`:
/// `{action: "run_command", correlation_id, status, http_response}` when the runtime answered
/// (`status` is `"success"` for HTTP < 400, else `"error"` with `error: "HTTP <code>"`), or
/// `{action, correlation_id, status: "error", error}` when it did not.
pub fn object_form_answer(
    correlation_id: &Value,
    result: &Result<HttpReply, CommandError>,
) -> Value {
    match result {
        Ok(reply) if reply.ok() => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "success",
            "http_response": reply.to_json(),
        }),
        Ok(reply) => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "error",
            "error": format!("HTTP {}", reply.status),
            "http_response": reply.to_json(),
        }),
        Err(e) => json!({
            "action": "run_command",
            "correlation_id": correlation_id,
            "status": "error",
            "error": e.to_string(),
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
    use super::*;

    #[tokio::test]
    async fn an_exchange_is_logged_at_info_without_its_query_or_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("s3cr3t-body") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let answer =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            s.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let command = HttpCommand::new(
            "POST",
            "api/upload?token=s3cr3t-query",
            Some(port),
            None,
            Some(&json!({"password": "s3cr3t-body"})),
        )
        .expect("valid command");
        let (guard, info) = crate::logging::capture::at(tracing::Level::INFO);
        let reply = execute(Ipv4Addr::LOCALHOST, &command, &Limits::default()).await;
        drop(guard);
        assert_eq!(reply.expect("answered").status, 200);
        let sent = server.await.expect("server");
        assert!(
            sent.contains("token=s3cr3t-query"),
            "the query is sent, only not logged"
        );
        let text = info.text();
        assert!(text.contains("run_command answered"), "{text}");
        assert!(
            text.contains("path=\"api/upload\"") && text.contains("status=200"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
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
                "http_response": {"status_code": 200, "headers": {"content-type": "application/json"},
                "body": {"a": 1}, "ok": true, "content_type": "application/json"}})
        );
        let answer = object_form_answer(&json!(7), &Ok(reply(500, "text/plain", "boom")));
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["error"], "HTTP 500");
        assert_eq!(answer["http_response"]["body"], "boom");
        assert_eq!(answer["http_response"]["ok"], false);
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
