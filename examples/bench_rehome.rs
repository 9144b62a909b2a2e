//! Benchmark of re-homing (run by `scripts/bench-rehome.sh`): N runtimes (default 10) are created
//! through the real create workflow on one veth parent, then the parent is moved between
//! 10.203.152.0/24 and 10.203.153.0/24 a few times; each round times the re-home from the moment
//! netmon's change reaches the agent's interface cache until every runtime is attached to the new
//! network (what `rehome::spawn` runs on each change).
//!
//! Needs root, the Docker engine, the test images (`scripts/test-images.sh`) and
//! `autonomy-netmon` next to this binary's target dir. Everything it creates is removed at the end.
//!
//! Usage: `bench_rehome [--runtimes N] [--rounds R] [--octets A,B] [--parent NAME]` (the
//! parent, default `rhbench1`, moves between 10.203.A.0/24 and 10.203.B.0/24; default 152,153).

// A development tool, not shipped: a failed step ends it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use orchestrator_agent::netevents::{InterfaceCache, spawn_listener};
use orchestrator_agent::runtime::{Outcome, RuntimeConfig, Runtimes, rehome, spec};
use serde_json::json;

/// Default name of the veth parent (`--parent`); its peer is `<parent>p`.
const DEFAULT_PARENT: &str = "rhbench1";
/// The two /24s the parent moves between, `10.203.<a>.0/24` and `10.203.<b>.0/24` (`--octets a,b`).
const DEFAULT_OCTETS: [u8; 2] = [152, 153];

struct Cleanup {
    instance: String,
    parent: String,
    netmon: Option<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=edge.autonomy.instance={}", self.instance);
        for kind in [&["ps", "-aq"][..], &["network", "ls", "-q"][..]] {
            let out = Command::new("docker")
                .args(kind)
                .args(["--filter", &filter])
                .output();
            if let Ok(out) = out {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let rm: &[&str] = if kind[0] == "ps" {
                        &["rm", "-f"]
                    } else {
                        &["network", "rm"]
                    };
                    let _ = Command::new("docker").args(rm).arg(id).output();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.parent])
            .output();
        if let Some(mut n) = self.netmon.take() {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtimes = 10usize;
    let mut rounds = 3usize;
    let mut octets = DEFAULT_OCTETS;
    let mut parent = DEFAULT_PARENT.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or("missing value")?;
        match a.as_str() {
            "--runtimes" => runtimes = v.parse()?,
            "--rounds" => rounds = v.parse()?,
            "--parent" => parent = v,
            "--octets" => {
                let (a, b) = v.split_once(',').ok_or("--octets a,b")?;
                octets = [a.parse()?, b.parse()?];
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let subnets = octets.map(|o| format!("10.203.{o}"));
    let dir = tempfile::tempdir()?;
    let peer = format!("{parent}p");
    let mut cleanup = Cleanup {
        instance: dir.path().to_string_lossy().into_owned(),
        parent: parent.clone(),
        netmon: None,
    };
    let netmon_bin = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target dir")?
        .join("autonomy-netmon");
    let socket = dir.path().join("netmon.sock");
    cleanup.netmon = Some(
        Command::new(&netmon_bin)
            .arg("--socket")
            .arg(&socket)
            .args(["--debounce", "300ms", "--log-level", "warn"])
            .spawn()?,
    );
    let _ = Command::new("ip").args(["link", "del", &parent]).output();
    ip(&[
        "link", "add", &parent, "type", "veth", "peer", "name", &peer,
    ])?;
    ip(&["link", "set", &peer, "up"])?;
    ip(&["link", "set", &parent, "up"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}.1/24", subnets[0]),
        "dev",
        &parent,
    ])?;

    let cache = InterfaceCache::new();
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spawn_listener(socket, cache.clone());
    let mut config = RuntimeConfig::new(dir.path());
    config.runtime_image = "127.0.0.1:9/orchestrator-test/https-server:latest".into();
    let rt = Runtimes::open(docker_api::Docker::from_env()?, cache.clone(), config).await?;
    cache
        .wait_for(&parent, Duration::from_secs(20))
        .await
        .ok_or("netmon never reported the parent")?;

    let started = Instant::now();
    let names: Vec<String> = (0..runtimes).map(|i| format!("rhbench-{i}")).collect();
    for name in &names {
        let msg = json!({"correlation_id": 1, "container_name": name, "vnic_configs": [
            {"name": "eth0", "parent_interface": parent, "network_mode": "dhcp"}]});
        rt.create(create_spec(&msg)?).await?;
    }
    for name in &names {
        loop {
            match rt.ops().get(name).map(|r| r.outcome) {
                Some(Outcome::Succeeded) => break,
                Some(Outcome::Failed) => return Err(format!("create of {name} failed").into()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    println!(
        "created {runtimes} runtimes in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut changes = cache.subscribe();
    let mut times = Vec::new();
    for round in 0..rounds {
        let (from, to) = (&subnets[round % 2], &subnets[(round + 1) % 2]);
        let moved = Instant::now();
        ip(&["addr", "del", &format!("{from}.1/24"), "dev", &parent])?;
        ip(&["addr", "add", &format!("{to}.1/24"), "dev", &parent])?;
        let want = format!("{to}.0/24");
        loop {
            let change = changes.recv().await?;
            if change.interface == parent
                && change
                    .current
                    .as_ref()
                    .and_then(|c| c.subnet())
                    .is_some_and(|s| s == want)
            {
                break;
            }
        }
        let event_at = Instant::now();
        let report = rehome::rehome_interface(&rt, &parent).await;
        let took = event_at.elapsed();
        if report.rehomed.len() != runtimes || !report.failed.is_empty() {
            return Err(format!("round {round}: incomplete re-home: {report:?}").into());
        }
        println!(
            "round {round}: {from}.0/24 -> {want}: netmon event after {:.0} ms, {runtimes} runtimes re-homed in {:.0} ms",
            (event_at - moved).as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
    }
    times.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!(
            "re-home of {runtimes} runtimes after netmon's event: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            min.as_secs_f64() * 1000.0,
            times[times.len() / 2].as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
    }
    rt.shutdown();
    drop(cleanup);
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
