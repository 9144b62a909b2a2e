//! Helpers shared by the integration tests of every crate of the workspace: child processes
//! ([`process`]), network namespaces ([`netns`]), waiting with a deadline ([`wait`]), names unique
//! to a test run ([`unique`]) and the Python interpreter of the Socket.IO peer ([`python`]).
//! Crate-specific fixtures (the engine guards, the agent under test, devcloud) stay in each
//! crate's `tests/`.
//!
//! Never touches what a test did not make: every helper that creates something (a namespace, a
//! process) removes it on drop.

// Test helpers: a failed step panics with its message, which is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dnsmasq;
pub mod netns;
pub mod process;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use dnsmasq::{Dnsmasq, Pool};
pub use netns::Netns;
pub use process::{Lines, Proc, SharedExe, run, run_try};
pub use wait::{eventually, poll};

/// A short name unique to this process and call: `<prefix><pid mod 10^5>x<n>` (short enough for
/// link and namespace names).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Python interpreter with python-socketio and aiohttp: `ORCH_TEST_PYTHON`, else the venv
/// scripts/test.sh makes at `target/test-venv`.
pub fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates: Vec<PathBuf> = std::env::var_os("ORCH_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(
            workspace.join("target/test-venv/bin/python"),
        ))
        .collect();
    for p in &candidates {
        let ok = Command::new(p)
            .args(["-c", "import socketio, aiohttp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.clone();
        }
    }
    panic!(
        "no python with python-socketio and aiohttp: set ORCH_TEST_PYTHON or run scripts/test.sh \
         (tried {candidates:?})"
    );
}
