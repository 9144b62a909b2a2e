//! The agent binary against the reference Socket.IO server (python-socketio over aiohttp) with
//! mutual TLS on 127.0.0.1: connect, heartbeats, acks, dead-link detection, server-side
//! disconnects, refused certificates, binary, malformed and oversized packets, reconnect pacing and
//! TLS session resumption after an outage, host sampling while the cloud is away, what INFO logs
//! of a run_command, graceful exit.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cloud::{AGENT_ID, Agent, Pki, PyServer, assert_error_ack, assert_heartbeat};

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

    // Any topic but run_command (whose uploads may be large) has the link's 1 MiB limit.
    let ack = server.call_padded(
        "get_device_status",
        vec![json!({"correlation_id": 5})],
        2,
        1_100_000,
    );
    assert_error_ack(&ack, "get_device_status", "too large");
    assert_eq!(ack[0]["correlation_id"], json!(5), "{ack:?}");
    agent.expect_log("refused an inbound event", Duration::from_secs(5));

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

#[test]
fn a_3_mib_event_is_answered_with_its_correlation_id_and_heartbeats_continue() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);

    // run_command may be large (uploads: tests/runtime_upload.rs); other topics have 1 MiB.
    let ack = server.call_padded(
        "get_device_status",
        vec![json!({"correlation_id": "status-7", "device_id": "plc-1"})],
        1,
        3 << 20,
    );
    assert_error_ack(&ack, "get_device_status", "message too large");
    assert_eq!(ack[0]["correlation_id"], json!("status-7"), "{ack:?}");
    agent.expect_log(
        "refused an inbound event \"get_device_status\"",
        Duration::from_secs(5),
    );

    // The same connection goes on: a heartbeat after the answer, requests answered, no reconnect.
    let from = server.out.len();
    server.expect(from, Duration::from_secs(15), "heartbeat", is_heartbeat);
    let ack = server.call("no_such_topic", vec![json!({"correlation_id": 8})], 2);
    assert_error_ack(&ack, "no_such_topic", "Unknown topic");
    assert_eq!(
        server.out.count_from(0, |l| l.contains("\"connect\"")),
        1,
        "never reconnected\n{}",
        agent.log()
    );
}

#[test]
fn after_a_short_outage_the_link_is_back_within_two_seconds_and_resumes_its_tls_session() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    let first = server.expect(0, CONNECT_WAIT, "connect", is_connect);
    assert_eq!(first["resumed"], json!(false), "{first}");
    agent.expect_log("full TLS handshake", CONNECT_WAIT);
    // The session ticket arrives after the handshake; the first heartbeat's round trip has it.
    server.expect(0, Duration::from_secs(15), "heartbeat", is_heartbeat);

    let from = server.out.len();
    server.send(json!({"outage": 5}));
    let up = server.expect(from, Duration::from_secs(15), "up", |v| {
        v.get("up").is_some()
    });
    let again = server.expect(from, CONNECT_WAIT, "reconnect", is_connect);
    // Both stamps are the server's own clock: how long after it listened again the agent came.
    let late = again["t"].as_f64().expect("t") - up["up"].as_f64().expect("up");
    assert!(
        (0.0..=2.0).contains(&late),
        "back {late:.2} s after the server returned\n{}",
        agent.log()
    );
    assert_eq!(
        again["resumed"],
        json!(true),
        "the reconnect resumed the TLS session: {again}"
    );
    assert_eq!(again["cn"], json!(AGENT_ID));
    agent.expect_log("TLS session resumed", Duration::from_secs(5));
    let from = server.out.len();
    let hb = server.expect(from, Duration::from_secs(15), "heartbeat", is_heartbeat);
    assert_heartbeat(&hb["args"][0]);
}

#[test]
fn malformed_packets_are_answered_but_logged_once_a_minute() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);
    let from = server.out.len();
    server.send(json!({"raw": "2[\"x\", {not json", "count": 200}));
    server.expect(from, Duration::from_secs(10), "sent", |v| {
        v.get("sent_raw").is_some()
    });
    // Handled in order: once this is answered, the 200 were read.
    let ack = server.call("no_such_topic", vec![json!({"correlation_id": 1})], 1);
    assert_error_ack(&ack, "no_such_topic", "Unknown topic");
    let lines = agent
        .log()
        .lines()
        .filter(|l| l.contains("refused a malformed Socket.IO packet"))
        .count();
    assert_eq!(lines, 1, "one line for 200 packets\n{}", agent.log());
}

#[test]
fn host_samples_cover_the_time_the_cloud_was_unreachable() {
    let pki = Pki::new();
    // A port nobody listens on yet: the cloud is down when the agent starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let agent = Agent::start(
        &format!("https://localhost:{port}"),
        &pki.good.ca_cert,
        &pki.good.agent_dir,
    );
    agent.expect_log("cannot connect to", CONNECT_WAIT);
    std::thread::sleep(Duration::from_secs(12));
    let cloud_up = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut server = PyServer::start(&pki.good, port, 25.0, 20.0);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);

    let ack = server.call(
        "get_consumption_orchestrator",
        vec![json!({"correlation_id": 3, "cpuPeriod": "1h", "memoryPeriod": "1h"})],
        1,
    );
    for key in ["cpu_usage", "memory_usage"] {
        let stamps: Vec<i64> = ack[0][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {ack:?}"))
            .iter()
            .map(|p| p["timestamp"].as_i64().expect("timestamp"))
            .collect();
        let offline = stamps.iter().filter(|t| **t < cloud_up).count();
        assert!(
            offline >= 2,
            "{key}: {offline} samples before the cloud came up ({stamps:?}, up at {cloud_up})"
        );
        assert!(
            stamps.first().is_some_and(|t| *t <= cloud_up - 8),
            "{key}: the offline period is covered from its start: {stamps:?}, up at {cloud_up}"
        );
    }
}

#[test]
fn run_command_query_strings_stay_out_of_the_info_log() {
    let pki = Pki::new();
    let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
    let agent = Agent::start(&server.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    server.expect(0, CONNECT_WAIT, "connect", is_connect);
    let ack = server.call(
        "run_command",
        vec![
            json!({"correlation_id": 9, "device_id": "plc-logged", "method": "POST",
                    "api": "api/upload?token=s3cr3t-query", "data": {"password": "s3cr3t-body"}}),
        ],
        1,
    );
    assert_eq!(ack[0]["status"], json!("error"), "no engine here: {ack:?}");
    agent.expect_log("run_command requested", Duration::from_secs(5));
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("run_command requested"))
        .unwrap_or_default();
    assert!(
        line.contains("plc-logged") && line.contains("api=api/upload") && line.contains("POST"),
        "{line}"
    );
    assert!(!log.contains("s3cr3t"), "{log}");
}
