//! Local health and Prometheus metrics, off by default (`--metrics-listen`): a small HTTP/1.1
//! responder on a TCP address or a Unix socket that answers `GET /metrics` (the Prometheus text
//! exposition format 0.0.4) and `GET /healthz` (readiness: cloud link, engine, netmon).
//!
//! It owns the command counters ([`Commands`], fed by the topics' dispatch), the one piece of
//! state no other module keeps, and reads everything else where it already lives: the link's
//! [`LinkStatus`], the engine client's [`docker_api::EngineStats`], netmon's connection and event
//! counts in the [`InterfaceCache`], the runtime service's [`crate::runtime::Census`] (taken by the usage sampler
//! every 5 s) and `/proc/self/status` for the RSS. A scrape makes no engine call and writes no
//! file.
//!
//! `/healthz` is readiness, not liveness: [`crate::health`] (the container's `HEALTHCHECK`)
//! deliberately ignores the cloud and the engine, so a cloud outage never restarts a fleet; this
//! view says which of them is down, for an operator or a monitor.
//!
//! Submodules: `exposition` (the pure text writers: metrics and the health body) and `http` (the
//! listener and its request parsing). Never does: authenticate (serve it on loopback or a Unix
//! socket), read a request body, keep a connection open, or serve more than a few at once.

mod exposition;
mod http;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use exposition::{Snapshot, readiness, render};
pub use http::{Listen, spawn};

use crate::cloud::LinkStatus;
use crate::netevents::InterfaceCache;
use crate::runtime::Runtimes;

/// How a command went, as its ack says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a result (a long operation: accepted; it reports through
    /// `get_device_status`).
    Ok,
    /// Validated, then failed: the ack is an error.
    Error,
    /// Refused before anything was done: the request did not validate or names no topic.
    Refused,
}

impl Outcome {
    /// Every outcome, in the order [`TopicStats::outcomes`] counts them.
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Refused];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Refused => 2,
        }
    }
}

/// Upper bounds of the command latency buckets, in microseconds, with their `le` label text (in
/// seconds): from a status query (milliseconds) to an HTTP command or upload proxied to a runtime
/// (seconds). Integers, so counting and writing need no floating point.
pub const BUCKETS: [(u64, &str); 12] = [
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
];

/// One topic's commands: how many per outcome, and how long they took to be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicStats {
    /// The topic (`unknown` for names outside the dispatch table).
    pub topic: &'static str,
    /// Commands per outcome, in [`Outcome::ALL`]'s order.
    pub outcomes: [u64; 3],
    /// Commands answered within each bucket's bound and above the previous bound (not
    /// cumulative); slower ones are only in [`TopicStats::count`].
    pub buckets: [u64; BUCKETS.len()],
    /// Time to the ack of all of them, microseconds.
    pub sum_micros: u64,
}

impl TopicStats {
    fn new(topic: &'static str) -> Self {
        Self {
            topic,
            outcomes: [0; 3],
            buckets: [0; BUCKETS.len()],
            sum_micros: 0,
        }
    }

    /// Every command of this topic.
    pub fn count(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    fn observe(&mut self, outcome: Outcome, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.outcomes[outcome.index()] += 1;
        if let Some(i) = BUCKETS.iter().position(|(le, _)| micros <= *le) {
            self.buckets[i] += 1;
        }
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }
}

/// The command counters: one entry per topic seen (at most the dispatch table and `unknown`),
/// cheap to clone (all clones share them).
#[derive(Debug, Clone, Default)]
pub struct Commands {
    inner: Arc<Mutex<Vec<TopicStats>>>,
}

impl Commands {
    /// Counts one command of `topic` (a name from the dispatch table, never the cloud's text).
    pub fn record(&self, topic: &'static str, outcome: Outcome, elapsed: Duration) {
        let mut all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = match all.iter().position(|t| t.topic == topic) {
            Some(i) => i,
            None => {
                all.push(TopicStats::new(topic));
                all.len() - 1
            }
        };
        all[at].observe(outcome, elapsed);
    }

    /// Calls `f` with every topic's counts, under the lock (dispatch waits meanwhile: keep `f`
    /// short and free of I/O).
    pub fn with<R>(&self, f: impl FnOnce(&[TopicStats]) -> R) -> R {
        let all = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&all)
    }
}

/// Where a scrape reads the agent's state: cheap handles on state other modules own.
#[derive(Clone)]
pub struct Sources {
    /// When the process started.
    pub started: Instant,
    /// The cloud link's status.
    pub link: LinkStatus,
    /// netmon's view (connection, event counts).
    pub interfaces: InterfaceCache,
    /// The runtime service: its engine client's answers and the runtimes by state.
    pub runtimes: Runtimes,
    /// The command counters the dispatch feeds.
    pub commands: Commands,
}

impl Sources {
    /// What the agent knows now (the RSS is read by [`Sources::metrics`] only).
    pub fn snapshot(&self) -> Snapshot {
        let uptime = self.started.elapsed();
        let now = crate::timefmt::now_unix();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            start_time_unix: now.saturating_sub(i64::try_from(uptime.as_secs()).unwrap_or(0)),
            link_up: self.link.is_up(),
            reconnects: self.link.reconnects(),
            connect_failures: self.link.connect_failures(),
            engine: self.runtimes.docker().stats(),
            netmon_connected: self.interfaces.is_connected(),
            netmon_events: self.interfaces.event_counts(),
            runtimes: self.runtimes.census(),
            rss_bytes: None,
        }
    }

    /// The `/metrics` body.
    pub async fn metrics(&self) -> String {
        let mut snapshot = self.snapshot();
        snapshot.rss_bytes = read_rss().await;
        self.commands.with(|commands| render(&snapshot, commands))
    }
}

/// The process's resident set size, bytes (`VmRSS` of `/proc/self/status`).
async fn read_rss() -> Option<u64> {
    let status = tokio::fs::read_to_string("/proc/self/status").await.ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_counted_per_topic_and_outcome_into_buckets() {
        let c = Commands::default();
        c.record("stop_device", Outcome::Ok, Duration::from_millis(3));
        c.record("stop_device", Outcome::Error, Duration::from_millis(30));
        c.record("stop_device", Outcome::Ok, Duration::from_secs(40));
        c.record("unknown", Outcome::Refused, Duration::ZERO);
        c.with(|all| {
            assert_eq!(all.len(), 2);
            let stop = &all[0];
            assert_eq!(stop.topic, "stop_device");
            assert_eq!(stop.outcomes, [2, 1, 0]);
            assert_eq!(stop.count(), 3);
            assert_eq!(stop.buckets[0], 1, "3 ms is within 5 ms");
            assert_eq!(stop.buckets[3], 1, "30 ms is within 50 ms");
            assert_eq!(
                stop.buckets.iter().sum::<u64>(),
                2,
                "40 s is above every bound: only in the count"
            );
            assert_eq!(stop.sum_micros, 40_033_000);
            assert_eq!(all[1].outcomes, [0, 0, 1]);
        });
    }

    #[test]
    fn the_rss_is_read_from_vm_rss() {
        let status =
            "Name:\torchestrator-ag\nVmPeak:\t   9000 kB\nVmRSS:\t    3412 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(3412 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn buckets_grow_and_their_labels_match_their_bounds() {
        for pair in BUCKETS.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
        for (le, text) in BUCKETS {
            #[allow(clippy::cast_precision_loss)] // small exact integers
            let seconds = le as f64 / 1e6;
            assert_eq!(text.parse::<f64>().ok(), Some(seconds));
        }
    }
}
