//! The `devcloud` binary end to end: `init` writes the PKI, `serve` prints events as JSON lines,
//! answers stdin commands and HTTP requests, and stops cleanly on SIGTERM. Loopback only.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ClientOpts, PyClient, STEP, http_request};
use devcloud::pki::{DEFAULT_AGENT_ID, PkiPaths};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("devcloud-cli-")
        .tempdir()
        .expect("tempdir")
}

#[tokio::test]
async fn init_writes_the_pki_and_prints_the_agent_command() {
    let dir = tempdir();
    let out = Command::new(env!("CARGO_BIN_EXE_devcloud"))
        .arg("init")
        .arg("--dir")
        .arg(dir.path())
        .arg("--agent-id")
        .arg("cli-agent-7")
        .output()
        .await
        .expect("run devcloud init");
    assert!(out.status.success(), "{out:?}");
    let paths = PkiPaths::layout(dir.path(), "cli-agent-7");
    for f in [
        &paths.ca_cert,
        &paths.server_key,
        &paths.client_cert,
        &paths.client_key,
    ] {
        assert!(f.is_file(), "{f:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "--ca-file {} --mtls-dir {}",
        paths.ca_cert.display(),
        paths.agent_dir.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test]
async fn serve_prints_events_answers_stdin_and_http_and_stops_on_sigterm() {
    let dir = tempdir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_devcloud"))
        .arg("serve")
        .arg("--dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn devcloud serve");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();

    // The addresses come from the startup banner on stderr.
    let (mut sio, mut http) = (None, None);
    while sio.is_none() || http.is_none() {
        let line = tokio::time::timeout(STEP, stderr.next_line())
            .await
            .expect("banner in time")
            .expect("stderr")
            .expect("banner before EOF");
        if let Some(rest) = line.strip_prefix("devcloud: Socket.IO over mTLS on ") {
            sio = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("devcloud: control endpoint on http://") {
            http = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let sio: std::net::SocketAddr = sio.expect("sio").parse().expect("sio addr");
    let http: std::net::SocketAddr = http.expect("http").parse().expect("http addr");

    let paths = PkiPaths::layout(dir.path(), DEFAULT_AGENT_ID);
    let url = format!("https://localhost:{}", sio.port());
    let mut client = PyClient::spawn(&url, &ClientOpts::trusted(&paths));
    client.expect("connected").await;

    let next_json = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .expect("stdout line in time")
            .expect("stdout")
            .expect("stdout line before EOF");
        serde_json::from_str::<Value>(&line).expect("stdout is JSON lines")
    };
    let connected = next_json(&mut stdout).await;
    assert_eq!(connected["cn"], DEFAULT_AGENT_ID, "{connected}");
    assert_eq!(connected["connected"], true, "{connected}");

    // An agent event becomes one line.
    client
        .send(json!({"op": "emit", "event": "heartbeat", "args": [{"status": "active"}]}))
        .await;
    let ev = next_json(&mut stdout).await;
    assert_eq!(
        ev,
        json!({"cn": DEFAULT_AGENT_ID, "event": "heartbeat", "args": [{"status": "active"}]})
    );

    // A stdin command with two arguments; its ack becomes one line.
    stdin
        .write_all(b"run_command \"plc1\" {\"method\":\"GET\",\"api\":\"status\"}\n")
        .await
        .expect("stdin");
    let ack = next_json(&mut stdout).await;
    assert_eq!(ack["cn"], DEFAULT_AGENT_ID, "{ack}");
    assert_eq!(ack["ack"], "run_command", "{ack}");
    assert_eq!(
        ack["args"],
        json!([{"event": "run_command", "args": ["plc1", {"method": "GET", "api": "status"}]}])
    );

    // The HTTP endpoint.
    let (status, body) = http_request(
        http,
        "POST",
        "/emit/get_device_status",
        r#"{"correlation_id":1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"event": "get_device_status", "args": [{"correlation_id": 1}]}])
    );

    // SIGTERM: a clean exit.
    let pid = child.id().expect("pid");
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("devcloud exits in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    client.expect("disconnected").await;
}
