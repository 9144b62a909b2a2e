//! The cloud link's peers: a dev PKI (good and rogue), the real agent binary and the
//! python-socketio test server, each owned by a guard that kills its process on drop.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use devcloud::pki::{self, PkiOptions, PkiPaths};
use serde_json::Value;

use test_support::{Lines, Proc, python};

/// The CN of the agent's client certificate in every test PKI.
pub const AGENT_ID: &str = "cloud-test-agent-7";

/// A dev PKI and an independent rogue one, in a temporary directory.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub good: PkiPaths,
    pub rogue: PkiPaths,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = pki::generate(
            &dir.path().join("good"),
            &PkiOptions {
                agent_id: AGENT_ID.into(),
                ..PkiOptions::default()
            },
        )
        .expect("dev PKI");
        let rogue = pki::generate(
            &dir.path().join("rogue"),
            &PkiOptions {
                agent_id: AGENT_ID.into(),
                ..PkiOptions::rogue()
            },
        )
        .expect("rogue PKI");
        Self {
            _dir: dir,
            good,
            rogue,
        }
    }
}

/// The real `orchestrator-agent` binary (it logs to stderr only).
pub struct Agent {
    proc: Proc,
    pub state_dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent against `server` (https URL) with the given trust and identity.
    pub fn start(server: &str, ca_file: &Path, mtls_dir: &Path) -> Self {
        let state_dir = tempfile::tempdir().expect("state dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"));
        cmd.args([
            "--server",
            server,
            "--log-level",
            "info",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
        ])
        .arg("--ca-file")
        .arg(ca_file)
        .arg("--mtls-dir")
        .arg(mtls_dir)
        .arg("--state-dir")
        .arg(state_dir.path())
        .env_remove("RUST_LOG");
        Self {
            proc: Proc::spawn(cmd),
            state_dir,
        }
    }

    /// Waits for a stderr line containing `needle`; panics with the whole log when it does not come.
    pub fn expect_log(&self, needle: &str, timeout: Duration) -> usize {
        self.expect_log_from(0, needle, timeout)
    }

    pub fn expect_log_from(&self, from: usize, needle: &str, timeout: Duration) -> usize {
        match self
            .proc
            .out
            .wait_from(from, timeout, |l| l.contains(needle))
        {
            Some((i, _)) => i,
            None => panic!(
                "agent never logged {needle:?} within {timeout:?}; its stderr:\n{}",
                self.log()
            ),
        }
    }

    pub fn log(&self) -> String {
        self.proc.out.text()
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.terminate(timeout)
    }
}

/// The python-socketio server of tests/python/sio_server.py.
pub struct PyServer {
    child: Child,
    stdin: ChildStdin,
    pub out: Lines,
    stderr: Lines,
    pub port: u16,
}

impl PyServer {
    /// Starts the server with the PKI's server certificate, requiring client certificates from its
    /// CA. `port` 0 picks a free one. Ping cadence in seconds.
    pub fn start(pki: &PkiPaths, port: u16, ping_interval: f64, ping_timeout: f64) -> Self {
        Self::start_with(pki, port, ping_interval, ping_timeout, &[])
    }

    /// Like [`PyServer::start`] with extra arguments for the script (e.g. `--refuse MESSAGE`).
    pub fn start_with(
        pki: &PkiPaths,
        port: u16,
        ping_interval: f64,
        ping_timeout: f64,
        extra: &[&str],
    ) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sio_server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg("--cert")
            .arg(&pki.server_cert)
            .arg("--key")
            .arg(&pki.server_key)
            .arg("--ca")
            .arg(&pki.ca_cert)
            .args(["--port", &port.to_string()])
            .args(["--ping-interval", &ping_interval.to_string()])
            .args(["--ping-timeout", &ping_timeout.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the python test server");
        let out = Lines::default();
        out.spawn_reader(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::default();
        stderr.spawn_reader(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut server = Self {
            child,
            stdin,
            out,
            stderr,
            port: 0,
        };
        let ready = server.expect(0, Duration::from_secs(30), "ready", |v| {
            v.get("ready").is_some()
        });
        server.port = ready["ready"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("port");
        server
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn send(&mut self, cmd: Value) {
        let sent = writeln!(self.stdin, "{cmd}").and_then(|()| self.stdin.flush());
        if let Err(e) = sent {
            std::thread::sleep(Duration::from_millis(300));
            panic!(
                "python server gone ({e})\nstdout:\n{}\nstderr:\n{}",
                self.out.snapshot().join("\n"),
                self.stderr.snapshot().join("\n")
            );
        }
    }

    /// The first JSON line at index ≥ `from` matching `pred`; panics (with the output) on timeout.
    pub fn expect(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = self.out.wait_from(from, timeout, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v))
        });
        match found {
            Some((_, line)) => serde_json::from_str(&line).expect("JSON line"),
            None => panic!(
                "python server: no {what} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.out.snapshot().join("\n"),
                self.stderr.snapshot().join("\n")
            ),
        }
    }

    /// Emits `topic` with `args`, asking for an ack; returns the ack's arguments.
    pub fn call(&mut self, topic: &str, args: Vec<Value>, id: u64) -> Vec<Value> {
        self.call_padded(topic, args, id, 0)
    }

    /// Like [`PyServer::call`], with a `pad` field of `pad` characters added to the first argument.
    pub fn call_padded(
        &mut self,
        topic: &str,
        args: Vec<Value>,
        id: u64,
        pad: usize,
    ) -> Vec<Value> {
        let from = self.out.len();
        self.send(serde_json::json!({"emit": topic, "args": args, "ack": true, "timeout": 10, "id": id, "pad": pad}));
        let v = self.expect(
            from,
            Duration::from_secs(15),
            &format!("ack {id} for {topic}"),
            |v| {
                v.get("id") == Some(&serde_json::json!(id))
                    && (v.get("ack").is_some() || v.get("error").is_some())
            },
        );
        match v.get("ack") {
            Some(Value::Array(a)) => a.clone(),
            _ => panic!("{topic}: no ack: {v}"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Checks the heartbeat payload keys and types (upstream §4.1).
pub fn assert_heartbeat(payload: &Value) {
    let obj = payload
        .as_object()
        .unwrap_or_else(|| panic!("heartbeat is not an object: {payload}"));
    assert_eq!(
        obj.get("agent_id"),
        Some(&Value::from(AGENT_ID)),
        "{payload}"
    );
    assert_eq!(obj.get("status"), Some(&Value::from("active")), "{payload}");
    for key in [
        "cpu_usage",
        "memory_usage",
        "memory_total",
        "disk_usage",
        "disk_total",
        "uptime",
    ] {
        assert!(
            obj.get(key).is_some_and(Value::is_number),
            "{key} missing or not a number: {payload}"
        );
    }
    let ts = obj
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no timestamp: {payload}"));
    assert!(
        ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T'),
        "timestamp {ts:?} is not ISO 8601"
    );
}

/// Asserts an error ack for `action` whose message contains `needle`.
pub fn assert_error_ack(ack: &[Value], action: &str, needle: &str) {
    let first = ack
        .first()
        .unwrap_or_else(|| panic!("empty ack for {action}"));
    assert_eq!(
        first.get("status"),
        Some(&Value::from("error")),
        "{action}: {first}"
    );
    assert_eq!(
        first.get("action"),
        Some(&Value::from(action)),
        "{action}: {first}"
    );
    let err = first
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        err.contains(needle),
        "{action}: error {err:?} does not mention {needle:?}"
    );
}
