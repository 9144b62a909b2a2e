//! Per-runtime CPU and memory history for `get_consumption_device` (spec §2 "Runtimes", upstream
//! §2.5 and §12 item 9).
//!
//! Owns: the 48 h usage history of each runtime ([`DeviceUsage`], two tiers: raw 5 s samples for
//! the last hour, minute means before, see [`crate::usage`]), sampling the Engine's one-shot
//! stats of the given runtimes concurrently ([`DeviceUsage::sample`], every heartbeat — 5 s — from
//! a task of the runtime service, see [`spawn`]), and the report of one runtime's history
//! ([`Runtimes::usage_report`]).
//!
//! Wiring in the runtime service: `consumption::spawn(&rt)` once at start-up (the sampler task is
//! owned by the service's task set). The [`DeviceUsage`] itself is held by the service
//! ([`Runtimes::device_usage`]).
//!
//! CPU % = Δ container CPU time / Δ host CPU time × online CPUs × 100 between two consecutive
//! one-shot samples (100 % = one CPU busy; `docker stats`' formula, over our 5 s interval rather than
//! the engine's 1 s one). Memory MiB = usage − inactive page cache (`inactive_file` on cgroup v2,
//! `total_inactive_file` on v1).
//!
//! Must never: decide which containers are runtimes or owned (the caller passes the targets and
//! checks the device before asking for an answer), block (stats calls are async with a timeout),
//! grow without bound (fixed-capacity rings; entries of runtimes that vanished are dropped), or
//! drop a history because the engine could not be asked (a failed listing skips the tick).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::{Error, Runtimes};
use crate::usage::{Field, MINUTE_CAPACITY, Period, RAW_CAPACITY, Usage, UsageHistory, downsample};
use docker_api::{ContainerStats, Docker};

/// Interval between samples: the heartbeat's.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for one runtime's stats; a slow engine loses that runtime's sample, nothing else.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(4);
/// Most points per series in one answer (shared with the host's series, see [`crate::usage`]).
pub use crate::usage::MAX_POINTS;

/// One runtime to sample: its name (the device id) and its container id (or name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleTarget {
    /// Runtime (container) name, the cloud's `device_id`.
    pub name: String,
    /// Container id or name for the Engine API.
    pub container: String,
}

#[derive(Debug)]
struct Series {
    /// CPU % (100 = one CPU) and memory MiB.
    samples: UsageHistory,
    /// The previous raw stats, for the CPU delta.
    previous: Option<ContainerStats>,
    /// Memory limit in bytes when the container has one below the host's memory.
    memory_limit: Option<u64>,
    /// Kept even when no such runtime exists (the benchmark's synthetic series only).
    pinned: bool,
}

impl Series {
    fn new((raw, minutes): (usize, usize)) -> Self {
        Self {
            samples: UsageHistory::with_capacity(raw, minutes),
            previous: None,
            memory_limit: None,
            pinned: false,
        }
    }
}

/// The per-runtime usage history. Cheap to share (`Arc`); the lock is held only for in-memory
/// updates, never across an await.
#[derive(Debug)]
pub struct DeviceUsage {
    series: Mutex<HashMap<String, Series>>,
    /// Capacities of the raw and minute tiers of each runtime's history.
    capacity: (usize, usize),
    /// Host memory in bytes: a stats `limit` at or above it means "no limit". `u64::MAX` until
    /// known (read by the sampler without blocking, see [`DeviceUsage::learn_host_memory`]).
    host_memory: AtomicU64,
}

impl Default for DeviceUsage {
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl DeviceUsage {
    /// An empty history (48 h per runtime); `host_memory` (bytes) tells a container memory limit
    /// from "unlimited".
    pub fn new(host_memory: u64) -> Self {
        Self::with_capacity(RAW_CAPACITY, MINUTE_CAPACITY, host_memory)
    }

    /// [`DeviceUsage::new`] with other tier capacities (raw samples, minute means) per runtime.
    pub fn with_capacity(raw: usize, minutes: usize, host_memory: u64) -> Self {
        Self {
            series: Mutex::new(HashMap::new()),
            capacity: (raw, minutes),
            host_memory: AtomicU64::new(host_memory),
        }
    }

    /// Reads the host's memory size (`MemTotal` of `/proc/meminfo`, async) so container memory
    /// limits can be told from "unlimited" (the engine reports the host's memory as the limit of an
    /// unlimited container). Unreadable: every limit is reported.
    pub async fn learn_host_memory(&self) {
        if let Ok(text) = tokio::fs::read_to_string("/proc/meminfo").await
            && let Some(bytes) = parse_mem_total(&text)
        {
            self.host_memory.store(bytes, Ordering::Relaxed);
        }
    }

    /// Takes one sample of every target concurrently (one-shot stats, [`STATS_TIMEOUT`] each) and
    /// records it at `now` (unix seconds). Runtimes not in `targets` keep their history only while
    /// `keep` says they still exist (e.g. stopped runtimes); the others are dropped.
    pub async fn sample(
        &self,
        docker: &Docker,
        targets: &[SampleTarget],
        keep: &[String],
        now: i64,
    ) {
        let mut set = tokio::task::JoinSet::new();
        for target in targets {
            let docker = docker.clone();
            let target = target.clone();
            set.spawn(async move {
                let stats =
                    tokio::time::timeout(STATS_TIMEOUT, docker.container_stats(&target.container))
                        .await;
                (target, stats)
            });
        }
        let mut results = Vec::with_capacity(targets.len());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((target, Ok(Ok(stats)))) => results.push((target.name, stats)),
                Ok((target, Ok(Err(e)))) => {
                    tracing::debug!(runtime = %target.name, error = %e, "stats failed")
                }
                Ok((target, Err(_))) => {
                    tracing::debug!(runtime = %target.name, "stats timed out")
                }
                Err(e) => tracing::warn!(error = %e, "stats task failed"),
            }
        }
        for (name, stats) in results {
            self.record(&name, stats, now);
        }
        self.retain(targets, keep);
    }

    /// Records one raw stats sample of `name` at `now`. The first sample of a runtime only
    /// primes the CPU delta (no point is stored until a second one arrives).
    pub fn record(&self, name: &str, stats: ContainerStats, now: i64) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        let capacity = self.capacity;
        let series = map
            .entry(name.to_string())
            .or_insert_with(|| Series::new(capacity));
        series.memory_limit = stats
            .memory_limit_bytes()
            .filter(|l| *l > 0 && *l < self.host_memory.load(Ordering::Relaxed));
        let cpu = series
            .previous
            .as_ref()
            .and_then(|prev| stats.cpu_percent_since(prev));
        let memory = stats.memory_used_bytes();
        if let (Some(cpu), Some(memory)) = (cpu, memory) {
            series.samples.push(
                now,
                Usage::new(cpu.max(0.0), memory as f64 / (1024.0 * 1024.0)),
            );
        }
        series.previous = Some(stats);
    }

    fn retain(&self, sampled: &[SampleTarget], keep: &[String]) {
        if let Ok(mut map) = self.series.lock() {
            map.retain(|name, series| {
                series.pinned
                    || sampled.iter().any(|t| &t.name == name)
                    || keep.iter().any(|k| k == name)
            });
        }
    }

    /// Drops the history of a deleted runtime.
    pub fn forget(&self, name: &str) {
        if let Ok(mut map) = self.series.lock() {
            map.remove(name);
        }
    }

    /// Number of raw samples of `name` held (the last hour at most; 0 when unknown).
    pub fn len(&self, name: &str) -> usize {
        self.series
            .lock()
            .ok()
            .and_then(|m| m.get(name).map(|s| s.samples.raw_len()))
            .unwrap_or(0)
    }

    /// Fills `runtimes` synthetic series (`bench-runtime-<i>`) with 48 h of 5 s samples ending at
    /// `now`, kept whatever the engine says: the memory benchmark's way to make the agent hold
    /// what ten runtimes leave after two days (`docs/benchmarks.md`). Not for anything else.
    #[doc(hidden)]
    #[cfg(any(test, feature = "bench-hooks"))]
    pub fn prefill_for_benchmark(&self, runtimes: usize, now: i64) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        for i in 0..runtimes {
            let mut series = Series::new(self.capacity);
            crate::usage::fill_for_benchmark(&mut series.samples, now, i as u64);
            series.pinned = true;
            map.insert(format!("bench-runtime-{i}"), series);
        }
    }

    /// The history of `device_id` over the two windows, each averaged into at most
    /// [`MAX_POINTS`] points; empty series for a runtime with no samples yet. The caller checks
    /// that the runtime exists.
    pub fn report(&self, device_id: &str, cpu: Period, memory: Period, now: i64) -> UsageReport {
        let (cpu_points, memory_points, memory_limit) = match self.series.lock() {
            Ok(map) => match map.get(device_id) {
                Some(s) => (
                    s.samples.series(Field::Cpu, cpu, now),
                    s.samples.series(Field::Memory, memory, now),
                    s.memory_limit,
                ),
                None => (Vec::new(), Vec::new(), None),
            },
            Err(_) => (Vec::new(), Vec::new(), None),
        };
        UsageReport {
            memory_limit,
            cpu: downsample(&cpu_points, MAX_POINTS),
            memory: downsample(&memory_points, MAX_POINTS),
        }
    }
}

/// One runtime's usage over the windows asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    /// The container's memory limit in bytes; `None` when it has none below the host's memory.
    pub memory_limit: Option<u64>,
    /// `(unix seconds, CPU %)`, 100 % being one CPU busy, oldest first.
    pub cpu: Vec<(i64, f64)>,
    /// `(unix seconds, MiB)`, oldest first.
    pub memory: Vec<(i64, f64)>,
}

impl Runtimes {
    /// The usage history of the OWNED runtime `device_id` ([`DeviceUsage::report`] at `now`);
    /// [`Error::NotFound`] / [`Error::NotOwned`] for devices that are not ours.
    pub async fn usage_report(
        &self,
        device_id: &str,
        cpu: Period,
        memory: Period,
        now: i64,
    ) -> Result<UsageReport, Error> {
        self.owned(device_id, "query").await?;
        Ok(self.device_usage().report(device_id, cpu, memory, now))
    }
}

/// The runtimes to sample now: `(running ones, all existing ones)`, or `None` when the engine
/// cannot say (then nothing is sampled and no history is dropped). Records the runtimes by state
/// on the way ([`Runtimes::census`]), unknown when an engine call failed.
async fn targets(rt: &Runtimes) -> Option<(Vec<SampleTarget>, Vec<String>)> {
    let names = match rt.owned_runtime_names().await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "consumption: cannot list runtimes");
            rt.set_census(None);
            return None;
        }
    };
    let mut running = Vec::new();
    let mut census = Some(super::Census::default());
    for name in &names {
        match rt.owned(name, "query").await {
            Ok(owned) => {
                if let Some(census) = census.as_mut() {
                    census.add(owned.container.as_ref().map(|c| c.state.status));
                }
                if let Some(c) = owned.container
                    && c.state.running
                {
                    running.push(SampleTarget {
                        name: name.clone(),
                        container: c.id.clone(),
                    });
                }
            }
            // Gone since the listing (deleted), or became someone else's: not ours to count.
            Err(e) if e.is_not_found() || e.is_not_owned() => {}
            Err(_) => census = None,
        }
    }
    rt.set_census(census);
    Some((running, names))
}

/// Starts the 5 s sampler as a task owned by the runtime service (stopped by its shutdown).
pub fn spawn(rt: &Runtimes) {
    let usage = rt.device_usage().clone();
    let docker = rt.docker().clone();
    let for_targets = rt.clone();
    rt.spawn(run_sampler(usage, docker, move || {
        let rt = for_targets.clone();
        async move { targets(&rt).await }
    }));
}

/// Runs [`DeviceUsage::sample`] every [`SAMPLE_INTERVAL`], forever (the owner aborts it).
/// `targets` lists, each tick, the running runtimes to sample and the names of all existing ones
/// (whose history is kept), or `None` when they cannot be listed (the tick is skipped). A tick
/// that takes longer than the interval delays the next one instead of piling up.
pub async fn run_sampler<F, Fut>(usage: Arc<DeviceUsage>, docker: Docker, targets: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Vec<SampleTarget>, Vec<String>)>> + Send,
{
    usage.learn_host_memory().await;
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((running, existing)) = targets().await else {
            continue;
        };
        usage
            .sample(&docker, &running, &existing, crate::timefmt::now_unix())
            .await;
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
#[allow(clippy::cast_possible_wrap)] // small test counts
mod tests {
    use serde_json::json;

    use super::*;

    fn window(text: &str, now: i64) -> Period {
        Period::parse(text, now).expect("test period")
    }

    fn stats(cpu_total: u64, system: u64, usage: u64, inactive: u64, limit: u64) -> ContainerStats {
        serde_json::from_value(json!({
            "read": "2026-11-22T14:00:00Z",
            "cpu_stats": {"cpu_usage": {"total_usage": cpu_total}, "system_cpu_usage": system,
                "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}},
            "memory_stats": {"usage": usage, "limit": limit, "stats": {"inactive_file": inactive}}
        }))
        .expect("valid stats JSON")
    }

    #[test]
    fn cpu_percent_comes_from_consecutive_samples_and_memory_excludes_inactive_cache() {
        let usage = DeviceUsage::new(8 << 30);
        usage.record(
            "plc",
            stats(1_000, 10_000, 100 << 20, 20 << 20, 8 << 30),
            100,
        );
        assert_eq!(
            usage.len("plc"),
            0,
            "the first sample only primes the delta"
        );
        // Δcpu 500 / Δsystem 1000 × 2 CPUs × 100 = 100 %.
        usage.record(
            "plc",
            stats(1_500, 11_000, 100 << 20, 20 << 20, 8 << 30),
            105,
        );
        let report = usage.report("plc", window("1h", 110), window("1h", 110), 110);
        assert_eq!(report.cpu, [(105, 100.0)]);
        assert_eq!(report.memory, [(105, 80.0)]);
        assert_eq!(report.memory_limit, None);
    }

    #[test]
    fn a_memory_limit_below_host_memory_is_reported_in_mb() {
        let usage = DeviceUsage::new(8 << 30);
        usage.record("plc", stats(0, 0, 1 << 20, 0, 256 << 20), 1);
        let report = usage.report("plc", window("1h", 2), window("1h", 2), 2);
        assert_eq!(report.memory_limit, Some(256 << 20));
    }

    #[test]
    fn periods_select_independently_and_unknown_runtimes_answer_empty_series() {
        let usage = DeviceUsage::new(8 << 30);
        for i in 0..10 {
            usage.record(
                "plc",
                stats(i * 100, i * 1000, 10 << 20, 0, 8 << 30),
                1000 + i as i64 * 5,
            );
        }
        let report = usage.report("plc", window("10", 1045), window("1040,1045", 1045), 1045);
        assert_eq!(report.cpu.len(), 3); // 1035, 1040, 1045
        assert_eq!(report.memory.len(), 2); // 1040, 1045
        let empty = usage.report("other", window("1h", 1045), window("1h", 1045), 1045);
        assert!(empty.cpu.is_empty() && empty.memory.is_empty());
    }

    #[test]
    fn buffers_are_bounded_and_vanished_runtimes_are_dropped() {
        let usage = DeviceUsage::with_capacity(3, 2, 8 << 30);
        for i in 0..10 {
            usage.record(
                "plc",
                stats(i * 100, i * 1000, 1 << 20, 0, 8 << 30),
                i as i64,
            );
        }
        assert_eq!(usage.len("plc"), 3);
        usage.retain(&[], &["plc".to_string()]);
        assert_eq!(usage.len("plc"), 3);
        usage.retain(&[], &[]);
        assert_eq!(usage.len("plc"), 0);
    }

    #[test]
    fn a_48_hour_history_is_reported_in_at_most_1440_points() {
        let usage = DeviceUsage::new(8 << 30);
        let now = 1_732_130_000;
        usage.prefill_for_benchmark(2, now);
        let report = usage.report(
            "bench-runtime-1",
            window("48h", now),
            window("2d", now),
            now,
        );
        for (key, series) in [("cpu", &report.cpu), ("memory", &report.memory)] {
            assert!(
                series.len() <= MAX_POINTS && series.len() > MAX_POINTS - 10,
                "{key}"
            );
            assert_eq!(series.last().expect("points").0, now);
        }
        // The benchmark's series stay although no such runtime exists.
        usage.retain(&[], &[]);
        assert_eq!(usage.len("bench-runtime-0"), RAW_CAPACITY);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:        8039480 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_mem_total(text), Some(8_039_480 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
    }
}
