//! Certificate hot reload against a real mutual-TLS peer (devcloud): a pair swapped on disk is
//! used on the next connection without a restart; a bad one (a key of another pair, an expired
//! certificate) is refused, the pair in use is kept and the refusal shows in the
//! `__orchestrator__` status.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use devcloud::{CloudEvent, DevCloud, ServerConfig};
use serde_json::json;
use support::cloud::{AGENT_ID, Agent, Pki};
use tokio::sync::broadcast;
use tokio::time::Instant;

const CONNECT_WAIT: Duration = Duration::from_secs(20);
const DAY: i64 = 86_400;

async fn start(pki: &Pki, addr: SocketAddr) -> DevCloud {
    DevCloud::start(ServerConfig::from_pki(&pki.good, addr))
        .await
        .expect("devcloud starts")
}

/// The CN of the next connection, or panics with the agent's log.
async fn next_connect(rx: &mut broadcast::Receiver<CloudEvent>, agent: &Agent) -> String {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(CloudEvent::Connected { cn, .. })) => return cn,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                panic!(
                    "no connection within {CONNECT_WAIT:?}; agent log:\n{}",
                    agent.log()
                )
            }
        }
    }
}

/// A client certificate for `cn` signed by the dev CA of `pki`, valid from `from` to `to` (Unix
/// seconds), and its key: PEM texts.
fn issue(pki: &Pki, cn: &str, from: i64, to: i64) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&pki.good.ca_key).unwrap())
        .expect("CA key");
    let ca_pem = std::fs::read_to_string(&pki.good.ca_cert).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Puts `text` at `dir/name` by rename (as renewal tools do), key mode 0600.
fn put(dir: &Path, name: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let staged = dir.join(format!(".{name}.new"));
    std::fs::write(&staged, text).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&staged, dir.join(name)).unwrap();
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Restarts devcloud on the same address, so the agent connects again.
async fn bounce(cloud: DevCloud, pki: &Pki) -> (DevCloud, broadcast::Receiver<CloudEvent>) {
    let addr = cloud.local_addr();
    cloud.shutdown().await;
    let cloud = start(pki, addr).await;
    let rx = cloud.subscribe();
    (cloud, rx)
}

async fn orchestrator_status(cloud: &DevCloud, cn: &str) -> serde_json::Value {
    let ack = cloud
        .emit_with_ack(
            Some(cn),
            "get_device_status",
            vec![json!({"correlation_id": 1, "device_id": "__orchestrator__"})],
            Duration::from_secs(10),
        )
        .await
        .expect("status ack");
    ack[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_certificate_is_used_on_the_next_connect_and_a_bad_one_is_refused() {
    let pki = Pki::new();
    let mtls = tempfile::tempdir().unwrap();
    let good_cert = std::fs::read_to_string(&pki.good.client_cert).unwrap();
    let good_key = std::fs::read_to_string(&pki.good.client_key).unwrap();
    put(mtls.path(), "client.crt", &good_cert);
    put(mtls.path(), "client.key", &good_key);

    let cloud = start(&pki, "127.0.0.1:0".parse().unwrap()).await;
    let mut rx = cloud.subscribe();
    let agent = Agent::start(&cloud.url(), &pki.good.ca_cert, mtls.path());
    assert_eq!(next_connect(&mut rx, &agent).await, AGENT_ID);
    agent.expect_log("connected as", CONNECT_WAIT);
    let status = orchestrator_status(&cloud, AGENT_ID).await;
    assert_eq!(status["certificate"]["cn"], AGENT_ID, "{status}");
    assert_eq!(status["certificate"]["state"], "ok", "{status}");

    // A key of another pair beside the certificate: refused, the pair in use kept.
    let (_, stranger_key) = issue(&pki, AGENT_ID, now() - DAY, now() + 90 * DAY);
    put(mtls.path(), "client.key", &stranger_key);
    let (cloud, mut rx) = bounce(cloud, &pki).await;
    assert_eq!(next_connect(&mut rx, &agent).await, AGENT_ID);
    let at = agent.expect_log("is refused and the one in use is kept", CONNECT_WAIT);
    assert!(
        agent
            .log()
            .lines()
            .nth(at)
            .unwrap()
            .contains("does not belong")
    );
    agent.expect_log_from(at, "connected as", CONNECT_WAIT);
    let status = orchestrator_status(&cloud, AGENT_ID).await;
    let refused = status["certificate"]["refused_replacement"]
        .as_str()
        .unwrap_or_else(|| panic!("no refusal in the status: {status}"));
    assert!(refused.contains("does not belong"), "{refused}");

    // An expired certificate from the right CA, with its own key: refused too.
    let (expired, expired_key) = issue(&pki, "renewed-but-expired", now() - 60 * DAY, now() - DAY);
    put(mtls.path(), "client.crt", &expired);
    put(mtls.path(), "client.key", &expired_key);
    let from = agent.log().lines().count();
    let (cloud, mut rx) = bounce(cloud, &pki).await;
    assert_eq!(next_connect(&mut rx, &agent).await, AGENT_ID);
    let at = agent.expect_log_from(from, "is refused and the one in use is kept", CONNECT_WAIT);
    assert!(agent.log().lines().nth(at).unwrap().contains("expired on"));

    // A good renewed pair: used on the next connect, no restart.
    let (renewed, renewed_key) = issue(
        &pki,
        "cloud-test-agent-renewed",
        now() - DAY,
        // An hour short of 20 days: "19 days" whether the agent reads it in the same second or
        // later (a whole 20 days read within the second it was issued said "20 days").
        now() + 20 * DAY - 3600,
    );
    put(mtls.path(), "client.key", &renewed_key);
    put(mtls.path(), "client.crt", &renewed);
    let (cloud, mut rx) = bounce(cloud, &pki).await;
    assert_eq!(
        next_connect(&mut rx, &agent).await,
        "cloud-test-agent-renewed"
    );
    agent.expect_log("verified and reloaded", CONNECT_WAIT);
    // 19 days left: warned in the log and reported as expiring.
    agent.expect_log("the client certificate expires in 19 days", CONNECT_WAIT);
    let status = orchestrator_status(&cloud, "cloud-test-agent-renewed").await;
    assert_eq!(status["certificate"]["state"], "expiring", "{status}");
    assert!(
        status["certificate"].get("refused_replacement").is_none(),
        "{status}"
    );
    let log = agent.log();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    cloud.shutdown().await;
}

/// A renewed pair is used while the link is up: the agent closes its session and connects again
/// with it within the check period (10 s plus up to 10 s of jitter), without a restart and
/// without the cloud going away; a bad replacement does not make it reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_pair_is_taken_up_while_connected_and_a_bad_one_leaves_the_link_alone() {
    let pki = Pki::new();
    let mtls = tempfile::tempdir().unwrap();
    put(
        mtls.path(),
        "client.crt",
        &std::fs::read_to_string(&pki.good.client_cert).unwrap(),
    );
    put(
        mtls.path(),
        "client.key",
        &std::fs::read_to_string(&pki.good.client_key).unwrap(),
    );
    let cloud = start(&pki, "127.0.0.1:0".parse().unwrap()).await;
    let mut rx = cloud.subscribe();
    let agent = Agent::start(&cloud.url(), &pki.good.ca_cert, mtls.path());
    assert_eq!(next_connect(&mut rx, &agent).await, AGENT_ID);

    // A key of another pair: no reconnect for a whole check period and more.
    let good_key = std::fs::read_to_string(mtls.path().join("client.key")).unwrap();
    let (_, stranger_key) = issue(&pki, AGENT_ID, now() - DAY, now() + 90 * DAY);
    put(mtls.path(), "client.key", &stranger_key);
    let quiet = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            if let Ok(CloudEvent::Disconnected { .. } | CloudEvent::Connected { .. }) =
                rx.recv().await
            {
                return;
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "a bad replacement made the agent reconnect:\n{}",
        agent.log()
    );
    put(mtls.path(), "client.key", &good_key);

    // A renewed pair: taken up within the check period, the cloud never went away.
    let (renewed, renewed_key) = issue(
        &pki,
        "cloud-test-agent-rotated",
        now() - DAY,
        now() + 90 * DAY,
    );
    put(mtls.path(), "client.key", &renewed_key);
    put(mtls.path(), "client.crt", &renewed);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(CloudEvent::Connected { cn, .. })) if cn == "cloud-test-agent-rotated" => break,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => panic!("the renewed pair was not taken up:\n{}", agent.log()),
        }
    }
    agent.expect_log("renewed on disk: reconnecting to use it", CONNECT_WAIT);
    let status = orchestrator_status(&cloud, "cloud-test-agent-rotated").await;
    assert_eq!(
        status["certificate"]["cn"], "cloud-test-agent-rotated",
        "{status}"
    );
    cloud.shutdown().await;
}
