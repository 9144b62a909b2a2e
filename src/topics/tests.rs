//! Dispatch tests: validation, ack shapes and key order, emit+ack topics, host topics, heartbeat.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::Receiver;

use super::*;
use crate::cloud::OutboundForTest;
use crate::netevents::{NetmonEvent, decode_line};
use crate::usage::Usage;

/// A runtime side that refuses everything: the topic layer's validation and error answers are
/// seen without any runtime behind them.
#[derive(Debug, Clone, Copy, Default)]
struct Unavailable;

fn unavailable<T: Send + 'static>(topic: &str) -> BoxFuture<Result<T, OpError>> {
    let err = OpError(format!("{topic} is not available yet on this agent"));
    Box::pin(async move { Err(err) })
}

impl RuntimeOps for Unavailable {
    fn create(&self, _: CreateRuntimeRequest) -> BoxFuture<OpResult> {
        unavailable("create_new_runtime")
    }
    fn delete(&self, _: DeleteDeviceRequest) -> BoxFuture<OpResult> {
        unavailable("delete_device")
    }
    fn start(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        unavailable("start_device")
    }
    fn stop(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        unavailable("stop_device")
    }
    fn restart(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        unavailable("restart_device")
    }
    fn device_status(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        unavailable("get_device_status")
    }
    fn run_command(&self, _: RunCommandRequest) -> BoxFuture<Result<Value, OpError>> {
        unavailable("run_command")
    }
    fn consumption_device(&self, _: DeviceConsumptionRequest) -> BoxFuture<OpResult> {
        unavailable("get_consumption_device")
    }
    fn delete_orchestrator(&self, _: BaseMessage) -> BoxFuture<OpResult> {
        unavailable("delete_orchestrator")
    }
}

/// A runtime that answers like a working one, to test the answer shapes.
struct Fake;

fn body(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("body must be an object, got {other}"),
    }
}

impl RuntimeOps for Fake {
    fn create(&self, req: CreateRuntimeRequest) -> BoxFuture<OpResult> {
        let name = req.container_name;
        Box::pin(async move {
            Ok(body(json!({"status": "creating", "container_id": name,
                           "message": format!("Container creation started for {name}")})))
        })
    }
    fn delete(&self, req: DeleteDeviceRequest) -> BoxFuture<OpResult> {
        Box::pin(async move { Err(OpError(format!("Device {} not found", req.device_id))) })
    }
    fn start(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        Box::pin(async { Ok(Map::new()) })
    }
    fn stop(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        Box::pin(async { Err(OpError::new("container is not running")) })
    }
    fn restart(&self, _: DeviceRequest) -> BoxFuture<OpResult> {
        Box::pin(async { Ok(body(json!({"success": true, "correlation_id": "spoofed"}))) })
    }
    fn device_status(&self, req: DeviceRequest) -> BoxFuture<OpResult> {
        Box::pin(async move {
            Ok(body(
                json!({"status": "not_found", "device_id": req.device_id, "message": "gone"}),
            ))
        })
    }
    fn run_command(&self, req: RunCommandRequest) -> BoxFuture<Result<Value, OpError>> {
        Box::pin(async move {
            match req.form {
                contract::RunCommandForm::Legacy => Ok(json!([1, 2, 3])),
                contract::RunCommandForm::Object => {
                    Ok(json!({"status": "success", "http_response": {"status_code": 200}}))
                }
            }
        })
    }
    fn consumption_device(&self, req: DeviceConsumptionRequest) -> BoxFuture<OpResult> {
        Box::pin(async move {
            Ok(body(
                json!({"device_id": req.device_id, "memory": "512 MB", "cpu": "1.0 vCPU",
                           "cpu_usage": [], "memory_usage": []}),
            ))
        })
    }
    fn delete_orchestrator(&self, _: BaseMessage) -> BoxFuture<OpResult> {
        Box::pin(async {
            Ok(body(json!({"status": "command_received", "message": "bye",
                           "poll_device_id": "__orchestrator__"})))
        })
    }
}

fn app_with(runtime: Arc<dyn RuntimeOps>, interfaces: InterfaceCache) -> App {
    App::new(Services {
        started: Instant::now(),
        interfaces,
        host: crate::host::HostMonitor::new(),
        runtime,
    })
}

fn app(runtime: Arc<dyn RuntimeOps>) -> App {
    app_with(runtime, InterfaceCache::new())
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
    let out = ack(
        &app(Arc::new(Unavailable)),
        &link,
        "make_coffee",
        vec![json!({"correlation_id": 5})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"make_coffee","correlation_id":5,"status":"error","error":"Unknown topic: make_coffee"}"#
    );
}

#[tokio::test]
async fn non_object_argument_gets_an_error_ack_with_null_correlation_id() {
    let (link, _rx) = Link::for_test();
    let a = app(Arc::new(Unavailable));
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
    let out = ack(
        &app(Arc::new(Unavailable)),
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
        &app(Arc::new(Unavailable)),
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
}

#[tokio::test]
async fn runtime_topics_answer_not_available_after_validating() {
    let (link, mut rx) = Link::for_test();
    let a = app(Arc::new(Unavailable));
    let vnic = json!({"name": "n", "parent_interface": "eth0", "network_mode": "dhcp"});
    let cases = [
        (
            "create_new_runtime",
            json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [vnic]}),
        ),
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
        assert_eq!(
            out,
            json!({"action": topic, "correlation_id": 1, "status": "error",
                   "error": format!("{topic} is not available yet on this agent")})
        );
    }
    let out = ack(
        &a,
        &link,
        "delete_orchestrator",
        vec![json!({"correlation_id": 2})],
    )
    .await;
    assert_eq!(
        out["error"],
        "delete_orchestrator is not available yet on this agent"
    );
    let emitted = next_emit(&mut rx).await;
    assert_eq!(emitted.name, "delete_orchestrator_response");
    assert_eq!(emitted.payload, out);
}

#[tokio::test]
async fn results_are_wrapped_with_action_and_correlation_id_first() {
    let (link, _rx) = Link::for_test();
    let a = app(Arc::new(Fake));
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
        "delete_device",
        vec![json!({"correlation_id": 3, "device_id": "x"})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"delete_device","correlation_id":3,"status":"error","error":"Device x not found"}"#
    );
    let out = ack(
        &a,
        &link,
        "get_device_status",
        vec![json!({"correlation_id": 4, "device_id": "x"})],
    )
    .await;
    assert_eq!(
        keys(&out),
        ["action", "correlation_id", "status", "device_id", "message"]
    );
}

#[tokio::test]
async fn power_topics_emit_and_ack_the_same_answer_in_upstream_key_order() {
    let (link, mut rx) = Link::for_test();
    let a = app(Arc::new(Fake));
    let msg = json!({"correlation_id": 7, "device_id": "plc1", "action": "start_device",
                     "requested_at": "2025-11-20T20:30:45"});

    let out = ack(&a, &link, "start_device", vec![msg.clone()]).await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"start_device","success":true,"correlation_id":7}"#
    );
    let emitted = next_emit(&mut rx).await;
    assert_eq!(
        (emitted.name.as_str(), &emitted.payload),
        ("start_device", &out)
    );

    let out = ack(&a, &link, "stop_device", vec![msg.clone()]).await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"stop_device","success":false,"correlation_id":7,"status":"error","error":"container is not running"}"#
    );
    assert_eq!(next_emit(&mut rx).await.name, "stop_device");

    let out = ack(&a, &link, "restart_device", vec![msg]).await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"restart_device","success":true,"correlation_id":7}"#
    );
    assert_eq!(next_emit(&mut rx).await.payload, out);
}

#[tokio::test]
async fn emit_topics_also_emit_their_validation_errors() {
    let (link, mut rx) = Link::for_test();
    let out = ack(
        &app(Arc::new(Fake)),
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
}

#[tokio::test]
async fn device_consumption_and_delete_orchestrator_emit_and_ack() {
    let (link, mut rx) = Link::for_test();
    let a = app(Arc::new(Fake));
    let out = ack(
        &a,
        &link,
        "get_consumption_device",
        vec![json!({"correlation_id": 9, "device_id": "plc1", "cpuPeriod": "1h", "memoryPeriod": "1h"})],
    )
    .await;
    assert_eq!(
        keys(&out),
        [
            "action",
            "correlation_id",
            "device_id",
            "memory",
            "cpu",
            "cpu_usage",
            "memory_usage"
        ]
    );
    let emitted = next_emit(&mut rx).await;
    assert_eq!(
        (emitted.name.as_str(), &emitted.payload),
        ("get_consumption_device", &out)
    );

    let out = ack(
        &a,
        &link,
        "delete_orchestrator",
        vec![json!({"correlation_id": 10})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"delete_orchestrator","correlation_id":10,"status":"command_received","message":"bye","poll_device_id":"__orchestrator__"}"#
    );
    let emitted = next_emit(&mut rx).await;
    assert_eq!(
        (emitted.name.as_str(), &emitted.payload),
        ("delete_orchestrator_response", &out)
    );
}

#[tokio::test]
async fn run_command_legacy_acks_the_answer_verbatim_and_object_form_is_wrapped() {
    let (link, _rx) = Link::for_test();
    let a = app(Arc::new(Fake));
    let out = ack(
        &a,
        &link,
        "run_command",
        vec![json!("plc1"), json!({"method": "GET", "api": "x"})],
    )
    .await;
    assert_eq!(out, json!([1, 2, 3]));
    let out = ack(
        &a,
        &link,
        "run_command",
        vec![json!({"correlation_id": 11, "device_id": "plc1", "method": "GET", "api": "x"})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"run_command","correlation_id":11,"status":"success","http_response":{"status_code":200}}"#
    );
    let out = ack(
        &a,
        &link,
        "run_command",
        vec![json!("plc1"), json!({"api": "x"})],
    )
    .await;
    assert_eq!(
        out.to_string(),
        r#"{"action":"run_command","correlation_id":null,"status":"error","error":"Missing required field: 'Missing key: command.method'"}"#
    );
}

fn netmon(cache: &InterfaceCache, line: Value) {
    cache.apply(decode_line(line.to_string().as_bytes()).expect("valid netmon line"));
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
    let a = app_with(Arc::new(Unavailable), cache);
    let now = timefmt_now();
    {
        let mut usage = a.host().usage();
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
    assert_eq!(out["ip_addresses"], json!(["10.204.1.5"]));
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
async fn consumption_periods_that_do_not_parse_are_refused_naming_the_field() {
    let (link, mut rx) = Link::for_test();
    let a = app(Arc::new(Fake));
    for (topic, field, bad) in [
        ("get_consumption_orchestrator", "cpuPeriod", "banana"),
        ("get_consumption_orchestrator", "memoryPeriod", "-5x"),
        ("get_consumption_device", "cpuPeriod", "-5x"),
        ("get_consumption_device", "memoryPeriod", "banana"),
    ] {
        let mut msg = json!({"correlation_id": 21, "device_id": "plc1", "cpuPeriod": "1h",
            "memoryPeriod": "1h"});
        msg[field] = json!(bad);
        let out = ack(&a, &link, topic, vec![msg]).await;
        assert_eq!(out["action"], topic, "{out}");
        assert_eq!(out["correlation_id"], 21, "{out}");
        assert_eq!(out["status"], "error", "{out}");
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Invalid field type: Value must be a period string")
                && error.ends_with(&format!("(field: {field})")),
            "{error}"
        );
        assert!(out.get("cpu_usage").is_none(), "{out}");
        if topic == "get_consumption_device" {
            // Answered by emit too, like every get_consumption_device answer.
            let emitted = next_emit(&mut rx).await;
            assert_eq!((emitted.name.as_str(), &emitted.payload), (topic, &out));
        }
    }
}

#[tokio::test]
async fn run_command_logs_no_query_string_or_body_at_info() {
    let request = json!({"correlation_id": 11, "device_id": "plc-logs", "method": "POST",
                         "api": "api/upload?token=s3cr3t-query", "data": {"password": "s3cr3t-body"}});
    let (link, _rx) = Link::for_test();
    let a = app(Arc::new(Fake));
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

#[test]
fn host_usage_series_are_downsampled_to_at_most_1440_integer_points() {
    use crate::usage::{MAX_POINTS, Period, UsageHistory};
    let now = 1_732_130_000;
    // 48 h at 5 s, oldest first, the newest 1 s before `now`.
    let samples = 48 * 720;
    let mut usage = UsageHistory::new();
    for i in 0..samples {
        let age = 5 * (samples - 1 - i) + 1;
        usage.push(
            now - age,
            Usage {
                cpu: (i % 3) as f32,
                memory: (1000 + i) as f32,
            },
        );
    }
    let two_days = Period::parse("48h", now).unwrap();
    let (cpu, memory) = super::host::usage_series(&usage, two_days, two_days, now);
    for (series, key) in [(&cpu, "cpu"), (&memory, "memory")] {
        assert!(
            series.len() <= MAX_POINTS && series.len() > MAX_POINTS - 10,
            "{key}: {}",
            series.len()
        );
        assert!(
            series
                .iter()
                .all(|p| p["timestamp"].is_i64() && p[key].is_i64()),
            "{key}"
        );
        assert_eq!(series.last().unwrap()["timestamp"], now - 1);
    }
    // Two-minute buckets of a value rising by 1 per sample: the first averages about 1012.
    let first = memory[0]["memory"].as_i64().unwrap();
    assert!((1000..=1030).contains(&first), "{first}");
    assert_eq!(cpu[0]["cpu"], 1, "values of 0, 1, 2 average to 1");

    // The last hour is 720 raw samples: returned as is.
    let hour = Period::last_hour(now);
    let (cpu, memory) = super::host::usage_series(&usage, hour, hour, now);
    let expected = |key: &str| -> Vec<Value> {
        (0..720)
            .rev()
            .map(|back: i64| {
                let i = samples - 1 - back;
                let v = if key == "cpu" { i % 3 } else { 1000 + i };
                json!({"timestamp": now - 1 - 5 * back, key: v})
            })
            .collect()
    };
    assert_eq!(cpu.len(), 720);
    assert_eq!(cpu, expected("cpu"));
    assert_eq!(memory, expected("memory"));
}

fn timefmt_now() -> i64 {
    crate::timefmt::now_unix()
}

#[tokio::test]
async fn host_interfaces_come_from_the_netmon_cache() {
    let (link, _rx) = Link::for_test();
    let cache = InterfaceCache::new();
    let a = app_with(Arc::new(Unavailable), cache.clone());
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
    assert!(matches!(decode_line(b"{}").unwrap(), NetmonEvent::Ignored));
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
             "subnet": "10.204.1.0/24", "gateway": "10.204.1.1"},
            {"name": "wlan0", "ip_address": "10.204.2.5", "ipv4_addresses": ["10.204.2.5"], "mac_address": null,
             "subnet": "10.204.2.0/24", "gateway": "10.204.1.1"}
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
async fn heartbeat_is_emitted_at_once_with_upstream_keys_in_order() {
    let (link, mut rx) = Link::for_test();
    let a = app(Arc::new(Unavailable));
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
        a.host().usage().raw_len(),
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
    ] {
        assert!(names.contains(&t), "{t}");
    }
    let r = validate("heartbeat", &[json!({"correlation_id": 1})]).unwrap_err();
    assert_eq!(r.correlation_id, json!(1));
    assert_eq!(r.error.to_string(), "Unknown topic: heartbeat");
    assert!(matches!(
        validate(
            "get_device_status",
            &[json!({"correlation_id": 1, "device_id": "d"})]
        ),
        Ok(Request::DeviceStatus(_))
    ));
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
                known || matches!(r.error, ContractError::Semantic(_)),
                "{topic} {args:?} -> {text}"
            );
        }
    }
}
