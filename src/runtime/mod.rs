//! Runtime (vPLC) orchestration on the Docker engine.

pub mod command;
pub mod consumption;
pub mod rehome;
