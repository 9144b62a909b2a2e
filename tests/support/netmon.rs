//! The real `autonomy-netmon` sidecar for the agent under test: built from the current sources once
//! per test process, run on the host namespace, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::wait::poll;
use test_support::Proc;

/// The `autonomy-netmon` binary of the current sources.
///
/// `cargo test` builds only the package under test, so a binary found next to the agent may be
/// stale: `cargo build -p autonomy-netmon` runs once per test process (a no-op when fresh; cargo
/// does not hold the build lock while test binaries run) into the target dir the agent binary was
/// built in, and cargo's own report names the executable. Blocking: call it off the async runtime.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build)
}

fn build() -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_orchestrator-agent"));
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-p",
        "autonomy-netmon",
        "--bin",
        "autonomy-netmon",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // The agent's target dir (however it was chosen: CARGO_TARGET_DIR, --target-dir, config) is
    // the ancestor cargo marked with CACHEDIR.TAG.
    if let Some(dir) = agent
        .ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
    {
        cmd.arg("--target-dir").arg(dir);
    }
    if agent
        .parent()
        .is_some_and(|d| d.file_name() == Some("release".as_ref()))
    {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cannot build autonomy-netmon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "autonomy-netmon")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!(
                "cargo reported no autonomy-netmon executable: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A running `autonomy-netmon` serving `socket`, killed on drop.
pub struct Netmon {
    proc: Proc,
}

impl Netmon {
    /// Starts netmon with a short debounce (tests) and waits for its socket.
    pub async fn start(socket: &Path) -> Self {
        let bin = tokio::task::spawn_blocking(binary)
            .await
            .expect("the netmon build does not panic");
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(socket)
            .args(["--debounce", "200ms", "--log-level", "info"]);
        let netmon = Self {
            proc: Proc::spawn(cmd),
        };
        let created = poll(Duration::from_secs(10), || socket.exists().then_some(())).await;
        assert!(
            created.is_some(),
            "netmon did not create {}; its output:\n{}",
            socket.display(),
            netmon.logs()
        );
        netmon
    }

    /// Starts netmon inside the network namespace `ns` (`ip netns exec`, which also mounts that
    /// namespace's sysfs, so netmon sees only the namespace's links) and waits for `socket`.
    /// Blocking: for synchronous tests.
    pub fn start_in(ns: &str, socket: &Path) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(binary())
            .arg("--socket")
            .arg(socket)
            .args(["--debounce", "200ms", "--log-level", "info"]);
        let netmon = Self {
            proc: Proc::spawn(cmd),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "netmon did not create {}; its output:\n{}",
                socket.display(),
                netmon.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        netmon
    }

    /// SIGTERM (netmon's clean stop: it gives lent NICs back and removes its socket) and waits up
    /// to 10 s for the exit. Blocking.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.terminate(Duration::from_secs(10))
    }

    /// Everything netmon printed so far.
    pub fn logs(&self) -> String {
        self.proc.out.text()
    }
}
