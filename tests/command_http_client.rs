//! The run_command HTTP client against the real test server (image
//! `orchestrator-test/https-server`) in a container on an internal bridge network, reached from the
//! host exactly as the agent reaches runtimes. The answer shapes of both cloud forms are unit
//! tests of `topics::run_command`; agent-level behaviour (both cloud forms, ownership, heartbeats
//! during a hang) is in `runtime_run_command.rs`.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::Duration;

use orchestrator_agent::runtime::command::{CommandError, HttpCommand, Limits, execute};
use serde_json::{Value, json};
use support::{ContainerGuard, NetworkGuard, SERVER_IMAGE, require_engine, unique};

struct Server {
    ip: std::net::Ipv4Addr,
    _container: ContainerGuard,
    _network: NetworkGuard,
}

async fn start_server() -> Server {
    require_engine(SERVER_IMAGE);
    let net = NetworkGuard::internal(&unique("cmdc-net-"), &[]);
    let container = ContainerGuard::server(&unique("cmdc-srv-"), &net.name, &[]);
    let ip = container.ip_on(&net.name);
    // Wait until the server listens on both ports.
    let probe = HttpCommand::new("GET", "status", Some(8080), None, None).expect("valid");
    for _ in 0..100 {
        if execute(ip, &probe, &Limits::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        ip,
        _container: container,
        _network: net,
    }
}

/// A command from its JSON form (the topic's contract has checked the types).
fn command(v: Value) -> HttpCommand {
    HttpCommand::new(
        v["method"].as_str().expect("method"),
        v["api"].as_str().expect("api"),
        v.get("port")
            .and_then(Value::as_u64)
            .map(|p| u16::try_from(p).expect("port")),
        v.get("headers").and_then(Value::as_object),
        v.get("data"),
    )
    .expect("valid command")
}

fn header<'a>(
    reply: &'a orchestrator_agent::runtime::command::HttpReply,
    name: &str,
) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn https_on_8443_by_default_accepts_the_self_signed_certificate() {
    let s = start_server().await;
    let reply = execute(
        s.ip,
        &command(json!({"method": "GET", "api": "/status"})),
        &Limits::default(),
    )
    .await
    .expect("the runtime answers over TLS");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body_json(),
        Some(json!({"status": "running", "server": "runtime2-test", "tls": true}))
    );
    assert!(reply.ok());
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    assert_eq!(header(&reply, "x-test-server"), Some("runtime2"));
}

#[tokio::test]
async fn another_port_is_plain_http_and_method_headers_body_and_query_are_forwarded() {
    let s = start_server().await;
    let reply = execute(
        s.ip,
        &command(json!({
            "method": "put", "api": "echo?mode=full&x=a%20b", "port": 8080,
            "headers": {"X-Token": "t0k", "Host": "evil.example", "Connection": "upgrade"},
            "data": {"value": 42}
        })),
        &Limits::default(),
    )
    .await
    .expect("the runtime answers over plain HTTP");
    let echo = reply.body_json().expect("JSON echo");
    assert_eq!(echo["tls"], false);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "mode=full&x=a%20b");
    assert_eq!(echo["headers"]["x-token"], "t0k");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(echo["headers"]["host"], format!("{}:8080", s.ip));
    assert_eq!(echo["headers"]["content-length"], "12");
    assert!(
        echo["headers"]
            .get("connection")
            .is_none_or(|c| c != "upgrade")
    );
    assert_eq!(echo["body"], r#"{"value":42}"#);

    let raw = execute(
        s.ip,
        &command(json!({"method": "POST", "api": "echo",
            "headers": {"Content-Type": "text/plain"}, "data": "just text"})),
        &Limits::default(),
    )
    .await
    .expect("answer");
    let echo = raw.body_json().expect("JSON echo");
    assert_eq!(echo["body"], "just text");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
}

#[tokio::test]
async fn a_hung_runtime_times_out_within_the_limit() {
    let s = start_server().await;
    let limits = Limits {
        total_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let err = execute(
        s.ip,
        &command(json!({"method": "GET", "api": "hang"})),
        &limits,
    )
    .await
    .expect_err("a hung runtime must not answer");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.to_string(), "The runtime did not answer within 2 s");
}

#[tokio::test]
async fn responses_over_the_cap_are_refused_with_or_without_content_length() {
    let s = start_server().await;
    for api in ["big", "big-length"] {
        for port in [8443, 8080] {
            let err = execute(
                s.ip,
                &command(json!({"method": "GET", "api": api, "port": port})),
                &Limits::default(),
            )
            .await
            .expect_err("2 MiB is over the 1 MiB cap");
            assert!(
                matches!(err, CommandError::ResponseTooLarge { limit: 1_048_576 }),
                "{api} on {port}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn text_bodies_and_error_statuses_are_reported_not_swallowed() {
    let s = start_server().await;
    let text = execute(
        s.ip,
        &command(json!({"method": "GET", "api": "text"})),
        &Limits::default(),
    )
    .await
    .expect("answer");
    assert_eq!(text.body_value(), "hello from the runtime");
    assert_eq!(text.body_json(), None, "not JSON");
    let fail = execute(
        s.ip,
        &command(json!({"method": "GET", "api": "fail"})),
        &Limits::default(),
    )
    .await
    .expect("answer");
    assert!(!fail.ok());
    assert_eq!(fail.status, 500);
    assert_eq!(fail.body_value(), json!({"error": "boom"}));
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let s = start_server().await;
    let err = execute(
        s.ip,
        &command(json!({"method": "GET", "api": "status", "port": 9})),
        &Limits::default(),
    )
    .await
    .expect_err("nothing listens on port 9");
    assert!(matches!(err, CommandError::Connect { .. }), "{err}");
}
