//! Test peer for `run_command`: a tiny HTTPS + HTTP server that stands in for the OpenPLC runtime's
//! REST API inside a test container (image `orchestrator-test/https-server`, built by
//! `scripts/test-images.sh` from `cargo build -p test_support --bin https-test-server`).
//!
//! It serves the same routes on a TLS port (default 8443, a fresh self-signed certificate made with
//! rcgen at start-up, exactly the situation of a real runtime) and on a plain-HTTP port (default 8080):
//! - `GET /status`          → 200 `{"status":"running","server":"runtime2-test","tls":<bool>}`
//! - `ANY /echo[?query]`    → 200 JSON `{method, path, query, tls, headers: {lower-case name: value}, body}`
//! - `ANY /hang`            → reads the request and never answers (timeouts)
//! - `GET /big`             → 200 with a 2 MiB JSON body and no `Content-Length` (close-delimited)
//! - `GET /big-length`      → 200 with a 2 MiB body announced by `Content-Length`
//! - `GET /text`            → 200 `text/plain` body `hello from the runtime`
//! - `GET /fail`            → 500 `{"error":"boom"}`
//! - anything else          → 404 `{"error":"not found"}`
//!
//! The answers' `server` value and `X-Test-Server` header are what the tests of every checkout
//! expect (the image tag is shared by everyone testing on the engine): keep them.
//!
//! The HTTP/1.1 handling is deliberately minimal and hand-written (one request per connection,
//! `Connection: close`): it is a test peer, not a server to copy. It must never be shipped.
//!
//! Usage: `https-test-server [--tls-port N] [--plain-port N]`.

// A development tool, not shipped: a failed step ends it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head + body the server reads; the agent never sends more in tests.
const MAX_REQUEST: usize = 1024 * 1024;
/// Size of the `/big` bodies: twice the agent's 1 MiB response cap.
const BIG: usize = 2 * 1024 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut tls_port: u16 = 8443;
    let mut plain_port: u16 = 8080;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or("missing value after flag")?;
        match arg.as_str() {
            "--tls-port" => tls_port = value.parse()?,
            "--plain-port" => plain_port = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }

    let certified = rcgen::generate_simple_self_signed(vec!["openplc-runtime".to_string()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let tls = TcpListener::bind(("0.0.0.0", tls_port)).await?;
    let plain = TcpListener::bind(("0.0.0.0", plain_port)).await?;
    println!("https test server: https on {tls_port}, http on {plain_port}");

    loop {
        tokio::select! {
            accepted = tls.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, true).await;
                    }
                });
            }
            accepted = plain.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                tokio::spawn(serve(tcp, false));
            }
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, tls: bool) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let (path, query) = match request.target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (request.target.clone(), None),
    };
    let (status, content_type, body, with_length): (u16, &str, Vec<u8>, bool) = match path.as_str()
    {
        "/status" => (
            200,
            "application/json",
            serde_json::json!({"status": "running", "server": "runtime2-test", "tls": tls})
                .to_string()
                .into_bytes(),
            true,
        ),
        "/echo" => (
            200,
            "application/json",
            serde_json::json!({
                "method": request.method,
                "path": path,
                "query": query,
                "tls": tls,
                "headers": request.headers,
                "body": String::from_utf8_lossy(&request.body),
            })
            .to_string()
            .into_bytes(),
            true,
        ),
        "/hang" => {
            // Hold the connection open without answering, until the client gives up.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        "/big" | "/big-length" => {
            let mut body = Vec::with_capacity(BIG + 16);
            body.extend_from_slice(b"{\"data\":\"");
            body.resize(BIG, b'x');
            body.extend_from_slice(b"\"}");
            (200, "application/json", body, path == "/big-length")
        }
        "/text" => (200, "text/plain", b"hello from the runtime".to_vec(), true),
        "/fail" => (
            500,
            "application/json",
            br#"{"error":"boom"}"#.to_vec(),
            true,
        ),
        _ => (
            404,
            "application/json",
            br#"{"error":"not found"}"#.to_vec(),
            true,
        ),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nX-Test-Server: runtime2\r\nConnection: close\r\n"
    );
    if with_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
