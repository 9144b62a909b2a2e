//! Harness of the `runtime_*` integration tests: the real agent binary against an in-process
//! `devcloud`, the real `autonomy-netmon` on the host namespace, veth parents in 10.203.0.0/17, and
//! guards that remove every container, network and link a test (or the agent under test) made.
//! Docker is inspected through the `docker` CLI so the checks do not depend on the code under test.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devcloud::pki::{self, PkiOptions, PkiPaths};
use devcloud::{CloudEvent, DevCloud, ServerConfig};
use serde_json::{Value, json};

/// Image every runtime of these tests runs: the loopback "registry" makes the agent's pull fail at
/// once without leaving the machine, then the local copy is used.
pub const IMAGE: &str = "127.0.0.1:9/orchestrator-test/busybox:latest";
/// The plain local name of the same image (for test-made containers).
pub const LOCAL_IMAGE: &str = "orchestrator-test/busybox:latest";
/// Generous limit for anything the agent does in the background.
pub const SLOW: Duration = Duration::from_secs(60);

/// A short name unique to this process and call: `<prefix><pid mod 10^5>x<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `docker <args>`; `Some(stdout)` on success.
pub fn docker_try(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `docker <args>`, panicking with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fails (never skips) when the engine or the test image is missing.
pub fn require_engine() {
    assert!(
        docker_try(&["info", "--format", "{{.ServerVersion}}"]).is_some(),
        "the Docker engine must be running for this test"
    );
    assert!(
        docker_try(&["image", "inspect", IMAGE]).is_some(),
        "image {IMAGE} is missing: run scripts/test-images.sh"
    );
}

/// `docker inspect` of a container as JSON, `None` when it does not exist.
pub fn inspect(name: &str) -> Option<Value> {
    let text = docker_try(&["container", "inspect", name])?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_array()?.first().cloned()
}

/// `docker network inspect` as JSON, `None` when it does not exist.
pub fn inspect_network(name: &str) -> Option<Value> {
    let text = docker_try(&["network", "inspect", name])?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_array()?.first().cloned()
}

/// Names of containers carrying `label` (all states).
pub fn containers_with_label(label: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect()
}

/// Names of networks carrying `label`.
pub fn networks_with_label(label: &str) -> Vec<String> {
    docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect()
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A veth pair in the root namespace: `<name>` (the MACVLAN parent, with `10.203.<n>.1/24`) and
/// `<name>p`, both up; deleted on drop. `n` is unique per pair and checked against the routing
/// table, so the subnet is never one the machine uses.
pub struct Veth {
    pub name: String,
    pub octet: u8,
}

impl Veth {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let routes = Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // 10.203.120-127.x are never put on a link (tests use them for parents that do not exist).
        let base = std::process::id() % 120;
        let name = unique("rv");
        assert!(name.len() <= 14, "veth name {name} too long");
        for _ in 0..120 {
            let octet = ((base + NEXT.fetch_add(1, Ordering::Relaxed)) % 120) as u8;
            if routes.contains(&format!("10.203.{octet}.")) {
                continue;
            }
            let peer = format!("{name}p");
            assert!(
                ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]),
                "cannot create veth {name}"
            );
            let v = Veth {
                name: name.clone(),
                octet,
            };
            assert!(ip(&["link", "set", &peer, "up"]));
            assert!(ip(&["link", "set", &name, "up"]));
            assert!(ip(&[
                "addr",
                "add",
                &format!("10.203.{octet}.1/24"),
                "dev",
                &name
            ]));
            return v;
        }
        panic!("no free 10.203.x.0/24 subnet");
    }

    /// `10.203.<n>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.203.{}.0/24", self.octet)
    }

    /// `10.203.<n>.<host>`.
    pub fn addr(&self, host: u8) -> String {
        format!("10.203.{}.{host}", self.octet)
    }

    /// The MACVLAN network name the agent gives this parent's subnet.
    pub fn macvlan(&self) -> String {
        format!("macvlan_{}_10.203.{}.0_24", self.name, self.octet)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// A test-made container (not the agent's) removed on drop.
pub struct Foreign {
    pub name: String,
}

impl Foreign {
    /// `docker run -d` of the busybox image, labelled as a test object.
    pub fn run(name: &str) -> Self {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "orchestrator-test=1",
            LOCAL_IMAGE,
        ]);
        Foreign {
            name: name.to_owned(),
        }
    }

    pub fn is_running(&self) -> bool {
        inspect(&self.name).is_some_and(|c| c["State"]["Running"] == true)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", &self.name]);
    }
}

/// Output lines of a child process.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn reader(&self, stream: impl Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_orchestrator-agent"))
        .parent()
        .expect("the agent binary lives in a directory")
        .to_path_buf()
}

/// The `autonomy-netmon` binary next to the agent (built on demand).
fn netmon_bin() -> PathBuf {
    let bin = bin_dir().join("autonomy-netmon");
    if !bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "autonomy-netmon"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot build autonomy-netmon");
    }
    bin
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    out: Lines,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = Lines::default();
        if let Some(s) = child.stdout.take() {
            out.reader(s);
        }
        if let Some(s) = child.stderr.take() {
            out.reader(s);
        }
        Proc { child, out }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: cloud, netmon, agent, state dir; cleans up everything of the agent's instance.
pub struct World {
    dir: tempfile::TempDir,
    pub pki: PkiPaths,
    pub cloud: DevCloud,
    pub state_dir: PathBuf,
    netmon: Option<Proc>,
    agent: Option<Proc>,
    agent_logs: Vec<Lines>,
    /// Extra environment for the agent (e.g. `HOST_NAME`).
    pub agent_env: Vec<(String, String)>,
    cid: u64,
}

impl World {
    /// Cloud + netmon, no agent yet (so a test can prepare the state dir first).
    pub async fn prepare() -> Self {
        require_engine();
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_id = unique("rt-agent-");
        let pki_dir = dir.path().join("pki");
        let pki = tokio::task::spawn_blocking(move || {
            pki::generate(
                &pki_dir,
                &PkiOptions {
                    agent_id,
                    ..PkiOptions::default()
                },
            )
        })
        .await
        .expect("join")
        .expect("dev PKI");
        let cloud = DevCloud::start(ServerConfig::from_pki(
            &pki,
            "127.0.0.1:0".parse().expect("literal"),
        ))
        .await
        .expect("devcloud");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let mut netmon = Command::new(netmon_bin());
        netmon
            .arg("--socket")
            .arg(state_dir.join("netmon.sock"))
            .args(["--debounce", "200ms", "--log-level", "info"]);
        let netmon = Proc::spawn(netmon);
        World {
            dir,
            pki,
            cloud,
            state_dir,
            netmon: Some(netmon),
            agent: None,
            agent_logs: Vec::new(),
            agent_env: Vec::new(),
            cid: 1000,
        }
    }

    /// Cloud + netmon + a connected agent.
    pub async fn start() -> Self {
        let mut w = Self::prepare().await;
        w.start_agent().await;
        w
    }

    /// The instance label value of this world's agent.
    pub fn instance(&self) -> String {
        self.state_dir.to_string_lossy().into_owned()
    }

    /// `edge.autonomy.instance=<state dir>`.
    pub fn instance_label(&self) -> String {
        format!("edge.autonomy.instance={}", self.instance())
    }

    /// Starts the agent and waits until it is connected to the cloud.
    pub async fn start_agent(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"));
        cmd.arg("--server")
            .arg(self.cloud.url())
            .arg("--ca-file")
            .arg(&self.pki.ca_cert)
            .arg("--mtls-dir")
            .arg(&self.pki.agent_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--runtime-image")
            .arg(IMAGE)
            .arg("--log-level")
            .arg("debug")
            .env_remove("HOST_NAME")
            .env_remove("DOCKER_HOST")
            .env("HOSTNAME", "runtime-test-host");
        for (k, v) in &self.agent_env {
            cmd.env(k, v);
        }
        let p = Proc::spawn(cmd);
        self.agent_logs.push(p.out.clone());
        self.agent = Some(p);
        self.cloud
            .wait_for_agent(Some(&self.pki.agent_id), SLOW)
            .await
            .unwrap_or_else(|e| panic!("agent did not connect: {e}\n{}", self.logs()));
    }

    /// SIGKILLs the agent (no clean-up of its own) and waits until the cloud saw it go.
    pub async fn kill_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill();
        }
        let deadline = Instant::now() + SLOW;
        while self.cloud.connected_agents().contains(&self.pki.agent_id) {
            assert!(
                Instant::now() < deadline,
                "the cloud still sees the killed agent"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the agent printed so far (all its runs).
    pub fn logs(&self) -> String {
        self.agent_logs
            .iter()
            .map(Lines::text)
            .collect::<Vec<_>>()
            .join("\n--- agent restarted ---\n")
    }

    /// Sends `topic` with one object argument (a fresh numeric `correlation_id` plus `action` and
    /// `requested_at` are added when missing) and returns the first ack value.
    pub async fn call(&mut self, topic: &str, mut payload: Value) -> Value {
        self.cid += 1;
        let obj = payload.as_object_mut().expect("payload is an object");
        obj.entry("correlation_id").or_insert(json!(self.cid));
        obj.entry("action").or_insert(json!(topic));
        obj.entry("requested_at")
            .or_insert(json!("2026-11-22T14:00:00Z"));
        let ack = self
            .cloud
            .emit_with_ack(Some(&self.pki.agent_id), topic, vec![payload], SLOW)
            .await
            .unwrap_or_else(|e| panic!("{topic}: no ack: {e}\n{}", self.logs()));
        ack.into_iter().next().unwrap_or(Value::Null)
    }

    /// `get_device_status` of `device`.
    pub async fn status(&mut self, device: &str) -> Value {
        self.call("get_device_status", json!({"device_id": device}))
            .await
    }

    /// Polls `get_device_status` until `done` holds; returns that status.
    pub async fn wait_status(&mut self, device: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SLOW;
        loop {
            let s = self.status(device).await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "status of {device} never reached the expected state; last: {s}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until no operation is in progress on `device` (a tracked operation reports its
    /// progress status, e.g. `creating`, with an `operation` key) and returns the final status.
    pub async fn settle(&mut self, device: &str) -> Value {
        self.wait_status(device, |s| {
            s.get("operation").is_none()
                || matches!(s["status"].as_str(), Some("success" | "error"))
        })
        .await
    }

    /// Cloud events from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<CloudEvent> {
        self.cloud.subscribe()
    }

    /// Reads a state file under the state dir.
    pub fn read_state(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join(rel)).ok()
    }
}

/// Waits for an emitted event named `name` on `rx`.
pub async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<CloudEvent>,
    name: &str,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(CloudEvent::Event(e))) if e.name == name => return e.args,
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended waiting for {name}: {e}"),
            Err(_) => panic!("no {name} event"),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill();
        }
        if let Some(mut n) = self.netmon.take() {
            n.kill();
        }
        // Everything the agent made carries its instance label; test-made objects are guarded
        // separately.
        let label = self.instance_label();
        for c in containers_with_label(&label) {
            let _ = docker_try(&["rm", "-f", &c]);
        }
        for n in networks_with_label(&label) {
            if let Some(ids) = docker_try(&[
                "network",
                "inspect",
                "--format",
                "{{range $k, $v := .Containers}}{{$k}} {{end}}",
                &n,
            ]) {
                for id in ids.split_whitespace() {
                    let _ = docker_try(&["network", "disconnect", "-f", &n, id]);
                }
            }
            let _ = docker_try(&["network", "rm", &n]);
        }
        let _ = &self.dir;
    }
}

/// A vNIC object of the production generation (`ip`, `mac`, netmask `subnet`, `static`).
pub fn static_vnic(veth: &Veth, host: u8, mac: Option<&str>) -> Value {
    json!({
        "name": "eth0",
        "parent_interface": veth.name,
        "network_mode": "static",
        "ip": veth.addr(host),
        "subnet": "255.255.255.0",
        "gateway": veth.addr(1),
        "mac": mac,
        "dns": ["10.203.0.53"],
        "vendor_extra": {"kept": "verbatim"}
    })
}

/// A DHCP vNIC of the upstream generation without any subnet (netmon supplies it).
pub fn dhcp_vnic(veth: &Veth, mac: Option<&str>) -> Value {
    json!({
        "name": "eth1",
        "parent_interface": veth.name,
        "network_mode": "dhcp",
        "ip_address": null,
        "mac_address": mac,
        "dns": null
    })
}
