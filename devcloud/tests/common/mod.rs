//! Shared by devcloud's integration tests: temp PKIs, the python Socket.IO client, raw HTTP.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use devcloud::pki::{self, PkiOptions, PkiPaths};
use devcloud::{DevCloud, ServerConfig};
use serde_json::Value;
pub use test_support::python;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const STEP: Duration = Duration::from_secs(20);

/// A PKI in a temp dir (removed on drop).
pub struct Pki {
    pub _dir: tempfile::TempDir,
    pub paths: PkiPaths,
}

/// Server logs in test output (`RUST_LOG=devcloud=debug cargo test -- --nocapture`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

pub fn make_pki(opts: &PkiOptions) -> Pki {
    init_logs();
    let dir = tempfile::Builder::new()
        .prefix("devcloud-test-")
        .tempdir()
        .expect("tempdir");
    let paths = pki::generate(dir.path(), opts).expect("generate pki");
    Pki { _dir: dir, paths }
}

pub async fn start(pki: &Pki, listen: &str, ping: Duration) -> DevCloud {
    let cfg = ServerConfig {
        ping_interval: ping,
        ping_timeout: ping,
        ..ServerConfig::from_pki(&pki.paths, listen.parse().expect("listen address"))
    };
    DevCloud::start(cfg).await.expect("start devcloud")
}

/// The python client process (killed on drop).
pub struct PyClient {
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
}

pub struct ClientOpts<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub transport: &'a str,
    pub reconnect: bool,
}

impl<'a> ClientOpts<'a> {
    pub fn trusted(p: &'a PkiPaths) -> Self {
        Self {
            ca: &p.ca_cert,
            cert: &p.client_cert,
            key: &p.client_key,
            transport: "websocket",
            reconnect: false,
        }
    }
}

impl PyClient {
    pub fn spawn(url: &str, o: &ClientOpts<'_>) -> PyClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sio_client.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .arg("--url")
            .arg(url)
            .arg("--ca")
            .arg(o.ca)
            .arg("--cert")
            .arg(o.cert)
            .arg("--key")
            .arg(o.key)
            .arg("--transport")
            .arg(o.transport)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if o.reconnect {
            cmd.arg("--reconnect");
        }
        let mut child = cmd.spawn().expect("spawn python client");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        PyClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next JSON line whose "type" is `ty` (other lines are skipped).
    pub async fn expect(&mut self, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("client: no {ty:?} line in time"))
                .expect("client stdout")
                .unwrap_or_else(|| panic!("client exited before a {ty:?} line"));
            let v: Value = serde_json::from_str(&line).expect("client JSON line");
            if v["type"] == ty {
                return v;
            }
            assert_ne!(v["type"], "connect_error", "client could not connect: {v}");
        }
    }

    pub async fn send(&mut self, cmd: Value) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("client stdin");
        self.stdin.flush().await.expect("client stdin flush");
    }

    pub async fn exit_code(mut self) -> Option<i32> {
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("client exits in time")
            .expect("client wait")
            .code()
    }
}

/// A one-shot HTTP/1.1 request over a raw socket; returns the status and the JSON body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    tokio::time::timeout(STEP, s.read_to_string(&mut resp))
        .await
        .expect("response in time")
        .expect("read");
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).expect("JSON body"))
}
