//! The [`Docker`] handle: socket selection, pooled HTTP/1 over the Unix socket, timeouts, API version
//! negotiation and the request/response plumbing every endpoint module uses. It owns no Docker
//! object semantics (those live in `containers`, `networks`, `images`, `events`, `system`), and it
//! must never block the async runtime or wait on the engine without a timeout.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::{UnixConnector, UnixStream};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::encode;
use crate::error::{Error, Result};
use crate::lines::{LineBuffer, LineTooLong};
use crate::version::ApiVersion;

/// Where the engine listens when neither `DOCKER_HOST` nor an explicit socket is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Default limit for connecting to the socket.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit for the engine's response headers (and, for non-streaming calls, its body).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Non-streaming answers larger than this are refused (inspect/list answers are far smaller).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Error bodies are short JSON documents; read at most this much of one.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How to reach the engine. Build with [`DockerConfig::from_env`], [`DockerConfig::from_host`] or
/// [`DockerConfig::unix`], then adjust the public fields.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Path of the engine's Unix socket.
    pub socket: PathBuf,
    /// Limit for establishing a connection to the socket.
    pub connect_timeout: Duration,
    /// Limit for the response headers of every call (and the body of non-streaming calls). Calls
    /// that legitimately take longer (stop with a grace period) add their own time on top.
    pub response_timeout: Duration,
}

impl DockerConfig {
    /// A config for the socket at `path`, default timeouts.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        DockerConfig {
            socket: path.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// Parses a Docker host string. Only `unix:///absolute/path` is supported; `tcp://`, `ssh://`,
    /// `npipe://` and bare paths are [`Error::InvalidHost`].
    pub fn from_host(host: &str) -> Result<Self> {
        let invalid = || Error::InvalidHost {
            host: host.to_owned(),
        };
        let path = host.strip_prefix("unix://").ok_or_else(invalid)?;
        if !path.starts_with('/') || path.len() < 2 {
            return Err(invalid());
        }
        Ok(DockerConfig::unix(path))
    }

    /// `DOCKER_HOST` when set and non-empty (see [`DockerConfig::from_host`]), else
    /// [`DEFAULT_SOCKET`].
    pub fn from_env() -> Result<Self> {
        match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => DockerConfig::from_host(&h),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(DockerConfig::unix(DEFAULT_SOCKET)),
            Err(std::env::VarError::NotUnicode(h)) => Err(Error::InvalidHost {
                host: h.to_string_lossy().into_owned(),
            }),
        }
    }
}

/// A cheap-to-clone handle on the Docker engine. Creating it never touches the engine, so an agent
/// can build it while the engine is down; the API version is negotiated on first use (or by
/// [`Docker::negotiate`]) and again after the engine was unreachable (it may have been upgraded).
#[derive(Clone)]
pub struct Docker {
    inner: Arc<Inner>,
}

struct Inner {
    config: DockerConfig,
    /// `unix://<hex socket path>:0` — the authority hyperlocal's connector decodes.
    base: String,
    http: Client<TimeoutConnector, Full<Bytes>>,
    version: Mutex<Option<ApiVersion>>,
    answers: Answers,
}

/// How the engine answered this client's calls so far ([`Docker::stats`]): counted where every
/// call's head is received, so the agent's health view and metrics cost no engine call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Whether the last call got an answer (any HTTP status): `None` before the first call.
    pub answering: Option<bool>,
    /// Calls that found no engine on the socket ([`Error::Unreachable`]).
    pub unreachable: u64,
    /// Calls whose answer did not come in time ([`Error::Timeout`]).
    pub timeout: u64,
    /// Calls whose connection broke ([`Error::Transport`]).
    pub transport: u64,
    /// Calls the engine answered with a 5xx status (its own failure, not a refusal).
    pub server_error: u64,
}

/// The counters behind [`EngineStats`].
#[derive(Default)]
struct Answers {
    /// 0 no call yet, 1 the last call was answered, 2 it was not.
    last: AtomicU8,
    unreachable: AtomicU64,
    timeout: AtomicU64,
    transport: AtomicU64,
    server_error: AtomicU64,
}

impl Answers {
    fn answered(&self, status: StatusCode) {
        self.last.store(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.server_error.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unanswered(&self, counter: &AtomicU64) {
        self.last.store(2, Ordering::Relaxed);
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            answering: match self.last.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n == 1),
            },
            unreachable: self.unreachable.load(Ordering::Relaxed),
            timeout: self.timeout.load(Ordering::Relaxed),
            transport: self.transport.load(Ordering::Relaxed),
            server_error: self.server_error.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker")
            .field("socket", &self.inner.config.socket)
            .field("api_version", &self.negotiated_version())
            .finish()
    }
}

impl Docker {
    /// A client for `config`. Does no I/O.
    pub fn new(config: DockerConfig) -> Self {
        let base = format!(
            "unix://{}:0",
            encode::hex(config.socket.as_os_str().as_encoded_bytes())
        );
        let connector = TimeoutConnector {
            timeout: config.connect_timeout,
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Docker {
            inner: Arc::new(Inner {
                config,
                base,
                http,
                version: Mutex::new(None),
                answers: Answers::default(),
            }),
        }
    }

    /// A client for `DOCKER_HOST` (or the default socket). Does no I/O.
    pub fn from_env() -> Result<Self> {
        Ok(Docker::new(DockerConfig::from_env()?))
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.inner.config.socket
    }

    /// The configuration in use.
    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// How the engine answered so far, without any I/O.
    pub fn stats(&self) -> EngineStats {
        self.inner.answers.stats()
    }

    /// The version negotiated so far, without any I/O (`None` before the first successful call).
    pub fn negotiated_version(&self) -> Option<ApiVersion> {
        *self.lock_version()
    }

    /// The version in use, negotiating first if needed. Use its predicates
    /// ([`ApiVersion::supports_endpoint_mac_at_create`], …) to choose request shapes.
    pub async fn api_version(&self) -> Result<ApiVersion> {
        match self.negotiated_version() {
            Some(v) => Ok(v),
            None => self.negotiate().await,
        }
    }

    /// Pings the engine and (re)negotiates: the lower of the engine's `Api-Version` and
    /// [`ApiVersion::MAX_SUPPORTED`]. Fails with [`Error::EngineTooOld`] below
    /// [`ApiVersion::MIN_SUPPORTED`]. Logs the outcome at INFO.
    pub async fn negotiate(&self) -> Result<ApiVersion> {
        let server = self.ping().await?;
        if server < ApiVersion::MIN_SUPPORTED {
            return Err(Error::EngineTooOld {
                server,
                minimum: ApiVersion::MIN_SUPPORTED,
            });
        }
        let v = ApiVersion::negotiate(server);
        let previous = self.lock_version().replace(v);
        if previous != Some(v) {
            tracing::info!(
                socket = %self.socket().display(),
                server_api = %server,
                api = %v,
                "Docker engine API version negotiated"
            );
        }
        Ok(v)
    }

    /// `GET /_ping`: the engine's maximum API version (its `Api-Version` header). Unversioned, so it
    /// works before negotiation.
    pub async fn ping(&self) -> Result<ApiVersion> {
        let resp = self
            .send_raw(
                Method::GET,
                "/_ping",
                "/_ping",
                None,
                self.inner.config.response_timeout,
            )
            .await?;
        let what = "GET /_ping";
        let header = resp
            .headers()
            .get("api-version")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        drain(resp, what, self.inner.config.response_timeout).await?;
        let header = header.ok_or_else(|| Error::Decode {
            what: what.into(),
            reason: "no Api-Version header".into(),
        })?;
        header.parse().map_err(|e| Error::Decode {
            what: what.into(),
            reason: format!("{e}"),
        })
    }

    fn lock_version(&self) -> std::sync::MutexGuard<'_, Option<ApiVersion>> {
        // The guarded value is a Copy option, valid whatever a panicking holder did.
        self.inner
            .version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.inner.config.response_timeout
    }

    /// Sends a request and waits (at most `header_timeout`) for a 2xx answer's headers. Non-2xx
    /// answers become [`Error::Api`] with the engine's message. `path` includes the query and is
    /// prefixed here with the negotiated version.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        header_timeout: Duration,
    ) -> Result<Response<Incoming>> {
        let full_path = format!("/v{}{path}", self.api_version().await?);
        self.send_raw(method, path, &full_path, body, header_timeout)
            .await
    }

    /// [`Docker::send`] after versioning (negotiation itself uses this, unversioned).
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        full_path: &str,
        body: Option<Vec<u8>>,
        header_timeout: Duration,
    ) -> Result<Response<Incoming>> {
        let what = format!("{method} {}", strip_query(path));
        let uri: Uri = format!("{}{full_path}", self.inner.base)
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("request path {full_path:?}: {e}")))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))?;
        tracing::debug!(request = %what, "docker request");

        let answers = &self.inner.answers;
        let resp = match tokio::time::timeout(header_timeout, self.inner.http.request(req)).await {
            Err(_) => {
                answers.unanswered(&answers.timeout);
                return Err(Error::Timeout {
                    what,
                    after: header_timeout,
                });
            }
            Ok(Err(e)) if e.is_connect() => {
                // The engine may be restarting (perhaps upgraded): negotiate again next time.
                self.lock_version().take();
                answers.unanswered(&answers.unreachable);
                return Err(Error::Unreachable {
                    socket: self.inner.config.socket.clone(),
                    source: Box::new(e),
                });
            }
            Ok(Err(e)) => {
                answers.unanswered(&answers.transport);
                return Err(Error::Transport {
                    what,
                    source: Box::new(e),
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        answers.answered(status);
        if status.is_success() {
            return Ok(resp);
        }
        let message = error_message(resp, &what, header_timeout).await;
        if status == StatusCode::BAD_REQUEST && message.contains("is too new") {
            // The engine was replaced by an older one under us: renegotiate on the next call.
            self.lock_version().take();
        }
        Err(Error::Api {
            what,
            status: status.as_u16(),
            message,
        })
    }

    /// A versioned call whose 2xx body is JSON of type `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let timeout = self.response_timeout();
        let resp = self.send(method.clone(), path, body, timeout).await?;
        let what = format!("{method} {}", strip_query(path));
        let bytes = read_body(resp, &what, timeout, MAX_BODY).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            what,
            reason: e.to_string(),
        })
    }

    /// A versioned call whose 2xx body is returned as bytes (at most `limit`).
    pub(crate) async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        limit: usize,
    ) -> Result<Bytes> {
        let timeout = self.response_timeout();
        let resp = self.send(method.clone(), path, None, timeout).await?;
        read_body(
            resp,
            &format!("{method} {}", strip_query(path)),
            timeout,
            limit,
        )
        .await
    }

    /// A versioned call whose 2xx body is ignored. `extra` is added to the response timeout (for
    /// calls that wait on the container, like stop with a grace period).
    pub(crate) async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: Duration,
    ) -> Result<()> {
        let timeout = self.response_timeout() + extra;
        let resp = self.send(method.clone(), path, body, timeout).await?;
        drain(resp, &format!("{method} {}", strip_query(path)), timeout).await
    }
}

/// Serializes a request body.
pub(crate) fn to_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

/// A path segment from a caller string (id or name), percent-encoded.
pub(crate) fn seg(s: &str) -> Result<String> {
    if s.is_empty() {
        return Err(Error::InvalidArgument("empty id or name".into()));
    }
    Ok(encode::percent_encode(s))
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

async fn read_body(
    resp: Response<Incoming>,
    what: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Bytes> {
    let body = Limited::new(resp.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Error::Timeout {
            what: what.to_owned(),
            after: timeout,
        }),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Error::Decode {
            what: what.to_owned(),
            reason: format!("answer larger than {limit} bytes"),
        }),
        Ok(Err(e)) => Err(Error::Transport {
            what: what.to_owned(),
            source: e,
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn drain(resp: Response<Incoming>, what: &str, timeout: Duration) -> Result<()> {
    read_body(resp, what, timeout, MAX_BODY).await.map(drop)
}

/// The engine's `message` from an error answer, or the raw body, or the status text.
async fn error_message(resp: Response<Incoming>, what: &str, timeout: Duration) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let status = resp.status();
    match read_body(resp, what, timeout, MAX_ERROR_BODY).await {
        Ok(b) => match serde_json::from_slice::<ErrorBody>(&b) {
            Ok(e) => e.message,
            Err(_) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
            Err(_) => status.canonical_reason().unwrap_or("").to_owned(),
        },
        Err(e) => format!("(error body unreadable: {e})"),
    }
}

/// What [`JsonLines::next_line`] saw.
pub(crate) enum LineEvent {
    /// A complete line.
    Line(Vec<u8>),
    /// No bytes arrived for the idle limit.
    Idle,
    /// The engine ended the stream.
    End,
}

/// Reads a streaming (newline-delimited JSON) body line by line, with an optional idle limit.
pub(crate) struct JsonLines {
    body: Incoming,
    lines: LineBuffer,
    idle: Option<Duration>,
    ended: bool,
    pub(crate) what: String,
}

impl JsonLines {
    pub(crate) fn new(resp: Response<Incoming>, what: String, idle: Option<Duration>) -> Self {
        JsonLines {
            body: resp.into_body(),
            lines: LineBuffer::default(),
            idle,
            ended: false,
            what,
        }
    }

    pub(crate) async fn next_line(&mut self) -> Result<LineEvent> {
        loop {
            let too_long = |_: LineTooLong| Error::Decode {
                what: self.what.clone(),
                reason: "a streamed line exceeds 1 MiB".into(),
            };
            if let Some(line) = self.lines.next_line().map_err(too_long)? {
                return Ok(LineEvent::Line(line));
            }
            if self.ended {
                return Ok(match self.lines.finish() {
                    Some(line) => LineEvent::Line(line),
                    None => LineEvent::End,
                });
            }
            let frame = match self.idle {
                Some(limit) => match tokio::time::timeout(limit, self.body.frame()).await {
                    Ok(f) => f,
                    Err(_) => return Ok(LineEvent::Idle),
                },
                None => self.body.frame().await,
            };
            match frame {
                None => self.ended = true,
                Some(Err(e)) => {
                    return Err(Error::Transport {
                        what: self.what.clone(),
                        source: Box::new(e),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
            }
        }
    }
}

/// hyperlocal's connector with a connect timeout (hyperlocal has none).
#[derive(Clone, Copy, Debug)]
struct TimeoutConnector {
    timeout: Duration,
}

impl tower_service::Service<Uri> for TimeoutConnector {
    type Response = UnixStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UnixStream>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        let fut = tower_service::Service::call(&mut UnixConnector, uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting took longer than {timeout:?}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_accepts_only_unix_sockets() {
        let c = DockerConfig::from_host("unix:///run/docker.sock").unwrap();
        assert_eq!(c.socket, Path::new("/run/docker.sock"));
        assert_eq!(c.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        for bad in [
            "tcp://127.0.0.1:2375",
            "ssh://host",
            "/var/run/docker.sock",
            "unix://",
            "unix://relative.sock",
            "npipe:////./pipe/docker_engine",
        ] {
            let e = DockerConfig::from_host(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidHost { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn client_is_built_without_a_runtime_or_an_engine() {
        let d = Docker::new(DockerConfig::unix("/nonexistent/docker.sock"));
        assert_eq!(d.negotiated_version(), None);
        assert_eq!(d.socket(), Path::new("/nonexistent/docker.sock"));
        assert!(d.inner.base.starts_with("unix://2f6e6f6e"));
    }

    /// An engine that answers every request with a 500, on a socket in `dir`.
    async fn failing_engine(dir: &Path) -> PathBuf {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = dir.join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"message":"boom"}"#;
                let head = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
            }
        });
        path
    }

    #[tokio::test]
    async fn answers_are_counted_without_engine_calls_of_their_own() {
        let dir = std::env::temp_dir().join(format!("docker-api-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let gone = Docker::new(DockerConfig::unix(dir.join("no-engine.sock")));
        assert_eq!(gone.stats(), EngineStats::default(), "no call yet");
        assert!(gone.ping().await.unwrap_err().is_unreachable());
        assert!(gone.ping().await.is_err());
        let s = gone.stats();
        assert_eq!((s.answering, s.unreachable), (Some(false), 2));
        assert_eq!((s.timeout, s.transport, s.server_error), (0, 0, 0));

        let failing = Docker::new(DockerConfig::unix(failing_engine(&dir).await));
        assert!(failing.ping().await.is_err());
        let s = failing.stats();
        assert_eq!(s.answering, Some(true), "a 5xx is an answer");
        assert_eq!((s.server_error, s.unreachable), (1, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_segments_are_encoded_and_never_empty() {
        assert_eq!(seg("a/b").unwrap(), "a%2Fb");
        assert!(seg("").is_err());
        assert_eq!(strip_query("/x?y=1"), "/x");
    }
}
