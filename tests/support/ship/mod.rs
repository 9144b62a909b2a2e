//! Harness of the shipping tests: the release images built from `dist/` for this machine's engine,
//! the provisioning API stand-in, devcloud reachable from the agent's container, and one install
//! made by the real `install/install.sh` under names unique to the test, removed on drop.
//!
//! It never touches the names a real installation uses (`orchestrator_agent`, `autonomy_netmon`,
//! `orchestrator-shared`, `/var/orchestrator`): every install here gets its own container, volume
//! and image names and its own state dir (hence its own instance label), and a temporary HOME.
#![allow(dead_code)]

pub mod deploy;
pub mod provisioning;

// Each test file uses a different part.
#[allow(unused_imports)]
pub use {
    deploy::*,
    provisioning::{Mode, Provisioning},
};
