//! Host sampling: one owned background task, started at start-up and independent of the cloud
//! link, reads the host's CPU, memory and disk every 5 s, records the host usage history that
//! `get_consumption_orchestrator` answers from, and publishes the latest sample, which the
//! heartbeat of whatever connection exists sends. The history therefore has no hole while the cloud
//! is unreachable.
//!
//! Never blocks the runtime: `/proc` is read in `spawn_blocking` with a timeout, and disk space
//! (statvfs, which can hang on a dead network filesystem) is refreshed by a background blocking
//! task whose latest result is used; a read still stuck from an earlier tick is not repeated.
//! Never emits anything and knows nothing of the link or the topics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::metrics::{self, CpuTimes, DiskTotals, StaticInfo};
use crate::timefmt;
use crate::usage::{Usage, UsageHistory};

/// Time between samples (the heartbeat's period).
pub const PERIOD: Duration = Duration::from_secs(5);
/// How long one sample waits for a fresh disk figure before using the previous one.
const DISK_WAIT: Duration = Duration::from_millis(300);
/// Upper bound for reading `/proc/stat` and `/proc/meminfo`.
const PROC_TIMEOUT: Duration = Duration::from_secs(2);

/// One reading of the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSample {
    /// When it was taken, unix seconds.
    pub at: i64,
    /// CPU utilisation since the previous reading, percent of all CPUs (0–100); the first
    /// reading is the average since boot. 0 when `/proc/stat` could not be read.
    pub cpu_percent: f64,
    /// Used memory (psutil's formula), bytes; 0 when unknown.
    pub memory_used: u64,
    /// Total memory, bytes; 0 when unknown.
    pub memory_total: u64,
    /// The latest disk figure (possibly from an earlier reading; zeros when never read).
    pub disk: DiskTotals,
}

impl HostSample {
    /// The usage history's point for this reading: CPU % truncated to an integer (as the
    /// original agent stored it), used memory in whole MiB.
    pub fn usage(&self) -> Usage {
        Usage::new(
            metrics::round1(self.cpu_percent).trunc(),
            (self.memory_used / (1024 * 1024)) as f64,
        )
    }
}

/// The host sampler's state, shared by the sampling task, the heartbeat and
/// `get_consumption_orchestrator`. Cheap to clone.
#[derive(Clone)]
pub struct HostMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    usage: Mutex<UsageHistory>,
    latest: watch::Sender<Option<HostSample>>,
    cpu_prev: Mutex<Option<CpuTimes>>,
    disk: watch::Sender<Option<DiskTotals>>,
    disk_in_flight: Arc<AtomicBool>,
    /// A `/proc` read still running (stuck): later readings do not start another blocking thread.
    proc_in_flight: Arc<AtomicBool>,
    static_info: OnceCell<StaticInfo>,
}

impl Default for HostMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMonitor {
    /// An empty monitor; nothing is read until [`HostMonitor::spawn`] or a reading is asked for.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                usage: Mutex::new(UsageHistory::new()),
                latest: watch::channel(None).0,
                cpu_prev: Mutex::new(None),
                disk: watch::channel(None).0,
                disk_in_flight: Arc::new(AtomicBool::new(false)),
                proc_in_flight: Arc::new(AtomicBool::new(false)),
                static_info: OnceCell::new(),
            }),
        }
    }

    /// Starts the sampling task: a reading at once, then every [`PERIOD`] (a slow reading delays
    /// the next one rather than piling up). The task stops when the returned handle is dropped.
    pub fn spawn(&self) -> SamplerTask {
        let me = self.clone();
        SamplerTask(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                me.sample().await;
            }
        }))
    }

    /// Takes one reading, records it in the history and publishes it as the latest.
    pub async fn sample(&self) -> HostSample {
        let sample = self.read().await;
        self.usage().push(sample.at, sample.usage());
        self.inner.latest.send_replace(Some(sample));
        sample
    }

    /// Fills the history with 48 h of synthetic samples ending at `now`: for the memory
    /// benchmark only (`docs/benchmarks.md`).
    #[doc(hidden)]
    #[cfg(any(test, feature = "bench-hooks"))]
    pub fn prefill_for_benchmark(&self, now: i64) {
        crate::usage::fill_for_benchmark(&mut self.usage(), now, u64::MAX);
    }

    /// The latest published reading.
    pub fn latest(&self) -> Option<HostSample> {
        *self.inner.latest.borrow()
    }

    /// The latest reading; before the first one, waits up to `wait` for it, then reads the host
    /// itself (without recording: the history is the sampler's).
    pub async fn current(&self, wait: Duration) -> HostSample {
        let mut rx = self.inner.latest.subscribe();
        if let Ok(Ok(latest)) = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await
            && let Some(sample) = *latest
        {
            return sample;
        }
        self.read().await
    }

    /// The host usage history (48 h, two tiers). Hold the guard briefly, never across an await.
    pub fn usage(&self) -> MutexGuard<'_, UsageHistory> {
        // Pushes and reads cannot leave the history inconsistent, so poisoning is harmless.
        self.inner.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Static info, read once (in a blocking task).
    pub async fn static_info(&self) -> StaticInfo {
        self.inner
            .static_info
            .get_or_init(|| async {
                tokio::task::spawn_blocking(metrics::read_static_info)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reading static system info failed");
                        StaticInfo {
                            memory_mib: 0,
                            memory_total_bytes: 0,
                            cpu: None,
                            os: String::new(),
                            kernel: String::new(),
                        }
                    })
            })
            .await
            .clone()
    }

    /// Starts a disk refresh unless one is still running, waits up to `wait` for it, and returns
    /// the latest known totals.
    pub async fn disk(&self, wait: Duration) -> Option<DiskTotals> {
        let inner = &self.inner;
        let mut rx = inner.disk.subscribe();
        rx.mark_unchanged();
        if !inner.disk_in_flight.swap(true, Ordering::AcqRel) {
            let tx = inner.disk.clone();
            let in_flight = Arc::clone(&inner.disk_in_flight);
            tokio::spawn(async move {
                match tokio::task::spawn_blocking(metrics::read_disk).await {
                    Ok(Ok(totals)) => {
                        tx.send_replace(Some(totals));
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "disk usage unavailable"),
                    Err(e) => tracing::warn!(error = %e, "disk sampling task failed"),
                }
                // Wake the waiters either way; on failure they keep the previous figure.
                tx.send_modify(|_| {});
                in_flight.store(false, Ordering::Release);
            });
        }
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        *inner.disk.borrow()
    }

    /// Reads CPU, memory and disk once (not recorded).
    async fn read(&self) -> HostSample {
        let disk = self.disk(DISK_WAIT);
        let proc = async {
            if self.inner.proc_in_flight.swap(true, Ordering::AcqRel) {
                return None;
            }
            let in_flight = Arc::clone(&self.inner.proc_in_flight);
            let read = tokio::task::spawn_blocking(move || {
                let read = (metrics::read_cpu(), metrics::read_meminfo());
                in_flight.store(false, Ordering::Release);
                read
            });
            tokio::time::timeout(PROC_TIMEOUT, read).await.ok()?.ok()
        };
        let (disk, proc) = tokio::join!(disk, proc);
        let (cpu, mem) = match proc {
            Some((cpu, mem)) => (cpu.ok().map(|c| c.0), mem.ok()),
            None => {
                tracing::warn!("reading /proc timed out, failed or is still stuck");
                (None, None)
            }
        };
        let cpu_percent = cpu.map_or(0.0, |cur| {
            let mut prev = self
                .inner
                .cpu_prev
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // The first reading is the average since boot.
            let pct = metrics::cpu_percent(prev.unwrap_or_default(), cur);
            *prev = Some(cur);
            pct
        });
        let (memory_used, memory_total) =
            mem.map_or((0, 0), |m| (metrics::memory_used_bytes(&m), m.mem_total));
        HostSample {
            at: timefmt::now_unix(),
            cpu_percent,
            memory_used,
            memory_total,
            disk: disk.unwrap_or_default(),
        }
    }
}

/// The running sampling task; dropping it stops the task.
#[must_use = "dropping the handle stops host sampling"]
pub struct SamplerTask(JoinHandle<()>);

impl Drop for SamplerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Field, Period};

    #[tokio::test]
    async fn the_sampler_records_on_its_own_and_publishes_the_latest_reading() {
        let host = HostMonitor::new();
        assert!(host.latest().is_none());
        let task = host.spawn();
        let first = host.current(Duration::from_secs(5)).await;
        assert!(first.memory_total > 0 && first.memory_used > 0, "{first:?}");
        assert_eq!(host.latest(), Some(first));
        assert_eq!(host.usage().raw_len(), 1, "recorded without any connection");
        drop(task);
        // Stopped: no more readings.
        tokio::time::sleep(PERIOD + Duration::from_millis(500)).await;
        assert_eq!(host.usage().raw_len(), 1);
    }

    #[tokio::test]
    async fn without_a_sampler_a_reading_is_taken_but_not_recorded() {
        let host = HostMonitor::new();
        let s = host.current(Duration::from_millis(10)).await;
        assert!(s.memory_total > 0);
        assert_eq!(host.usage().raw_len(), 0);
        let s = host.sample().await;
        let now = timefmt::now_unix();
        let pts = host
            .usage()
            .series(Field::Memory, Period::last_hour(now), now);
        assert_eq!(pts, vec![(s.at, f64::from(s.usage().memory))]);
    }

    #[test]
    fn usage_points_truncate_cpu_and_count_whole_mib() {
        let s = HostSample {
            at: 0,
            cpu_percent: 12.96,
            memory_used: 5 * 1024 * 1024 + 1,
            memory_total: 0,
            disk: DiskTotals::default(),
        };
        assert_eq!(
            s.usage(),
            Usage {
                cpu: 13.0,
                memory: 5.0
            }
        );
        let s = HostSample {
            cpu_percent: 12.94,
            ..s
        };
        assert_eq!(s.usage().cpu, 12.0);
    }
}
