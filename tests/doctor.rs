//! `orchestrator-agent doctor` and `certs status` as an operator runs them, on real parts: the
//! Docker engine of this machine (and one that is down: a socket path that does not exist), the
//! real `autonomy-netmon` (and a stopped one: no socket), certificates made with rcgen (a wrong
//! key, an expired one, one expiring soon, a key readable by others), the kernel's interfaces.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::Netmon;

const DAY: i64 = 86_400;
const ENGINE: &str = "unix:///var/run/docker.sock";
const ENGINE_DOWN: &str = "unix:///nonexistent/doctor-test/docker.sock";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A self-signed client certificate for `cn`, valid from `from` to `to`, and its key (PEM).
fn pair(cn: &str, from: i64, to: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A device: an mTLS dir and a state dir.
struct Device {
    mtls: tempfile::TempDir,
    state: tempfile::TempDir,
    /// `--server` and `--ca-file`: a closed loopback port unless a test starts devcloud (a test
    /// never reaches out of the machine).
    server: String,
    ca_file: Option<std::path::PathBuf>,
}

impl Device {
    /// With a good pair valid for a year and a runtime whose MACVLAN parent is `parent`.
    fn new(parent: &str) -> Self {
        Self::with_runtimes(&[("plc-doctor", parent, "127.0.0.0/8")])
    }

    /// With a good pair valid for a year and the given runtimes: (name, parent, parent subnet).
    fn with_runtimes(runtimes: &[(&str, &str, &str)]) -> Self {
        let d = Self {
            mtls: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            server: "https://127.0.0.1:1".into(),
            ca_file: None,
        };
        d.certs(
            pair("doctor-device-1", now() - DAY, now() + 365 * DAY),
            0o600,
        );
        let vnics: serde_json::Map<String, Value> = runtimes
            .iter()
            .map(|(name, parent, subnet)| {
                let vnic = json!([{"name": "v1", "parent_interface": parent,
                    "parent_subnet": subnet, "network_mode": "dhcp"}]);
                ((*name).to_owned(), vnic)
            })
            .collect();
        let vnics = Value::Object(vnics);
        std::fs::write(d.state.path().join("runtime_vnics.json"), vnics.to_string()).unwrap();
        d
    }

    fn certs(&self, (cert, key): (String, String), key_mode: u32) {
        write(self.mtls.path(), "client.crt", &cert, 0o644);
        write(self.mtls.path(), "client.key", &key, key_mode);
    }

    fn command(&self, docker_host: &str, args: &[&str]) -> Command {
        self.command_in(self.state.path(), docker_host, args)
    }

    fn command_in(&self, state_dir: &Path, docker_host: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"));
        cmd.args(args)
            .arg("--mtls-dir")
            .arg(self.mtls.path())
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--docker-host", docker_host])
            .args(["--server", &self.server])
            .env_remove("RUST_LOG");
        if let Some(ca) = &self.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd
    }

    /// `doctor --json`: the document and the exit code.
    fn doctor(&self, docker_host: &str) -> (Value, i32) {
        let out = self
            .command(docker_host, &["doctor", "--json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {text}"));
        (doc, out.status.code().unwrap())
    }
}

/// The status of check `id`, and its message.
fn check(doc: &Value, id: &str) -> (String, String) {
    let c = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {doc}"));
    assert!(c["hint"].as_str().is_some_and(|h| !h.is_empty()), "{c}");
    (
        c["status"].as_str().unwrap().to_owned(),
        c["message"].as_str().unwrap().to_owned(),
    )
}

fn assert_check(doc: &Value, id: &str, status: &str, needle: &str) {
    let (got, message) = check(doc, id);
    assert_eq!(got, status, "{id}: {message}\n{doc:#}");
    assert!(
        message.contains(needle),
        "{id}: {message:?} lacks {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_device_passes_every_check_and_a_refused_certificate_fails_the_handshake() {
    let pki = support::cloud::Pki::new();
    let cloud = devcloud::DevCloud::start(devcloud::ServerConfig::from_pki(
        &pki.good,
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .expect("devcloud starts");
    let runtime = support::unique("doctor-rt-");
    let _container = support::ContainerGuard::busybox(&runtime);
    let _internal = support::NetworkGuard::internal(&format!("{runtime}_internal"), &[]);
    // The parent is a host link netmon reports (it leaves lo and veth* out), with this test's
    // fixed subnet.
    let parent = support::Veth::named("drok186", 186);
    let mut device = Device::with_runtimes(&[(&runtime, &parent.name, "10.203.186.0/24")]);
    device.server = cloud.url();
    device.ca_file = Some(pki.good.ca_cert.clone());
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    device.certs(
        (read(&pki.good.client_cert), read(&pki.good.client_key)),
        0o600,
    );
    let _netmon = Netmon::start(&device.state.path().join("netmon.sock")).await;
    let (doc, code) = tokio::task::block_in_place(|| device.doctor(ENGINE));
    for id in orchestrator_agent::doctor::CHECK_IDS {
        if *id == "state.volume" {
            continue;
        }
        let (status, message) = check(&doc, id);
        assert_eq!(status, "ok", "{id}: {message}\n{doc:#}");
    }
    // A temporary state dir is no volume: a warning when this test runs in a container (the unit
    // test shows a mounted one passing), not applicable on a host.
    let in_container = Path::new("/.dockerenv").exists();
    let (volume, _) = check(&doc, "state.volume");
    assert_eq!(volume, if in_container { "warn" } else { "skip" });
    assert_check(&doc, "docker.engine", "ok", "API 1.");
    assert_check(&doc, "netmon.socket", "ok", "network_discovery");
    assert_check(&doc, "cert.cn", "ok", support::cloud::AGENT_ID);
    assert_check(&doc, "cloud.handshake", "ok", "accepted CN=");
    assert_check(&doc, "runtime.state", "ok", "1 of 1 runtimes running");
    let (want_status, want_code) = if in_container { ("warn", 1) } else { ("ok", 0) };
    assert_eq!(doc["status"], want_status);
    assert_eq!(code, want_code);
    // The probe stopped before the Socket.IO session: the cloud saw no agent.
    assert!(cloud.connected_agents().is_empty());

    // A certificate from another CA: the cloud refuses it, and doctor says so.
    device.certs(
        (read(&pki.rogue.client_cert), read(&pki.rogue.client_key)),
        0o600,
    );
    let (doc, code) = tokio::task::block_in_place(|| device.doctor(ENGINE));
    assert_check(
        &doc,
        "cloud.handshake",
        "fail",
        "refused our client certificate",
    );
    assert_eq!(code, 2);
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_engine_a_stopped_netmon_a_missing_parent_and_a_wrong_key_fail() {
    let device = Device::new("nodev-dr186");
    let (_, other_key) = pair("someone-else", now() - DAY, now() + DAY);
    write(device.mtls.path(), "client.key", &other_key, 0o600);
    let (doc, code) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "docker.engine", "fail", "nonexistent");
    assert_check(&doc, "netmon.socket", "fail", "does not exist");
    assert_check(&doc, "runtime.macvlan_parent", "fail", "nodev-dr186");
    assert_check(&doc, "cert.key_match", "fail", "does not belong");
    assert_check(&doc, "cert.present", "ok", "");
    assert_check(&doc, "cloud.handshake", "fail", "127.0.0.1:1");
    assert_eq!(doc["status"], "fail");
    assert_eq!(code, 2);
    assert!(!doc.to_string().contains("PRIVATE"), "key material: {doc}");

    // The human report says the same, with the fix under each failure.
    let out = device.command(ENGINE_DOWN, &["doctor"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[FAIL] docker.engine"), "{text}");
    assert!(text.contains("fix: start the engine"), "{text}");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_parent_without_its_subnet_warns_and_gone_or_stopped_runtimes_are_named() {
    let gone = support::unique("doctor-gone-");
    let stopped = support::unique("doctor-stop-");
    let _made = support::ContainerGuard::create(&stopped, &[], support::LOCAL_IMAGE, &[]);
    let device = Device::with_runtimes(&[
        (&gone, "lo", "127.0.0.0/8"),
        (&stopped, "lo", "10.203.187.0/24"),
    ]);
    let (doc, code) = device.doctor(ENGINE);
    assert_check(
        &doc,
        "runtime.macvlan_parent",
        "warn",
        "lo has no address in 10.203.187.0/24",
    );
    assert_check(
        &doc,
        "runtime.state",
        "fail",
        "its container does not exist",
    );
    let (_, message) = check(&doc, "runtime.state");
    assert!(
        message.contains(&format!("{stopped}: not running")),
        "{message}"
    );
    assert_eq!(code, 2);

    // Without an engine there is nothing to say about the runtimes.
    let (doc, _) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "runtime.state", "skip", "docker.engine");
}

#[test]
fn certificate_checks_fail_on_expired_warn_on_expiring_and_open_keys() {
    let device = Device::new("lo");
    device.certs(
        pair("doctor-device-1", now() - 90 * DAY, now() - DAY),
        0o600,
    );
    let (doc, _) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "cert.expiry", "fail", "expired on");
    assert_check(&doc, "cert.key_match", "ok", "");

    device.certs(
        pair("doctor-device-1", now() - DAY, now() + 10 * DAY),
        0o644,
    );
    let (doc, _) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "cert.expiry", "warn", "days left");
    assert_check(&doc, "cert.key_permissions", "warn", "0644");

    std::fs::remove_file(device.mtls.path().join("client.key")).unwrap();
    let (doc, _) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "cert.present", "fail", "client.key is missing");
    assert_check(&doc, "cert.key_match", "skip", "");
}

#[test]
fn a_missing_state_dir_fails_and_certs_status_reports_the_pair() {
    let device = Device::new("lo");
    let missing = device.state.path().join("not-there");
    let out = device
        .command_in(&missing, ENGINE_DOWN, &["doctor", "--json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_check(&doc, "state.dir", "fail", "not-there");
    assert_check(&doc, "state.disk_space", "skip", "");

    // certs status: the details, exit 0 for a good pair, 1 expiring, 2 wrong key.
    let out = device
        .command(ENGINE_DOWN, &["certs", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["certificate"]["cn"], "doctor-device-1", "{doc}");
    assert_eq!(doc["certificate"]["state"], "ok", "{doc}");
    assert_eq!(doc["key"]["mode"], "0600", "{doc}");
    assert_eq!(doc["key"]["matches_certificate"], true, "{doc}");
    assert!(
        doc["certificate"]["issuer"]
            .as_str()
            .unwrap()
            .contains("doctor-device-1")
    );

    device.certs(pair("doctor-device-1", now() - DAY, now() + 5 * DAY), 0o600);
    let out = device
        .command(ENGINE_DOWN, &["certs", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("CN         doctor-device-1"), "{text}");
    assert!(text.contains("expiring"), "{text}");

    let (_, other_key) = pair("x", now() - DAY, now() + DAY);
    write(device.mtls.path(), "client.key", &other_key, 0o600);
    let out = device
        .command(ENGINE_DOWN, &["certs", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("PRIVATE"), "{text}");
}

#[test]
fn an_internal_network_on_a_host_route_fails_the_overlap_check() {
    // A host link with 10.203.188.1/24 (this test's fixed subnet) and a runtime whose internal
    // network was given the same subnet.
    let veth = support::Veth::named("drov188", 188);
    let clash = support::unique("doctor-ovl-");
    let clash_net = format!("{clash}_internal");
    let _clash_net = support::NetworkGuard::adopt(&clash_net);
    support::docker(&[
        "network",
        "create",
        "--internal",
        "--label",
        "orchestrator-test=1",
        "--subnet",
        "10.203.188.0/24",
        &clash_net,
    ]);
    let device = Device::with_runtimes(&[(&clash, &veth.name, "10.203.188.0/24")]);
    let (doc, _) = device.doctor(ENGINE);
    assert_check(
        &doc,
        "network.overlap",
        "fail",
        "overlaps the host route 10.203.188.0/24 on drov188",
    );
    assert_check(
        &doc,
        "runtime.macvlan_parent",
        "ok",
        "1 vNIC parents present",
    );

    // An internal network with a subnet the engine chose: clear.
    let fine = support::unique("doctor-ok-");
    let _fine_net = support::NetworkGuard::internal(&format!("{fine}_internal"), &[]);
    let device = Device::with_runtimes(&[(&fine, "lo", "127.0.0.0/8")]);
    let (doc, _) = device.doctor(ENGINE);
    assert_check(&doc, "network.overlap", "ok", "1 internal subnets clear");
}

/// A small tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = format!("size={size}");
        support::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "doctor-test",
                dir.path().to_str().unwrap(),
            ],
        );
        Self { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = support::run_try("umount", &[self.dir.path().to_str().unwrap()]);
    }
}

#[test]
fn a_nearly_full_state_volume_fails_the_disk_check() {
    let device = Device::new("lo");
    // A 4 MiB filesystem as the state dir: under the 32 MiB floor, and a mount point.
    let small = Tmpfs::mount("4m");
    let (doc, _) = {
        let out = device
            .command_in(small.dir.path(), ENGINE_DOWN, &["doctor", "--json"])
            .output()
            .unwrap();
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            out.status.code(),
        )
    };
    assert_check(&doc, "state.disk_space", "fail", "MiB free");
    assert_check(&doc, "state.dir", "ok", "writable");
    let in_container = Path::new("/.dockerenv").exists();
    let (volume, message) = check(&doc, "state.volume");
    assert_eq!(
        volume,
        if in_container { "ok" } else { "skip" },
        "{message}"
    );
}

#[test]
fn a_certificate_without_a_cn_fails_the_cn_check() {
    let device = Device::new("lo");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "No CN Inc");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    device.certs((cert.pem(), key.serialize_pem()), 0o600);
    let (doc, code) = device.doctor(ENGINE_DOWN);
    assert_check(&doc, "cert.cn", "fail", "no CN");
    assert_eq!(code, 2);
}
