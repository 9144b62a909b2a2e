//! The heartbeat: one loop per connection (the link drops the future at disconnect), first emit
//! right after connect, then every 5 s, carrying the latest reading of the host sampler
//! ([`crate::host`], which runs on its own whether or not the cloud is reachable).
//!
//! Reads no `/proc` itself unless the sampler has produced nothing yet (then it waits briefly for
//! the first reading and, failing that, takes one of its own, unrecorded).

use std::time::Duration;

use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::Services;
use crate::cloud::Link;
use crate::host::HostSample;
use crate::metrics;
use crate::timefmt;

/// Time between heartbeats.
pub const PERIOD: Duration = crate::host::PERIOD;
/// How long a heartbeat waits for the sampler's first reading.
const FIRST_READING_WAIT: Duration = Duration::from_millis(500);

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

impl HeartbeatPayload {
    /// The payload for `sample`, sent by the connection of `agent_id` (the CN of the certificate
    /// it presented, which may be newer than the one read at start-up).
    fn new(sample: &HostSample, agent_id: &str, uptime: Duration) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            cpu_usage: metrics::round1(sample.cpu_percent),
            memory_usage: metrics::gib1(sample.memory_used),
            memory_total: metrics::gib1(sample.memory_total),
            disk_usage: metrics::gib1(sample.disk.used),
            disk_total: metrics::gib1(sample.disk.total),
            uptime: uptime.as_secs(),
            status: "active",
            timestamp: timefmt::now_utc_micros(),
        }
    }
}

/// The heartbeat loop of one connection. Never returns; the link drops it at disconnect.
pub(super) async fn run(services: &Services, link: Link) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: the first heartbeat goes right after connect.
        ticks.tick().await;
        let sample = services.host.current(FIRST_READING_WAIT).await;
        let payload = HeartbeatPayload::new(&sample, link.agent_id(), services.started.elapsed());
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
