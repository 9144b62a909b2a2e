//! The debugger bridge end to end: the real agent binary connected to devcloud creates a runtime
//! (busybox), and a test runtime (`tests/python/debug_runtime.py`: `POST /api/login` and a
//! python-socketio `/api/debug` namespace over TLS on 8443, as the OpenPLC runtime serves them)
//! runs inside that container's network namespace, so the agent reaches it at the runtime's
//! internal address exactly as in production. The cloud sends `run_command` with `api: "debug"`.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Lines, Veth, World, inspect, python, static_vnic, unique};

/// The test runtime, started in the network namespace of the container `name`.
struct RuntimePeer {
    child: Child,
    stdin: ChildStdin,
    out: Lines,
    _dir: tempfile::TempDir,
}

impl RuntimePeer {
    fn start(container: &str) -> Self {
        let pid = inspect(container).expect("container")["State"]["Pid"]
            .as_u64()
            .expect("pid");
        assert!(pid > 0, "{container} is not running");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::generate_simple_self_signed(vec!["runtime".to_owned()]).expect("cert");
        let (cert, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, key.cert.pem()).expect("cert");
        std::fs::write(&key_file, key.signing_key.serialize_pem()).expect("key");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/debug_runtime.py");
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg(python())
            .args([script, "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the runtime peer");
        let out = Lines::default();
        out.spawn_reader(child.stdout.take().expect("stdout"));
        out.spawn_reader(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take().expect("stdin");
        let peer = Self {
            child,
            stdin,
            out,
            _dir: dir,
        };
        peer.expect(0, "\"ready\"", Duration::from_secs(30));
        peer
    }

    fn send(&mut self, cmd: Value) {
        let from = self.out.len();
        writeln!(self.stdin, "{cmd}").expect("peer stdin");
        self.expect(from, "\"done\"", Duration::from_secs(10));
    }

    /// The index of the first line from `from` on containing `needle`.
    fn expect(&self, from: usize, needle: &str, timeout: Duration) -> usize {
        self.out
            .wait_from(from, timeout, |l| l.contains(needle))
            .unwrap_or_else(|| panic!("the runtime peer never said {needle}:\n{}", self.out.text()))
            .0
    }

    /// The hex commands received from line `from` on.
    fn commands_from(&self, from: usize) -> Vec<String> {
        self.out
            .snapshot()
            .iter()
            .skip(from)
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["debug_command"].as_str().map(str::to_owned))
            .collect()
    }

    fn count_from(&self, from: usize, needle: &str) -> usize {
        self.out.count_from(from, |l| l.contains(needle))
    }
}

impl Drop for RuntimePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn world_with_runtime(agent_args: &[&str]) -> (World, String, Veth) {
    let veth = Veth::new();
    let mut world = World::prepare().await;
    world.agent_args = agent_args.iter().map(|a| (*a).to_owned()).collect();
    world.start_agent().await;
    world.wait_boot_reconcile().await;
    let name = unique("dbg-");
    world
        .create_runtime(&name, json!([static_vnic(&veth, 40, None)]))
        .await;
    (world, name, veth)
}

/// `run_command` with `api: "debug"` and `data`; returns the whole answer.
async fn debug_call(world: &mut World, device: &str, data: Value) -> Value {
    world
        .call(
            "run_command",
            json!({"device_id": device, "method": "POST", "api": "debug", "data": data}),
        )
        .await
}

/// The `debug_response` of a debug message, checking the envelope.
async fn debug(world: &mut World, device: &str, data: Value) -> Value {
    let answer = debug_call(world, device, data).await;
    assert_eq!(answer["action"], "run_command", "{answer}");
    assert!(answer["correlation_id"].is_number(), "{answer}");
    assert_eq!(answer["status"], "success", "{answer}");
    answer["debug_response"].clone()
}

fn error(text: &str) -> Value {
    json!({"type": "debug_error", "error": text})
}

const NO_SESSION: &str = "No active debug session. Send debug_start first.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_debug_message_round_trips_and_the_session_closes_before_a_delete() {
    // A short grace: the test image's sleep ignores SIGTERM.
    let (mut world, name, _veth) = world_with_runtime(&["--stop-grace", "1"]).await;

    // Refused before anything reaches a runtime, each answered with its correlation id.
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error(NO_SESSION)
    );
    let answer = world
        .call(
            "run_command",
            json!({"device_id": name, "method": "POST", "api": "debug", "data": [1]}),
        )
        .await;
    assert_eq!(answer["status"], "error", "{answer}");
    assert!(answer["correlation_id"].is_number(), "{answer}");
    assert_eq!(
        answer["debug_response"],
        error("Invalid field type: Value must be an object. (field: data)")
    );
    let answer = world
        .call(
            "run_command",
            json!({"device_id": name, "method": "POST", "api": "debug"}),
        )
        .await;
    assert_eq!(
        answer["debug_response"],
        error("Unknown debug message type: "),
        "{answer}"
    );
    for (data, text) in [
        (
            json!({"type": "debug_get_list", "indexes": []}),
            "indexes must not be empty",
        ),
        (
            json!({"type": "debug_get_list", "indexes": vec![0; 257]}),
            "indexes must not exceed 256 entries",
        ),
        (
            json!({"type": "debug_get_list", "indexes": [70000]}),
            "Invalid index: must be an integer 0\u{2013}65535, got 70000",
        ),
        (
            json!({"type": "debug_get_list", "indexes": [true]}),
            "Invalid index: must be an integer 0\u{2013}65535, got True",
        ),
        (
            json!({"type": "debug_set", "index": "5"}),
            "Invalid index: must be an integer 0\u{2013}65535, got '5'",
        ),
        (
            json!({"type": "debug_set", "index": 5, "value": "XY"}),
            "Invalid value hex string: 'XY' (non-hexadecimal number found in fromhex() arg at position 0)",
        ),
        (
            json!({"type": "debug_bogus"}),
            "Unknown debug message type: debug_bogus",
        ),
    ] {
        assert_eq!(debug(&mut world, &name, data).await, error(text));
    }
    assert_eq!(
        debug(
            &mut world,
            "no-such-runtime",
            json!({"type": "debug_start"})
        )
        .await,
        error("Device no-such-runtime not found")
    );

    let mut peer = RuntimePeer::start(&name);

    // Login failures.
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_start", "password": "wrong"})
        )
        .await,
        error("Authentication failed: HTTP 401")
    );
    peer.send(json!({"login_mode": "no_token"}));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        error("No access_token in login response")
    );
    peer.send(json!({"login_mode": "ok"}));
    peer.send(json!({"refuse": true}));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        error("Connection rejected by server")
    );
    peer.send(json!({"refuse": false}));

    // The session. The runtime sends `connected` before its CONNECT reply.
    let from = peer.out.len();
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        json!({"type": "debug_connected"}),
        "{}",
        world.logs()
    );
    assert_eq!(peer.count_from(from, "\"token_ok\": true"), 1);
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_get_md5"})).await,
        json!({"type": "debug_md5_response", "md5": "abc"})
    );
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        json!({"type": "debug_info_response", "variable_count": 16})
    );
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_get_list", "indexes": [0, 5, 10]})
        )
        .await,
        json!({"type": "debug_values_response", "tick": 66, "data": "00 05 0A"})
    );
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_set", "index": 5, "value": "2A 00"})
        )
        .await,
        json!({"type": "debug_set_response", "success": true})
    );
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_get_list", "indexes": [5]})
        )
        .await,
        json!({"type": "debug_values_response", "tick": 67, "data": "2A 00"})
    );
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_set", "index": 5, "force": false})
        )
        .await,
        json!({"type": "debug_set_response", "success": true})
    );
    assert_eq!(
        debug(
            &mut world,
            &name,
            json!({"type": "debug_get_list", "indexes": [65535]})
        )
        .await,
        error("ERROR_OUT_OF_BOUNDS")
    );
    assert_eq!(
        peer.commands_from(from),
        [
            "45 DE AD 00 00",
            "41",
            "44 00 03 00 00 00 05 00 0A",
            "42 00 05 01 00 02 2A 00",
            "44 00 01 00 05",
            "42 00 05 00 00 01 00",
            "44 00 01 FF FF",
        ],
        "the exact commands of upstream-head §3.6"
    );

    // A reply later than 5 s times out, and is never taken for the next command's.
    peer.send(json!({"delay": 6}));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error("Timeout: No debug_response received within 5.0s for command: 41")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_get_md5"})).await,
        json!({"type": "debug_md5_response", "md5": "abc"})
    );

    // The runtime drops the socket: the next command reconnects.
    let from = peer.out.len();
    peer.send(json!({"drop": true}));
    peer.expect(from, "\"disconnect\"", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        json!({"type": "debug_info_response", "variable_count": 16})
    );

    // The token expires (the runtime checks it on every command): one new login, then the answer.
    let from = peer.out.len();
    peer.send(json!({"expire": true}));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        json!({"type": "debug_info_response", "variable_count": 16})
    );
    assert_eq!(peer.count_from(from, "\"login\""), 1, "{}", peer.out.text());

    // Stop: the runtime sees the goodbye; later commands need a new start.
    let from = peer.out.len();
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_stop"})).await,
        json!({"type": "debug_disconnected"})
    );
    peer.expect(from, "\"disconnect\"", Duration::from_secs(5));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error(NO_SESSION)
    );
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_stop"})).await,
        json!({"type": "debug_disconnected"})
    );

    // Restart: the session says goodbye before the runtime goes down (its socket would otherwise
    // die silently with the container's network).
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        json!({"type": "debug_connected"})
    );
    let pid = |name: &str| inspect(name).expect("container")["State"]["Pid"].as_u64();
    let before = pid(&name);
    let from = peer.out.len();
    let ack = world
        .call("restart_device", json!({"device_id": name}))
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    peer.expect(from, "\"disconnect\"", Duration::from_secs(10));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error(NO_SESSION)
    );
    // The restarted container has a new network namespace: the test runtime moves there.
    drop(peer);
    test_support::wait::eventually(Duration::from_secs(60), "the restarted runtime", || {
        pid(&name).filter(|p| *p > 0 && Some(*p) != before)
    })
    .await;
    let peer = RuntimePeer::start(&name);

    // Delete: the session says goodbye before the container goes (the idle close is 5 min here).
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        json!({"type": "debug_connected"})
    );
    let from = peer.out.len();
    let ack = world
        .call("delete_device", json!({"device_id": name}))
        .await;
    assert_ne!(ack["status"], "error", "{ack}");
    peer.expect(from, "\"disconnect\"", Duration::from_secs(15));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error(NO_SESSION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_debug_session_is_closed() {
    let (mut world, name, _veth) = world_with_runtime(&["--debug-idle", "2s"]).await;
    let peer = RuntimePeer::start(&name);

    // Idle: closed (the runtime sees the goodbye) after 2 s without a command.
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_start"})).await,
        json!({"type": "debug_connected"}),
        "{}",
        world.logs()
    );
    let started = std::time::Instant::now();
    let from = peer.out.len();
    // Commands keep it open.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            debug(&mut world, &name, json!({"type": "debug_info"})).await,
            json!({"type": "debug_info_response", "variable_count": 16})
        );
    }
    assert_eq!(peer.count_from(from, "\"disconnect\""), 0);
    peer.expect(from, "\"disconnect\"", Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(
        debug(&mut world, &name, json!({"type": "debug_info"})).await,
        error(NO_SESSION)
    );
}
