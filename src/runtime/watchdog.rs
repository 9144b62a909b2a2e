//! Lifecycle watchdog: runtimes stay up unless someone asked otherwise, and one that crashes in a
//! loop is stopped and reported instead of burning the device.
//!
//! Who restarts what: the engine's `unless-stopped` policy restarts a runtime whose process dies
//! (its own backoff: 100 ms doubling, reset after 10 s of uptime), also while the agent is down,
//! and starts runtimes at engine boot. The watchdog covers what that policy does not:
//! - **crash loops**: every unexpected `die` (not a `stop_device`, restart, delete or create of
//!   the agent's) is counted; [`CRASH_LIMIT`] of them within [`CRASH_WINDOW`] (the original's 5 in
//!   10 minutes, sliding) stop the runtime, record it as stopped (so nothing starts it again until
//!   `start_device`) and keep the reason, last exit code and the tail of its log for
//!   `get_device_status`. Dies older than the window are forgotten: stable uptime resets the count;
//! - **runtimes that should run and do not** (a start that failed at engine boot, which the engine
//!   never retries, moby#39559; a container stopped behind the agent's back with `docker kill`):
//!   a sweep every [`SWEEP_EVERY`], and [`FIRST_RETRY`] after each unexpected `die`, starts them,
//!   backing off exponentially (to [`MAX_RETRY`]) while starts fail.
//!
//! It never starts a runtime in the stopped set, one with an operation in flight or an intent
//! recorded, nor touches containers that are not ours.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docker_api::{ContainerStatus, EventType, Filters};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use super::{Runtimes, naming};

/// Unexpected exits that make a crash loop…
pub const CRASH_LIMIT: usize = 5;
/// …within this sliding window.
pub const CRASH_WINDOW: Duration = Duration::from_secs(600);
/// How often runtimes that should run are checked.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// First start attempt after an unexpected exit the engine did not follow with a start.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between start attempts of a runtime whose starts keep failing.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Lines of the runtime's log kept with a crash loop.
const LOG_TAIL_LINES: u32 = 20;
/// An exit this soon after an operation of the agent on the runtime is that operation's.
const OWN_EXIT_GRACE: Duration = Duration::from_secs(5);

/// What the watchdog knows of one runtime.
#[derive(Debug, Default, Clone)]
struct Health {
    /// Unexpected exits within the window, oldest first.
    crashes: VecDeque<Instant>,
    /// Exit code of the last unexpected exit.
    last_exit_code: Option<i64>,
    /// Starts the watchdog made.
    watchdog_starts: u64,
    /// When the next start attempt may be made, and the wait after that one.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// The last start attempt's error.
    start_error: Option<String>,
    /// Set when the runtime was stopped as a crash loop.
    crash_loop: Option<CrashLoop>,
}

#[derive(Debug, Clone)]
struct CrashLoop {
    since: String,
    reason: String,
    exit_code: Option<i64>,
    log_tail: String,
}

/// The watchdog's per-runtime records, shared by the service.
#[derive(Debug, Default, Clone)]
pub struct Watchdog {
    inner: Arc<Mutex<HashMap<String, Health>>>,
    /// Starts are held until the boot reconcile saw the network ready (netmon's discovery or
    /// its timeout): a runtime started before its parent NIC is up fails, or comes up on a stale
    /// subnet the boot re-home is about to replace.
    starts_open: Arc<AtomicBool>,
}

impl Watchdog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the watchdog start runtimes (the boot reconcile calls it once the network is ready).
    pub(super) fn open_starts(&self) {
        self.starts_open.store(true, Ordering::Release);
    }

    /// Whether the watchdog may start runtimes yet.
    pub fn starts_open(&self) -> bool {
        self.starts_open.load(Ordering::Acquire)
    }

    /// Forgets a runtime's history: `start_device` (a person decided to try again) and deletes.
    pub fn reset(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The fields `get_device_status` shows: `crash_loop` (bool), `recent_crashes`, and when known
    /// `last_exit_code`, `watchdog_starts`, `last_start_error` and the crash-loop record
    /// (`crash_loop_since`, `crash_loop_reason`, `log_tail`).
    pub fn status_fields(&self, name: &str) -> Map<String, Value> {
        let mut m = Map::new();
        let now = Instant::now();
        let t = self.lock();
        let h = t.get(name).cloned().unwrap_or_default();
        drop(t);
        let recent = h
            .crashes
            .iter()
            .filter(|t| now.duration_since(**t) < CRASH_WINDOW)
            .count();
        m.insert("crash_loop".into(), json!(h.crash_loop.is_some()));
        m.insert("recent_crashes".into(), json!(recent));
        if let Some(code) = h.last_exit_code {
            m.insert("last_exit_code".into(), json!(code));
        }
        if h.watchdog_starts > 0 {
            m.insert("watchdog_starts".into(), json!(h.watchdog_starts));
        }
        if let Some(e) = &h.start_error {
            m.insert("last_start_error".into(), json!(e));
        }
        if let Some(c) = &h.crash_loop {
            m.insert("crash_loop_since".into(), json!(c.since));
            m.insert("crash_loop_reason".into(), json!(c.reason));
            if let Some(code) = c.exit_code {
                m.insert("last_exit_code".into(), json!(code));
            }
            m.insert("log_tail".into(), json!(c.log_tail));
        }
        m
    }

    /// Records one unexpected exit at `now`. Returns `Some(count)` when it makes a crash loop.
    fn record_crash(&self, name: &str, exit_code: Option<i64>, now: Instant) -> Option<usize> {
        let mut t = self.lock();
        let h = t.entry(name.to_owned()).or_default();
        while h
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) >= CRASH_WINDOW)
        {
            h.crashes.pop_front();
        }
        h.crashes.push_back(now);
        h.last_exit_code = exit_code.or(h.last_exit_code);
        if h.retry_at.is_none() {
            h.retry_at = Some(now + FIRST_RETRY);
            h.retry_wait = FIRST_RETRY;
        }
        (h.crashes.len() >= CRASH_LIMIT && h.crash_loop.is_none()).then_some(h.crashes.len())
    }

    fn is_crash_looped(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|h| h.crash_loop.is_some())
    }

    /// Whether a start attempt is due at `now` (none scheduled: yes, the sweep found it down).
    fn start_due(&self, name: &str, now: Instant) -> bool {
        self.lock()
            .get(name)
            .and_then(|h| h.retry_at)
            .is_none_or(|at| now >= at)
    }

    fn started(&self, name: &str, result: Result<(), String>, now: Instant) {
        let mut t = self.lock();
        let h = t.entry(name.to_owned()).or_default();
        match result {
            Ok(()) => {
                h.watchdog_starts += 1;
                h.start_error = None;
                h.retry_at = None;
                h.retry_wait = Duration::ZERO;
            }
            Err(e) => {
                h.start_error = Some(e);
                h.retry_wait = next_wait(h.retry_wait);
                h.retry_at = Some(now + h.retry_wait);
            }
        }
    }
}

/// The wait after a failed start: doubling from [`FIRST_RETRY`] to [`MAX_RETRY`].
fn next_wait(previous: Duration) -> Duration {
    if previous.is_zero() {
        FIRST_RETRY
    } else {
        previous.saturating_mul(2).min(MAX_RETRY)
    }
}

/// Runs the watchdog: the event listener and the sweep, for the life of the service.
pub(super) async fn run(rt: Runtimes) {
    let events = {
        let rt = rt.clone();
        async move { listen(&rt).await }
    };
    let sweep = async {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            sweep(&rt).await;
        }
    };
    tokio::join!(events, sweep);
}

/// Follows the engine's `die` events of this agent's runtimes, resubscribing when the stream ends.
async fn listen(rt: &Runtimes) {
    let filters = Filters::new()
        .kind("container")
        .event("die")
        .event("start")
        .label(format!("{}={}", naming::LABEL_INSTANCE, rt.instance()));
    let mut wait = Duration::from_secs(1);
    loop {
        match rt.docker().events(&filters).await {
            Ok(mut stream) => {
                wait = Duration::from_secs(1);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    if event.kind != EventType::Container {
                        continue;
                    }
                    let attrs = &event.actor.attributes;
                    let Some(name) = attrs.get(naming::LABEL_RUNTIME).cloned() else {
                        continue;
                    };
                    if event.action == "start" {
                        on_start(rt, &name);
                        continue;
                    }
                    if event.action != "die" {
                        continue;
                    }
                    let exit_code = attrs.get("exitCode").and_then(|c| c.parse().ok());
                    on_die(rt, &name, exit_code).await;
                }
                debug!("the engine closed the event stream; subscribing again");
            }
            Err(e) => {
                debug!(error = %e, "cannot subscribe to engine events; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A runtime started (the engine's restart policy, an operator, or the agent): its dedicated NIC,
/// if it has one, goes in again, its vNICs get their persisted MACs and its DHCP clients start
/// again ([`super::host_side`]). An operation of the agent on it does that itself.
fn on_start(rt: &Runtimes, name: &str) {
    if rt.ops().running(name).is_some() {
        return;
    }
    let rt2 = rt.clone();
    let name = name.to_owned();
    rt.spawn(async move {
        for w in super::host_side::after_start(&rt2, &name).await {
            warn!(runtime = %name, "{w}");
        }
    });
}

/// Whether the agent itself asked for this runtime to be down (or is working on it).
async fn expected_down(rt: &Runtimes, name: &str) -> bool {
    if rt.state().is_stopped(name).await || rt.state().intent(name).await.is_some() {
        return true;
    }
    match rt.ops().get(name) {
        Some(r) if r.outcome == super::Outcome::Running => true,
        // The exit of a stop or restart the agent just made can be reported after it finished.
        Some(r) => {
            use super::OpKind::{Delete, Reconcile, Restart, SelfDestruct, Stop};
            let since = time::OffsetDateTime::now_utc() - r.updated_at;
            since < OWN_EXIT_GRACE
                && matches!(r.kind, Stop | Restart | Delete | Reconcile | SelfDestruct)
        }
        None => false,
    }
}

async fn on_die(rt: &Runtimes, name: &str, exit_code: Option<i64>) {
    if expected_down(rt, name).await || !rt.state().is_known(name).await {
        return;
    }
    let Some(count) = rt.watchdog().record_crash(name, exit_code, Instant::now()) else {
        info!(runtime = name, exit_code = ?exit_code, "runtime exited unexpectedly");
        let rt2 = rt.clone();
        let name = name.to_owned();
        // The engine's policy normally restarts it at once; check it did.
        rt.spawn(async move {
            tokio::time::sleep(FIRST_RETRY).await;
            ensure_running(&rt2, &name).await;
        });
        return;
    };
    stop_crash_loop(rt, name, exit_code, count).await;
}

/// Stops a runtime that crashed `count` times within the window and records why.
async fn stop_crash_loop(rt: &Runtimes, name: &str, exit_code: Option<i64>, count: usize) {
    let reason = format!(
        "crash loop: exited {count} times within {} minutes; stopped until start_device",
        CRASH_WINDOW.as_secs() / 60
    );
    warn!(runtime = name, exit_code = ?exit_code, "{reason}");
    // Recorded first: a crash between here and the stop leaves it stopped, not restarted.
    if let Err(e) = rt.state().set_stopped(name, true).await {
        warn!(runtime = name, error = %e, "cannot record the crash-looping runtime as stopped");
    }
    let docker = rt.docker();
    let mut log_tail = String::new();
    if let Ok(owned) = rt.owned(name, "stop").await
        && let Some(c) = owned.container
    {
        // A stop also ends the engine's restart cycle (a manual stop is never restarted).
        if let Err(e) = docker.stop_container(&c.id, rt.config().stop_grace).await
            && !e.is_not_modified()
        {
            warn!(runtime = name, error = %e, "cannot stop the crash-looping runtime");
        }
        log_tail = docker
            .container_logs_tail(&c.id, LOG_TAIL_LINES)
            .await
            .unwrap_or_else(|e| format!("(log unavailable: {e})"));
    }
    let mut t = rt.watchdog().lock();
    let h = t.entry(name.to_owned()).or_default();
    h.retry_at = None;
    h.crash_loop = Some(CrashLoop {
        since: crate::timefmt::now_utc_micros(),
        reason,
        exit_code: exit_code.or(h.last_exit_code),
        log_tail,
    });
}

/// Starts every runtime of ours that should run and does not, when its retry is due.
async fn sweep(rt: &Runtimes) {
    let filters = Filters::new().label(format!("{}={}", naming::LABEL_INSTANCE, rt.instance()));
    let Ok(list) = rt.docker().list_containers(true, &filters).await else {
        return;
    };
    for c in list {
        if !matches!(
            c.state,
            ContainerStatus::Exited | ContainerStatus::Created | ContainerStatus::Dead
        ) {
            continue;
        }
        if let Some(name) = c.labels.get(naming::LABEL_RUNTIME) {
            ensure_running(rt, name).await;
        }
    }
}

/// Starts the runtime if it should run, does not, and a start is due.
async fn ensure_running(rt: &Runtimes, name: &str) {
    let now = Instant::now();
    if !rt.watchdog().starts_open()
        || rt.watchdog().is_crash_looped(name)
        || !rt.watchdog().start_due(name, now)
        || expected_down(rt, name).await
        || !rt.state().is_known(name).await
    {
        return;
    }
    start_if_down(rt, name, super::OpKind::Watchdog).await;
}

/// Starts the runtime under an operation of `kind` if it is ours and not running (the caller
/// decided it should run), records the attempt for the backoff, and refreshes its internal address.
pub(super) async fn start_if_down(rt: &Runtimes, name: &str, kind: super::OpKind) {
    let now = Instant::now();
    let Ok(owned) = rt.owned(name, "start").await else {
        return;
    };
    let Some(c) = owned.container else { return };
    if c.state.running || c.state.restarting {
        return;
    }
    // Under the operation lock, so it never races a cloud command on the same runtime.
    let Ok(op) = rt.ops().try_begin(name, kind) else {
        return;
    };
    op.step("starting", format!("starting {name}"));
    let result = rt.docker().start_container(&c.id).await;
    match &result {
        Ok(()) => {
            info!(runtime = name, "started a runtime that should run");
            // The internal network's address is given again at each start.
            if let Err(e) = rt.refresh_registry(name).await {
                op.warn(format!("could not refresh the internal IP: {e}"));
            }
            for w in super::host_side::after_start(rt, name).await {
                op.warn(w);
            }
            op.succeed(format!(
                "{name} was down without a request and was started again"
            ));
        }
        Err(e) => {
            warn!(runtime = name, error = %e, "cannot start a runtime that should run");
            op.fail(format!("{name} is down and could not be started: {e}"));
        }
    }
    rt.watchdog()
        .started(name, result.map_err(|e| e.to_string()), now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_unexpected_exits_within_ten_minutes_are_a_crash_loop() {
        let w = Watchdog::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(
                w.record_crash("plc", Some(1), t0 + Duration::from_secs(i * 60)),
                None
            );
        }
        assert_eq!(
            w.record_crash("plc", Some(3), t0 + Duration::from_secs(300)),
            Some(5)
        );
        let f = w.status_fields("plc");
        assert_eq!(f["last_exit_code"], 3);
    }

    #[test]
    fn stable_uptime_resets_the_count() {
        let w = Watchdog::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(
                w.record_crash("plc", None, t0 + Duration::from_secs(i)),
                None
            );
        }
        // The window slid past the four: this is the first of a new count.
        let later = t0 + CRASH_WINDOW + Duration::from_secs(10);
        assert_eq!(w.record_crash("plc", None, later), None);
        assert_eq!(w.lock()["plc"].crashes.len(), 1);
    }

    #[test]
    fn failed_starts_back_off_exponentially_up_to_the_cap() {
        let mut wait = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..12 {
            wait = next_wait(wait);
            seen.push(wait.as_secs());
        }
        assert_eq!(&seen[..5], &[2, 4, 8, 16, 32]);
        assert_eq!(*seen.last().unwrap_or(&0), MAX_RETRY.as_secs());
        let w = Watchdog::default();
        let t0 = Instant::now();
        assert!(w.start_due("plc", t0));
        w.started("plc", Err("no".into()), t0);
        assert!(!w.start_due("plc", t0 + Duration::from_secs(1)));
        assert!(w.start_due("plc", t0 + Duration::from_secs(2)));
        w.started("plc", Ok(()), t0);
        assert_eq!(w.status_fields("plc")["watchdog_starts"], 1);
    }

    #[test]
    fn reset_forgets_a_crash_loop() {
        let w = Watchdog::default();
        let t0 = Instant::now();
        for i in 0..5 {
            w.record_crash("plc", Some(1), t0 + Duration::from_secs(i));
        }
        w.lock().get_mut("plc").unwrap().crash_loop = Some(CrashLoop {
            since: "x".into(),
            reason: "crash loop".into(),
            exit_code: Some(1),
            log_tail: String::new(),
        });
        assert_eq!(w.status_fields("plc")["crash_loop"], true);
        w.reset("plc");
        assert_eq!(w.status_fields("plc")["crash_loop"], false);
        assert_eq!(w.status_fields("plc")["recent_crashes"], 0);
    }
}
