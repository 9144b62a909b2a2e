//! `orchestrator-agent support-bundle` against the real engine, netmon and a running agent with a
//! runtime: the tar.gz holds doctor's report, the redacted configuration, the certificate's
//! details, logs, state files and the engine's view of what this agent owns, and never key
//! material (neither the client key nor a key pasted into a log).

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::*;

/// Runs `support-bundle` for the world's agent with `extra` arguments.
fn bundle(w: &World, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"))
        .arg("--server")
        .arg(
            w.cloud
                .url()
                .replacen("https://", "https://operator:hunter2@", 1),
        )
        .arg("--ca-file")
        .arg(&w.pki.ca_cert)
        .arg("--mtls-dir")
        .arg(&w.pki.agent_dir)
        .arg("--state-dir")
        .arg(&w.state_dir)
        .env("ORCHESTRATOR_API_TOKEN", "tok-secret-123")
        .env_remove("RUST_LOG")
        .arg("support-bundle")
        .args(extra)
        .output()
        .expect("the agent binary runs")
}

/// The bundle's files by name (without the archive's top directory).
fn entries(gz: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("a tar stream") {
        let mut entry = entry.expect("an entry");
        assert_eq!(entry.header().mode().unwrap() & 0o777, 0o600);
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let name = name
            .strip_prefix("orchestrator-support/")
            .expect("everything under one directory")
            .to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(files.get(name).unwrap_or_else(|| panic!("{name} missing")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_what_support_needs_and_never_a_key() {
    let mut w = World::start().await;
    let v = Veth::new();
    let name = unique("rtbundle");
    w.create_runtime(&name, json!([dhcp_vnic(&v, None)])).await;
    // A person pasted a key into a log once.
    let logs = w.state_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("orchestrator-logs-2000-01-01.log"),
        "pasted by mistake:\n-----BEGIN PRIVATE KEY-----\nPASTEDKEYSECRET\n-----END PRIVATE KEY-----\nafter\n",
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out").join("b.tar.gz");
    let out = bundle(&w, &["-o", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&path.display().to_string()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let gz = std::fs::read(&path).unwrap();
    let files = entries(&gz);

    // doctor's report, with the engine check passing.
    let doctor = json_of(&files, "doctor.json");
    let checks = doctor["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["id"] == "docker.engine" && c["status"] == "ok"),
        "{doctor}"
    );
    // The configuration, the URL's credentials and a token redacted.
    let config = json_of(&files, "config.json");
    assert_eq!(config["state_dir"], json!(w.state_dir), "{config}");
    let server = config["server"].as_str().unwrap();
    assert!(server.starts_with("https://[redacted]@"), "{config}");
    assert_eq!(
        config["environment"]["ORCHESTRATOR_API_TOKEN"], "[redacted]",
        "{config}"
    );
    // The certificate's details.
    let cert = json_of(&files, "certificate.json");
    assert!(cert.to_string().contains(&w.pki.agent_id), "{cert}");
    // Logs: the running agent's and the old one, the pasted key replaced.
    let log_names: Vec<&String> = files.keys().filter(|n| n.starts_with("logs/")).collect();
    assert!(log_names.len() >= 2, "{log_names:?}");
    let old = &files["logs/orchestrator-logs-2000-01-01.log"];
    assert!(contains(old, b"[private key redacted by support-bundle]"));
    assert!(contains(old, b"after"));
    // State files and the engine's view of the runtime and its networks.
    assert!(contains(
        &files["state/runtime_vnics.json"],
        name.as_bytes()
    ));
    let containers = json_of(&files, "engine/containers.json");
    assert!(
        containers
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Name"] == format!("/{name}")),
        "the runtime's inspect is in the bundle"
    );
    let networks = json_of(&files, "engine/networks.json");
    assert!(
        networks
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["Name"] == format!("{name}_internal")),
        "{networks}"
    );
    assert!(files.contains_key(&format!("engine/logs/{name}.log")));
    let manifest = json_of(&files, "manifest.json");
    assert_eq!(
        manifest["files"].as_array().unwrap().len() + 1,
        files.len(),
        "{manifest}"
    );

    // Never key material: not the pasted key, not a line of the client key, not the token.
    let key = std::fs::read_to_string(&w.pki.client_key).unwrap();
    let key_lines: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_lines.is_empty());
    for (name, data) in &files {
        assert!(!contains(data, b"PASTEDKEYSECRET"), "{name}");
        assert!(!contains(data, b"tok-secret-123"), "{name}");
        assert!(!contains(data, b"hunter2"), "{name}");
        for line in &key_lines {
            assert!(
                !contains(data, line.as_bytes()),
                "{name} holds the client key"
            );
        }
    }

    // `-o -`: the same bundle on stdout; without -o: under the state dir, the newest three kept.
    let out = bundle(&w, &["-o", "-"]);
    assert!(out.status.success());
    assert!(entries(&out.stdout).contains_key("doctor.json"));
    let mut made = Vec::new();
    for _ in 0..4 {
        let out = bundle(&w, &[]);
        assert!(out.status.success());
        let printed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        assert!(
            Path::new(&printed).starts_with(w.state_dir.join("support")),
            "{printed}"
        );
        made.push(printed);
        // Bundle names have one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let kept = std::fs::read_dir(w.state_dir.join("support"))
        .unwrap()
        .count();
    assert_eq!(kept, 3);
    assert!(
        !Path::new(&made[0]).exists(),
        "the oldest bundle was pruned"
    );
    drop(v);
}
