//! Dispatch tests: validation, ack shapes and key order, emit+ack topics, host topics, heartbeat.
//! The runtime service behind them is real, on a fresh state dir, with an engine that is not
//! there: what the topics do with its answers is seen without any container.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::Receiver;

use super::*;
use crate::cloud::OutboundForTest;
use crate::runtime::RuntimeConfig;
use crate::usage::Usage;
use netmon_proto::{Message, decode_message};

/// The services with a runtime service whose engine does not answer (every engine call fails at
/// once), and `interfaces` as netmon's cache. The state dir lives as long as the returned guard.
async fn app_with(interfaces: InterfaceCache) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp state dir");
    let engine = dir.path().join("no-engine.sock");
    let docker = docker_api::Docker::new(
        docker_api::DockerConfig::from_host(&format!("unix://{}", engine.display()))
            .expect("engine address"),
    );
    let mut config = RuntimeConfig::new(dir.path());
    config.subnet_wait = Duration::from_millis(10);
    let runtime = Runtimes::open(docker, interfaces.clone(), config)
        .await
        .expect("state dir opens");
    let app = App::new(Services {
        started: Instant::now(),
        interfaces,
        host: crate::host::HostMonitor::new(),
        runtime,
        certificate: Default::default(),
        commands: Default::default(),
    });
    (app, dir)
}

async fn app() -> (App, tempfile::TempDir) {
    app_with(InterfaceCache::new()).await
}

/// Dispatches and returns the single ack argument.
async fn ack(app: &App, link: &Link, topic: &str, args: Vec<Value>) -> Value {
    let mut out = app.dispatch(topic, &args, link).await;
    assert_eq!(out.len(), 1, "one ack argument");
    out.remove(0)
}

async fn next_emit(rx: &mut Receiver<OutboundForTest>) -> OutboundForTest {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an emit within 10 s")
        .expect("link open")
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn unknown_topic_gets_an_error_ack_with_the_correlation_id() {
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let out = ack(&a, &link, "make_coffee", vec![json!({"correlation_id": 5})]).await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"make_coffee","correlation_id":5,"status":"error","error":"Unknown topic: make_coffee"}"#
    );
}

#[tokio::test]
async fn non_object_argument_gets_an_error_ack_with_null_correlation_id() {
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let out = ack(&a, &link, "create_new_runtime", vec![json!("plc1")]).await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"create_new_runtime","correlation_id":null,"status":"error","error":"Invalid message: expected a JSON object, got a string"}"#
    );
    let out = ack(&a, &link, "delete_device", vec![]).await;
    assert_eq!(
        out["error"],
        "Invalid message: expected one object, got 0 argument(s)"
    );
}

#[tokio::test]
async fn contract_errors_keep_the_prefix_name_the_field_and_echo_the_id() {
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let out = ack(
        &a,
        &link,
        "create_new_runtime",
        vec![json!({"correlation_id": "abc", "container_name": "p", "vnic_configs": [{"name": "n"}]})],
    )
    .await;
    assert_eq!(keys(&out), ["action", "correlation_id", "status", "error"]);
    assert_eq!(
        out["correlation_id"], "abc",
        "echoed as received even when it is the bad field"
    );
    assert_eq!(
        out["error"],
        "Invalid field type: Value must be a number. (field: correlation_id)"
    );
    let out = ack(
        &a,
        &link,
        "create_new_runtime",
        vec![json!({"correlation_id": 77, "container_name": "p", "vnic_configs": [{"name": "n"}]})],
    )
    .await;
    assert_eq!(out["correlation_id"], 77);
    assert_eq!(
        out["error"],
        "Missing required field: 'Missing key: vnic_configs[0].parent_interface'"
    );
    // The runtime's validation answers at the edge too, before anything is asked of the engine.
    let vnic = json!({"name": "n", "parent_interface": "eth0", "network_mode": "static"});
    let out = ack(
        &a,
        &link,
        "create_new_runtime",
        vec![json!({"correlation_id": 78, "container_name": "p", "vnic_configs": [vnic]})],
    )
    .await;
    assert_eq!(keys(&out), ["action", "correlation_id", "status", "error"]);
    assert_eq!(
        out["error"],
        "Invalid vnic_configs[0].ip: a static (manual) vNIC needs an address (ip or ip_address)"
    );
}

#[tokio::test]
async fn runtime_failures_are_error_acks_with_the_correlation_id() {
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let cases = [
        (
            "delete_device",
            json!({"correlation_id": 1, "device_id": "p"}),
        ),
        (
            "get_device_status",
            json!({"correlation_id": 1, "device_id": "p"}),
        ),
        (
            "run_command",
            json!({"correlation_id": 1, "device_id": "p", "method": "GET", "api": "x"}),
        ),
    ];
    for (topic, msg) in cases {
        let out = ack(&a, &link, topic, vec![msg]).await;
        // run_command also carries the original's synthetic `http_response` (upstream-head §2.7).
        let expected: &[&str] = if topic == "run_command" {
            &[
                "action",
                "correlation_id",
                "status",
                "error",
                "http_response",
            ]
        } else {
            &["action", "correlation_id", "status", "error"]
        };
        assert_eq!(keys(&out), expected, "{out}");
        assert_eq!(
            (&out["action"], &out["correlation_id"], &out["status"]),
            (&json!(topic), &json!(1), &json!("error"))
        );
    }
    // The legacy run_command answers in its own shape, the error included.
    let out = ack(
        &a,
        &link,
        "run_command",
        vec![json!("p"), json!({"method": "GET", "api": "x"})],
    )
    .await;
    assert_eq!(keys(&out), ["error"], "{out}");
    let out = ack(
        &a,
        &link,
        "run_command",
        vec![json!("p"), json!({"method": "TRACE", "api": "x"})],
    )
    .await;
    assert_eq!(
        out,
        json!({"error": "Method not allowed: \"TRACE\" (allowed: GET, POST, PUT, DELETE, PATCH)"})
    );
}

#[tokio::test]
async fn accepted_work_is_answered_with_action_and_correlation_id_first() {
    let (link, mut rx) = Link::for_test();
    let (a, _dir) = app().await;
    let vnic = json!({"name": "n", "parent_interface": "eth0", "network_mode": "dhcp"});
    let out = ack(
        &a,
        &link,
        "create_new_runtime",
        vec![json!({"correlation_id": 42, "container_name": "plc1", "vnic_configs": [vnic]})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"create_new_runtime","correlation_id":42,"status":"creating","container_id":"plc1","message":"Container creation started for plc1"}"#
    );
    let out = ack(
        &a,
        &link,
        "delete_orchestrator",
        vec![json!({"correlation_id": 10})],
    )
    .await;
    assert_eq!(
        keys(&out),
        [
            "action",
            "correlation_id",
            "status",
            "message",
            "poll_device_id"
        ]
    );
    assert_eq!(out["status"], "accepted");
    let emitted = next_emit(&mut rx).await;
    let mut older = out.clone();
    older["status"] = json!("command_received");
    assert_eq!(
        (emitted.name.as_str(), &emitted.payload),
        ("delete_orchestrator_response", &older)
    );
    let out = ack(
        &a,
        &link,
        "get_device_status",
        vec![json!({"correlation_id": 4, "device_id": "__orchestrator__"})],
    )
    .await;
    assert_eq!(&keys(&out)[..2], ["action", "correlation_id"]);
    a.services().runtime.shutdown();
}

#[tokio::test]
async fn power_topics_emit_and_ack_the_same_answer_in_upstream_key_order() {
    let (link, mut rx) = Link::for_test();
    let (a, _dir) = app().await;
    let msg = json!({"correlation_id": 7, "device_id": "plc1", "action": "start_device",
                     "requested_at": "2025-11-20T20:30:45"});
    for topic in ["start_device", "stop_device", "restart_device"] {
        let out = ack(&a, &link, topic, vec![msg.clone()]).await;
        assert_eq!(
            keys(&out),
            ["action", "success", "correlation_id", "status", "error"],
            "{out}"
        );
        assert_eq!(
            (&out["action"], &out["success"]),
            (&json!(topic), &json!(false))
        );
        let emitted = next_emit(&mut rx).await;
        assert_eq!((emitted.name.as_str(), &emitted.payload), (topic, &out));
    }
}

#[tokio::test]
async fn emit_topics_also_emit_their_validation_errors() {
    let (link, mut rx) = Link::for_test();
    let (a, _dir) = app().await;
    let out = ack(
        &a,
        &link,
        "start_device",
        vec![json!({"correlation_id": 8})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"start_device","success":false,"correlation_id":8,"status":"error","error":"Missing required field: 'Missing key: device_id'"}"#
    );
    let emitted = next_emit(&mut rx).await;
    assert_eq!(
        (emitted.name.as_str(), emitted.payload),
        ("start_device", out)
    );
    for (field, bad) in [("cpuPeriod", "-5x"), ("memoryPeriod", "banana")] {
        let mut msg = json!({"correlation_id": 21, "device_id": "plc1", "cpuPeriod": "1h",
            "memoryPeriod": "1h"});
        msg[field] = json!(bad);
        let out = ack(&a, &link, "get_consumption_device", vec![msg]).await;
        assert_eq!(keys(&out), ["action", "correlation_id", "status", "error"]);
        assert!(
            out["error"]
                .as_str()
                .unwrap()
                .ends_with(&format!("(field: {field})")),
            "{out}"
        );
        let emitted = next_emit(&mut rx).await;
        assert_eq!(
            (emitted.name.as_str(), &emitted.payload),
            ("get_consumption_device", &out)
        );
    }
    // A device that is not there is answered, and emitted, like upstream's.
    let out = ack(
        &a,
        &link,
        "get_consumption_device",
        vec![json!({"correlation_id": 9, "device_id": "..", "cpuPeriod": "1h", "memoryPeriod": "1h"})],
    )
    .await;
    assert_eq!(out["error"], "Device .. not found");
    assert_eq!(next_emit(&mut rx).await.payload, out);
}

fn netmon(cache: &InterfaceCache, line: Value) {
    match decode_message(line.to_string().as_bytes()).expect("valid netmon line") {
        Message::Event(event) => cache.apply(event),
        other => panic!("not an event: {other:?}"),
    };
}

fn iface(name: &str, addr: &str, subnet: &str) -> Value {
    json!({"interface": name, "index": 2, "operstate": "UP", "gateway": "10.204.1.1",
           "ipv4_addresses": [{"address": addr, "prefixlen": 24, "subnet": subnet, "network_address": "x"}]})
}

#[tokio::test]
async fn consumption_orchestrator_answers_host_info_and_usage_windows() {
    let cache = InterfaceCache::new();
    netmon(
        &cache,
        json!({"type": "network_discovery", "data": {"interfaces": [
            iface("eth0", "10.204.1.5", "10.204.1.0/24"), iface("docker0", "172.17.0.1", "172.17.0.0/16")]}}),
    );
    let (a, _dir) = app_with(cache).await;
    let now = timefmt_now();
    {
        let mut usage = a.services().host.usage();
        usage.push(
            now - 7200,
            Usage {
                cpu: 50.0,
                memory: 100.0,
            },
        );
        usage.push(
            now - 60,
            Usage {
                cpu: 12.0,
                memory: 2560.0,
            },
        );
    }
    let (link, _rx) = Link::for_test();
    let out = ack(
        &a,
        &link,
        "get_consumption_orchestrator",
        vec![json!({"correlation_id": 12, "cpuPeriod": "1h", "memoryPeriod": "2h"})],
    )
    .await;
    assert_eq!(
        keys(&out),
        [
            "action",
            "correlation_id",
            "ip_addresses",
            "memory",
            "cpu",
            "os",
            "kernel",
            "disk",
            "cpu_usage",
            "memory_usage"
        ]
    );
    assert_eq!(
        out["ip_addresses"],
        json!([{"interface": "eth0", "ip_address": "10.204.1.5"}])
    );
    assert_eq!(
        out["cpu_usage"],
        json!([{"timestamp": now - 60, "cpu": 12}])
    );
    assert_eq!(
        out["memory_usage"],
        json!([{"timestamp": now - 7200, "memory": 100}, {"timestamp": now - 60, "memory": 2560}])
    );
    assert!(out["memory"].as_u64().unwrap() > 0);
    assert!(out["cpu"].as_u64().unwrap() > 0);
    assert!(out["os"].as_str().unwrap().starts_with("Linux "));
    assert!(out["disk"].is_u64());

    let out = ack(
        &a,
        &link,
        "get_consumption_orchestrator",
        vec![json!({"correlation_id": 12, "cpuPeriod": "3h", "memoryPeriod": format!("{},{}", now - 8000, now - 7000)})],
    )
    .await;
    assert_eq!(out["cpu_usage"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["memory_usage"],
        json!([{"timestamp": now - 7200, "memory": 100}])
    );
}

#[tokio::test]
async fn run_command_logs_no_query_string_or_body_at_info() {
    let request = json!({"correlation_id": 11, "device_id": "plc-logs", "method": "POST",
                         "api": "api/upload?token=s3cr3t-query", "data": {"password": "s3cr3t-body"}});
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let (guard, info) = crate::logging::capture::at(tracing::Level::INFO);
    ack(&a, &link, "run_command", vec![request.clone()]).await;
    drop(guard);
    let text = info.text();
    // Method, path without its query and the runtime are there; the query and the body are not.
    assert!(text.contains("run_command requested"), "{text}");
    assert!(
        text.contains("method=POST") && text.contains("api=api/upload "),
        "{text}"
    );
    assert!(text.contains("plc-logs"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    // The details are at DEBUG (the body never).
    let (guard, debug) = crate::logging::capture::at(tracing::Level::DEBUG);
    ack(&a, &link, "run_command", vec![request]).await;
    drop(guard);
    let text = debug.text();
    assert!(text.contains("token=s3cr3t-query"), "{text}");
    assert!(!text.contains("s3cr3t-body"), "{text}");
}

fn timefmt_now() -> i64 {
    crate::timefmt::now_unix()
}

#[tokio::test]
async fn host_interfaces_come_from_the_netmon_cache() {
    let (link, _rx) = Link::for_test();
    let cache = InterfaceCache::new();
    let (a, _dir) = app_with(cache.clone()).await;
    let out = ack(
        &a,
        &link,
        "get_host_interfaces",
        vec![json!({"correlation_id": 13})],
    )
    .await;
    assert_eq!(out["status"], "error");
    assert_eq!(
        out["error"],
        "No host interfaces known: the network monitor is not connected"
    );

    netmon(
        &cache,
        json!({"type": "network_discovery", "data": {"interfaces": [
            iface("wlan0", "10.204.2.5", "10.204.2.0/24"),
            iface("eth0", "10.204.1.5", "10.204.1.0/24"),
            iface("br-abc", "172.18.0.1", "172.18.0.0/16")]}}),
    );
    let out = ack(
        &a,
        &link,
        "get_host_interfaces",
        vec![json!({"correlation_id": 13, "detailed": false})],
    )
    .await;
    assert_eq!(
        out,
        json!({"action": "get_host_interfaces", "correlation_id": 13, "status": "success", "interfaces": [
            {"name": "eth0", "ip_address": "10.204.1.5", "ipv4_addresses": ["10.204.1.5"], "mac_address": null,
             "type": "ethernet"},
            {"name": "wlan0", "ip_address": "10.204.2.5", "ipv4_addresses": ["10.204.2.5"], "mac_address": null,
             "type": "wifi"}
        ]})
    );
    let out = ack(
        &a,
        &link,
        "get_host_interfaces",
        vec![json!({"correlation_id": 13, "include_virtual": true})],
    )
    .await;
    let names: Vec<&str> = out["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["br-abc", "eth0", "wlan0"]);
    assert_eq!(out["interfaces"][1]["addresses"][0]["prefixlen"], 24);
}

#[tokio::test]
async fn serial_devices_come_from_the_netmon_cache_by_id_ones_only() {
    let (link, _rx) = Link::for_test();
    let cache = InterfaceCache::new();
    let (a, _dir) = app_with(cache.clone()).await;
    let out = ack(
        &a,
        &link,
        "get_serial_devices",
        vec![json!({"correlation_id": 4})],
    )
    .await;
    assert_eq!(
        out,
        json!({"action": "get_serial_devices", "correlation_id": 4, "status": "success",
               "devices": [], "count": 0})
    );
    netmon(
        &cache,
        json!({"type": "device_discovery", "data": {"timestamp": "t", "devices": [
            {"path": "/dev/ttyS0", "by_id": null, "major": 4, "minor": 64, "subsystem": "tty"},
            {"path": "/dev/ttyUSB0", "by_id": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
             "major": 188, "minor": 0, "vendor_id": "0403", "product_id": "6001", "serial": "A50285BI",
             "subsystem": "tty", "manufacturer": "FTDI", "product": "FT232R_USB_UART"}]}}),
    );
    let out = ack(
        &a,
        &link,
        "get_serial_devices",
        vec![json!({"correlation_id": 5})],
    )
    .await;
    assert_eq!(
        out,
        json!({"action": "get_serial_devices", "correlation_id": 5, "status": "success",
               "devices": [{"path": "/dev/ttyUSB0",
                            "device_id": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
                            "vendor_id": "0403", "product_id": "6001", "serial": "A50285BI",
                            "manufacturer": "FTDI", "product": "FT232R_USB_UART"}],
               "count": 1})
    );
    assert_eq!(
        keys(&out),
        ["action", "correlation_id", "status", "devices", "count"]
    );
    let bad = ack(
        &a,
        &link,
        "get_serial_devices",
        vec![json!({"correlation_id": "x"})],
    )
    .await;
    assert_eq!(bad["status"], "error");
}

#[tokio::test]
async fn heartbeat_is_emitted_at_once_with_upstream_keys_in_order() {
    let (link, mut rx) = Link::for_test();
    let (a, _dir) = app().await;
    let beat = tokio::spawn(a.on_connect(link));
    let first = next_emit(&mut rx).await;
    beat.abort();
    assert_eq!(first.name, "heartbeat");
    let p = &first.payload;
    assert_eq!(
        keys(p),
        [
            "agent_id",
            "cpu_usage",
            "memory_usage",
            "memory_total",
            "disk_usage",
            "disk_total",
            "uptime",
            "status",
            "timestamp"
        ]
    );
    // The CN of the connection's certificate, as the link knows it.
    assert_eq!(p["agent_id"], "test-agent");
    assert_eq!(p["status"], "active");
    for key in [
        "cpu_usage",
        "memory_usage",
        "memory_total",
        "disk_usage",
        "disk_total",
    ] {
        let x = p[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is a float"));
        assert_eq!((x * 10.0).round() / 10.0, x, "{key} has one decimal");
    }
    assert!(p["memory_total"].as_f64().unwrap() > 0.0);
    assert!(p["uptime"].is_u64());
    let ts = p["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with("+00:00") && crate::timefmt::is_iso8601(ts),
        "{ts}"
    );
    assert_eq!(
        a.services().host.usage().raw_len(),
        0,
        "the heartbeat records nothing: the host sampler does"
    );
}

#[test]
fn validate_knows_every_topic_and_nothing_else() {
    let names: Vec<&str> = topic_names().collect();
    for t in [
        "create_new_runtime",
        "delete_device",
        "delete_orchestrator",
        "run_command",
        "get_consumption_device",
        "get_consumption_orchestrator",
        "start_device",
        "stop_device",
        "restart_device",
        "get_device_status",
        "get_host_interfaces",
        "get_serial_devices",
    ] {
        assert!(names.contains(&t), "{t}");
    }
    let r = validate("heartbeat", &[json!({"correlation_id": 1})]).unwrap_err();
    assert_eq!(r.correlation_id, json!(1));
    assert_eq!(r.error.to_string(), "Unknown topic: heartbeat");
    let request = validate(
        "get_device_status",
        &[json!({"correlation_id": 1, "device_id": "d"})],
    )
    .expect("valid");
    let any: Box<dyn Any> = request;
    assert!(any.is::<get_device_status::GetDeviceStatus>());
    assert_eq!(names.len(), TOPICS.len());
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each topic once in the table");
}

/// A random JSON value of bounded depth, biased towards the shapes the contracts look at.
fn random_value(rng: &mut impl rand::RngExt, depth: u32) -> Value {
    const KEYS: &[&str] = &[
        "correlation_id",
        "container_name",
        "vnic_configs",
        "device_id",
        "action",
        "requested_at",
        "cpuPeriod",
        "memoryPeriod",
        "name",
        "parent_interface",
        "network_mode",
        "dns",
        "method",
        "api",
        "port",
        "headers",
        "data",
        "include_virtual",
        "detailed",
        "ip",
        "mac",
        "x",
    ];
    const STRINGS: &[&str] = &[
        "",
        " ",
        "eth0",
        "2025-11-20T20:30:45Z",
        "2025-13-40",
        "1h",
        "GET",
        "a234567890123456",
    ];
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random_range(-70_000i64..70_000)),
        3 => json!(rng.random::<f64>() * 1000.0),
        4 => json!(STRINGS[rng.random_range(0..STRINGS.len())]),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..8))
                .map(|_| {
                    (
                        KEYS[rng.random_range(0..KEYS.len())].to_owned(),
                        random_value(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

#[test]
fn validate_never_panics_and_errors_keep_known_prefixes() {
    use rand::RngExt;
    let mut rng = rand::rng();
    let topics: Vec<&str> = topic_names().chain(["nope"]).collect();
    for _ in 0..20_000 {
        let topic = topics[rng.random_range(0..topics.len())];
        let args: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_value(&mut rng, 3))
            .collect();
        if let Err(r) = validate(topic, &args) {
            let text = r.error.to_string();
            let known = [
                "Missing required field: ",
                "Invalid field type: ",
                "Invalid message: ",
                "Unknown topic: ",
            ]
            .iter()
            .any(|p| text.starts_with(p));
            assert!(
                known
                    || matches!(
                        r.error,
                        ContractError::Semantic(_) | ContractError::Invalid { .. }
                    ),
                "{topic} {args:?} -> {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_run_command_the_link_refused_still_carries_the_synthetic_http_response() {
    use crate::cloud::Handler;
    let (app, _dir) = app().await;
    let refused = json!({"action": "run_command", "correlation_id": 7, "status": "error",
                         "error": "message too large: 50000000 bytes (limit 48000000 bytes)"});
    let answer = app.complete_refusal(refused.clone());
    assert_eq!(answer["correlation_id"], 7);
    assert_eq!(
        answer["http_response"],
        json!({"status_code": 400, "headers": {}, "ok": false,
               "content_type": "application/json",
               "body": {"error": "message too large: 50000000 bytes (limit 48000000 bytes)"}})
    );
    // Other topics' refusals are sent as the link made them.
    let mut other = refused;
    other["action"] = json!("stop_device");
    assert_eq!(app.complete_refusal(other.clone()), other);
}

#[tokio::test]
async fn every_command_is_counted_by_topic_and_outcome() {
    use crate::telemetry::TopicStats;
    // Outcomes are counted in `Outcome::ALL` order: [ok, error, refused].
    let (link, _rx) = Link::for_test();
    let (a, _dir) = app().await;
    let dispatch = |topic: &'static str, args: Vec<Value>| {
        let (a, link) = (a.clone(), link.clone());
        async move { ack(&a, &link, topic, args).await }
    };
    // error: netmon is not there.
    dispatch("get_host_interfaces", vec![json!({"correlation_id": 1})]).await;
    // ok: a status document.
    let out = dispatch(
        "get_device_status",
        vec![json!({"correlation_id": 2, "device_id": "__orchestrator__"})],
    )
    .await;
    assert_ne!(out["status"], "error", "{out}");
    // error: the engine is not there either.
    dispatch(
        "get_device_status",
        vec![json!({"correlation_id": 3, "device_id": "p"})],
    )
    .await;
    dispatch(
        "run_command",
        vec![json!({"correlation_id": 4, "device_id": "p", "method": "GET", "api": "x"})],
    )
    .await;
    dispatch(
        "run_command",
        vec![json!("p"), json!({"method": "GET", "api": "x"})],
    )
    .await;
    // refused: invalid, and unknown topics (counted under one name whatever the cloud sent).
    dispatch("stop_device", vec![json!({"correlation_id": 5})]).await;
    dispatch("make_coffee", vec![json!({"correlation_id": 6})]).await;
    dispatch("make_tea", vec![json!({"correlation_id": 7})]).await;

    let counts = |all: &[TopicStats], topic: &str| {
        all.iter().find(|t| t.topic == topic).map(|t| {
            assert_eq!(
                t.buckets.iter().sum::<u64>(),
                t.count(),
                "{topic}: all fast"
            );
            t.outcomes
        })
    };
    a.services().commands.with(|all| {
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(counts(all, "get_host_interfaces"), Some([0, 1, 0]));
        assert_eq!(counts(all, "get_device_status"), Some([1, 1, 0]));
        assert_eq!(counts(all, "run_command"), Some([0, 2, 0]));
        assert_eq!(counts(all, "stop_device"), Some([0, 0, 1]));
        assert_eq!(counts(all, crate::topics::UNKNOWN_TOPIC), Some([0, 0, 2]));
    });
    a.services().runtime.shutdown();
}

#[test]
fn a_legacy_run_command_answer_is_an_error_only_in_its_error_shapes() {
    use crate::telemetry::Outcome;
    let outcome = <RunCommand as Topic>::outcome;
    assert_eq!(
        outcome(&json!({"error": "Instance not found"})),
        Outcome::Error
    );
    assert_eq!(
        outcome(&json!({"error": "HTTP 500", "status_code": 500, "body": "x"})),
        Outcome::Error
    );
    assert_eq!(outcome(&json!({"result": "ok"})), Outcome::Ok);
    assert_eq!(
        outcome(&json!({"error": null, "data": [1]})),
        Outcome::Ok,
        "a runtime's own body with an error field"
    );
    assert_eq!(outcome(&json!([1, 2])), Outcome::Ok);
    assert_eq!(
        outcome(&json!({"action": "run_command", "status": "success"})),
        Outcome::Ok
    );
}
