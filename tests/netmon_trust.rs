//! Who the agent takes network events from: the real `autonomy-netmon` run as another uid
//! (`nobody`) serves the socket — a stand-in for any process that can write the shared volume —
//! and the agent's netmon client (the library's, as the binary wires it) refuses it with one WARN,
//! however often it retries, and nothing it sends reaches the interface cache; the same socket is
//! read when `--netmon-uid` names that uid, and a netmon run as root is read by default.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use orchestrator_agent::netevents::{
    InterfaceCache, TrustedPeers, spawn_listener, spawn_listener_trusting,
};
use support::{Netmon, Proc, eventually, netmon, poll};
use test_support::SharedExe;

const NOBODY: u32 = 65534;

/// Everything the library logs in this test process (each test filters by its own socket path).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
    .clone()
}

/// `autonomy-netmon` serving `socket` as uid/gid [`NOBODY`] (from a copy nobody may run); killed
/// on drop, then the copy removed.
async fn netmon_as_nobody(socket: &Path) -> (Proc, SharedExe) {
    let bin = tokio::task::spawn_blocking(netmon::binary)
        .await
        .expect("the netmon build does not panic");
    let exe = SharedExe::new(bin);
    let mut cmd = Command::new(&exe.path);
    cmd.arg("--socket")
        .arg(socket)
        .args(["--debounce", "200ms", "--log-level", "info"])
        .uid(NOBODY)
        .gid(NOBODY);
    let proc = Proc::spawn(cmd);
    let served = poll(Duration::from_secs(10), || socket.exists().then_some(())).await;
    assert!(
        served.is_some(),
        "netmon as nobody did not create {}: {}",
        socket.display(),
        proc.out.text()
    );
    (proc, exe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netmon_served_by_another_uid_is_refused_once_and_never_reaches_the_cache() {
    let logs = logs();
    let dir = tempfile::tempdir().expect("tempdir");
    // netmon runs as nobody and must create its socket here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.path().join("netmon.sock");
    let _netmon = netmon_as_nobody(&socket).await;

    let cache = InterfaceCache::new();
    let listener = spawn_listener(socket.clone(), cache.clone());
    // Long enough for four attempts (backoff 1 s, 2 s, 4 s); netmon sends its discovery at once
    // to a client it accepts, and it accepts root.
    tokio::time::sleep(Duration::from_secs(8)).await;
    listener.abort();
    assert!(!cache.is_discovered(), "a discovery reached the cache");
    assert!(cache.list().is_empty(), "{:?}", cache.list());
    assert!(!cache.is_connected());
    let path = socket.display().to_string();
    let refusals = logs.lines_with(&["refusing the network monitor socket", &path]);
    let attempts = refusals.len();
    let warned = logs.lines_with(&[
        "WARN",
        "refusing the network monitor socket: it is served by uid 65534",
        &path,
    ]);
    assert_eq!(warned.len(), 1, "one WARN, however often: {refusals:#?}");
    assert!(attempts >= 3, "the client kept retrying: {refusals:#?}");
    assert!(
        warned[0].contains("trusted: root") && warned[0].contains("--netmon-uid"),
        "{}",
        warned[0]
    );

    // Trusted by configuration: the same socket is read.
    let trusting = InterfaceCache::new();
    let listener = spawn_listener_trusting(
        socket.clone(),
        trusting.clone(),
        TrustedPeers::new(Some(NOBODY)),
    );
    eventually(
        Duration::from_secs(20),
        "the discovery from a trusted uid",
        || trusting.is_discovered().then_some(()),
    )
    .await;
    listener.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netmon_served_by_root_is_read_by_default() {
    let logs = logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("netmon.sock");
    let _netmon = Netmon::start(&socket).await;
    let cache = InterfaceCache::new();
    let listener = spawn_listener(socket.clone(), cache.clone());
    eventually(Duration::from_secs(20), "root's discovery", || {
        cache.is_discovered().then_some(())
    })
    .await;
    assert!(cache.is_connected());
    listener.abort();
    let path = socket.display().to_string();
    assert!(logs.lines_with(&["refusing", &path]).is_empty());
}
