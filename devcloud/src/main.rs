//! `devcloud`: a development cloud for the agent.

fn main() {}
