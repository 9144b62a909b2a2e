//! Re-homing runtimes after a parent interface's subnet changed (work in progress).

pub mod plan;
