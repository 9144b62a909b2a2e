//! Benchmark of `create_new_runtime` (run by `scripts/bench-create.sh`): per round, the time from
//! the request to the runtime running with all its networks, registered and persisted (the create
//! workflow of the runtime service, in-process), against the bare sequence of Engine API calls the
//! workflow cannot avoid (same request bodies, no checks, no state, no rollback bookkeeping).
//!
//! Each round creates one runtime with two vNICs on two veth parents (a static address with a MAC,
//! and a DHCP vNIC), i.e. an internal bridge, two MACVLAN networks, the container, two connects and
//! the start (Engine API 1.41 path here). Networks are removed between rounds so each round pays for
//! their creation. Needs root, the Docker engine and the test image (`scripts/test-images.sh`).
//! Addresses: 10.204.250.0/24 and 10.204.251.0/24 on links it creates and removes.
//!
//! Usage: `bench_create [--rounds N]`.

// A development tool, not shipped: a failed step ends it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use docker_api::{Docker, Ipam, IpamPool, NetworkCreate, PullOptions, RemoveContainerOptions};
use orchestrator_agent::netevents::InterfaceCache;
use orchestrator_agent::runtime::body::{self, Attachment, ContainerParams};
use orchestrator_agent::runtime::{Outcome, RuntimeConfig, Runtimes, naming, spec};
use serde_json::json;

const IMAGE: &str = "127.0.0.1:9/orchestrator-test/busybox:latest";
const PARENTS: [(&str, &str); 2] = [("rcbench0", "10.204.250"), ("rcbench1", "10.204.251")];

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Cleanup {
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_labelled(&self.instance);
        for (p, _) in PARENTS {
            let _ = Command::new("ip").args(["link", "del", p]).output();
        }
    }
}

fn remove_labelled(instance: &str) {
    let filter = format!("label=edge.autonomy.instance={instance}");
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
}

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The agent's create workflow, request to "succeeded".
async fn via_agent(rt: &Runtimes, name: &str, round: u8) -> Res<Duration> {
    let req = json!({
        "correlation_id": 1, "container_name": name,
        "vnic_configs": [
            {"name": "eth0", "parent_interface": PARENTS[0].0, "network_mode": "static",
             "ip": format!("{}.{}", PARENTS[0].1, 10 + round), "subnet": "255.255.255.0",
             "gateway": format!("{}.1", PARENTS[0].1), "mac": format!("02:bc:00:00:00:{round:02x}")},
            {"name": "eth1", "parent_interface": PARENTS[1].0, "network_mode": "dhcp",
             "parent_subnet": format!("{}.0/24", PARENTS[1].1)}
        ]
    });
    let spec = create_spec(&req)?;
    let t0 = Instant::now();
    rt.create(spec).await?;
    loop {
        if let Some(r) = rt.ops().get(name) {
            match r.outcome {
                Outcome::Succeeded => return Ok(t0.elapsed()),
                Outcome::Failed => return Err(format!("create failed: {:?}", r.error).into()),
                Outcome::Running => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The Engine API calls alone, with the same bodies.
async fn bare(docker: &Docker, instance: &str, name: &str, round: u8) -> Res<Duration> {
    let t0 = Instant::now();
    let _ = docker.pull_image(IMAGE, &PullOptions::default()).await; // fails at once, as in the agent
    docker.inspect_image(IMAGE).await?;
    let internal = naming::internal_network_name(name);
    docker
        .create_network(&NetworkCreate {
            name: internal.clone(),
            driver: "bridge".into(),
            internal: true,
            labels: naming::internal_network_labels(name, instance),
            ..Default::default()
        })
        .await?;
    let mut attachments = Vec::new();
    for (i, (parent, prefix)) in PARENTS.iter().enumerate() {
        let net = format!("macvlan_{parent}_{prefix}.0_24");
        docker
            .create_network(&NetworkCreate {
                name: net.clone(),
                driver: "macvlan".into(),
                ipam: Some(Ipam {
                    driver: "default".into(),
                    config: vec![IpamPool {
                        subnet: Some(format!("{prefix}.0/24")),
                        gateway: Some(format!("{prefix}.1")),
                        ip_range: None,
                    }],
                    ..Default::default()
                }),
                options: [("parent".to_owned(), (*parent).to_owned())].into(),
                labels: naming::macvlan_labels(instance),
                ..Default::default()
            })
            .await?;
        attachments.push(Attachment {
            vnic: i,
            network: net,
            ip: (i == 0)
                .then(|| format!("{prefix}.{}", 10 + round).parse())
                .transpose()?,
            mac: (i == 0)
                .then(|| format!("02:bc:00:00:01:{round:02x}").parse())
                .transpose()
                .map_err(|e| format!("{e:?}"))?,
        });
    }
    let plan = body::plan(
        &ContainerParams {
            name,
            image: IMAGE,
            instance,
            dns: &[],
            attachments: &attachments,
            create_id: "bench",
            raw_vnics: &[],
            without_ulimits: &[],
            dedicated_nic: false,
        },
        docker.api_version().await?,
    );
    let created = docker.create_container(name, &plan.create).await?;
    for (net, ep) in &plan.connect {
        docker.connect_network(net, &created.id, ep).await?;
    }
    docker.start_container(&created.id).await?;
    docker.inspect_container(&created.id).await?;
    Ok(t0.elapsed())
}

async fn remove_runtime(docker: &Docker, name: &str) {
    let _ = docker
        .remove_container(
            name,
            RemoveContainerOptions {
                force: true,
                volumes: true,
            },
        )
        .await;
    let _ = docker
        .remove_network(&naming::internal_network_name(name))
        .await;
    for (parent, prefix) in PARENTS {
        let _ = docker
            .remove_network(&format!("macvlan_{parent}_{prefix}.0_24"))
            .await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut rounds: u8 = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds N")?.parse()?,
            _ => return Err("usage: bench_create [--rounds N]".into()),
        }
    }
    let rounds = rounds.clamp(1, 200);
    let dir = tempfile::tempdir()?;
    let instance = dir.path().to_string_lossy().into_owned();
    let _cleanup = Cleanup {
        instance: instance.clone(),
    };
    for (p, prefix) in PARENTS {
        let peer = format!("{p}p");
        ip(&["link", "add", p, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "up"])?;
        ip(&["link", "set", p, "up"])?;
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", p])?;
    }
    let docker = Docker::from_env()?;
    let api = docker.api_version().await?;
    let mut config = RuntimeConfig::new(dir.path());
    config.runtime_image = IMAGE.to_owned();
    let rt = Runtimes::open(docker.clone(), InterfaceCache::new(), config).await?;

    println!("Docker Engine API {api}; {rounds} rounds; 2 vNICs (static+MAC, DHCP)");
    println!("round  agent_ms  bare_ms");
    let (mut agent, mut raw) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let name = format!("rcbench{}x{round}", std::process::id() % 100_000);
        let a = via_agent(&rt, &name, round).await?;
        remove_runtime(&docker, &name).await;
        rt.state().forget(&name).await?;
        let b = bare(&docker, &instance, &name, round).await?;
        remove_runtime(&docker, &name).await;
        println!(
            "{round:>5}  {:>8.1}  {:>7.1}",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
        agent.push(a.as_secs_f64() * 1e3);
        raw.push(b.as_secs_f64() * 1e3);
    }
    let (ma, mb) = (median(&mut agent), median(&mut raw));
    println!(
        "median: agent {ma:.1} ms, bare {mb:.1} ms, agent overhead {:.1} ms ({:+.0} %)",
        ma - mb,
        (ma / mb - 1.0) * 100.0
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
