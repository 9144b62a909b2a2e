//! Benchmark of `delete_orchestrator` with many runtimes (run by `scripts/bench-selfdestruct.sh`):
//! the time from the request to the self-destruct's success, with N runtimes (default 20) whose
//! process ignores SIGTERM (PID 1 of the test image), so every stop takes the whole grace period
//! (default 10 s), as a PLC runtime that does not shut down cleanly would. The runtime service runs
//! in-process on the host (no agent container of its own to remove). One DHCP vNIC each on a veth
//! parent in 10.204.252.0/24 it creates and removes. Needs root, the Docker engine and the test
//! image (`scripts/test-images.sh`).
//!
//! Usage: `bench_selfdestruct [--runtimes N] [--grace SECONDS]`.

// A development tool, not shipped: a failed step ends it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::{Outcome, RuntimeConfig, Runtimes, naming, spec};
use serde_json::json;

const IMAGE: &str = "127.0.0.1:9/orchestrator-test/busybox:latest";
const PARENT: (&str, &str) = ("rsdbench0", "10.204.252");

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Cleanup {
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=edge.autonomy.instance={}", self.instance);
        for (list, rm) in [
            (&["ps", "-aq"][..], &["rm", "-f"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
        ] {
            if let Ok(out) = Command::new("docker")
                .args(list)
                .args(["--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(rm).arg(id).output();
                }
            }
        }
        let _ = Command::new("ip").args(["link", "del", PARENT.0]).output();
    }
}

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

async fn wait(rt: &Runtimes, name: &str) -> Res<()> {
    loop {
        if let Some(r) = rt.ops().get(name) {
            match r.outcome {
                Outcome::Succeeded => return Ok(()),
                Outcome::Failed => return Err(format!("{name}: {:?}", r.error).into()),
                Outcome::Running => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let (mut n, mut grace) = (20u32, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runtimes" => n = args.next().ok_or("--runtimes N")?.parse()?,
            "--grace" => grace = args.next().ok_or("--grace SECONDS")?.parse()?,
            _ => {
                return Err("usage: bench_selfdestruct [--runtimes N] [--grace SECONDS]".into());
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let _cleanup = Cleanup {
        instance: dir.path().to_string_lossy().into_owned(),
    };
    let peer = format!("{}p", PARENT.0);
    ip(&[
        "link", "add", PARENT.0, "type", "veth", "peer", "name", &peer,
    ])?;
    ip(&["link", "set", &peer, "up"])?;
    ip(&["link", "set", PARENT.0, "up"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}.1/24", PARENT.1),
        "dev",
        PARENT.0,
    ])?;

    let docker = docker_api::Docker::from_env()?;
    let api = docker.api_version().await?;
    let mut config = RuntimeConfig::new(dir.path());
    config.runtime_image = IMAGE.to_owned();
    config.stop_grace = Duration::from_secs(grace);
    config.self_destruct_delay = Duration::ZERO;
    let rt = Runtimes::open(docker, InterfaceCache::new(), config).await?;

    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("rsdbench{}x{i}", std::process::id() % 100_000);
        let req = json!({"correlation_id": i, "container_name": name,
            "vnic_configs": [{"name": "eth0", "parent_interface": PARENT.0,
                              "network_mode": "dhcp", "parent_subnet": format!("{}.0/24", PARENT.1)}]});
        rt.create(create_spec(&req)?).await?;
        wait(&rt, &name).await?;
    }
    println!(
        "Docker Engine API {api}: {n} runtimes created in {:.1} s; stop grace {grace} s",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    rt.self_destruct().await?;
    wait(&rt, naming::ORCHESTRATOR_DEVICE_ID).await?;
    let took = t0.elapsed().as_secs_f64();
    println!(
        "delete_orchestrator: {n} runtimes removed in {took:.1} s ({:.2} grace periods)",
        took / grace.max(1) as f64
    );
    Ok(())
}

/// The validated create of `msg` (a `create_new_runtime` message), as the topic builds it.
fn create_spec(msg: &serde_json::Value) -> Result<spec::CreateSpec, String> {
    let name = msg["container_name"].as_str().ok_or("container_name")?;
    let vnics: Vec<serde_json::Map<String, serde_json::Value>> = msg["vnic_configs"]
        .as_array()
        .ok_or("vnic_configs")?
        .iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
    spec::parse_create(name, &vnics, None).map_err(|e| e.to_string())
}
