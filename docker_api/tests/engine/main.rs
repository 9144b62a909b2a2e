//! Integration tests of `docker_api` against the real Docker engine at /var/run/docker.sock (or
//! `DOCKER_HOST`). They fail — never skip — when the engine is unreachable. Every object they make
//! has a unique name, the `orchestrator-test=1` label and a guard that removes it on drop.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;
mod containers;
mod events;
mod images;
mod networks;
mod registry;
mod system;
