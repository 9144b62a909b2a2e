//! One test's world: the real agent binary connected over mutual TLS to an in-process `devcloud`,
//! with a real `autonomy-netmon`, on a fresh state dir. Dropping it kills the processes and removes
//! every container and network the agent made (its instance label); test-made objects have guards
//! of their own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use devcloud::pki::{self, PkiOptions, PkiPaths};
use devcloud::{CloudEvent, DevCloud, ServerConfig};
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;

use super::engine::{IMAGE, InstanceCleanup, require_engine};
use super::links::Veth;
use super::netmon::Netmon;
use super::unique;
use super::wait::{SLOW, eventually};
use test_support::{Lines, Proc};

pub struct World {
    pub pki: PkiPaths,
    pub cloud: DevCloud,
    pub state_dir: PathBuf,
    /// Image the agent runs runtimes from (`--runtime-image`).
    pub runtime_image: String,
    /// Extra environment for the agent (e.g. `HOST_NAME`).
    pub agent_env: Vec<(String, String)>,
    /// Extra command-line arguments for the agent (e.g. `--stop-grace 2`).
    pub agent_args: Vec<String>,
    agent: Option<Proc>,
    /// One entry per agent run.
    agent_logs: Vec<Lines>,
    cid: u64,
    // Dropped in this order, after `Drop::drop` killed the agent.
    cleanup: InstanceCleanup,
    netmon: Option<Netmon>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Cloud + netmon, no agent yet (so a test can prepare the state dir first); runtimes run
    /// [`IMAGE`].
    pub async fn prepare() -> Self {
        Self::prepare_with_image(IMAGE).await
    }

    /// Like [`World::prepare`], runtimes running `image` (a loopback-registry name).
    pub async fn prepare_with_image(image: &str) -> Self {
        require_engine(image);
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_id = unique("agent-");
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
        let cleanup = InstanceCleanup {
            instance: state_dir.to_string_lossy().into_owned(),
        };
        let netmon = Netmon::start(&state_dir.join("netmon.sock")).await;
        World {
            pki,
            cloud,
            state_dir,
            runtime_image: image.to_owned(),
            agent_env: Vec::new(),
            agent_args: Vec::new(),
            agent: None,
            agent_logs: Vec::new(),
            cid: 1000,
            cleanup,
            netmon: Some(netmon),
            _dir: dir,
        }
    }

    /// Cloud + netmon + a connected agent whose boot reconcile is done; runtimes run [`IMAGE`].
    pub async fn start() -> Self {
        Self::start_with_image(IMAGE).await
    }

    /// Like [`World::start`], runtimes running `image` (a loopback-registry name).
    pub async fn start_with_image(image: &str) -> Self {
        let mut w = Self::prepare_with_image(image).await;
        w.start_agent().await;
        // Commands wait for nothing of the boot reconcile; tests that do not test it start after
        // it, so its clean-up never meets their first create.
        w.wait_boot_reconcile().await;
        w
    }

    /// Kills the netmon sidecar (its socket goes with it).
    pub fn stop_netmon(&mut self) {
        self.netmon = None;
    }

    /// Stops the netmon sidecar cleanly (SIGTERM) and returns its exit status.
    pub fn terminate_netmon(&mut self) -> Option<std::process::ExitStatus> {
        let mut netmon = self.netmon.take()?;
        netmon.terminate()
    }

    /// Starts netmon again on the same socket.
    pub async fn start_netmon(&mut self) {
        self.netmon = Some(Netmon::start(&self.state_dir.join("netmon.sock")).await);
    }

    /// The instance label value of this world's agent (its state dir).
    pub fn instance(&self) -> String {
        self.cleanup.instance.clone()
    }

    /// `edge.autonomy.instance=<state dir>`.
    pub fn instance_label(&self) -> String {
        self.cleanup.label()
    }

    /// Starts the agent and waits until it is connected to the cloud.
    pub async fn start_agent(&mut self) {
        // A benchmark may run another build of the agent (e.g. release: scripts/bench-upload.sh).
        let binary = std::env::var_os("ORCH_BENCH_AGENT")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_orchestrator-agent").into());
        let mut cmd = Command::new(binary);
        cmd.arg("--server")
            .arg(self.cloud.url())
            .arg("--ca-file")
            .arg(&self.pki.ca_cert)
            .arg("--mtls-dir")
            .arg(&self.pki.agent_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--runtime-image")
            .arg(&self.runtime_image)
            .args(["--log-level", "debug"])
            .env_remove("HOST_NAME")
            // DOCKER_HOST passes through: the test command runs these tests once per engine.
            .env_remove("RUST_LOG")
            .env("HOSTNAME", "runtime-test-host");
        cmd.args(&self.agent_args);
        for (k, v) in &self.agent_env {
            cmd.env(k, v);
        }
        let p = Proc::spawn(cmd);
        self.agent_logs.push(p.out.clone());
        self.agent = Some(p);
        if let Err(e) = self
            .cloud
            .wait_for_agent(Some(&self.pki.agent_id), SLOW)
            .await
        {
            panic!("agent did not connect: {e}\n{}", self.logs());
        }
    }

    /// Waits until the current agent run logged the end of its boot reconcile.
    pub async fn wait_boot_reconcile(&self) {
        let out = self.agent_logs.last().cloned().unwrap_or_default();
        eventually(SLOW, "the boot reconcile", || {
            out.contains("reconcile done").then_some(())
        })
        .await;
    }

    /// SIGKILLs the agent (no clean-up of its own) and waits until the cloud saw it go.
    pub async fn kill_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill();
        }
        let cloud = &self.cloud;
        let id = &self.pki.agent_id;
        eventually(SLOW, "the cloud to see the killed agent go", || {
            (!cloud.connected_agents().contains(id)).then_some(())
        })
        .await;
    }

    /// The process id of the running agent.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Proc::id)
    }

    /// Everything the agent printed so far (all its runs).
    pub fn logs(&self) -> String {
        self.agent_logs
            .iter()
            .map(Lines::text)
            .collect::<Vec<_>>()
            .join("\n--- agent restarted ---\n")
    }

    /// Emits `topic` with `args` verbatim and returns the ack's arguments.
    pub async fn emit(&self, topic: &str, args: Vec<Value>, timeout: Duration) -> Vec<Value> {
        match self
            .cloud
            .emit_with_ack(Some(&self.pki.agent_id), topic, args, timeout)
            .await
        {
            Ok(v) => v,
            Err(e) => panic!("{topic}: no ack: {e}\n{}", self.logs()),
        }
    }

    /// Sends `topic` with one object argument (a fresh numeric `correlation_id` plus `action` and
    /// `requested_at` are added when missing, as the cloud sends them) and returns the first ack
    /// value.
    pub async fn call(&mut self, topic: &str, mut payload: Value) -> Value {
        self.cid += 1;
        let obj = payload.as_object_mut().expect("payload is an object");
        obj.entry("correlation_id").or_insert(json!(self.cid));
        obj.entry("action").or_insert(json!(topic));
        obj.entry("requested_at")
            .or_insert(json!("2026-11-22T14:00:00Z"));
        self.emit(topic, vec![payload], SLOW)
            .await
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }

    /// Like [`World::call`], in the background: the ack (if one comes within [`SLOW`]) is the task's
    /// result. For requests that race with a kill of the agent.
    pub fn send(
        &mut self,
        topic: &str,
        mut payload: Value,
    ) -> tokio::task::JoinHandle<Option<Value>> {
        self.cid += 1;
        let obj = payload.as_object_mut().expect("payload is an object");
        obj.entry("correlation_id").or_insert(json!(self.cid));
        obj.entry("action").or_insert(json!(topic));
        obj.entry("requested_at")
            .or_insert(json!("2026-11-22T14:00:00Z"));
        let cloud = self.cloud.clone();
        let agent = self.pki.agent_id.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            cloud
                .emit_with_ack(Some(&agent), &topic, vec![payload], SLOW)
                .await
                .ok()
                .and_then(|v| v.into_iter().next())
        })
    }

    /// `get_device_status` of `device`.
    pub async fn status(&mut self, device: &str) -> Value {
        self.call("get_device_status", json!({"device_id": device}))
            .await
    }

    /// Polls `get_device_status` until `done` holds; returns that status.
    pub async fn wait_status(&mut self, device: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + SLOW;
        loop {
            let s = self.status(device).await;
            if done(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
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

    /// Creates a runtime through `create_new_runtime` and waits until it runs.
    pub async fn create_runtime(&mut self, name: &str, vnics: Value) {
        let ack = self
            .call(
                "create_new_runtime",
                json!({"container_name": name, "vnic_configs": vnics}),
            )
            .await;
        assert_eq!(ack["status"], "creating", "{ack}\n{}", self.logs());
        let s = self
            .wait_status(name, |s| {
                s["status"] == "error" || (s["status"] == "success" && s["is_running"] == true)
            })
            .await;
        assert_eq!(
            s["status"],
            "success",
            "runtime {name} did not come up: {s}\n{}",
            self.logs()
        );
    }

    /// Cloud events from now on.
    pub fn events(&self) -> Receiver<CloudEvent> {
        self.cloud.subscribe()
    }

    /// Reads a state file under the state dir.
    pub fn read_state(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join(rel)).ok()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // First the agent, so it makes nothing more while its objects are removed.
        if let Some(mut a) = self.agent.take() {
            a.kill();
        }
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
