//! `run_command`: the HTTP proxy from the cloud to a runtime's REST API (spec §2 "run_command",
//! upstream §6 and §12 item 4).
//!
//! Owns: validating the command ([`HttpCommand`], pure, in `validate`), finding the address of
//! the OWNED, running runtime a device id names ([`Runtimes::send_command`]), and the HTTP/1.1
//! exchange with it over its internal bridge address (`http`: HTTPS on 8443 by default with any
//! certificate accepted, plain HTTP on another port; connect and total timeouts; response cap).
//! The answer shapes of the two request forms are the topic's.
//!
//! Must never: talk to any address but the runtime's, follow redirects, block (every call is async
//! with timeouts), or log header values or bodies (they may carry credentials).

mod http;
mod multipart;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::runtime::Runtimes;

pub(crate) use http::tls_config as runtime_tls_config;
pub use multipart::{FileMeta, Multipart, Part, decode_base64};
pub use validate::{
    ALLOWED_METHODS, Fields, HTTPS_PORT, HttpCommand, MAX_API_LEN, MAX_TARGET_LEN,
    MAX_UPLOAD_BYTES, validate_api, validate_method,
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

impl Limits {
    /// The limits for sending `command`: the defaults, with one more second of total time per MiB
    /// of body (an upload of 32 MiB to a Pi's runtime is not a 30 s affair).
    pub fn for_command(command: &HttpCommand) -> Self {
        let mut limits = Self::default();
        limits.total_timeout += Duration::from_secs(command.body_len() >> 20);
        limits
    }
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
}

/// Why a `run_command` produced no answer from the runtime. The messages are sent to the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A field has the right type but a refused value (e.g. an `api` that is not a relative path).
    #[error("Invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `files` decode to more than [`MAX_UPLOAD_BYTES`].
    #[error(
        "upload too large: the files decode to more than {limit} bytes (limit {} MiB)",
        limit >> 20
    )]
    UploadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Another upload holds the memory budget for uploads.
    #[error("another upload is in progress: try again when it is done")]
    UploadBusy,
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
            Self::InvalidValue { .. }
                | Self::MethodNotAllowed(_)
                | Self::UploadTooLarge { .. }
                | Self::UploadBusy
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
    // Part names and sizes only: contents and header values may be programs or credentials.
    let parts = command.multipart.as_ref().map(|m| {
        m.parts
            .iter()
            .map(|p| format!("{}:{}", p.name, p.content.len()))
            .collect::<Vec<_>>()
            .join(",")
    });
    let sent = command.body_len();
    let started = tokio::time::Instant::now();
    let result = http::exchange(ip, command, limits).await;
    let elapsed_ms = started.elapsed().as_millis();
    match &result {
        Ok(reply) => tracing::info!(
            method = %command.method, port = command.port, path, sent, parts = ?parts,
            status = reply.status, bytes = reply.body.len(), elapsed_ms, "run_command answered"
        ),
        Err(e) => tracing::warn!(
            method = %command.method, port = command.port, path, sent, parts = ?parts,
            elapsed_ms, error = %e, "run_command failed"
        ),
    }
    result
}

impl Runtimes {
    /// Sends `command` to the runtime `device_id` and returns its answer, with
    /// [`Limits::for_command`]. Only an OWNED, running runtime is reached, at its internal address:
    /// unknown devices and containers the agent does not own (`orchestrator_agent`,
    /// `autonomy_netmon`, anything without our labels or state entry) are both
    /// [`CommandError::DeviceNotFound`].
    pub async fn send_command(
        &self,
        device_id: &str,
        command: &HttpCommand,
    ) -> Result<HttpReply, CommandError> {
        let ip = resolve(self, device_id.to_owned()).await?;
        execute(ip, command, &Limits::for_command(command)).await
    }
}

pub(crate) async fn resolve(rt: &Runtimes, device_id: String) -> Result<Ipv4Addr, CommandError> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
