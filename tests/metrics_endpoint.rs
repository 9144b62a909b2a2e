//! `--metrics-listen` as an operator uses it: the real agent binary connected to an in-process
//! `devcloud`, the machine's Docker engine, the real `autonomy-netmon` started midway, scraped
//! over TCP and a Unix socket. `/metrics` is parsed with the reference parser (Python's
//! `prometheus_client`, in the test venv), commands sent through the cloud must show up under
//! their topic and outcome with consistent histograms, and `/healthz` must follow the cloud link,
//! the engine and netmon. Without the flag nothing listens.

// Tests: a failed expectation is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use devcloud::pki::{self, PkiOptions, PkiPaths};
use devcloud::{DevCloud, ServerConfig};
use serde_json::{Value, json};
use support::{InstanceCleanup, Netmon, Proc, SLOW, docker_try, python, unique};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A device: its PKI, a devcloud it trusts, a fresh state dir.
struct Device {
    pki: PkiPaths,
    cloud: DevCloud,
    state_dir: PathBuf,
    _cleanup: InstanceCleanup,
    _dir: tempfile::TempDir,
}

impl Device {
    async fn new() -> Self {
        assert!(
            docker_try(&["info", "--format", "{{.ServerVersion}}"]).is_some(),
            "the Docker engine must be running for this test"
        );
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let agent_id = unique("metrics-");
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
        .unwrap()
        .unwrap();
        let cloud = DevCloud::start(ServerConfig::from_pki(&pki, "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let cleanup = InstanceCleanup {
            instance: state_dir.to_string_lossy().into_owned(),
        };
        Self {
            pki,
            cloud,
            state_dir,
            _cleanup: cleanup,
            _dir: dir,
        }
    }

    /// Starts the agent with `args` and waits until the cloud sees it.
    async fn agent(&self, args: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator-agent"));
        cmd.arg("--server")
            .arg(self.cloud.url())
            .arg("--ca-file")
            .arg(&self.pki.ca_cert)
            .arg("--mtls-dir")
            .arg(&self.pki.agent_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--log-level", "debug"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ORCHESTRATOR_METRICS_LISTEN");
        let agent = Proc::spawn(cmd);
        if let Err(e) = self
            .cloud
            .wait_for_agent(Some(&self.pki.agent_id), SLOW)
            .await
        {
            panic!("agent did not connect: {e}\n{}", agent.out.text());
        }
        agent
    }

    /// Sends `topic` with `args` through the cloud and returns the ack's first value.
    async fn call(&self, topic: &str, args: Vec<Value>) -> Value {
        let ack = self
            .cloud
            .emit_with_ack(Some(&self.pki.agent_id), topic, args, SLOW)
            .await
            .unwrap_or_else(|e| panic!("{topic}: no ack: {e}"));
        ack.into_iter().next().unwrap_or(Value::Null)
    }
}

/// Where a test scrapes.
#[derive(Clone)]
enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// An HTTP answer: status code, header lines (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Endpoint {
    /// Sends `request` verbatim and reads the answer until the server closes.
    async fn raw(&self, request: &str) -> Answer {
        match self {
            Endpoint::Tcp(addr) => {
                exchange(tokio::net::TcpStream::connect(addr).await.unwrap(), request).await
            }
            Endpoint::Unix(path) => {
                exchange(
                    tokio::net::UnixStream::connect(path).await.unwrap(),
                    request,
                )
                .await
            }
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: metrics-test\r\n\r\n"
        ))
        .await
    }

    /// `/metrics`, parsed by the reference parser.
    async fn scrape(&self) -> Metrics {
        let a = self.get("/metrics").await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.headers.get("content-type").map(String::as_str),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Metrics::parse(&a.body)
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Answer {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection after its answer")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    assert_eq!(headers.get("connection").map(String::as_str), Some("close"));
    if !request.starts_with("HEAD ") {
        assert_eq!(
            headers.get("content-length").map(String::as_str),
            Some(body.len().to_string().as_str()),
            "{head}"
        );
    }
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The families of one scrape as the reference parser read them.
struct Metrics(Vec<Value>);

impl Metrics {
    /// Parses `text` with `prometheus_client` (tests/python/parse_metrics.py); fails the test
    /// when it does not parse, when a family name repeats, or when a sample fell outside its
    /// declared family (the parser then makes it an untyped family of its own).
    fn parse(text: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/parse_metrics.py");
        let mut child = Command::new(python())
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("No module named 'prometheus_client'"),
            "the test venv lacks prometheus_client: `pip install prometheus_client` into it \
             (scripts/test.sh does)"
        );
        assert!(
            out.status.success(),
            "the reference parser refused the exposition: {stderr}\n{text}"
        );
        let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<&str> = families
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        for f in &families {
            assert!(
                matches!(f["type"].as_str(), Some("counter" | "gauge" | "histogram")),
                "family {} is {}: a sample outside its family?\n{text}",
                f["name"],
                f["type"]
            );
            assert!(
                !f["help"].as_str().unwrap().is_empty(),
                "{} has no HELP",
                f["name"]
            );
        }
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(count, names.len(), "a family is declared twice:\n{text}");
        Metrics(families)
    }

    /// The family `name` (counters without their `_total`, as the parser names them).
    fn family(&self, name: &str) -> &Value {
        self.0
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// Every sample named `sample` with `labels` among its labels, as (labels, value).
    fn samples(&self, sample: &str, labels: &[(&str, &str)]) -> Vec<(Value, f64)> {
        self.0
            .iter()
            .flat_map(|f| f["samples"].as_array().unwrap())
            .filter(|s| s["name"] == sample)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| {
                let v = match &s["value"] {
                    Value::String(t) => t.parse::<f64>().unwrap(),
                    v => v.as_f64().unwrap(),
                };
                (s["labels"].clone(), v)
            })
            .collect()
    }

    /// The one sample `sample` with `labels`.
    fn value(&self, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.samples(sample, labels);
        assert_eq!(found.len(), 1, "{sample} {labels:?}: {found:?}");
        found[0].1
    }

    /// `orchestrator_commands_total` of `topic` and `outcome` (0 when not there yet).
    fn commands(&self, topic: &str, outcome: &str) -> f64 {
        self.samples(
            "orchestrator_commands_total",
            &[("topic", topic), ("outcome", outcome)],
        )
        .first()
        .map_or(0.0, |s| s.1)
    }

    /// Checks every topic's histogram: buckets cumulative and in order, `+Inf` = `_count` = the
    /// topic's commands over all outcomes, a plausible `_sum`.
    fn check_histograms(&self) {
        let family = self.family("orchestrator_command_duration_seconds");
        assert_eq!(family["type"], "histogram");
        let topics: Vec<String> = self
            .samples("orchestrator_command_duration_seconds_count", &[])
            .into_iter()
            .map(|(l, _)| l["topic"].as_str().unwrap().to_owned())
            .collect();
        assert!(!topics.is_empty());
        for topic in &topics {
            let t = [("topic", topic.as_str())];
            let mut buckets: Vec<(f64, f64)> = self
                .samples("orchestrator_command_duration_seconds_bucket", &t)
                .into_iter()
                .map(|(l, v)| (l["le"].as_str().unwrap().parse::<f64>().unwrap(), v))
                .collect();
            let order: Vec<f64> = buckets.iter().map(|b| b.0).collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(
                order,
                buckets.iter().map(|b| b.0).collect::<Vec<_>>(),
                "{topic}: buckets in le order"
            );
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{topic}: buckets are cumulative: {buckets:?}"
            );
            let (le, inf) = *buckets.last().unwrap();
            assert!(le.is_infinite(), "{topic}: the last bucket is +Inf");
            let count = self.value("orchestrator_command_duration_seconds_count", &t);
            assert_eq!(inf, count, "{topic}: +Inf is the count");
            let by_outcome: f64 = ["ok", "error", "refused"]
                .iter()
                .map(|o| self.commands(topic, o))
                .sum();
            assert_eq!(count, by_outcome, "{topic}: the count is every outcome's");
            let sum = self.value("orchestrator_command_duration_seconds_sum", &t);
            assert!(
                sum >= 0.0 && sum <= count * 60.0,
                "{topic}: sum {sum} for {count}"
            );
        }
    }
}

/// The address the agent logged for `--metrics-listen` (the real port when 0 was asked).
async fn listening_on(agent: &Proc) -> String {
    let line = support::eventually(SLOW, "the metrics listening line", || {
        agent
            .out
            .snapshot()
            .into_iter()
            .find(|l| l.contains("metrics listening"))
    })
    .await;
    let at = line.find("listen=http://").expect("a TCP address") + "listen=http://".len();
    line[at..].split_whitespace().next().unwrap().to_owned()
}

/// Polls `/healthz` until `want(status, body)` holds; returns the last answer.
async fn healthz_until(at: &Endpoint, what: &str, want: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let a = at.get("/healthz").await;
        assert_eq!(
            a.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let body: Value = serde_json::from_str(&a.body).unwrap();
        if want(a.status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz never showed {what}; last: {} {body}",
            a.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_count_commands_and_healthz_follows_the_link_engine_and_netmon() {
    let device = Device::new().await;
    let agent = device.agent(&["--metrics-listen", "127.0.0.1:0"]).await;
    let at = Endpoint::Tcp(listening_on(&agent).await);

    // No netmon yet: not ready, and the body says which part is down. (The cloud sees the agent
    // a moment before the agent sees the cloud's namespace answer.)
    let body = healthz_until(&at, "the link and engine up, netmon down", |status, b| {
        status == 503 && b["engine"] == "up" && b["cloud_link"] == "up"
    })
    .await;
    assert_eq!(
        body,
        json!({"status": "unavailable", "cloud_link": "up", "engine": "up", "netmon": "down"})
    );

    let before = at.scrape().await;
    assert_eq!(before.family("orchestrator_commands")["type"], "counter");
    // One command of each outcome through the cloud, and a name outside the table.
    let status = device
        .call(
            "get_device_status",
            vec![json!({"correlation_id": 1, "device_id": "__orchestrator__"})],
        )
        .await;
    assert_eq!(status["action"], "get_device_status", "{status}");
    let refused = device
        .call("stop_device", vec![json!({"correlation_id": 2})])
        .await;
    assert_eq!(refused["status"], "error", "{refused}");
    let failed = device
        .call("get_host_interfaces", vec![json!({"correlation_id": 3})])
        .await;
    assert_eq!(failed["status"], "error", "netmon is not there: {failed}");
    device
        .call("no_such_topic", vec![json!({"correlation_id": 4})])
        .await;

    let after = at.scrape().await;
    for (topic, outcome) in [
        ("get_device_status", "ok"),
        ("stop_device", "refused"),
        ("get_host_interfaces", "error"),
        ("unknown", "refused"),
    ] {
        assert_eq!(
            after.commands(topic, outcome) - before.commands(topic, outcome),
            1.0,
            "{topic} {outcome}"
        );
    }
    assert!(
        after
            .samples("orchestrator_commands_total", &[("topic", "no_such_topic")])
            .is_empty(),
        "the cloud's topic names never become label values"
    );
    after.check_histograms();
    assert_eq!(after.value("orchestrator_cloud_link_up", &[]), 1.0);
    assert_eq!(after.value("orchestrator_cloud_reconnects_total", &[]), 0.0);
    assert_eq!(after.value("orchestrator_engine_up", &[]), 1.0);
    assert_eq!(after.value("orchestrator_netmon_connected", &[]), 0.0);
    for kind in ["unreachable", "timeout", "transport", "server_error"] {
        assert!(after.value("orchestrator_engine_errors_total", &[("kind", kind)]) >= 0.0);
    }
    assert_eq!(after.family("orchestrator_runtimes")["type"], "gauge");
    let version = after.samples("orchestrator_build_info", &[]);
    assert_eq!(version.len(), 1);
    assert_eq!(version[0].0["version"], env!("CARGO_PKG_VERSION"));
    let rss = after.value("process_resident_memory_bytes", &[]);
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    let started = after.value("process_start_time_seconds", &[]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(started <= now && started > now - 600.0, "start {started}");

    // What is not served.
    assert_eq!(at.get("/").await.status, 404);
    assert_eq!(at.get("/metrics/extra").await.status, 404);
    let post = at
        .raw("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(
        post.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );
    assert_eq!(at.raw("nonsense\r\n\r\n").await.status, 400);
    let head = at.raw("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.status == 200 && head.body.is_empty(), "{head:?}");
    assert_ne!(head.headers["content-length"], "0");
    // A client that sends nothing is dropped after the timeout, and meanwhile others are served.
    let _silent = tokio::net::TcpStream::connect(match &at {
        Endpoint::Tcp(a) => a.as_str(),
        Endpoint::Unix(_) => unreachable!(),
    })
    .await
    .unwrap();
    assert_eq!(at.get("/healthz").await.status, 503);

    // netmon comes: ready.
    let _netmon = Netmon::start(&device.state_dir.join("netmon.sock")).await;
    let body = healthz_until(&at, "ready", |status, _| status == 200).await;
    assert_eq!(
        body,
        json!({"status": "ok", "cloud_link": "up", "engine": "up", "netmon": "up"})
    );
    let m = at.scrape().await;
    assert_eq!(m.value("orchestrator_netmon_connected", &[]), 1.0);
    assert!(m.value("orchestrator_netmon_events_total", &[("kind", "discovery")]) >= 1.0);

    // The cloud drops the agent: it reconnects, and the metrics count it.
    device.cloud.disconnect_all();
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let m = at.scrape().await;
        if m.value("orchestrator_cloud_reconnects_total", &[]) == 1.0
            && m.value("orchestrator_cloud_link_up", &[]) == 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect counted\n{}",
            agent.out.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_a_unix_socket_replace_a_stale_one_and_nothing_listens_without_the_flag() {
    let device = Device::new().await;
    let socket = device.state_dir.join("metrics.sock");
    // A socket file left by an agent that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let arg = format!("unix:{}", socket.display());
    let mut agent = device.agent(&["--metrics-listen", &arg]).await;
    support::eventually(SLOW, "the metrics socket", || {
        agent.out.contains("metrics listening").then_some(())
    })
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let at = Endpoint::Unix(socket.clone());
    healthz_until(&at, "the link up", |_, b| b["cloud_link"] == "up").await;
    let m = at.scrape().await;
    assert_eq!(m.value("orchestrator_cloud_link_up", &[]), 1.0);
    assert_eq!(at.get("/nope").await.status, 404);
    let pid = agent.id();
    agent.kill();

    // Off by default: the same device without the flag opens no TCP listener and no metrics
    // socket (its only listening socket is the liveness probe's).
    std::fs::remove_file(&socket).unwrap();
    let agent = device.agent(&[]).await;
    assert_ne!(agent.id(), pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !agent.out.contains("metrics listening"),
        "{}",
        agent.out.text()
    );
    assert!(!socket.exists());
    assert_eq!(
        listening_tcp_sockets(agent.id()),
        0,
        "the agent listens on TCP without --metrics-listen"
    );
}

/// How many TCP sockets in LISTEN state process `pid` holds (its fds' socket inodes against
/// /proc/net/tcp and tcp6).
fn listening_tcp_sockets(pid: u32) -> usize {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st is the 4th column, the inode the 10th; 0A is LISTEN.
            if cols.len() > 9 && cols[3] == "0A" {
                listening.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| listening.iter().any(|l| Path::new(l) == target))
        .count()
}
