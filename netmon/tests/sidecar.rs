//! The `autonomy-netmon` binary against the real kernel, run inside network namespaces the
//! tests create (veth pairs only, addresses in 10.202.0.0/16 and, for proxy-ARP bridges,
//! 10.214.1.0/24; no traffic leaves them). Its socket lives in a temp dir; tests talk to it as
//! the agent would.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use test_support::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_autonomy-netmon");
/// Debounce used by most tests; waits below are many times longer (2-core, loaded machine).
const DEBOUNCE: &str = "300ms";
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// No further event within this long counts as "no more events".
const QUIET: Duration = Duration::from_secs(2);

/// The sidecar running in a namespace; killed on drop. Owns the temp dir of its socket.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(ns: &Netns, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run").join("netmon.sock");
        Self::start_at(ns, dir, socket, extra)
    }

    fn start_at(ns: &Netns, dir: tempfile::TempDir, socket: PathBuf, extra: &[&str]) -> Self {
        let log = std::fs::File::create(dir.path().join("netmon.log")).expect("log file");
        let child = spawn(ns, &socket, extra, Stdio::from(log));
        let mut d = Daemon {
            child: Some(child),
            socket,
            dir,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + EVENT_WAIT;
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("netmon exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("netmon did not serve {} in time", self.socket.display());
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.socket).expect("connect");
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `sig` and waits for the exit.
    fn stop(&mut self, sig: Signal) -> ExitStatus {
        kill(self.pid(), sig).expect("kill");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "netmon did not exit after {sig}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The daemon's log only matters when the test failed.
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("netmon.log"))
        {
            eprintln!("--- netmon log ---\n{log}");
        }
    }
}

fn spawn(ns: &Netns, socket: &Path, extra: &[&str], stderr: Stdio) -> Child {
    let debounce: &[&str] = if extra.contains(&"--debounce") {
        &[]
    } else {
        &["--debounce", DEBOUNCE]
    };
    Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "--socket"])
        .arg(socket)
        .args(debounce)
        .args(["--log-level", "debug"])
        .args(extra)
        .stderr(stderr)
        .spawn()
        .expect("spawn netmon")
}

fn health(socket: &Path) -> bool {
    Command::new(BIN)
        .args(["health", "--socket"])
        .arg(socket)
        .stderr(Stdio::null())
        .status()
        .expect("run health")
        .success()
}

struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// The next line within `wait`, `None` on timeout.
    fn next(&mut self, wait: Duration) -> Option<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .expect("set timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("netmon closed the connection"),
            Ok(_) => Some(serde_json::from_str(&line).expect("each line is JSON")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The greeting: `network_discovery` (its interfaces returned), then `device_discovery`.
    fn discovery(&mut self) -> Vec<Value> {
        let msg = self.next(EVENT_WAIT).expect("discovery on connect");
        assert_eq!(msg["type"], "network_discovery", "{msg}");
        keys_are(&msg["data"], &["interfaces", "timestamp"]);
        let devices = self.next(EVENT_WAIT).expect("device discovery on connect");
        assert_eq!(devices["type"], "device_discovery", "{devices}");
        keys_are(&devices["data"], &["devices", "timestamp"]);
        msg["data"]["interfaces"]
            .as_array()
            .expect("interfaces")
            .clone()
    }

    /// Every `network_change` data until none arrives for [`QUIET`] (waiting up to
    /// [`EVENT_WAIT`] for the first).
    fn changes(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut wait = EVENT_WAIT;
        while let Some(msg) = self.next(wait) {
            assert_eq!(msg["type"], "network_change", "{msg}");
            out.push(msg["data"].clone());
            wait = QUIET;
        }
        out
    }
}

fn keys_are(v: &Value, keys: &[&str]) {
    let got: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("object expected: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(got, keys, "{v}");
}

fn names(infos: &[Value]) -> BTreeSet<String> {
    infos
        .iter()
        .map(|i| i["interface"].as_str().expect("interface").to_owned())
        .collect()
}

fn subnets(info: &Value) -> Vec<String> {
    info["ipv4_addresses"]
        .as_array()
        .expect("ipv4_addresses")
        .iter()
        .map(|a| a["subnet"].as_str().expect("subnet").to_owned())
        .collect()
}

// HEAD's keys in HEAD's order (upstream-head §4.4), then ours: `status` on down reports and the
// MAC (HEAD sends none).
const INFO_KEYS: [&str; 8] = [
    "interface",
    "index",
    "operstate",
    "type",
    "ipv4_addresses",
    "gateway",
    "timestamp",
    "mac_address",
];
const DOWN_KEYS: [&str; 9] = [
    "interface",
    "index",
    "operstate",
    "type",
    "ipv4_addresses",
    "gateway",
    "timestamp",
    "status",
    "mac_address",
];
const REMOVED_KEYS: [&str; 7] = [
    "interface",
    "index",
    "operstate",
    "ipv4_addresses",
    "gateway",
    "timestamp",
    "status",
];

#[test]
fn discovery_on_connect_lists_interfaces_in_upstream_shape_without_filtered_ones() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.10.5/24", "dev", "nm0"]);
    ns.ip(&["addr", "add", "10.202.12.1/24", "dev", "nm1"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.202.10.254",
        "dev",
        "nm0",
    ]);
    // Filtered by name: upstream's rules, Docker bridges, and an --ignore pattern.
    ns.veth("vethq0", "br-0123456789ab");
    ns.ip(&["addr", "add", "10.202.11.1/24", "dev", "vethq0"]);
    ns.ip(&["addr", "add", "10.202.11.2/24", "dev", "br-0123456789ab"]);
    // A host bridge that merely starts with `br-` is a port (OpenWrt's `br-lan`).
    ns.veth("br-lan", "skip2");
    ns.ip(&["addr", "add", "10.202.14.1/24", "dev", "br-lan"]);
    ns.veth("skip0", "nm3");
    ns.ip(&["addr", "add", "10.202.13.1/24", "dev", "skip0"]);
    let daemon = Daemon::start(&ns, &["--ignore", "skip*"]);

    let mode = std::fs::metadata(&daemon.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    let interfaces = daemon.connect().discovery();
    assert_eq!(
        names(&interfaces),
        BTreeSet::from(["br-lan".into(), "nm0".into(), "nm1".into(), "nm3".into()])
    );
    // A link without an address is listed too, as down: the host has it.
    let nm3 = interfaces
        .iter()
        .find(|i| i["interface"] == "nm3")
        .expect("nm3");
    keys_are(nm3, &DOWN_KEYS);
    assert_eq!(nm3["status"], "down");
    assert_eq!(nm3["operstate"], "UP");
    assert_eq!(nm3["ipv4_addresses"], Value::Array(vec![]));
    let nm0 = interfaces
        .iter()
        .find(|i| i["interface"] == "nm0")
        .expect("nm0");
    keys_are(nm0, &INFO_KEYS);
    assert_eq!(nm0["operstate"], "UP");
    assert_eq!(nm0["gateway"], "10.202.10.254");
    assert!(nm0["index"].as_u64().is_some());
    let addr = &nm0["ipv4_addresses"][0];
    keys_are(addr, &["address", "prefixlen", "subnet", "network_address"]);
    assert_eq!(addr["address"], "10.202.10.5");
    assert_eq!(addr["prefixlen"], 24);
    assert_eq!(addr["subnet"], "10.202.10.0/24");
    assert_eq!(addr["network_address"], "10.202.10.0");
    let ts = nm0["timestamp"].as_str().expect("timestamp");
    assert!(
        ts.ends_with("+00:00") && ts.len() == "2025-11-20T20:30:45.123456+00:00".len(),
        "{ts}"
    );
    let nm1 = interfaces
        .iter()
        .find(|i| i["interface"] == "nm1")
        .expect("nm1");
    assert_eq!(nm1["gateway"], Value::Null);
}

#[test]
fn address_change_yields_one_event_after_the_debounce_with_new_subnet_and_gateway() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.20.5/24", "dev", "nm0"]);
    let daemon = Daemon::start(&ns, &["--debounce", "1s"]);
    let mut client = daemon.connect();
    client.discovery();

    ns.ip_batch(&[
        "addr del 10.202.20.5/24 dev nm0".into(),
        "addr add 10.202.21.5/24 dev nm0".into(),
        "route add default via 10.202.21.1 dev nm0".into(),
    ]);
    let changes = client.changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    keys_are(c, &INFO_KEYS);
    assert_eq!(c["interface"], "nm0");
    assert_eq!(subnets(c), ["10.202.21.0/24"]);
    assert_eq!(c["gateway"], "10.202.21.1");
}

#[test]
fn fifty_changes_inside_the_window_yield_exactly_one_event_per_interface() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    // A window far longer than the burst, even if `ip` gets descheduled on a loaded machine.
    let daemon = Daemon::start(&ns, &["--debounce", "2s"]);
    let mut client = daemon.connect();
    let discovered = client.discovery();
    assert_eq!(
        names(&discovered),
        BTreeSet::from(["nm0".into(), "nm1".into()])
    );
    assert!(discovered.iter().all(|i| i["status"] == "down"));

    let mut batch = Vec::new();
    for i in 1..=25 {
        batch.push(format!("addr add 10.202.30.{i}/24 dev nm0"));
        batch.push(format!("addr add 10.202.31.{i}/24 dev nm1"));
    }
    ns.ip_batch(&batch);
    let changes = client.changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        names(&changes),
        BTreeSet::from(["nm0".into(), "nm1".into()])
    );
    for c in &changes {
        assert_eq!(
            c["ipv4_addresses"].as_array().map(Vec::len),
            Some(25),
            "{c}"
        );
    }
}

#[test]
fn a_gateway_change_alone_yields_an_event() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.40.5/24", "dev", "nm0"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.202.40.254",
        "dev",
        "nm0",
    ]);
    let daemon = Daemon::start(&ns, &[]);
    let mut client = daemon.connect();
    client.discovery();

    ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "10.202.40.253",
        "dev",
        "nm0",
    ]);
    let changes = client.changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["interface"], "nm0");
    assert_eq!(changes[0]["gateway"], "10.202.40.253");
    assert_eq!(subnets(&changes[0]), ["10.202.40.0/24"]);
}

#[test]
fn losing_the_last_address_link_down_and_removal_yield_empty_address_events() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.veth("nm2", "nm3");
    ns.ip(&["addr", "add", "10.202.50.5/24", "dev", "nm0"]);
    ns.ip(&["addr", "add", "10.202.51.5/24", "dev", "nm1"]);
    ns.ip(&["addr", "add", "10.202.52.5/24", "dev", "nm2"]);
    let daemon = Daemon::start(&ns, &[]);
    let mut client = daemon.connect();
    // nm3 (no address) is listed as down.
    assert_eq!(client.discovery().len(), 4);

    ns.ip(&["addr", "del", "10.202.50.5/24", "dev", "nm0"]);
    let changes = client.changes();
    assert_eq!(
        names(&changes),
        BTreeSet::from(["nm0".into()]),
        "{changes:?}"
    );
    keys_are(&changes[0], &DOWN_KEYS);
    assert_eq!(changes[0]["ipv4_addresses"], Value::Array(vec![]));
    assert_eq!(changes[0]["status"], "down");

    // nm1's peer nm0, already reported down, only changes operstate: not reported again.
    ns.ip(&["link", "set", "nm1", "down"]);
    let changes = client.changes();
    assert_eq!(
        names(&changes),
        BTreeSet::from(["nm1".into()]),
        "{changes:?}"
    );
    assert_eq!(changes[0]["ipv4_addresses"], Value::Array(vec![]));
    assert_eq!(changes[0]["status"], "down");
    assert_eq!(changes[0]["gateway"], Value::Null);

    // Deleting a veth deletes its peer: both are gone, the unusable nm3 as well.
    ns.ip(&["link", "del", "nm2"]);
    let changes = client.changes();
    assert_eq!(
        names(&changes),
        BTreeSet::from(["nm2".into(), "nm3".into()]),
        "{changes:?}"
    );
    for c in &changes {
        keys_are(c, &REMOVED_KEYS);
        assert_eq!(c["ipv4_addresses"], Value::Array(vec![]));
        assert_eq!(c["status"], "removed");
    }
}

#[test]
fn filtered_interfaces_never_appear_in_changes() {
    let ns = Netns::new("nmt");
    let daemon = Daemon::start(&ns, &["--ignore", "skip*"]);
    let mut client = daemon.connect();
    assert!(client.discovery().is_empty());
    ns.veth("vethz0", "br-00000000abcd");
    ns.veth("skip1", "nm9");
    ns.ip_batch(&[
        "addr add 10.202.60.1/24 dev vethz0".into(),
        "addr add 10.202.60.2/24 dev br-00000000abcd".into(),
        "addr add 10.202.61.1/24 dev skip1".into(),
        "addr add 10.202.62.1/24 dev nm9".into(),
        "addr add 127.0.0.2/8 dev lo".into(),
    ]);
    let changes = client.changes();
    assert_eq!(
        names(&changes),
        BTreeSet::from(["nm9".into()]),
        "{changes:?}"
    );
}

#[test]
fn two_clients_both_receive_and_one_that_never_reads_stalls_nobody() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.70.5/24", "dev", "nm0"]);
    let daemon = Daemon::start(&ns, &[]);
    let mut a = daemon.connect();
    let _stuck = daemon.connect(); // never reads, not even its discovery line
    let mut b = daemon.connect();
    a.discovery();
    b.discovery();
    for gw in 1..=3 {
        let via = format!("10.202.70.{gw}");
        ns.ip(&["route", "replace", "default", "via", &via, "dev", "nm0"]);
        for client in [&mut a, &mut b] {
            let changes = client.changes();
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0]["gateway"], via.as_str());
        }
    }
}

#[test]
fn sigterm_and_sigint_stop_with_exit_zero_and_remove_the_socket() {
    let ns = Netns::new("nmt");
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut daemon = Daemon::start(&ns, &[]);
        let _client = daemon.connect();
        assert!(health(&daemon.socket));
        let status = daemon.stop(sig);
        assert_eq!(status.code(), Some(0), "{sig}: {status}");
        assert!(!daemon.socket.exists(), "{sig} left the socket file");
        assert!(!health(&daemon.socket));
    }
}

#[test]
fn a_restart_over_a_stale_socket_file_works_and_a_live_one_is_not_stolen() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.80.5/24", "dev", "nm0"]);
    let mut first = Daemon::start(&ns, &[]);
    // A second instance must not take over a socket that is being served.
    let second = spawn(&ns, &first.socket, &[], Stdio::null())
        .wait_with_output()
        .expect("second instance");
    assert!(!second.status.success());
    assert!(health(&first.socket));

    // SIGKILL leaves the socket file behind: health must say so, a restart must replace it.
    let status = first.stop(Signal::SIGKILL);
    assert!(!status.success());
    assert!(first.socket.exists());
    assert!(!health(&first.socket));
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().expect("tempdir"));
    let restarted = Daemon::start_at(&ns, dir, first.socket.clone(), &[]);
    assert!(health(&restarted.socket));
    let interfaces = restarted.connect().discovery();
    assert_eq!(
        names(&interfaces),
        BTreeSet::from(["nm0".into(), "nm1".into()])
    );
}

/// The uid every "other user" test runs as.
const NOBODY: u32 = 65534;
/// Set (to a socket path) when this test binary runs as the helper client of
/// [`a_client_of_another_uid_is_refused_and_root_and_the_configured_uid_are_served`].
const HELPER_ENV: &str = "NETMON_TEST_HELPER_SOCKET";

/// Not a test of its own: the client process, run by the test below under another uid (a real
/// peer of that uid for `SO_PEERCRED`). Connects to the socket named by [`HELPER_ENV`], prints
/// `HELPER:LINE:<first line>` or `HELPER:EOF` or `HELPER:ERR:<error>`. A no-op otherwise.
#[test]
fn helper_client_prints_the_first_line_it_reads() {
    let Some(socket) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let outcome = UnixStream::connect(&socket).and_then(|s| {
        s.set_read_timeout(Some(EVENT_WAIT))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    });
    match outcome {
        Ok(line) if line.is_empty() => println!("HELPER:EOF"),
        Ok(line) => println!("HELPER:LINE:{}", line.trim_end()),
        Err(e) => println!("HELPER:ERR:{e}"),
    }
}

/// Runs [`helper_client_prints_the_first_line_it_reads`] as uid/gid [`NOBODY`] against `socket`.
fn client_as_nobody(socket: &Path) -> String {
    use std::os::unix::process::CommandExt;
    // A copy: the build tree may be one nobody cannot enter.
    let exe = test_support::SharedExe::new(&std::env::current_exe().expect("test binary"));
    let out = Command::new(&exe.path)
        .args([
            "--exact",
            "helper_client_prints_the_first_line_it_reads",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HELPER_ENV, socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the helper client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints the test's name on the same line, before what the test prints.
    stdout
        .lines()
        .find_map(|l| l.find("HELPER:").map(|at| l[at..].to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "the helper printed nothing: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Lets [`NOBODY`] reach the socket through the file system (directory search, socket write), so
/// only netmon's own check stands between it and the events.
fn open_to_everyone(daemon: &Daemon) {
    for dir in [
        daemon.dir.path(),
        daemon.socket.parent().expect("socket dir"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    }
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
}

fn netmon_log(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.dir.path().join("netmon.log")).unwrap_or_default()
}

#[test]
fn a_client_of_another_uid_is_refused_and_root_and_the_configured_uid_are_served() {
    let ns = Netns::new("nmt");
    ns.veth("nm0", "nm1");
    ns.ip(&["addr", "add", "10.202.90.5/24", "dev", "nm0"]);
    let daemon = Daemon::start(&ns, &[]);
    open_to_everyone(&daemon);

    // Twice: refused both times, before netmon sends anything; one WARN for both.
    for _ in 0..2 {
        assert_eq!(client_as_nobody(&daemon.socket), "HELPER:EOF");
    }
    let log = netmon_log(&daemon);
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refusing a client of uid 65534"))
        .count();
    assert_eq!(warned, 1, "{log}");
    // Root (this test) is served as before.
    assert_eq!(
        names(&daemon.connect().discovery()),
        BTreeSet::from(["nm0".into(), "nm1".into()])
    );

    // With --client-uid that uid is served too.
    let trusting = Daemon::start(&ns, &["--client-uid", &NOBODY.to_string()]);
    open_to_everyone(&trusting);
    let line = client_as_nobody(&trusting.socket);
    assert!(
        line.starts_with("HELPER:LINE:{\"type\":\"network_discovery\""),
        "{line}"
    );
}

/// Item 5 of issue 12: every port with its `type` (as the original names it) and its MAC, also
/// one that is up without IPv4.
#[test]
fn discovery_reports_each_ports_type_and_mac_also_up_without_ipv4() {
    let ns = Netns::new("nmt");
    ns.veth("wlan7", "lan7");
    let mac_of = |name: &str| {
        ns.ip_json(&["link", "show", "dev", name])[0]["address"]
            .as_str()
            .expect("address")
            .to_owned()
    };
    let daemon = Daemon::start(&ns, &[]);
    let interfaces = daemon.connect().discovery();
    for (name, kind) in [("wlan7", "wifi"), ("lan7", "ethernet")] {
        let info = interfaces
            .iter()
            .find(|i| i["interface"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {interfaces:?}"));
        assert_eq!(info["operstate"], "UP", "{info}");
        assert_eq!(info["ipv4_addresses"], Value::Array(vec![]), "{info}");
        assert_eq!(info["type"], kind, "{info}");
        assert_eq!(info["mac_address"], mac_of(name).as_str(), "{info}");
    }
}

impl Client {
    /// Sends one command line and returns its response (the next line without a `type`; events
    /// in between are skipped).
    fn command(&mut self, request: Value) -> Value {
        use std::io::Write;
        let mut line = request.to_string();
        line.push('\n');
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .expect("send command");
        loop {
            let msg = self.next(EVENT_WAIT).expect("a response in time");
            if msg.get("type").is_none() {
                return msg;
            }
        }
    }
}

/// A stand-in for a container: `unshare -n sleep` in a fresh network namespace; killed on drop.
struct Sandbox(Child);

impl Sandbox {
    fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("spawn unshare");
        let sandbox = Sandbox(child);
        // Wait until `sleep` runs in its own namespace (unshare execs it).
        let me = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = Instant::now() + EVENT_WAIT;
        while std::fs::read_link(format!("/proc/{}/ns/net", sandbox.pid())).ok() == Some(me.clone())
        {
            assert!(
                Instant::now() < deadline,
                "unshare did not enter a namespace"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sandbox
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Links in its namespace (`ip -j link`, names and whether up).
    fn links(&self) -> Vec<(String, bool)> {
        link_list(&[
            "nsenter",
            "-t",
            &self.pid().to_string(),
            "-n",
            "ip",
            "-j",
            "link",
        ])
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn link_list(cmd: &[&str]) -> Vec<(String, bool)> {
    let out = test_support::run(cmd[0], &cmd[1..]);
    let v: Value = serde_json::from_str(&out).expect("ip -j link");
    v.as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let up = l["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP"));
            (l["ifname"].as_str().expect("ifname").to_owned(), up)
        })
        .collect()
}

fn ns_links(ns: &Netns) -> Vec<(String, bool)> {
    link_list(&["ip", "-n", &ns.name, "-j", "link"])
}

fn nic(command: &str, name: &str, pid: u32) -> Value {
    serde_json::json!({"command": command, "host_interface": name, "container_pid": pid})
}

#[test]
fn a_veth_end_moves_into_a_process_namespace_by_pid_is_found_there_and_comes_back() {
    let ns = Netns::new("nmn");
    ns.veth("dnic0", "dpeer0");
    let daemon = Daemon::start(&ns, &[]);
    let sandbox = Sandbox::start();
    let pid = sandbox.pid();
    let mut client = daemon.connect();
    client.discovery();

    let mut moved = nic("move_nic_to_container", "dnic0", pid);
    moved["id"] = 11.into();
    assert_eq!(
        client.command(moved),
        serde_json::json!({"success": true, "id": 11})
    );
    assert!(
        sandbox.links().contains(&("dnic0".to_owned(), true)),
        "in the sandbox and up: {:?}",
        sandbox.links()
    );
    assert!(!ns_links(&ns).iter().any(|(n, _)| n == "dnic0"));
    assert_eq!(
        client.command(nic("check_nic_in_container", "dnic0", pid)),
        serde_json::json!({"success": true, "present": true})
    );

    assert_eq!(
        client.command(nic("return_nic_to_host", "dnic0", pid)),
        serde_json::json!({"success": true})
    );
    assert!(
        ns_links(&ns).contains(&("dnic0".to_owned(), true)),
        "back on the host and up: {:?}",
        ns_links(&ns)
    );
    assert!(!sandbox.links().iter().any(|(n, _)| n == "dnic0"));
    assert_eq!(
        client.command(nic("check_nic_in_container", "dnic0", pid)),
        serde_json::json!({"success": true, "present": false})
    );
}

#[test]
fn nic_commands_refuse_with_the_originals_texts() {
    let ns = Netns::new("nmn");
    ns.veth("dnic0", "dpeer0");
    let daemon = Daemon::start(&ns, &[]);
    let sandbox = Sandbox::start();
    let pid = sandbox.pid();
    let mut client = daemon.connect();
    client.discovery();
    let error = |r: Value| {
        assert_eq!(r["success"], false, "{r}");
        r["error"].as_str().expect("error").to_owned()
    };
    assert_eq!(
        error(client.command(nic("move_nic_to_container", "nope0", pid))),
        "Failed to move NIC: Device \"nope0\" does not exist."
    );
    assert_eq!(
        error(client.command(nic("return_nic_to_host", "dnic0", pid))),
        "Failed to return NIC: Device \"dnic0\" does not exist."
    );
    assert_eq!(
        error(client.command(nic("move_nic_to_container", "a-very-long-ifname0", pid))),
        "Invalid interface name: a-very-long-ifname0"
    );
    assert_eq!(
        error(client.command(
            serde_json::json!({"command": "move_nic_to_container", "host_interface": "dnic0"})
        )),
        "Missing container_pid"
    );
    // Netmon's own namespace is not a container's.
    let own = daemon.pid().as_raw() as u32;
    assert!(
        error(client.command(nic("move_nic_to_container", "dnic0", own)))
            .starts_with("Failed to move NIC: process ")
    );
    assert_eq!(
        error(client.command(serde_json::json!({"command": "tea"}))),
        "Unknown command: tea"
    );
    assert_eq!(
        error(client.command(
            serde_json::json!({"command": "start_dhcp", "container_name": "c",
            "vnic_name": "v", "mac_address": "02:00:00:00:00:01", "container_pid": pid})
        )),
        "Interface with MAC 02:00:00:00:00:01 not found in container after 10 retries"
    );
    assert_eq!(
        error(
            client.command(serde_json::json!({"command": "request_wifi_dhcp",
            "container_name": "c", "vnic_name": "v", "parent_interface": "wlan0",
            "container_pid": pid, "client_id": "x"}))
        ),
        "request_wifi_dhcp is not supported by this netmon yet"
    );
    // Nothing moved.
    assert!(ns_links(&ns).iter().any(|(n, _)| n == "dnic0"));
    assert_eq!(
        client.command(nic("check_nic_in_container", "dnic0", pid)),
        serde_json::json!({"success": true, "present": false})
    );
}

#[test]
fn netmon_returns_lent_nics_when_it_stops_and_a_veth_dies_with_its_namespace() {
    let ns = Netns::new("nmn");
    ns.veth("dnic0", "dpeer0");
    ns.veth("dnic1", "dpeer1");
    let mut daemon = Daemon::start(&ns, &[]);
    let sandbox = Sandbox::start();
    let pid = sandbox.pid();
    let mut client = daemon.connect();
    client.discovery();
    for name in ["dnic0", "dnic1"] {
        assert_eq!(
            client.command(nic("move_nic_to_container", name, pid)),
            serde_json::json!({"success": true})
        );
    }
    // dnic1 comes back by hand: netmon must not try to return it again.
    assert_eq!(
        client.command(nic("return_nic_to_host", "dnic1", pid)),
        serde_json::json!({"success": true})
    );
    drop(client);
    assert_eq!(daemon.stop(Signal::SIGTERM).code(), Some(0));
    let links = ns_links(&ns);
    assert!(links.contains(&("dnic0".to_owned(), true)), "{links:?}");
    assert!(links.contains(&("dnic1".to_owned(), true)), "{links:?}");
    assert!(!sandbox.links().iter().any(|(n, _)| n.starts_with("dnic")));

    // A veth end left in a namespace that dies is destroyed with it, and its peer with it (a
    // physical port would come back to the initial namespace instead).
    let mut daemon = Daemon::start(&ns, &[]);
    let mut client = daemon.connect();
    client.discovery();
    assert_eq!(
        client.command(nic("move_nic_to_container", "dnic0", pid)),
        serde_json::json!({"success": true})
    );
    drop(sandbox);
    let deadline = Instant::now() + EVENT_WAIT;
    while ns_links(&ns).iter().any(|(n, _)| n == "dpeer0") {
        assert!(Instant::now() < deadline, "the peer outlived the namespace");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!ns_links(&ns).iter().any(|(n, _)| n == "dnic0"));
    drop(client);
    assert_eq!(
        daemon.stop(Signal::SIGTERM).code(),
        Some(0),
        "returning a NIC whose container is gone does not fail the stop"
    );
}

/// `ip <args>` in the sandbox's namespace.
fn sandbox_ip(sandbox: &Sandbox, args: &[&str]) -> String {
    let pid = sandbox.pid().to_string();
    let mut cmd = vec!["-t", pid.as_str(), "-n", "ip"];
    cmd.extend_from_slice(args);
    test_support::run("nsenter", &cmd)
}

fn sandbox_mac(sandbox: &Sandbox, dev: &str) -> String {
    let out = sandbox_ip(sandbox, &["-j", "link", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).expect("ip -j link");
    v[0]["address"].as_str().expect("address").to_owned()
}

fn set_mac(pid: u32, current: &str, wanted: &str) -> Value {
    serde_json::json!({"command": "set_vnic_mac", "container_pid": pid,
        "current_mac": current, "mac_address": wanted})
}

#[test]
fn set_vnic_mac_changes_a_live_macvlan_in_a_process_namespace_and_nothing_else() {
    let ns = Netns::new("nmm");
    let daemon = Daemon::start(&ns, &[]);
    let sandbox = Sandbox::start();
    let pid = sandbox.pid();
    // A runtime's namespace as Docker makes it: a MACVLAN vNIC (up) and a veth.
    sandbox_ip(
        &sandbox,
        &["link", "add", "vm0", "type", "veth", "peer", "name", "vm1"],
    );
    sandbox_ip(&sandbox, &["link", "set", "vm0", "up"]);
    sandbox_ip(&sandbox, &["link", "set", "vm1", "up"]);
    sandbox_ip(
        &sandbox,
        &[
            "link",
            "add",
            "link",
            "vm0",
            "name",
            "eth1",
            "address",
            "02:42:0a:cb:00:05",
            "type",
            "macvlan",
            "mode",
            "bridge",
        ],
    );
    sandbox_ip(&sandbox, &["link", "set", "eth1", "up"]);
    let veth_mac = sandbox_mac(&sandbox, "vm1");
    let mut client = daemon.connect();
    client.discovery();

    let r = client.command(set_mac(pid, "02:42:0a:cb:00:05", "02:00:00:00:07:07"));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        r["message"],
        "MAC of eth1 changed from 02:42:0a:cb:00:05 to 02:00:00:00:07:07"
    );
    assert_eq!(sandbox_mac(&sandbox, "eth1"), "02:00:00:00:07:07");
    assert!(
        sandbox.links().contains(&("eth1".to_owned(), true)),
        "still up"
    );

    // Asked again (a second start hook, a retry): already done.
    let r = client.command(set_mac(pid, "02:42:0a:cb:00:05", "02:00:00:00:07:07"));
    assert_eq!(
        r,
        serde_json::json!({"success": true, "message": "eth1 already has MAC 02:00:00:00:07:07"})
    );

    let error = |r: Value| {
        assert_eq!(r["success"], false, "{r}");
        r["error"].as_str().expect("error").to_owned()
    };
    // Only MACVLAN links are re-addressed.
    assert_eq!(
        error(client.command(set_mac(pid, &veth_mac, "02:00:00:00:07:08"))),
        "Failed to set vNIC MAC: vm1 is a veth link, not a MACVLAN vNIC"
    );
    assert_eq!(sandbox_mac(&sandbox, "vm1"), veth_mac);
    assert_eq!(
        error(client.command(set_mac(pid, "02:42:0a:cb:00:99", "02:00:00:00:07:08"))),
        format!(
            "Failed to set vNIC MAC: no interface with MAC 02:42:0a:cb:00:99 or \
             02:00:00:00:07:08 in the network namespace of process {pid}"
        )
    );
    assert_eq!(
        error(client.command(set_mac(pid, "02:00:00:00:07:07", "01:00:5e:00:00:01"))),
        "Invalid mac_address: 01:00:5e:00:00:01 is not a unicast MAC address"
    );
    // Netmon's own namespace (the host's) is never touched.
    let own = daemon.pid().as_raw() as u32;
    assert!(
        error(client.command(set_mac(own, "02:00:00:00:07:07", "02:00:00:00:07:08")))
            .starts_with("Failed to set vNIC MAC: process ")
    );
    assert_eq!(sandbox_mac(&sandbox, "eth1"), "02:00:00:00:07:07");
}

fn setup_bridge(container: &str, pid: u32, parent: &str) -> Value {
    serde_json::json!({"command": "setup_proxy_arp_bridge", "container_name": container,
        "container_pid": pid, "parent_interface": parent, "ip_address": "10.214.1.50",
        "gateway": "10.214.1.1", "subnet_mask": "255.255.255.0"})
}

#[test]
fn proxy_arp_bridges_are_built_replaced_and_removed_through_the_socket() {
    let ns = Netns::new("nmw");
    ns.ip(&[
        "link", "add", "wl0", "type", "veth", "peer", "name", "wl0lan",
    ]);
    ns.ip(&["addr", "add", "10.214.1.2/24", "dev", "wl0"]);
    ns.ip(&["link", "set", "wl0", "up"]);
    let mut daemon = Daemon::start(&ns, &[]);
    let sandbox = Sandbox::start();
    let pid = sandbox.pid();
    let mut client = daemon.connect();
    client.discovery();
    let own_links = |ns: &Netns| -> Vec<String> {
        ns_links(ns)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("vpa"))
            .collect()
    };

    let built = client.command(setup_bridge("plc-01", pid, "wl0"));
    assert_eq!(built["success"], true, "{built}");
    let config = &built["proxy_arp_config"];
    let veth_host = config["veth_host"].as_str().expect("veth_host").to_owned();
    assert!(
        veth_host.starts_with("vpa") && veth_host.len() == 13,
        "{built}"
    );
    assert_eq!(
        built,
        serde_json::json!({"success": true, "proxy_arp_config": {"veth_host": veth_host,
            "veth_container": "eth1", "ip_address": "10.214.1.50", "gateway": "10.214.1.1",
            "parent_interface": "wl0"}})
    );
    assert!(sandbox.links().contains(&("eth1".to_owned(), true)));
    assert_eq!(own_links(&ns), std::slice::from_ref(&veth_host));
    assert_eq!(ns.proxy_entries(), ["10.214.1.50 wl0"]);
    // Asked again: the same bridge, rebuilt, not a second one.
    assert_eq!(client.command(setup_bridge("plc-01", pid, "wl0")), built);
    assert_eq!(own_links(&ns), std::slice::from_ref(&veth_host));

    // The original agent names the host end `veth-<8 chars>` whatever netmon built (W3): the
    // bridge is found from container and address, and the named link is not netmon's to touch.
    ns.veth("veth-plc-01", "veth-plc-01p");
    assert_eq!(
        client.command(serde_json::json!({"command": "cleanup_proxy_arp_bridge",
            "container_name": "plc-01", "ip_address": "10.214.1.50", "parent_interface": "wl0",
            "veth_host": "veth-plc-01"})),
        serde_json::json!({"success": true})
    );
    assert!(own_links(&ns).is_empty());
    assert!(ns.proxy_entries().is_empty());
    assert!(!sandbox.links().iter().any(|(n, _)| n == "eth1"));
    assert!(ns_links(&ns).iter().any(|(n, _)| n == "veth-plc-01"));

    // Refusals in the original's words, or ours where it had none.
    let mut missing = setup_bridge("plc-01", pid, "wl0");
    missing["gateway"] = Value::Null;
    assert_eq!(
        client.command(missing),
        serde_json::json!({"success": false, "error": "Missing required parameters for Proxy ARP setup"})
    );
    assert_eq!(
        client.command(setup_bridge("plc-01", pid, "nope0")),
        serde_json::json!({"success": false,
            "error": "Proxy ARP bridge setup failed: Device \"nope0\" does not exist."})
    );
    assert_eq!(
        client.command(serde_json::json!({"command": "cleanup_proxy_arp_bridge"})),
        serde_json::json!({"success": false, "error": "Missing container_name"})
    );
    assert!(own_links(&ns).is_empty());

    // cleanup_all counts netmon's bridges only.
    assert_eq!(
        client.command(setup_bridge("plc-01", pid, "wl0"))["success"],
        true
    );
    assert_eq!(
        client.command(serde_json::json!({"command": "cleanup_all_proxy_arp"})),
        serde_json::json!({"success": true, "veths_removed": 1})
    );
    assert!(own_links(&ns).is_empty());
    assert!(ns.proxy_entries().is_empty());
    assert!(ns_links(&ns).iter().any(|(n, _)| n == "veth-plc-01"));

    // netmon leaves none of its bridges behind when it stops.
    assert_eq!(
        client.command(setup_bridge("plc-01", pid, "wl0"))["success"],
        true
    );
    drop(client);
    assert_eq!(daemon.stop(Signal::SIGTERM).code(), Some(0));
    assert!(own_links(&ns).is_empty());
    assert!(ns.proxy_entries().is_empty());
    assert!(!sandbox.links().iter().any(|(n, _)| n == "eth1"));
}
