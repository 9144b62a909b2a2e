//! run_command's `params`, `headers`, `data` and `files` against an HTTPS test runtime that parses
//! what it gets with a real multipart parser (aiohttp's, `tests/python/upload_peer.py`) and echoes
//! it as sizes and digests: the query and headers as sent, text fields, and file bytes identical.
//!
//! The peer listens on 127.0.0.1:8443 (the runtime's HTTPS port, so the agent speaks TLS to it as
//! to a runtime) inside a network namespace of the test's own; the client runs in it too.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use orchestrator_agent::runtime::command::{
    CommandError, Fields, HttpCommand, Limits, MAX_UPLOAD_BYTES, execute,
};
use serde_json::{Value, json};
use support::{Proc, python, random_bytes, sha256};
use test_support::Netns;

/// The peer in its namespace, with the certificate files it serves.
struct Peer {
    ns: Netns,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

fn start_peer() -> Peer {
    let ns = Netns::new("upl");
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["openplc-runtime".into()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/upload_peer.py");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(python())
        .arg(&script)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--port", "8443"]);
    let proc = Proc::spawn(cmd);
    proc.out
        .wait_from(0, Duration::from_secs(20), |l| l.contains("\"ready\""))
        .unwrap_or_else(|| panic!("the upload peer did not start:\n{}", proc.out.text()));
    Peer {
        ns,
        _proc: proc,
        _dir: dir,
    }
}

/// Validates `request` (the object form's fields) as the topic does and sends it to the peer;
/// returns the peer's echo.
fn send(peer: &Peer, request: Value) -> Result<Value, CommandError> {
    peer.ns.run_in(move || async move {
        let command = HttpCommand::from_fields(&Fields {
            method: request["method"].as_str().expect("method"),
            api: request["api"].as_str().expect("api"),
            port: None,
            headers: request.get("headers").and_then(Value::as_object),
            params: request.get("params"),
            data: request.get("data"),
            files: request.get("files"),
        })?;
        let reply = execute(
            Ipv4Addr::LOCALHOST,
            &command,
            &Limits::for_command(&command),
        )
        .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body_value());
        Ok(reply.body_json().expect("the peer answers JSON"))
    })
}

#[test]
fn params_headers_data_and_a_file_reach_the_runtime_as_sent() {
    let peer = start_peer();
    let program = random_bytes(5000, 0x5eed);
    let echo = send(
        &peer,
        json!({
            "method": "POST",
            "api": "/api/upload-file?existing=1",
            "params": {"a": "b c", "n": [1, 2], "z": null, "u": "é&="},
            "headers": {"X-Test": "upload-1", "Authorization": "Bearer t0ken"},
            "data": {"note": "hello world", "retain": true},
            "files": {"file": {
                "filename": "program.zip",
                "content_base64": data_encoding::BASE64.encode(&program),
                "content_type": "application/zip"
            }}
        }),
    )
    .expect("answered");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/upload-file");
    assert_eq!(
        echo["args"],
        json!({"existing": ["1"], "a": ["b c"], "n": ["1", "2"], "u": ["é&="]}),
        "{echo}"
    );
    assert_eq!(echo["headers"]["x-test"], "upload-1");
    assert_eq!(echo["headers"]["authorization"], "Bearer t0ken");
    assert_eq!(echo["chunked"], false, "{echo}");
    assert!(echo["content_length"].is_string(), "{echo}");
    assert_eq!(
        echo["form"],
        json!({"note": "hello world", "retain": "True"}),
        "{echo}"
    );
    assert_eq!(
        echo["files"],
        json!([{"field": "file", "filename": "program.zip", "content_type": "application/zip",
                "size": 5000, "sha256": sha256(&program)}]),
        "{echo}"
    );
}

#[test]
fn the_originals_only_working_shape_and_a_boundary_less_content_type_parse() {
    let peer = start_peer();
    // upstream HEAD §2.8: files only, no Content-Type.
    let echo = send(
        &peer,
        json!({"method": "POST", "api": "api/upload-file",
               "files": {"file": {"filename": "program.zip", "content_base64": "UEsDBA==",
                                  "content_type": "application/zip"}}}),
    )
    .expect("answered");
    assert_eq!(
        echo["files"],
        json!([{"field": "file", "filename": "program.zip", "content_type": "application/zip",
                "size": 4, "sha256": sha256(b"PK\x03\x04")}]),
        "{echo}"
    );
    // The original sent an undeclared boundary here (defect R3); ours is declared.
    let echo = send(
        &peer,
        json!({"method": "PUT", "api": "x",
               "headers": {"Content-Type": "multipart/form-data"},
               "files": {"a": {"content_base64": "AA=="}, "skipped": {"content_base64": ""},
                         "b": {"filename": "b.bin", "content_base64": "AAEC"}}}),
    )
    .expect("answered");
    assert_eq!(
        echo["files"],
        json!([
            {"field": "a", "filename": "a", "content_type": "application/octet-stream",
             "size": 1, "sha256": sha256(&[0])},
            {"field": "b", "filename": "b.bin", "content_type": "application/octet-stream",
             "size": 3, "sha256": sha256(&[0, 1, 2])}
        ]),
        "{echo}"
    );
}

#[test]
fn a_32_mib_upload_arrives_intact_and_a_larger_one_is_refused() {
    let peer = start_peer();
    let program = random_bytes(MAX_UPLOAD_BYTES, 0x32);
    let encoded = data_encoding::BASE64.encode(&program);
    let echo = send(
        &peer,
        json!({"method": "POST", "api": "api/upload-file",
               "files": {"file": {"filename": "big.zip", "content_base64": encoded}}}),
    )
    .expect("answered");
    assert_eq!(echo["files"][0]["size"], MAX_UPLOAD_BYTES);
    assert_eq!(echo["files"][0]["sha256"], sha256(&program));

    let mut larger = program;
    larger.push(7);
    let refused = send(
        &peer,
        json!({"method": "POST", "api": "api/upload-file",
               "files": {"file": {"content_base64": data_encoding::BASE64.encode(&larger)}}}),
    );
    assert!(
        matches!(refused, Err(CommandError::UploadTooLarge { limit }) if limit == MAX_UPLOAD_BYTES),
        "{refused:?}"
    );
}
