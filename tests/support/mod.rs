//! The one harness of the agent's integration tests: the real agent binary against an in-process
//! `devcloud` ([`World`]) or its library stack in-process ([`LibAgent`]), the real `autonomy-netmon`
//! (built from the current sources), veth parents in 10.203.0.0/16, the cloud link's peers
//! ([`cloud`]: PKIs, the python-socketio server), the shipped images and installer ([`ship`]), and
//! guards that remove every container, network and link a test — or the agent under test — made.
//! Docker is inspected through the `docker` CLI so the checks do not depend on the code under
//! test. What every crate's tests share (processes, namespaces, waiting, unique names) is the
//! `test_support` crate, re-exported here.
//!
//! It never touches what it did not make: guards remove objects by their exact (unique) name or by
//! the instance label of their own state dir, and test links only get addresses in 10.203.0.0/16
//! that the machine does not route. A test file includes it with `mod support;`; each file uses a
//! different part.
#![allow(dead_code)]

pub mod bytes;
pub mod cloud;
pub mod engine;
pub mod lib_agent;
pub mod links;
pub mod netmon;
pub mod ship;
pub mod wait;
pub mod world;

// The common names at the top (`use support::*`); a test file that needs none of a module's is fine.
#[allow(unused_imports)]
pub use {
    bytes::{random_bytes, sha256},
    engine::*,
    lib_agent::{LibAgent, create_spec},
    links::{Veth, ip},
    netmon::Netmon,
    test_support::{Lines, Proc, python, run, run_try, unique},
    wait::*,
    world::*,
};
