//! The listener of `--metrics-listen`: just enough HTTP/1.1 for a Prometheus scrape or a `curl`.
//! One request per connection (`Connection: close`), a request head of at most [`MAX_HEAD`] bytes
//! read within [`IO_TIMEOUT`] (the whole exchange too), at most [`MAX_CONNECTIONS`] at once.
//! `GET` and `HEAD` of `/metrics` and `/healthz`; 404 for other paths, 405 for other methods.
//! The request parsing is a pure function ([`parse_request`]); the shell only moves bytes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Sources;

/// The largest request head read; a longer one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Limit for one connection, from accept to the last byte written.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 4;
/// Mode of the Unix socket: the agent's user and group may scrape.
const SOCKET_MODE: u32 = 0o660;

/// Where the metrics are served (`--metrics-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `HOST:PORT` (port 0: any free port, logged).
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Listen {
    /// `IP:PORT` (`[::1]:PORT` for IPv6), `localhost:PORT`, or a Unix socket: `unix:PATH` or an
    /// absolute path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path (unix:/run/orchestrator/metrics.sock)".into(),
                );
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(text)));
        }
        if let Some(port) = text.strip_prefix("localhost:")
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!(
                "{text:?} is not HOST:PORT with an IP address (127.0.0.1:9464, [::1]:9464, \
                 localhost:9464) nor a Unix socket (unix:/run/orchestrator/metrics.sock)"
            )
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Binds `listen` and serves the metrics in a background task (aborted with the returned handle).
/// A bind failure is logged and nothing is served: the agent runs on without metrics.
pub async fn spawn(listen: Listen, sources: Sources) -> Option<tokio::task::JoinHandle<()>> {
    let (listener, bound) = match bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(listen = %listen, "metrics not served: {e}");
            return None;
        }
    };
    if let Listen::Tcp(addr) = &listen
        && !addr.ip().is_loopback()
    {
        warn!(
            listen = %bound,
            "metrics and health are served without authentication on a non-loopback address: \
             anyone who reaches it can read them"
        );
    }
    info!(listen = %bound, "metrics listening");
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Some(tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let accepted = match &listener {
                Listener::Tcp(l) => l.accept().await.map(|(c, _)| Box::new(c) as Box<dyn Conn>),
                Listener::Unix(l) => l.accept().await.map(|(c, _)| Box::new(c) as Box<dyn Conn>),
            };
            match accepted {
                Ok(conn) => {
                    let sources = sources.clone();
                    tokio::spawn(async move {
                        serve(conn, &sources).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    debug!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }))
}

/// A connection from either listener (one `serve` for both: the binary carries it once).
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// The listener and the address it is bound to (the real port when 0 was asked).
async fn bind(listen: &Listen) -> std::io::Result<(Listener, Listen)> {
    match listen {
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let bound = Listen::Tcp(l.local_addr()?);
            Ok((Listener::Tcp(l), bound))
        }
        Listen::Unix(path) => {
            let l = crate::health::bind_unix(path, SOCKET_MODE).await?;
            Ok((Listener::Unix(l), listen.clone()))
        }
    }
}

/// Answers one request on `conn` and closes it, all within [`IO_TIMEOUT`].
async fn serve(mut conn: Box<dyn Conn>, sources: &Sources) {
    let exchange = async {
        let answer = match read_head(&mut conn).await {
            Ok(Some(head)) => match parse_request(&head) {
                Ok(request) => answer(request, sources).await,
                Err(status) => refusal(status),
            },
            Ok(None) => return,
            Err(status) => refusal(status),
        };
        let _ = conn.write_all(&answer).await;
        let _ = conn.shutdown().await;
    };
    if tokio::time::timeout(IO_TIMEOUT, exchange).await.is_err() {
        debug!("metrics client too slow: connection closed");
    }
}

/// The request head (up to the blank line), `None` when the client closed without sending
/// anything.
async fn read_head(conn: &mut (dyn AsyncRead + Unpin + Send)) -> Result<Option<Vec<u8>>, Status> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|_| Status::BadRequest)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(Status::BadRequest)
            };
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(Status::HeadTooLarge);
        }
    }
}

/// Where the head ends (after `\r\n\r\n`, or `\n\n` from a lenient client).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A status this responder answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    Unavailable,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
            Status::Unavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::Unavailable => "Service Unavailable",
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Healthz,
    NotFound,
}

/// A parsed request: the route, and whether it is a `HEAD` (headers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub route: Route,
    pub head_only: bool,
}

/// Parses the request line of `head` (`METHOD TARGET HTTP/1.x`); the header fields are not
/// needed. The query string is ignored.
pub fn parse_request(head: &[u8]) -> Result<Request, Status> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Status::BadRequest)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| Status::BadRequest)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Err(Status::BadRequest);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Status::MethodNotAllowed),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        _ => Route::NotFound,
    };
    Ok(Request { route, head_only })
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

async fn answer(request: Request, sources: &Sources) -> Vec<u8> {
    match request.route {
        Route::Metrics => response(
            Status::Ok,
            EXPOSITION,
            &sources.metrics().await,
            request.head_only,
        ),
        Route::Healthz => {
            let (ready, body) = super::readiness(&sources.snapshot());
            let status = if ready {
                Status::Ok
            } else {
                Status::Unavailable
            };
            response(status, JSON, &body, request.head_only)
        }
        Route::NotFound => response(
            Status::NotFound,
            TEXT,
            "not found: try /metrics or /healthz\n",
            request.head_only,
        ),
    }
}

/// The answer to a request that cannot be served: its reason as the body.
fn refusal(status: Status) -> Vec<u8> {
    let mut body = String::from(status.reason());
    body.push('\n');
    response(status, TEXT, &body, false)
}

/// A whole response: status line, headers, and the body unless `head_only`.
fn response(status: Status, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        status.code(),
        status.reason(),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ip_and_port_localhost_or_a_unix_socket() {
        assert_eq!(
            Listen::parse("127.0.0.1:9464"),
            Ok(Listen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("[::1]:0"),
            Ok(Listen::Tcp("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("localhost:9464"),
            Ok(Listen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("unix:/run/o/metrics.sock"),
            Ok(Listen::Unix("/run/o/metrics.sock".into()))
        );
        assert_eq!(
            Listen::parse("unix:relative.sock"),
            Ok(Listen::Unix("relative.sock".into()))
        );
        assert_eq!(
            Listen::parse("/run/o/metrics.sock"),
            Ok(Listen::Unix("/run/o/metrics.sock".into()))
        );
        for bad in [
            "",
            "9464",
            "example.com:9464",
            "unix:",
            "127.0.0.1",
            "localhost:x",
        ] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Listen::Tcp("127.0.0.1:1".parse().unwrap()).to_string(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let get = |route| {
            Ok(Request {
                route,
                head_only: false,
            })
        };
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            get(Route::Metrics)
        );
        assert_eq!(
            parse_request(b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n"),
            get(Route::Healthz)
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\n\n"),
            get(Route::Metrics)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            get(Route::NotFound)
        );
        assert_eq!(
            parse_request(b"GET /metrics/x HTTP/1.1\r\n\r\n"),
            get(Route::NotFound)
        );
        assert_eq!(
            parse_request(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Ok(Request {
                route: Route::Metrics,
                head_only: true
            })
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(Status::MethodNotAllowed)
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            b"no line end",
        ] {
            assert_eq!(
                parse_request(bad),
                Err(Status::BadRequest),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn responses_close_and_carry_their_length() {
        let r = String::from_utf8(response(Status::Ok, EXPOSITION, "m 1\n", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nm 1\n"
        );
        let head = String::from_utf8(response(Status::Ok, EXPOSITION, "m 1\n", true)).unwrap();
        assert!(head.ends_with(
            "Content-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
        let r = String::from_utf8(refusal(Status::MethodNotAllowed)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.ends_with(
            "Content-Length: 19\r\nAllow: GET, HEAD\r\nCache-Control: no-store\r\n\
             Connection: close\r\n\r\nMethod Not Allowed\n"
        ));
    }

    #[tokio::test]
    async fn an_oversized_or_truncated_head_is_refused_and_a_silent_client_is_dropped() {
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(read_head(&mut &big[..]).await, Err(Status::HeadTooLarge));
        assert_eq!(
            read_head(&mut &b"GET /metrics HTTP/1.1\r\n"[..]).await,
            Err(Status::BadRequest)
        );
        assert_eq!(read_head(&mut &b""[..]).await, Ok(None));
        assert_eq!(
            read_head(&mut &b"GET /metrics HTTP/1.1\r\n\r\nignored"[..]).await,
            Ok(Some(b"GET /metrics HTTP/1.1\r\n\r\n".to_vec()))
        );
    }
}
