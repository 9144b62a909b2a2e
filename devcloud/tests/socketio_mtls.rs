//! devcloud against a real, independent Socket.IO client (python-socketio over aiohttp) over mTLS,
//! loopback only. The client is `tests/sio_client.py`, run with the python of `ORCH_TEST_PYTHON`
//! (scripts/test.sh creates that venv), falling back to `target/test-venv/bin/python`.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use std::time::Duration;

use common::{ClientOpts, PyClient, STEP, http_request, make_pki, start};
use devcloud::pki::{self, PkiOptions};
use devcloud::{CloudEvent, DevCloud, ServerConfig};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The next notification matching `pred`.
async fn next_matching(
    rx: &mut broadcast::Receiver<CloudEvent>,
    mut pred: impl FnMut(&CloudEvent) -> bool,
) -> CloudEvent {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("server notification in time")
            .expect("notification channel open");
        if pred(&ev) {
            return ev;
        }
    }
}

#[tokio::test]
async fn trusted_client_connects_and_the_server_sees_its_certificate_cn() {
    let pki = make_pki(&PkiOptions {
        agent_id: "test-agent-cn-1".into(),
        ..PkiOptions::default()
    });
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let mut rx = cloud.subscribe();
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Connected { .. })).await;
    let CloudEvent::Connected { cn, .. } = ev else {
        unreachable!("matched Connected")
    };
    assert_eq!(cn, "test-agent-cn-1");
    assert_eq!(
        cloud.connected_agents(),
        vec!["test-agent-cn-1".to_string()]
    );
    assert_eq!(
        cloud
            .wait_for_agent(None, Duration::from_secs(1))
            .await
            .expect("agent"),
        "test-agent-cn-1"
    );

    client.send(json!({"op": "disconnect"})).await;
    let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Disconnected { .. })).await;
    assert!(matches!(ev, CloudEvent::Disconnected { cn, .. } if cn == "test-agent-cn-1"));
    assert_eq!(client.exit_code().await, Some(0));
    assert!(cloud.connected_agents().is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn client_events_reach_subscribers_with_every_argument() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let mut rx = cloud.subscribe();
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;

    let hb = json!({"agent_id": "x", "status": "active", "cpu_usage": 1.5});
    client
        .send(json!({"op": "emit", "event": "heartbeat", "args": [hb]}))
        .await;
    let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Event(_))).await;
    let CloudEvent::Event(ev) = ev else {
        unreachable!("matched Event")
    };
    assert_eq!(ev.agent_cn, pki::DEFAULT_AGENT_ID);
    assert_eq!(ev.name, "heartbeat");
    assert_eq!(ev.args, vec![hb]);

    // Two arguments, and an ack request: devcloud answers with an empty ack.
    client
        .send(json!({"op": "call", "event": "two_args", "args": ["a", {"b": 2}]}))
        .await;
    let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Event(_))).await;
    let CloudEvent::Event(ev) = ev else {
        unreachable!("matched Event")
    };
    assert_eq!(ev.name, "two_args");
    assert_eq!(ev.args, vec![json!("a"), json!({"b": 2})]);
    assert_eq!(client.expect("ack").await["args"], json!([]));

    // Events are published in the order they arrived.
    for n in 0..20 {
        client
            .send(json!({"op": "emit", "event": "seq", "args": [n]}))
            .await;
    }
    for n in 0..20 {
        let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Event(_))).await;
        let CloudEvent::Event(ev) = ev else {
            unreachable!("matched Event")
        };
        assert_eq!((ev.name.as_str(), &ev.args), ("seq", &vec![json!(n)]));
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn emit_with_ack_sends_each_argument_and_returns_the_whole_ack() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    let cn = cloud
        .wait_for_agent(Some(pki::DEFAULT_AGENT_ID), STEP)
        .await
        .expect("agent connected");

    let one = json!({"correlation_id": 7, "device_id": "plc1"});
    let ack = cloud
        .emit_with_ack(None, "get_device_status", vec![one.clone()], STEP)
        .await
        .expect("ack for one argument");
    assert_eq!(
        ack,
        vec![json!({"event": "get_device_status", "args": [one]})]
    );

    let cmd = json!({"method": "GET", "api": "status"});
    let ack = cloud
        .emit_with_ack(
            Some(&cn),
            "run_command",
            vec![json!("plc1"), cmd.clone()],
            STEP,
        )
        .await
        .expect("ack for two arguments");
    assert_eq!(
        ack,
        vec![json!({"event": "run_command", "args": ["plc1", cmd]})]
    );

    // An ack with several values comes back whole.
    let ack = cloud
        .emit_with_ack(
            None,
            "multi_ack",
            vec![json!("x"), json!(2), json!(null)],
            STEP,
        )
        .await
        .expect("multi-value ack");
    assert_eq!(ack, vec![json!("x"), json!(2), json!(null)]);

    // No arguments at all.
    let ack = cloud
        .emit_with_ack(None, "no_args", vec![], STEP)
        .await
        .expect("ack for no arguments");
    assert_eq!(ack, vec![json!({"event": "no_args", "args": []})]);

    // Emit without ack reaches the client too.
    cloud
        .emit(None, "notice", vec![json!({"n": 1})])
        .expect("emit");
    let mut seen = client.expect("event").await;
    while seen["name"] != "notice" {
        seen = client.expect("event").await;
    }
    assert_eq!(seen["args"], json!([{"n": 1}]));

    let err = cloud
        .emit_with_ack(Some("nobody"), "x", vec![], STEP)
        .await
        .expect_err("unknown agent");
    assert!(err.is_not_connected(), "{err}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn polling_transport_clients_are_identified_too() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let opts = ClientOpts {
        transport: "polling",
        ..ClientOpts::trusted(&pki.paths)
    };
    let mut client = PyClient::spawn(&cloud.url(), &opts);
    client.expect("connected").await;
    let ack = cloud
        .emit_with_ack(Some(pki::DEFAULT_AGENT_ID), "ping", vec![json!(1)], STEP)
        .await
        .expect("ack over polling");
    assert_eq!(ack, vec![json!({"event": "ping", "args": [1]})]);
    cloud.shutdown().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = make_pki(&PkiOptions::default());
    let rogue = make_pki(&PkiOptions::rogue());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let mut rx = cloud.subscribe();
    // Trusts the real server, presents a certificate the server does not trust.
    let opts = ClientOpts {
        ca: &pki.paths.ca_cert,
        cert: &rogue.paths.client_cert,
        key: &rogue.paths.client_key,
        transport: "websocket",
        reconnect: false,
    };
    let mut client = PyClient::spawn(&cloud.url(), &opts);
    let line = client
        .lines
        .next_line()
        .await
        .expect("client stdout")
        .expect("a line");
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["type"], "connect_error", "{v}");
    assert_eq!(client.exit_code().await, Some(2));
    assert!(cloud.connected_agents().is_empty());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no notification for a refused client"
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused_by_the_client() {
    let pki = make_pki(&PkiOptions::default());
    let rogue = make_pki(&PkiOptions::rogue());
    // The server presents the rogue CA's server certificate but trusts the real client CA.
    let cfg = ServerConfig {
        server_cert: rogue.paths.server_cert.clone(),
        server_key: rogue.paths.server_key.clone(),
        ..ServerConfig::from_pki(&pki.paths, "127.0.0.1:0".parse().expect("addr"))
    };
    let cloud = DevCloud::start(cfg).await.expect("start");
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    let line = client
        .lines
        .next_line()
        .await
        .expect("client stdout")
        .expect("a line");
    let v: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["type"], "connect_error", "{v}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn shutdown_frees_the_port_and_a_restarted_server_gets_the_client_back() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let addr = cloud.local_addr();
    let opts = ClientOpts {
        reconnect: true,
        ..ClientOpts::trusted(&pki.paths)
    };
    let mut client = PyClient::spawn(&cloud.url(), &opts);
    client.expect("connected").await;
    cloud
        .wait_for_agent(None, STEP)
        .await
        .expect("first connection");

    let mut rx = cloud.subscribe();
    cloud.shutdown().await;
    let gone = client.expect("disconnected").await;
    // Like a real cloud going down: the transport closes (no Socket.IO DISCONNECT, after which
    // socket.io clients would not reconnect), so the client retries.
    assert_ne!(gone["reason"], "io server disconnect", "{gone}");
    let ev = next_matching(&mut rx, |e| matches!(e, CloudEvent::Disconnected { .. })).await;
    assert!(matches!(ev, CloudEvent::Disconnected { cn, .. } if cn == pki::DEFAULT_AGENT_ID));
    cloud.shutdown().await; // idempotent

    let cloud = start(&pki, &addr.to_string(), Duration::from_secs(25)).await;
    assert_eq!(cloud.local_addr(), addr);
    client.expect("connected").await;
    cloud
        .wait_for_agent(Some(pki::DEFAULT_AGENT_ID), STEP)
        .await
        .expect("reconnected");
    let ack = cloud
        .emit_with_ack(None, "after_restart", vec![], STEP)
        .await
        .expect("ack after restart");
    assert_eq!(ack, vec![json!({"event": "after_restart", "args": []})]);
    cloud.shutdown().await;
}

#[tokio::test]
async fn frozen_server_goes_silent_until_the_client_gives_up() {
    let pki = make_pki(&PkiOptions::default());
    // Short pings so the client's dead-link detection (interval + timeout) fires quickly.
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_millis(500)).await;
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    cloud.wait_for_agent(None, STEP).await.expect("connected");

    cloud.freeze();
    assert!(cloud.is_frozen());
    let err = cloud
        .emit_with_ack(None, "lost", vec![], Duration::from_millis(300))
        .await
        .expect_err("no ack while frozen");
    assert!(err.is_timeout(), "{err}");
    // The client stops hearing pings and leaves on its own.
    let gone = client.expect("disconnected").await;
    eprintln!("client left the frozen server: {gone}");
    assert_eq!(client.exit_code().await, Some(0));

    cloud.thaw();
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn http_endpoint_emits_and_lists_agents() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let listener = devcloud::http_api::bind_loopback("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind control endpoint");
    let http = listener.local_addr().expect("addr");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(devcloud::http_api::serve(
        cloud.clone(),
        listener,
        STEP,
        stop_rx,
    ));

    let (status, body) = http_request(http, "POST", "/emit/x", "{}").await;
    assert_eq!(status, 404, "{body}");

    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    cloud.wait_for_agent(None, STEP).await.expect("connected");

    let (status, body) = http_request(http, "GET", "/agents", "").await;
    assert_eq!((status, body), (200, json!([pki::DEFAULT_AGENT_ID])));

    let (status, body) = http_request(
        http,
        "POST",
        "/emit/run_command?agent=devcloud-agent-001&timeout_ms=10000",
        r#"["plc1", {"method":"GET","api":"status"}]"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"event": "run_command", "args": ["plc1", {"method": "GET", "api": "status"}]}])
    );

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

    let (status, _) = http_request(http, "POST", "/emit/t", "{bad").await;
    assert_eq!(status, 400);
    let (status, _) = http_request(http, "POST", "/emit/t?agent=nobody", "1").await;
    assert_eq!(status, 404);

    stop.send(true).expect("stop");
    server.await.expect("control endpoint stops");
    cloud.shutdown().await;
}

#[tokio::test]
async fn console_lines_become_emits_and_acks_become_lines() {
    let pki = make_pki(&PkiOptions::default());
    let cloud = start(&pki, "127.0.0.1:0", Duration::from_secs(25)).await;
    let mut client = PyClient::spawn(&cloud.url(), &ClientOpts::trusted(&pki.paths));
    client.expect("connected").await;
    cloud.wait_for_agent(None, STEP).await.expect("connected");

    let input = "run_command \"plc1\" {\"method\":\"GET\",\"api\":\"status\"}\nbad {\nagents\n";
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    devcloud::console::run(cloud.clone(), input.as_bytes(), STEP, tx).await;
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(serde_json::from_str::<Value>(&l).expect("JSON line"));
    }
    assert!(lines.iter().any(|l| l["ack"] == "run_command"
        && l["args"] == json!([{"event": "run_command", "args": ["plc1", {"method": "GET", "api": "status"}]}])),
        "{lines:?}");
    assert!(lines.iter().any(|l| l["error"].is_string()), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["agents"] == json!([pki::DEFAULT_AGENT_ID])),
        "{lines:?}"
    );
    cloud.shutdown().await;
}
