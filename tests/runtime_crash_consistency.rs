//! Crash consistency on the real engine: the agent is killed with SIGKILL in the middle of creates,
//! deletes, stops, starts, restarts and a self-destruct, and started again. Nothing acked is lost
//! or reverted, nothing half-made remains, and the state files list exactly the runtimes that exist.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// The stop grace period the agent runs with here: long enough for kills to land inside stops
/// (the test image ignores SIGTERM, as PID 1), short enough for many cycles.
const GRACE: &str = "2";

fn state_json(w: &World, rel: &str) -> Value {
    w.read_state(rel)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

async fn world() -> World {
    let mut w = World::prepare().await;
    w.agent_args = vec!["--stop-grace".into(), GRACE.into()];
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    w
}

/// What a runtime must look like once the agent settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Running,
    Stopped,
    Gone,
    /// Running (the create completed) or gone (it was undone); never anything in between.
    CreatedOrGone,
    /// One of two states (a request the kill cut before its answer).
    OneOf(Look, Look),
}

/// What a runtime looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Running,
    Stopped,
    Gone,
}

impl Want {
    fn from(l: Look) -> Self {
        match l {
            Look::Running => Want::Running,
            Look::Stopped => Want::Stopped,
            Look::Gone => Want::Gone,
        }
    }

    fn admits(self, l: Look) -> bool {
        match self {
            Want::Running => l == Look::Running,
            Want::Stopped => l == Look::Stopped,
            Want::Gone => l == Look::Gone,
            Want::CreatedOrGone => l != Look::Stopped,
            Want::OneOf(a, b) => l == a || l == b,
        }
    }
}

fn look(name: &str) -> Look {
    match inspect(name) {
        None => Look::Gone,
        Some(c) if c["State"]["Running"] == true => Look::Running,
        Some(_) => Look::Stopped,
    }
}

/// Why the engine and the state files are not (yet) what was asked, or `None` when they are.
fn inconsistency(w: &World, model: &BTreeMap<String, Want>) -> Option<String> {
    let label = w.instance_label();
    for (name, want) in model {
        let l = look(name);
        if !want.admits(l) {
            return Some(format!("{name}: wanted {want:?}, found {l:?}"));
        }
    }
    let containers: BTreeSet<String> = containers_with_label(&label).into_iter().collect();
    let vnics = keys(&state_json(w, "runtime_vnics.json"));
    if containers != vnics {
        return Some(format!(
            "containers {containers:?} but runtime_vnics.json lists {vnics:?}"
        ));
    }
    let clients = keys(&state_json(w, "data/clients.json"));
    if !clients.is_subset(&vnics) {
        return Some(format!(
            "clients.json lists {clients:?}, runtimes {vnics:?}"
        ));
    }
    let stopped: BTreeSet<String> = state_json(w, "stopped_runtimes.json")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for name in &containers {
        let running = look(name) == Look::Running;
        if running == stopped.contains(name) {
            return Some(format!(
                "{name}: running {running} but stopped on request {}",
                stopped.contains(name)
            ));
        }
    }
    for net in networks_with_label(&label) {
        if let Some(runtime) = net.strip_suffix("_internal")
            && !containers.contains(runtime)
        {
            return Some(format!("internal network {net} without its runtime"));
        }
    }
    let journal = state_json(w, "pending_operations.json");
    if journal["operations"]
        .as_object()
        .is_some_and(|o| !o.is_empty())
    {
        return Some(format!("unfinished operations: {}", journal["operations"]));
    }
    None
}

async fn settled(w: &World, model: &BTreeMap<String, Want>, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some(why) = inconsistency(w, model) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "{context}: not consistent: {why}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A small deterministic generator (xorshift64*), seeded per run and printed, so a failing
/// sequence can be replayed with ORCH_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_loses_or_reverts_what_was_acked() {
    const CYCLES: usize = 24;
    let seed = std::env::var("ORCH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("ORCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut w = world().await;
    let v = Veth::new();
    let mut model: BTreeMap<String, Want> = BTreeMap::new();
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();

    for cycle in 0..CYCLES {
        let mut present: Vec<(String, Look)> = model
            .keys()
            .map(|n| (n.clone(), look(n)))
            .filter(|(_, l)| *l != Look::Gone)
            .collect();
        // Keep at least two runtimes around, made without a kill: on a loaded machine a create
        // may take longer than any kill delay, and cut creates alone would never leave anything
        // to stop or delete.
        while present.len() < 2 {
            let name = unique("rtcrash");
            w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
            model.insert(name.clone(), Want::Running);
            present.push((name, Look::Running));
        }
        // At most four; otherwise any action on any of them.
        let action = {
            let choices: &[&str] = if present.len() >= 4 {
                &["delete", "stop", "start", "restart"]
            } else {
                &["create", "delete", "stop", "start", "restart"]
            };
            choices[rng.below(choices.len() as u64) as usize]
        };
        let (name, before) = if action == "create" {
            (unique("rtcrash"), Look::Gone)
        } else {
            present[rng.below(present.len() as u64) as usize].clone()
        };
        let (topic, payload) = match action {
            "create" => (
                "create_new_runtime",
                json!({"container_name": name, "vnic_configs": [dhcp_vnic(&v, None)]}),
            ),
            "delete" => ("delete_device", json!({"device_id": name})),
            "stop" => ("stop_device", json!({"device_id": name})),
            "start" => ("start_device", json!({"device_id": name})),
            _ => ("restart_device", json!({"device_id": name})),
        };
        let pending = w.send(topic, payload);
        let delay = 50 + rng.below(1450);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        w.kill_agent().await;
        let ack = if pending.is_finished() {
            pending.await.ok().flatten()
        } else {
            pending.abort();
            None
        };
        let acked = |key: &str, value: Value| ack.as_ref().is_some_and(|a| a[key] == value);
        let want = match action {
            "create" => Want::CreatedOrGone,
            "delete" if acked("status", json!("deleting")) => Want::Gone,
            "delete" => Want::OneOf(before, Look::Gone),
            "stop" if acked("success", json!(true)) => Want::Stopped,
            "stop" => Want::OneOf(before, Look::Stopped),
            "start" | "restart" if acked("success", json!(true)) => Want::Running,
            _ => Want::OneOf(before, Look::Running),
        };
        println!("cycle {cycle}: {action} {name} after {delay} ms, ack {ack:?} → {want:?}");
        model.insert(name.clone(), want);
        *done.entry(action).or_default() += 1;

        w.start_agent().await;
        settled(&w, &model, &format!("cycle {cycle} ({action} {name})")).await;
        // From now on the runtime is what it turned out to be.
        for (n, want) in model.iter_mut() {
            *want = Want::from(look(n));
        }
    }
    println!("actions: {done:?}");
    assert!(
        done.get("delete").copied().unwrap_or(0) > 0,
        "no delete was exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_delete_killed_during_its_stop_is_finished_after_the_restart() {
    let mut w = world().await;
    let v = Veth::new();
    let name = unique("rtdel");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    // The runtime ignores SIGTERM: the stop takes the whole grace period. Kill inside it.
    w.wait_status(&name, |s| s["step"] == "stopping").await;
    w.kill_agent().await;
    assert!(inspect(&name).is_some(), "killed before the delete got far");

    w.start_agent().await;
    let model = BTreeMap::from([(name.clone(), Want::Gone)]);
    settled(&w, &model, "after the restart").await;
    let s = w.settle(&name).await;
    assert_eq!(s["status"], "not_found", "{s}");
    assert_eq!(state_json(&w, "runtime_vnics.json"), json!({}));
    assert!(inspect_network(&format!("{name}_internal")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_killed_midway_leaves_the_runtime_stopped() {
    let mut w = world().await;
    let v = Veth::new();
    let name = unique("rtstop");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let _pending = w.send("stop_device", json!({"device_id": name}));
    // The wish is durable before the engine is asked; kill while the engine is stopping it.
    eventually(SLOW, "the stop to be recorded", || {
        w.read_state("stopped_runtimes.json")
            .filter(|s| s.contains(&name))
    })
    .await;
    w.kill_agent().await;
    w.start_agent().await;
    let model = BTreeMap::from([(name.clone(), Want::Stopped)]);
    settled(&w, &model, "after the restart").await;
    w.wait_boot_reconcile().await;
    assert_eq!(look(&name), Look::Stopped, "{}", w.logs());

    // And a start is not undone either way.
    let ack = w.call("start_device", json!({"device_id": name})).await;
    assert_eq!(ack["success"], true, "{ack}");
    w.kill_agent().await;
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    assert_eq!(look(&name), Look::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_destruct_killed_midway_is_resumed_after_the_restart() {
    let mut w = World::prepare().await;
    w.agent_args = vec!["--stop-grace".into(), GRACE.into()];
    // Stands in for the agent's own container (found through HOST_NAME, spec §3).
    let me = ContainerGuard::busybox(&unique("rtself"));
    w.agent_env.push(("HOST_NAME".to_owned(), me.name.clone()));
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    let v = Veth::new();
    let names: Vec<String> = (0..3).map(|_| unique("rtsdk")).collect();
    for n in &names {
        w.create_runtime(n, json!([dhcp_vnic(&v, None)])).await;
    }
    let ack = w.call("delete_orchestrator", json!({})).await;
    assert_eq!(ack["status"], "accepted", "{ack}");
    w.wait_status("__orchestrator__", |s| s["step"] == "deleting_runtimes")
        .await;
    w.kill_agent().await;
    assert!(inspect(&me.name).is_some());

    w.start_agent().await;
    let s = w
        .wait_status("__orchestrator__", |s| {
            s["status"] == "success" || s["status"] == "error"
        })
        .await;
    assert_eq!(s["status"], "success", "{s}\n{}", w.logs());
    assert!(inspect(&me.name).is_none(), "its own container goes last");
    for n in &names {
        assert!(inspect(n).is_none(), "{n} is left");
    }
    assert!(containers_with_label(&w.instance_label()).is_empty());
    assert!(networks_with_label(&w.instance_label()).is_empty());
    assert_eq!(
        state_json(&w, "pending_operations.json")["operations"],
        json!({}),
        "a later agent on this volume does not inherit the self-destruct"
    );
}

/// `POST /networks/create` without the duplicate check (what two overlapping creates of one name
/// amount to, since the engine's check is not atomic). `false` when the engine refuses duplicates
/// outright (API ≥ 1.44), where the twin cannot arise.
fn create_twin_network(name: &str, labels: &Value) -> bool {
    let body = json!({"Name": name, "Driver": "bridge", "Internal": true,
                      "CheckDuplicate": false, "Labels": labels});
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
            &engine_socket(),
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            "http://docker/networks/create",
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim() == "201"
}

/// The engine's socket: `DOCKER_HOST` (the test command runs these tests once per engine) or the
/// default.
fn engine_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_internal_network_left_by_a_killed_create_is_removed() {
    let mut w = world().await;
    let v = Veth::new();
    let name = unique("rttwin");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    let internal = format!("{name}_internal");
    let labels = inspect_network(&internal).expect("internal network")["Labels"].clone();
    if !create_twin_network(&internal, &labels) {
        println!("this engine refuses duplicate network names: no twin can arise");
        return;
    }
    let twins = || {
        docker(&[
            "network",
            "ls",
            "--filter",
            &format!("name={internal}"),
            "-q",
        ])
        .split_whitespace()
        .count()
    };
    assert_eq!(twins(), 2, "the twin exists");
    w.kill_agent().await;
    w.start_agent().await;
    w.wait_boot_reconcile().await;
    assert_eq!(twins(), 1, "{}", w.logs());
    assert!(
        endpoints(&name).contains_key(&internal),
        "the runtime keeps its network"
    );
    // Every call by name works again: a delete removes the runtime and its network.
    let ack = w.call("delete_device", json!({"device_id": name})).await;
    assert_eq!(ack["status"], "deleting", "{ack}");
    assert_eq!(w.settle(&name).await["status"], "not_found", "{}", w.logs());
    assert_eq!(twins(), 0);
}
