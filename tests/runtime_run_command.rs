//! `run_command` and `get_consumption_device` end to end: the real agent binary, connected to an
//! in-process devcloud over mutual TLS, creates a runtime from the test server image
//! (`orchestrator-test/https-server`, under its loopback-registry name) on a veth parent, and the
//! cloud drives it. The agent runs on the host and reaches the runtime on its internal bridge.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::time::{Duration, Instant};

use devcloud::CloudEvent;
use serde_json::{Value, json};
use support::{ContainerGuard, NetworkGuard, SERVER_IMAGE_LOOPBACK, Veth, World, unique};

fn vnics(parent: &str, ip: &str, subnet: &str) -> Value {
    json!([{"name": "eth0", "parent_interface": parent, "network_mode": "manual",
        "ip_address": ip, "subnet": subnet, "parent_subnet": subnet}])
}

async fn world_with_runtime(subnet_octet: u8) -> (World, String, Veth) {
    let parent = unique("r2c");
    let veth = Veth::named(&parent, subnet_octet);
    let mut world = World::start_with_image(SERVER_IMAGE_LOOPBACK).await;
    let name = unique("r2cmd-");
    world
        .create_runtime(
            &name,
            vnics(
                &parent,
                &format!("10.203.{subnet_octet}.40"),
                &format!("10.203.{subnet_octet}.0/24"),
            ),
        )
        .await;
    (world, name, veth)
}

async fn run(world: &mut World, device: &str, command: Value) -> Value {
    let mut payload = command;
    payload["device_id"] = json!(device);
    world.call("run_command", payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_command_reaches_owned_runtimes_in_both_forms_and_refuses_everything_else() {
    let (mut world, name, _veth) = world_with_runtime(138).await;

    // One-object form, HTTPS on 8443 by default (self-signed certificate accepted).
    let mut answer = Value::Null;
    for _ in 0..50 {
        // The server inside the fresh container may need a moment to listen.
        answer = run(
            &mut world,
            &name,
            json!({"method": "GET", "api": "/status"}),
        )
        .await;
        if answer["status"] == "success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["action"], "run_command", "{answer}");
    assert_eq!(answer["status"], "success", "{answer}\n{}", world.logs());
    assert!(answer["correlation_id"].is_number());
    let response = &answer["http_response"];
    assert_eq!(response["status_code"], 200);
    assert_eq!(response["ok"], true);
    assert_eq!(response["content_type"], "application/json");
    // Header names as the runtime's server sends them (today's cloud reads `Content-Type`).
    assert!(
        response["headers"]["Content-Type"]
            .as_str()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{answer}"
    );
    assert_eq!(
        response["body"],
        json!({"status": "running", "server": "runtime2-test", "tls": true})
    );

    // Another port: plain HTTP; method, headers, query and JSON body forwarded.
    let answer = run(
        &mut world,
        &name,
        json!({"method": "POST", "api": "echo?x=1", "port": 8080,
            "headers": {"X-Token": "abc"}, "data": {"value": 7}}),
    )
    .await;
    let echo = &answer["http_response"]["body"];
    assert_eq!(echo["tls"], false, "{answer}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["headers"]["x-token"], "abc");
    assert_eq!(echo["body"], r#"{"value":7}"#);

    // The original two-argument form: the runtime's JSON body itself is the ack.
    let ack = world
        .emit(
            "run_command",
            vec![
                json!(name),
                json!({"method": "GET", "api": "status", "headers": {}}),
            ],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        ack,
        vec![json!({"status": "running", "server": "runtime2-test", "tls": true})]
    );
    // ... and an explicit error object instead of the original's empty ack.
    let ack = world
        .emit(
            "run_command",
            vec![
                json!(name),
                json!({"method": "GET", "api": "../etc/passwd"}),
            ],
            Duration::from_secs(60),
        )
        .await;
    assert!(
        ack[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Invalid api")),
        "{ack:?}"
    );
    let ack = world
        .emit(
            "run_command",
            vec![
                json!("no-such-runtime"),
                json!({"method": "GET", "api": "status"}),
            ],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(ack, vec![json!({"error": "Instance not found"})]);

    // Path checks.
    for api in [
        "../x",
        "a/%2e%2e/b",
        "http://evil/x",
        "//evil.example/x",
        "user@host/x",
    ] {
        let answer = run(&mut world, &name, json!({"method": "GET", "api": api})).await;
        assert_eq!(answer["status"], "error", "{api}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        // `//evil.example/x` is a relative path once the leading slashes are stripped: the
        // runtime answers 404 for it, it never becomes a host.
        if api.starts_with("//") {
            assert_eq!(answer["http_response"]["status_code"], 404, "{answer}");
        } else {
            assert!(error.starts_with("Invalid api"), "{api}: {answer}");
        }
    }

    // Method allow-list.
    let answer = run(
        &mut world,
        &name,
        json!({"method": "TRACE", "api": "status"}),
    )
    .await;
    assert_eq!(answer["status"], "error");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Method not allowed")),
        "{answer}"
    );

    // Oversized response.
    let answer = run(&mut world, &name, json!({"method": "GET", "api": "big"})).await;
    assert_eq!(
        answer["error"], "The runtime's response exceeds the limit of 1048576 bytes",
        "{answer}"
    );

    // HTTP errors are reported with the runtime's answer.
    let answer = run(&mut world, &name, json!({"method": "GET", "api": "fail"})).await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["error"], "HTTP 500");
    assert_eq!(answer["http_response"]["body"], json!({"error": "boom"}));

    // Unknown devices and containers that are not ours.
    let answer = run(
        &mut world,
        "no-such-runtime",
        json!({"method": "GET", "api": "status"}),
    )
    .await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["error"], "Device not found: no-such-runtime");
    let net = NetworkGuard::internal(&unique("r2cmd-foreign-net-"), &[]);
    let foreign = ContainerGuard::server(&unique("r2cmd-foreign-"), &net.name, &[]);
    for device in [foreign.name.as_str(), "orchestrator_agent"] {
        let answer = run(
            &mut world,
            device,
            json!({"method": "GET", "api": "status"}),
        )
        .await;
        assert_eq!(
            answer["error"],
            format!("Device not found: {device}"),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_runtime_times_out_while_heartbeats_and_other_commands_continue() {
    let (mut world, name, _veth) = world_with_runtime(140).await;
    let mut ready = false;
    for _ in 0..50 {
        let a = run(&mut world, &name, json!({"method": "GET", "api": "status"})).await;
        if a["status"] == "success" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "the runtime's API never answered\n{}", world.logs());

    let mut events = world.cloud.subscribe();
    let cloud = world.cloud.clone();
    let agent = world.pki.agent_id.clone();
    let started = Instant::now();
    let hung = tokio::spawn(async move {
        cloud
            .emit_with_ack(
                Some(&agent),
                "run_command",
                vec![
                    json!({"correlation_id": 77, "device_id": name, "method": "GET",
                    "api": "hang"}),
                ],
                Duration::from_secs(60),
            )
            .await
    });
    // While it hangs, another command is answered at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quick_started = Instant::now();
    let device = world.status("no-such").await;
    assert_eq!(device["status"], "not_found");
    assert!(quick_started.elapsed() < Duration::from_secs(5));

    let answer = hung
        .await
        .expect("join")
        .expect("the hung command is acked");
    let elapsed = started.elapsed();
    assert_eq!(
        answer[0],
        json!({"action": "run_command", "correlation_id": 77, "status": "error",
            "error": "The runtime did not answer within 30 s",
            // The original's synthetic response: a cloud reading `http_response.body.error`
            // finds the reason (upstream-head §2.7).
            "http_response": {"status_code": 500, "headers": {}, "ok": false,
                "content_type": "application/json",
                "body": {"error": "The runtime did not answer within 30 s"}}})
    );
    assert!(
        elapsed >= Duration::from_secs(29) && elapsed < Duration::from_secs(45),
        "{elapsed:?}"
    );
    // Heartbeats kept coming (every 5 s) during the 30 s wait.
    let mut heartbeats = 0;
    while let Ok(event) = events.try_recv() {
        if let CloudEvent::Event(e) = event
            && e.name == "heartbeat"
        {
            heartbeats += 1;
        }
    }
    assert!(
        heartbeats >= 4,
        "only {heartbeats} heartbeats during the hang"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumption_of_a_running_runtime_is_sampled_every_heartbeat() {
    let (mut world, name, _veth) = world_with_runtime(142).await;
    let mut events = world.cloud.subscribe();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let a = world
            .call(
                "get_consumption_device",
                json!({"device_id": name, "cpuPeriod": "1h", "memoryPeriod": "1h"}),
            )
            .await;
        if a["cpu_usage"].as_array().is_some_and(|s| s.len() >= 2) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no samples after a minute: {a}\n{}",
            world.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(answer["action"], "get_consumption_device");
    assert_eq!(answer["device_id"], json!(name));
    assert_eq!(answer["cpu"], "unlimited");
    assert_eq!(answer["memory"], "unlimited");
    let memory = &answer["memory_usage"][0];
    assert!(memory["timestamp"].is_i64(), "{answer}");
    assert!(
        memory["memory"].as_f64().is_some_and(|m| m > 0.0),
        "{answer}"
    );
    assert!(answer["cpu_usage"][0]["cpu"].as_f64().is_some());

    // The original cloud gets it by emit too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut emitted = false;
    while Instant::now() < deadline && !emitted {
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(CloudEvent::Event(e))) => emitted = e.name == "get_consumption_device",
            _ => {
                // Ask once more so an emit happens after we subscribed.
                let _ = world
                    .call(
                        "get_consumption_device",
                        json!({"device_id": name, "cpuPeriod": "1h", "memoryPeriod": "1h"}),
                    )
                    .await;
            }
        }
    }
    assert!(emitted, "get_consumption_device was not emitted");

    let answer = world
        .call(
            "get_consumption_device",
            json!({"device_id": "orchestrator_agent", "cpuPeriod": "1h", "memoryPeriod": "1h"}),
        )
        .await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["error"], "Device orchestrator_agent not found");
}
