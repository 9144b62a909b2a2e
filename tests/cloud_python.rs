//! The agent binary against the reference Socket.IO server (python-socketio over aiohttp) with
//! mutual TLS on 127.0.0.1: connect, heartbeats, acks, dead-link detection, server-side
//! disconnects, refused certificates, binary and oversized packets, graceful exit.

mod cloud_support;
mod support;

use std::time::{Duration, Instant};

use cloud_support::{AGENT_ID, Agent, Pki, PyServer, assert_error_ack, assert_heartbeat};
use serde_json::{Value, json};

const CONNECT_WAIT: Duration = Duration::from_secs(20);

fn is_connect(v: &Value) -> bool {
    v.get("connect").is_some()
}

fn is_heartbeat(v: &Value) -> bool {
    v.get("event") == Some(&json!("heartbeat"))
}

#[test]
fn agent_connects_with_its_certificate_cn_and_sends_heartbeats_five_seconds_apart() {
    let pki = Pki::new();
    let server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);

    let connect = server.expect(0, CONNECT_WAIT, "connect", is_connect);
    assert_eq!(
        connect["cn"],
        json!(AGENT_ID),
        "the server sees the certificate CN"
    );
    agent.expect_log(
        &format!(
            "connected as {AGENT_ID} to wss://localhost:{}/socket.io/",
            server.port
        ),
        CONNECT_WAIT,
    );

    let first = server.expect(0, Duration::from_secs(15), "first heartbeat", is_heartbeat);
    let t1 = Instant::now();
    let n = server.out.len();
    let second = server.expect(n, Duration::from_secs(15), "second heartbeat", is_heartbeat);
    let gap = t1.elapsed();
    assert!(
        gap > Duration::from_secs(3) && gap < Duration::from_secs(8),
        "heartbeats {gap:?} apart"
    );
    for hb in [&first, &second] {
        assert_eq!(
            hb["args"].as_array().map(Vec::len),
            Some(1),
            "one argument: {hb}"
        );
        assert_heartbeat(&hb["args"][0]);
    }
}

#[test]
fn acks_answer_topics_and_malformed_requests_get_error_acks() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let _agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);

    let ack = server.call(
        "get_consumption_orchestrator",
        vec![json!({"correlation_id": 41})],
        1,
    );
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert_eq!(
        ack[0]["action"],
        json!("get_consumption_orchestrator"),
        "{ack:?}"
    );
    assert_eq!(ack[0]["correlation_id"], json!(41), "{ack:?}");

    let ack = server.call("no_such_topic", vec![json!({"correlation_id": 2})], 2);
    assert_error_ack(&ack, "no_such_topic", "Unknown topic");

    let ack = server.call("get_device_status", vec![json!("not an object")], 3);
    assert_eq!(ack[0]["status"], json!("error"), "{ack:?}");
    assert_eq!(ack[0]["action"], json!("get_device_status"), "{ack:?}");

    let ack = server.call("get_device_status", vec![json!({"correlation_id": 4})], 4);
    assert_error_ack(&ack, "get_device_status", "device_id");
}

#[test]
fn binary_and_oversized_events_are_refused_and_the_link_keeps_working() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);

    server.send(json!({"emit_binary": "upload", "id": 1}));
    agent.expect_log("refused a binary", Duration::from_secs(10));

    let ack = server.call_padded(
        "run_command",
        vec![json!({"correlation_id": 5})],
        2,
        1_100_000,
    );
    assert_error_ack(&ack, "run_command", "too large");
    agent.expect_log("refused an inbound event of", Duration::from_secs(5));

    let ack = server.call("no_such_topic", vec![json!({})], 3);
    assert_error_ack(&ack, "no_such_topic", "Unknown topic");
    assert_eq!(
        server.out.count_from(0, |l| l.contains("\"connect\"")),
        1,
        "never reconnected"
    );
}

#[test]
fn a_server_that_stops_pinging_is_detected_and_left() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 1.0, 1.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);

    // Block the server's event loop: no pings for 6 s, more than interval + timeout (2 s).
    let from = server.out.len();
    server.send(json!({"sleep": 6}));
    agent.expect_log("no ping from the server", Duration::from_secs(10));
    server.expect(from, Duration::from_secs(10), "awake", |v| {
        v.get("awake").is_some()
    });
    // Once awake, the server accepts the agent again.
    server.expect(from, CONNECT_WAIT, "reconnect", is_connect);
}

#[test]
fn a_server_side_disconnect_is_followed_by_a_reconnect() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);
    let from = server.out.len();
    server.send(json!({"disconnect": true}));
    agent.expect_log("disconnected from", Duration::from_secs(10));
    server.expect(from, Duration::from_secs(10), "reconnect", is_connect);
}

#[test]
fn a_client_certificate_the_server_does_not_trust_is_reported_clearly() {
    let pki = Pki::new();
    let server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.rogue.agent_dir);
    agent.expect_log("the server refused our client certificate", CONNECT_WAIT);
    assert_eq!(server.out.count_from(0, |l| l.contains("\"connect\"")), 0);
}

#[test]
fn a_server_certificate_from_another_ca_is_reported_clearly() {
    let pki = Pki::new();
    let server = PyServer::start(&pki.rogue, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    agent.expect_log("is not trusted (unknown issuer", CONNECT_WAIT);
}

#[test]
fn the_agent_waits_for_a_certificate_written_after_it_started() {
    let pki = Pki::new();
    let server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let mtls = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, mtls.path());
    agent.expect_log("does not exist (yet)", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::copy(&pki.good.client_cert, mtls.path().join("client.crt")).expect("copy");
    // A key others may read works, with a warning (made readable before it appears).
    let staged = mtls.path().join("staged.key");
    std::fs::copy(&pki.good.client_key, &staged).expect("copy");
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    std::fs::rename(&staged, mtls.path().join("client.key")).expect("rename");
    let connect = server.expect(0, CONNECT_WAIT, "connect", is_connect);
    assert_eq!(connect["cn"], json!(AGENT_ID));
    agent.expect_log(
        "is readable by group or others (mode 644)",
        Duration::from_secs(5),
    );
}

#[test]
fn sigterm_says_goodbye_and_exits_cleanly() {
    let pki = Pki::new();
    let server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let mut agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);
    let from = server.out.len();
    let status = agent
        .terminate(Duration::from_secs(10))
        .expect("the agent exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", agent.log());
    server.expect(from, Duration::from_secs(5), "disconnect", |v| {
        v.get("disconnect").is_some()
    });
}

#[test]
fn a_refused_namespace_connect_is_reported_and_retried_until_accepted() {
    let pki = Pki::new();
    let mut server =
        PyServer::start_with(&pki.good, 0, 25.0, 20.0, &["--refuse", "Not authorized"]);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    agent.expect_log(
        "refused the namespace connect (CONNECT_ERROR): Not authorized",
        CONNECT_WAIT,
    );
    server.send(json!({"refuse": null}));
    let connect = server.expect(0, CONNECT_WAIT, "connect", is_connect);
    assert_eq!(connect["cn"], json!(AGENT_ID));
}
