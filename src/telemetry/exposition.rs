//! The pure text writers: the Prometheus text exposition format 0.0.4 of a [`Snapshot`] and the
//! command counters, and the `/healthz` JSON body. No I/O; every metric is listed in
//! `docs/metrics.md`.

use std::fmt::{Display, Write};

use docker_api::EngineStats;

use super::{BUCKETS, Outcome, TopicStats};
use crate::netevents::EventCounts;
use crate::runtime::Census;

/// What the agent knows at one instant, besides the command counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The agent's version (`build_info`).
    pub version: &'static str,
    /// When the process started, Unix seconds.
    pub start_time_unix: i64,
    /// The cloud link is connected.
    pub link_up: bool,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// How the Docker engine answered.
    pub engine: EngineStats,
    /// The netmon socket is connected (and its peer trusted).
    pub netmon_connected: bool,
    /// Lines read from netmon.
    pub netmon_events: EventCounts,
    /// Runtimes by state at the last usage sample; `None` when unknown.
    pub runtimes: Option<Census>,
    /// Resident set size, bytes; `None` when unreadable.
    pub rss_bytes: Option<u64>,
}

/// The `/metrics` body for `s` and the command counters.
pub fn render(s: &Snapshot, commands: &[TopicStats]) -> String {
    let mut out = Text(String::with_capacity(4096 + commands.len() * 1536));
    out.family(
        "orchestrator_build_info",
        "gauge",
        "The agent's version (the value is always 1).",
    );
    out.sample("orchestrator_build_info", &[("version", s.version)], 1);
    out.family(
        "process_start_time_seconds",
        "gauge",
        "When the agent process started, Unix time in seconds.",
    );
    out.sample("process_start_time_seconds", &[], s.start_time_unix);
    out.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size of the agent process, in bytes.",
    );
    if let Some(rss) = s.rss_bytes {
        out.sample("process_resident_memory_bytes", &[], rss);
    }

    out.family(
        "orchestrator_cloud_link_up",
        "gauge",
        "1 while the Socket.IO link to the cloud is connected, else 0.",
    );
    out.sample("orchestrator_cloud_link_up", &[], u8::from(s.link_up));
    out.family(
        "orchestrator_cloud_reconnects_total",
        "counter",
        "Connections to the cloud established after the first one.",
    );
    out.sample("orchestrator_cloud_reconnects_total", &[], s.reconnects);
    out.family(
        "orchestrator_cloud_connect_failures_total",
        "counter",
        "Connection attempts to the cloud that failed before the namespace was connected.",
    );
    out.sample(
        "orchestrator_cloud_connect_failures_total",
        &[],
        s.connect_failures,
    );

    commands_text(&mut out, commands);

    out.family(
        "orchestrator_engine_up",
        "gauge",
        "1 when the Docker engine answered the agent's last call, else 0 (also before the first call).",
    );
    out.sample(
        "orchestrator_engine_up",
        &[],
        u8::from(s.engine.answering == Some(true)),
    );
    out.family(
        "orchestrator_engine_errors_total",
        "counter",
        "Docker engine calls without a usable answer, by kind: unreachable, timeout, transport, server_error (HTTP 5xx).",
    );
    for (kind, n) in [
        ("unreachable", s.engine.unreachable),
        ("timeout", s.engine.timeout),
        ("transport", s.engine.transport),
        ("server_error", s.engine.server_error),
    ] {
        out.sample("orchestrator_engine_errors_total", &[("kind", kind)], n);
    }

    out.family(
        "orchestrator_netmon_connected",
        "gauge",
        "1 while the agent is connected to a trusted autonomy-netmon, else 0.",
    );
    out.sample(
        "orchestrator_netmon_connected",
        &[],
        u8::from(s.netmon_connected),
    );
    out.family(
        "orchestrator_netmon_events_total",
        "counter",
        "Lines read from autonomy-netmon, by kind: discovery, change, other (events the agent does not use), invalid (skipped).",
    );
    let e = s.netmon_events;
    for (kind, n) in [
        ("discovery", e.discovery),
        ("change", e.change),
        ("other", e.other),
        ("invalid", e.invalid),
    ] {
        out.sample("orchestrator_netmon_events_total", &[("kind", kind)], n);
    }

    out.family(
        "orchestrator_runtimes",
        "gauge",
        "The agent's runtimes by container state at the last 5 s usage sample (missing: known, no container); absent while the engine cannot say.",
    );
    if let Some(census) = &s.runtimes {
        for (state, n) in census.iter() {
            out.sample("orchestrator_runtimes", &[("state", state)], n);
        }
    }
    out.0
}

/// `orchestrator_commands_total` and the `orchestrator_command_duration_seconds` histogram.
fn commands_text(out: &mut Text, commands: &[TopicStats]) {
    const TOTAL: &str = "orchestrator_commands_total";
    const DURATION: &str = "orchestrator_command_duration_seconds";
    const BUCKET: &str = "orchestrator_command_duration_seconds_bucket";
    const SUM: &str = "orchestrator_command_duration_seconds_sum";
    const COUNT: &str = "orchestrator_command_duration_seconds_count";
    out.family(
        TOTAL,
        "counter",
        "Cloud commands answered, by topic and outcome: ok, error (the ack is an error), refused (invalid request or unknown topic).",
    );
    for t in commands {
        for outcome in Outcome::ALL {
            out.sample(
                TOTAL,
                &[("topic", t.topic), ("outcome", outcome.as_str())],
                t.outcomes[outcome.index()],
            );
        }
    }
    out.family(
        DURATION,
        "histogram",
        "Time from a command's arrival to its ack, by topic, in seconds.",
    );
    for t in commands {
        let mut cumulative = 0;
        for ((_, le), n) in BUCKETS.iter().zip(t.buckets) {
            cumulative += n;
            out.sample(BUCKET, &[("topic", t.topic), ("le", le)], cumulative);
        }
        out.sample(BUCKET, &[("topic", t.topic), ("le", "+Inf")], t.count());
        out.sample(SUM, &[("topic", t.topic)], Seconds(t.sum_micros));
        out.sample(COUNT, &[("topic", t.topic)], t.count());
    }
}

/// Microseconds written as seconds with six decimals (`12.000345`), without floating point.
struct Seconds(u64);

impl Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// `/healthz`: ready (the cloud link is up, the engine answered its last call and netmon is
/// connected) and the JSON body saying which part is down.
pub fn readiness(s: &Snapshot) -> (bool, String) {
    let engine = match s.engine.answering {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    };
    let parts = [
        ("cloud_link", if s.link_up { "up" } else { "down" }),
        ("engine", engine),
        ("netmon", if s.netmon_connected { "up" } else { "down" }),
    ];
    let ready = parts.iter().all(|(_, state)| *state == "up");
    let mut body = String::with_capacity(128);
    body.push_str(if ready {
        r#"{"status":"ok""#
    } else {
        r#"{"status":"unavailable""#
    });
    for (part, state) in parts {
        // Fixed names and states: nothing to escape.
        let _ = write!(body, r#","{part}":"{state}""#);
    }
    body.push_str("}\n");
    (ready, body)
}

/// The exposition text being written.
struct Text(String);

impl Text {
    /// `# HELP` and `# TYPE` of a family (its samples follow, contiguous).
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.0.push_str("# HELP ");
        self.0.push_str(name);
        self.0.push(' ');
        escape_into(&mut self.0, help, false);
        self.0.push_str("\n# TYPE ");
        self.0.push_str(name);
        self.0.push(' ');
        self.0.push_str(kind);
        self.0.push('\n');
    }

    /// `name{label="value",...} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(label);
                self.0.push_str("=\"");
                escape_into(&mut self.0, v, true);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Escapes `\` and line feeds (HELP text), and `"` too in label values.
fn escape_into(out: &mut String, text: &str, label_value: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::Commands;

    fn snapshot() -> Snapshot {
        let mut engine = EngineStats::default();
        engine.answering = Some(true);
        engine.unreachable = 2;
        let mut census = Census::default();
        census.add(Some(docker_api::ContainerStatus::Running));
        census.add(None);
        Snapshot {
            version: "1.2.3",
            start_time_unix: 1_700_000_000,
            link_up: true,
            reconnects: 3,
            connect_failures: 4,
            engine,
            netmon_connected: false,
            netmon_events: EventCounts {
                discovery: 1,
                change: 5,
                other: 0,
                invalid: 1,
            },
            runtimes: Some(census),
            rss_bytes: Some(3_500_000),
        }
    }

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples_and_samples_stay_together() {
        let c = Commands::default();
        c.record("stop_device", Outcome::Ok, Duration::from_millis(7));
        c.record(
            "get_device_status",
            Outcome::Refused,
            Duration::from_millis(1),
        );
        let text = c.with(|all| render(&snapshot(), all));
        assert!(text.ends_with('\n'));
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut help_of = None;
        let mut finished: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(!finished.contains(&name), "{name} declared twice");
                if let Some((prev, _)) = declared.last() {
                    finished.push(prev.clone());
                }
                help_of = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(help_of.as_deref(), Some(name), "TYPE right after HELP");
                declared.push((name.to_owned(), kind.to_owned()));
            } else {
                let (name, kind) = declared.last().expect("a sample after a family");
                let sample = line.split(['{', ' ']).next().unwrap();
                let allowed: &[&str] = match kind.as_str() {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                assert!(
                    allowed.iter().any(|s| sample == format!("{name}{s}")),
                    "{line} is not a sample of {name}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "orchestrator_build_info",
                "process_start_time_seconds",
                "process_resident_memory_bytes",
                "orchestrator_cloud_link_up",
                "orchestrator_cloud_reconnects_total",
                "orchestrator_cloud_connect_failures_total",
                "orchestrator_commands_total",
                "orchestrator_command_duration_seconds",
                "orchestrator_engine_up",
                "orchestrator_engine_errors_total",
                "orchestrator_netmon_connected",
                "orchestrator_netmon_events_total",
                "orchestrator_runtimes",
            ]
        );
        for (name, kind) in &declared {
            assert_eq!(
                name.ends_with("_total"),
                kind == "counter",
                "{name}: counters and only counters end in _total"
            );
        }
    }

    #[test]
    fn the_snapshot_values_are_written() {
        let text = render(&snapshot(), &[]);
        for line in [
            r#"orchestrator_build_info{version="1.2.3"} 1"#,
            "process_start_time_seconds 1700000000",
            "process_resident_memory_bytes 3500000",
            "orchestrator_cloud_link_up 1",
            "orchestrator_cloud_reconnects_total 3",
            "orchestrator_cloud_connect_failures_total 4",
            "orchestrator_engine_up 1",
            r#"orchestrator_engine_errors_total{kind="unreachable"} 2"#,
            r#"orchestrator_engine_errors_total{kind="server_error"} 0"#,
            "orchestrator_netmon_connected 0",
            r#"orchestrator_netmon_events_total{kind="change"} 5"#,
            r#"orchestrator_netmon_events_total{kind="invalid"} 1"#,
            r#"orchestrator_runtimes{state="running"} 1"#,
            r#"orchestrator_runtimes{state="missing"} 1"#,
            r#"orchestrator_runtimes{state="exited"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Unknown values are left out, their families stay declared.
        let mut unknown = snapshot();
        unknown.rss_bytes = None;
        unknown.runtimes = None;
        let text = render(&unknown, &[]);
        assert!(lines_of(&text, "process_resident_memory_bytes").is_empty());
        assert!(lines_of(&text, "orchestrator_runtimes").is_empty());
        assert!(text.contains("# TYPE orchestrator_runtimes gauge\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_equal_to_the_count() {
        let c = Commands::default();
        for ms in [1, 7, 7, 300, 45_000] {
            c.record("run_command", Outcome::Ok, Duration::from_millis(ms));
        }
        c.record("run_command", Outcome::Error, Duration::from_millis(20));
        let text = c.with(|all| render(&Snapshot::default(), all));
        let buckets = lines_of(&text, "orchestrator_command_duration_seconds_bucket{");
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        let values: Vec<u64> = buckets
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        assert_eq!(values[0], 1, "le 0.005");
        assert_eq!(values[1], 3, "le 0.01");
        assert_eq!(values[2], 4, "le 0.025");
        assert_eq!(values[BUCKETS.len() - 1], 5, "le 30: the 45 s one is above");
        assert_eq!(
            buckets.last().copied(),
            Some(
                r#"orchestrator_command_duration_seconds_bucket{topic="run_command",le="+Inf"} 6"#
            )
        );
        assert!(
            text.contains(
                "\norchestrator_command_duration_seconds_count{topic=\"run_command\"} 6\n"
            )
        );
        assert_eq!(
            lines_of(&text, "orchestrator_command_duration_seconds_sum"),
            [r#"orchestrator_command_duration_seconds_sum{topic="run_command"} 45.335000"#]
        );
        assert_eq!(Seconds(7).to_string(), "0.000007");
        for (outcome, n) in [("ok", 5), ("error", 1), ("refused", 0)] {
            let line = format!(
                "orchestrator_commands_total{{topic=\"run_command\",outcome=\"{outcome}\"}} {n}"
            );
            assert!(text.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text(String::new());
        t.sample("m", &[("a", "back\\slash \"quoted\"\nnext")], 1);
        assert_eq!(t.0, "m{a=\"back\\\\slash \\\"quoted\\\"\\nnext\"} 1\n");
        let mut t = Text(String::new());
        t.family("m", "gauge", "a \"help\" with \\ and\nlines");
        assert_eq!(
            t.0,
            "# HELP m a \"help\" with \\\\ and\\nlines\n# TYPE m gauge\n"
        );
    }

    #[test]
    fn readiness_needs_the_link_the_engine_and_netmon() {
        let mut s = snapshot();
        s.netmon_connected = true;
        assert_eq!(
            readiness(&s),
            (
                true,
                "{\"status\":\"ok\",\"cloud_link\":\"up\",\"engine\":\"up\",\"netmon\":\"up\"}\n"
                    .to_owned()
            )
        );
        s.netmon_connected = false;
        s.engine.answering = None;
        let (ready, body) = readiness(&s);
        assert!(!ready);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "unavailable");
        assert_eq!(v["engine"], "unknown");
        assert_eq!(v["netmon"], "down");
        assert_eq!(v["cloud_link"], "up");
        s.netmon_connected = true;
        s.engine.answering = Some(true);
        s.link_up = false;
        let (ready, body) = readiness(&s);
        assert!(!ready && body.contains(r#""cloud_link":"down""#), "{body}");
    }
}
