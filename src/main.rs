//! `orchestrator-agent`: parses the command line and wires the library's modules together.

fn main() {
    println!("orchestrator-agent: not wired yet");
}
