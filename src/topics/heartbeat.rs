//! The heartbeat: one loop per connection (the link drops the future at disconnect), first emit
//! right after connect, then every 5 s; plus the host sampling state it shares with
//! `get_consumption_orchestrator`.
//!
//! Sampling never blocks the runtime: `/proc` is read in `spawn_blocking`, and disk space
//! (statvfs, which can hang on a dead network filesystem) is refreshed by a background blocking
//! task whose latest result is used; a refresh still stuck from an earlier tick is not repeated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OnceCell, watch};
use tokio::time::MissedTickBehavior;

use super::Services;
use crate::cloud::Link;
use crate::metrics::{self, CpuTimes, DiskTotals, StaticInfo};
use crate::timefmt;
use crate::usage::RingBuffer;

/// Time between heartbeats.
pub const PERIOD: Duration = Duration::from_secs(5);
/// How long one tick waits for a fresh disk figure before using the previous one.
const DISK_WAIT: Duration = Duration::from_millis(300);
/// Upper bound for reading `/proc/stat` and `/proc/meminfo`.
const PROC_TIMEOUT: Duration = Duration::from_secs(2);

/// The `heartbeat` payload (upstream §4.1); fields serialize in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatPayload {
    pub agent_id: String,
    /// Host CPU %, 1 decimal.
    pub cpu_usage: f64,
    /// Used memory, GiB, 1 decimal.
    pub memory_usage: f64,
    /// Total memory, GiB, 1 decimal.
    pub memory_total: f64,
    /// Used disk over the physical filesystems, GiB, 1 decimal.
    pub disk_usage: f64,
    /// Their total, GiB, 1 decimal.
    pub disk_total: f64,
    /// Seconds since the agent process started.
    pub uptime: u64,
    /// Always `"active"`.
    pub status: &'static str,
    /// UTC, microseconds, `Z`.
    pub timestamp: String,
}

/// One host usage sample: CPU % truncated to an integer, used memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostUsage {
    pub cpu: i64,
    pub memory: i64,
}

/// Host sampling state shared by the heartbeat and `get_consumption_orchestrator`.
pub(super) struct HostState {
    pub(super) usage: Mutex<RingBuffer<HostUsage>>,
    cpu_prev: Mutex<Option<CpuTimes>>,
    disk: watch::Sender<Option<DiskTotals>>,
    disk_in_flight: Arc<AtomicBool>,
    /// A `/proc` read still running (stuck): the next ticks do not start another blocking thread.
    proc_in_flight: Arc<AtomicBool>,
    static_info: OnceCell<StaticInfo>,
}

impl HostState {
    pub(super) fn new() -> Self {
        let (disk, _) = watch::channel(None);
        Self {
            usage: Mutex::new(RingBuffer::default()),
            cpu_prev: Mutex::new(None),
            disk,
            disk_in_flight: Arc::new(AtomicBool::new(false)),
            proc_in_flight: Arc::new(AtomicBool::new(false)),
            static_info: OnceCell::new(),
        }
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, RingBuffer<HostUsage>> {
        // Pushes and reads cannot leave the buffer inconsistent, so poisoning is harmless.
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Static info, read once (in a blocking task).
    pub(super) async fn static_info(&self) -> StaticInfo {
        self.static_info
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
    pub(super) async fn disk(&self, wait: Duration) -> Option<DiskTotals> {
        let mut rx = self.disk.subscribe();
        rx.mark_unchanged();
        if !self.disk_in_flight.swap(true, Ordering::AcqRel) {
            let tx = self.disk.clone();
            let in_flight = Arc::clone(&self.disk_in_flight);
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
        *self.disk.borrow()
    }

    /// Samples the host and records a usage sample. `agent_id` is the CN of the certificate this
    /// connection presented, which may be newer than the one read at start-up.
    async fn sample(&self, services: &Services, agent_id: &str) -> HeartbeatPayload {
        let disk = self.disk(DISK_WAIT);
        let proc = async {
            if self.proc_in_flight.swap(true, Ordering::AcqRel) {
                return None;
            }
            let in_flight = Arc::clone(&self.proc_in_flight);
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
        let cpu_usage = cpu.map_or(0.0, |cur| {
            let mut prev = self.cpu_prev.lock().unwrap_or_else(|e| e.into_inner());
            // The first sample reads as the average since boot.
            let pct = metrics::cpu_percent(prev.unwrap_or_default(), cur);
            *prev = Some(cur);
            pct
        });
        let (used, total) = mem.map_or((0, 0), |m| (metrics::memory_used_bytes(&m), m.mem_total));
        let disk = disk.unwrap_or_default();
        let payload = HeartbeatPayload {
            agent_id: agent_id.to_owned(),
            cpu_usage: metrics::round1(cpu_usage),
            memory_usage: metrics::gib1(used),
            memory_total: metrics::gib1(total),
            disk_usage: metrics::gib1(disk.used),
            disk_total: metrics::gib1(disk.total),
            uptime: services.started.elapsed().as_secs(),
            status: "active",
            timestamp: timefmt::now_utc_micros(),
        };
        let sample = HostUsage {
            cpu: payload.cpu_usage as i64,
            memory: i64::try_from(used / (1024 * 1024)).unwrap_or(i64::MAX),
        };
        self.usage().push(timefmt::now_unix(), sample);
        payload
    }
}

/// The heartbeat loop of one connection. Never returns; the link drops it at disconnect.
pub(super) async fn run(services: &Services, host: &HostState, link: Link) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: the first heartbeat goes right after connect.
        ticks.tick().await;
        let payload = host.sample(services, link.agent_id()).await;
        let value = match serde_json::to_value(&payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat payload not serializable");
                continue;
            }
        };
        match link.emit("heartbeat", value).await {
            Ok(()) => tracing::debug!(?payload, "heartbeat emitted"),
            // Only this tick is lost: the link drops this loop when the connection ends.
            Err(e) => tracing::warn!(error = %e, "failed to emit heartbeat"),
        }
    }
}
