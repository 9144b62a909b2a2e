//! A small plain-HTTP control endpoint for people and scripts (bind it to loopback only):
//!
//! - `GET /agents` → `["<cn>", …]`
//! - `POST /emit/<topic>[?agent=<cn>&timeout_ms=<n>&ack=false]` with a JSON body: an array is the
//!   argument list, any other value is the single argument, an empty body means no argument.
//!   Answers `200` with the ack's values as a JSON array (or `202 {"emitted":…}` with `ack=false`).
//!
//! Errors are `{"error":"…"}` with 400 (bad request), 404 (no such agent or route), 504 (no ack in
//! time) or 502 (sending failed). This module owns request routing only; it never listens on a
//! non-loopback address by itself (the caller binds the listener).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::Error;
use crate::server::DevCloud;

/// Largest request body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Longest ack wait a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Serves the endpoint on `listener` until `stop` becomes true.
pub async fn serve(
    cloud: DevCloud,
    listener: TcpListener,
    default_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("control endpoint accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let cloud = cloud.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let cloud = cloud.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&cloud, req, default_timeout).await)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%peer, "control connection ended: {e}");
            }
        });
    }
    conns.shutdown().await;
}

/// Binds `addr` after checking it is a loopback address.
pub async fn bind_loopback(addr: SocketAddr) -> crate::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(Error::BadRequest(format!(
            "the control endpoint must listen on a loopback address, not {addr}"
        )));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

async fn handle(
    cloud: &DevCloud,
    req: Request<Incoming>,
    default_timeout: Duration,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/agents") => reply(StatusCode::OK, &json!(cloud.connected_agents())),
        (&Method::POST, p) if p.starts_with("/emit/") => {
            let topic = percent_decode(&p["/emit/".len()..]);
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
            };
            match emit(cloud, &topic, &query, &body, default_timeout).await {
                Ok((status, v)) => reply(status, &v),
                Err(e) => error(status_of(&e), &e.to_string()),
            }
        }
        (_, "/agents") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /agents"),
        (_, p) if p.starts_with("/emit/") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use POST /emit/<topic>")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "routes: GET /agents, POST /emit/<topic>?agent=&timeout_ms=&ack=",
        ),
    }
}

/// The parsed query of `POST /emit/<topic>`.
#[derive(Debug, Default, PartialEq)]
pub struct EmitQuery {
    pub agent: Option<String>,
    pub timeout: Option<Duration>,
    pub ack: bool,
}

/// Parses `agent=<cn>&timeout_ms=<n>&ack=<bool>`.
pub fn parse_query(query: &str) -> crate::Result<EmitQuery> {
    let mut q = EmitQuery {
        ack: true,
        ..EmitQuery::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "agent" if !v.is_empty() => q.agent = Some(v),
            "agent" => {}
            "timeout_ms" => {
                let ms: u64 = v
                    .parse()
                    .map_err(|_| Error::BadRequest(format!("timeout_ms {v:?} is not a number")))?;
                q.timeout = Some(Duration::from_millis(ms).min(MAX_TIMEOUT));
            }
            "ack" => {
                q.ack = match v.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(Error::BadRequest(format!("ack {v:?} is not a boolean"))),
                }
            }
            _ => return Err(Error::BadRequest(format!("unknown query parameter {k:?}"))),
        }
    }
    Ok(q)
}

/// The Socket.IO arguments a request body stands for.
pub fn body_args(body: &[u8]) -> crate::Result<Vec<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(args)) => Ok(args),
        Ok(single) => Ok(vec![single]),
        Err(e) => Err(Error::BadRequest(format!("body is not JSON: {e}"))),
    }
}

async fn emit(
    cloud: &DevCloud,
    topic: &str,
    query: &str,
    body: &[u8],
    default_timeout: Duration,
) -> crate::Result<(StatusCode, Value)> {
    if topic.is_empty() {
        return Err(Error::BadRequest(
            "missing topic: POST /emit/<topic>".into(),
        ));
    }
    let q = parse_query(query)?;
    let args = body_args(body)?;
    if q.ack {
        let timeout = q.timeout.unwrap_or(default_timeout);
        let values = cloud
            .emit_with_ack(q.agent.as_deref(), topic, args, timeout)
            .await?;
        Ok((StatusCode::OK, Value::Array(values)))
    } else {
        cloud.emit(q.agent.as_deref(), topic, args)?;
        Ok((StatusCode::ACCEPTED, json!({"emitted": topic})))
    }
}

fn status_of(e: &Error) -> StatusCode {
    if e.is_bad_request() {
        StatusCode::BAD_REQUEST
    } else if e.is_not_connected() {
        StatusCode::NOT_FOUND
    } else if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({"error": msg}))
}

/// Decodes `%XX` escapes (and `+` as space, as forms do); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_array_is_the_argument_list_and_anything_else_one_argument() {
        assert_eq!(
            body_args(br#"["plc1", {"a":1}]"#).expect("array"),
            vec![json!("plc1"), json!({"a": 1})]
        );
        assert_eq!(
            body_args(br#"{"a":1}"#).expect("object"),
            vec![json!({"a": 1})]
        );
        assert_eq!(body_args(b"  \n").expect("empty"), Vec::<Value>::new());
        assert!(body_args(b"{").is_err_and(|e| e.is_bad_request()));
    }

    #[test]
    fn query_parses_agent_timeout_and_ack() {
        let q = parse_query("agent=dev%2D1&timeout_ms=1500&ack=false").expect("query");
        assert_eq!(
            q,
            EmitQuery {
                agent: Some("dev-1".into()),
                timeout: Some(Duration::from_millis(1500)),
                ack: false
            }
        );
        assert!(parse_query("").expect("empty").ack);
        assert!(parse_query("timeout_ms=x").is_err());
        assert!(parse_query("bogus=1").is_err());
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }
}
