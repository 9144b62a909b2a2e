//! The agent binary against devcloud (socketioxide) with mutual TLS on loopback: acks, a server
//! restart (back within 6 s, one heartbeat stream), a frozen server, and refused certificates.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use devcloud::{CloudEvent, DevCloud, ServerConfig};
use serde_json::json;
use support::cloud::{AGENT_ID, Agent, Pki, assert_error_ack, assert_heartbeat};
use tokio::sync::broadcast;
use tokio::time::Instant;

const CONNECT_WAIT: Duration = Duration::from_secs(20);

async fn start(pki: &Pki, listen: &str, ping: Option<(u64, u64)>) -> DevCloud {
    let addr: SocketAddr = listen.parse().expect("listen address");
    let mut cfg = ServerConfig::from_pki(&pki.good, addr);
    if let Some((interval, timeout)) = ping {
        cfg.ping_interval = Duration::from_secs(interval);
        cfg.ping_timeout = Duration::from_secs(timeout);
    }
    DevCloud::start(cfg).await.expect("devcloud starts")
}

/// Blocking waits on the agent's log, without starving the runtime's other worker.
fn expect_log(agent: &Agent, needle: &str, timeout: Duration) {
    tokio::task::block_in_place(|| {
        agent.expect_log(needle, timeout);
    });
}

/// The next `Connected` event, or panics with the agent's log.
async fn next_connect(
    rx: &mut broadcast::Receiver<CloudEvent>,
    agent: &Agent,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(CloudEvent::Connected { cn, .. })) => return cn,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                panic!(
                    "no connection within {timeout:?}; agent log:\n{}",
                    agent.log()
                )
            }
        }
    }
}

/// Arrival times of heartbeats during `window`, checking each payload.
async fn heartbeats_during(
    rx: &mut broadcast::Receiver<CloudEvent>,
    window: Duration,
) -> Vec<Instant> {
    let deadline = Instant::now() + window;
    let mut times = Vec::new();
    while let Ok(ev) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Ok(CloudEvent::Event(ev)) = ev
            && ev.name == "heartbeat"
        {
            assert_eq!(ev.agent_cn, AGENT_ID);
            assert_heartbeat(&ev.args[0]);
            times.push(Instant::now());
        }
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devcloud_sees_the_agent_by_its_cn_and_gets_acks_and_error_acks() {
    let pki = Pki::new();
    let cloud = start(&pki, "127.0.0.1:0", None).await;
    let agent = Agent::start(&cloud.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    let cn = cloud.wait_for_agent(Some(AGENT_ID), CONNECT_WAIT).await;
    assert!(cn.is_ok(), "agent did not connect: {cn:?}\n{}", agent.log());

    let wait = Duration::from_secs(10);
    let ack = cloud
        .emit_with_ack(
            Some(AGENT_ID),
            "get_consumption_orchestrator",
            vec![json!({"correlation_id": "c-1"})],
            wait,
        )
        .await
        .expect("ack");
    assert_eq!(
        ack[0]["action"],
        json!("get_consumption_orchestrator"),
        "{ack:?}"
    );
    assert_eq!(ack[0]["correlation_id"], json!("c-1"), "{ack:?}");

    let ack = cloud
        .emit_with_ack(Some(AGENT_ID), "bogus_topic", vec![json!({})], wait)
        .await
        .expect("ack");
    assert_error_ack(&ack, "bogus_topic", "Unknown topic");

    let ack = cloud
        .emit_with_ack(Some(AGENT_ID), "start_device", vec![json!([1, 2])], wait)
        .await
        .expect("ack");
    assert_eq!(ack[0]["status"], json!("error"), "{ack:?}");

    // Several requests in flight at once are all answered.
    let calls = (0..8).map(|i| {
        let cloud = cloud.clone();
        async move {
            cloud
                .emit_with_ack(
                    Some(AGENT_ID),
                    "nope",
                    vec![json!({"correlation_id": i})],
                    wait,
                )
                .await
        }
    });
    for (i, ack) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let ack = ack.expect("concurrent ack");
        assert_eq!(ack[0]["correlation_id"], json!(i), "{ack:?}");
    }
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_agent_is_back_within_six_seconds_with_one_heartbeat_stream() {
    let pki = Pki::new();
    let cloud = start(&pki, "127.0.0.1:0", None).await;
    let addr = cloud.local_addr();
    let mut rx = cloud.subscribe();
    let agent = Agent::start(&cloud.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    next_connect(&mut rx, &agent, CONNECT_WAIT).await;
    // Let the first connection's heartbeat loop run before cutting it.
    let before = heartbeats_during(&mut rx, Duration::from_secs(6)).await;
    assert!(
        !before.is_empty(),
        "no heartbeat before the restart\n{}",
        agent.log()
    );

    cloud.shutdown().await;
    let down = Instant::now();
    let cloud = start(&pki, &addr.to_string(), None).await;
    let mut rx = cloud.subscribe();
    let cn = next_connect(&mut rx, &agent, Duration::from_secs(6)).await;
    assert_eq!(cn, AGENT_ID);
    let back_after = down.elapsed();
    assert!(
        back_after <= Duration::from_secs(6),
        "back after {back_after:?}"
    );

    let times = heartbeats_during(&mut rx, Duration::from_secs(16)).await;
    assert!(
        (2..=4).contains(&times.len()),
        "{} heartbeats in 16 s: expected one stream\n{}",
        times.len(),
        agent.log()
    );
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(3),
            "heartbeats {gap:?} apart: two streams?"
        );
    }
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_detected_as_dead_and_left() {
    let pki = Pki::new();
    let cloud = start(&pki, "127.0.0.1:0", Some((1, 1))).await;
    let mut rx = cloud.subscribe();
    let agent = Agent::start(&cloud.url(), &pki.good.ca_cert, &pki.good.agent_dir);
    next_connect(&mut rx, &agent, CONNECT_WAIT).await;
    // devcloud publishes the connection before its CONNECT reply is on the wire: freeze only once
    // the agent has it.
    expect_log(&agent, "connected as", CONNECT_WAIT);

    cloud.freeze();
    expect_log(&agent, "no ping from the server", Duration::from_secs(10));
    cloud.thaw();
    let cn = next_connect(&mut rx, &agent, CONNECT_WAIT).await;
    assert_eq!(cn, AGENT_ID);
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_on_either_side_fail_with_a_clear_line() {
    let pki = Pki::new();
    let cloud = start(&pki, "127.0.0.1:0", None).await;

    // The server does not trust the agent's certificate.
    let rogue_client = Agent::start(&cloud.url(), &pki.good.ca_cert, &pki.rogue.agent_dir);
    // The agent does not trust the server's certificate.
    let rogue_trust = Agent::start(&cloud.url(), &pki.rogue.ca_cert, &pki.good.agent_dir);
    expect_log(
        &rogue_client,
        "the server refused our client certificate",
        CONNECT_WAIT,
    );
    expect_log(&rogue_trust, "is not trusted (unknown issuer", CONNECT_WAIT);
    assert!(cloud.connected_agents().is_empty());
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_name_is_refused() {
    let pki = Pki::new();
    // 127.0.0.2 is loopback too, but not in the server certificate's SANs.
    let cloud = start(&pki, "127.0.0.2:0", None).await;
    let url = format!("https://127.0.0.2:{}", cloud.local_addr().port());
    let agent = Agent::start(&url, &pki.good.ca_cert, &pki.good.agent_dir);
    expect_log(
        &agent,
        "is not valid for the host name 127.0.0.2",
        CONNECT_WAIT,
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_server_url_is_verified_against_the_ip_san() {
    let pki = Pki::new();
    let cloud = start(&pki, "127.0.0.1:0", None).await;
    let url = format!("https://127.0.0.1:{}", cloud.local_addr().port());
    let agent = Agent::start(&url, &pki.good.ca_cert, &pki.good.agent_dir);
    let cn = cloud.wait_for_agent(Some(AGENT_ID), CONNECT_WAIT).await;
    assert!(
        cn.is_ok(),
        "agent did not connect by IP: {cn:?}\n{}",
        agent.log()
    );
    cloud.shutdown().await;
}
