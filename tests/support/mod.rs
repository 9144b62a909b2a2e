//! Shared harness of the agent's integration tests: the real agent binary against an in-process
//! `devcloud` ([`World`]) or its library stack in-process ([`LibAgent`]), the real `autonomy-netmon`
//! (built from the current sources), veth parents in 10.203.0.0/16, and guards that remove every
//! container, network and link a test — or the agent under test — made. Docker is inspected through
//! the `docker` CLI so the checks do not depend on the code under test.
//!
//! It never touches what it did not make: guards remove objects by their exact (unique) name or by
//! the instance label of their own state dir, and test links only get addresses in 10.203.0.0/16
//! that the machine does not route. A test file includes it with `mod support;`; each file uses a
//! different part.
#![allow(dead_code)]

pub mod engine;
pub mod lib_agent;
pub mod links;
pub mod netmon;
pub mod process;
pub mod wait;
pub mod world;

use std::sync::atomic::{AtomicU32, Ordering};

// The common names at the top (`use support::*`); a test file that needs none of a module's is fine.
#[allow(unused_imports)]
pub use {
    engine::*,
    lib_agent::LibAgent,
    links::{Veth, ip},
    netmon::Netmon,
    process::{Lines, Proc},
    wait::*,
    world::*,
};

/// A short name unique to this process and call: `<prefix><pid mod 10^5>x<n>` (short enough for
/// link names).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
