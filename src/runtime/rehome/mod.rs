//! Re-homing runtimes when the subnet of their MACVLAN parent interface changes (spec §2 "Network
//! changes"; fixes upstream §7.6 and §11 items 2 and 11).
//!
//! Owns: the subscription to netevents' interface changes and its rate limit ([`spawn`], with the
//! pure [`limit`]), and the boot catch-up ([`reconcile`]). A re-home of one parent is
//! [`rehome_interface`] (`execute`): its inputs are read by `views`, its decisions — what to
//! disconnect, remove, create and connect, which IP and MAC to ask for — are the pure functions
//! of [`plan`], and `persist` writes the result to the state files.
//!
//! Behaviour:
//! - acts at once on a change netmon reports, but at most once per parent interface per
//!   `--rehome-window` (default 3 s, netmon's debounce): changes inside the window are coalesced
//!   into one re-home with the interface's state when the window ends ([`limit`]), and their
//!   number is logged once; a flapping link or a stream of forged events cannot move runtimes
//!   more often;
//! - compares the parent's new subnet with the subnet of the MACVLAN network(s) each runtime is
//!   really attached to on that parent: nothing happens when they match (no churn);
//! - otherwise, under the service's network lock and each runtime's operation lock:
//!   force-disconnect every affected runtime from the old network(s) of that parent, remove the
//!   old networks nobody uses any more (an overlapping new subnet, e.g. a /24 widened to a /23,
//!   cannot be created while they exist, and engines before 27.0.1 allow one MACVLAN network per
//!   parent), get-or-create the new subnet's network, connect all affected runtimes keeping a
//!   static IP that lies in the new subnet (else Docker's IPAM assigns one and the status says so)
//!   and the MAC where the engine honours it (API ≥ 1.54; the endpoint's MAC is checked after the
//!   connect and the status says when it could not be kept), update `runtime_vnics.json` in place
//!   (one write at a time: the state store serialises them), and record the outcome as the
//!   runtime's `rehome` operation (visible in `get_device_status`). Inspects, disconnects and
//!   connects run for many runtimes at once, at most `ENGINE_CONCURRENCY` at a time;
//! - an interface that went down, lost its IPv4 or disappeared: recorded in the status of the
//!   runtimes on it, nothing is changed on the engine.
//!
//! Must never: touch containers or networks the agent does not own (runtimes come from the state
//! files, and a name's container is acted on — by id — only when it is exactly that name and not
//! labelled for another manager or instance; only networks with our labels, or unlabelled ones
//! named by the upstream convention, are removed), act on a runtime another operation holds, or
//! block the async runtime.
mod execute;
pub mod limit;
mod persist;
pub mod plan;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use super::Runtimes;
pub use execute::rehome_interface;
#[cfg(feature = "test-support")]
pub use execute::{ENGINE_CONCURRENCY, Report};
use views::persisted_views;

/// Default of `--rehome-window`: netmon's default debounce.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);

/// How long [`reconcile`] waits for netmon's first discovery before giving up for this boot.
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(60);

/// Subscribes to netevents' changes and re-homes the runtimes of each changed interface, in a task
/// owned by the service, at most once per interface per `rehome_window` ([`limit`]). Call once at
/// start-up, after [`Runtimes`] is built. A lagging subscriber (changes lost) re-checks every
/// parent interface.
pub fn spawn(rt: &Runtimes) {
    let changes = rt.interfaces().subscribe();
    let window = rt.config().rehome_window;
    let (parents_rt, act_rt) = (rt.clone(), rt.clone());
    rt.spawn(async move {
        run_limited(
            changes,
            window,
            move || {
                let rt = parents_rt.clone();
                async move { parents(&rt).await.into_iter().collect() }
            },
            move |interface| {
                let rt = act_rt.clone();
                async move {
                    rehome_interface(&rt, &interface).await;
                }
            },
        )
        .await;
    });
}

/// The shell around [`limit::Limiter`]: feeds it the changes, runs `act(interface)` for what it
/// lets through (each in a task of this loop's own, so a shutdown that drops the loop stops
/// them), tells it when a run ended, and runs the coalesced re-homes when their window ends,
/// logging how many changes each one stands for. On a lagging subscription every interface
/// `parents()` names counts as changed. Returns when the change channel closes and the runs ended.
async fn run_limited<P, PF, A, AF>(
    mut changes: tokio::sync::broadcast::Receiver<crate::netevents::NetworkChange>,
    window: Duration,
    parents: P,
    act: A,
) where
    P: Fn() -> PF,
    PF: Future<Output = Vec<String>>,
    A: Fn(String) -> AF,
    AF: Future<Output = ()> + Send + 'static,
{
    let mut limiter = limit::Limiter::new(window);
    let mut runs = Runs::default();
    loop {
        let deadline = limiter.next_deadline();
        tokio::select! {
            received = changes.recv() => {
                let interfaces = match received {
                    Ok(change) => vec![change.interface],
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "missed network changes; re-checking every parent interface");
                        parents().await
                    }
                    Err(RecvError::Closed) => break,
                };
                let now = tokio::time::Instant::now();
                for interface in interfaces {
                    match limiter.change(&interface, now) {
                        limit::Decision::Now => {
                            debug!(interface = %interface, "network change: re-homing");
                            runs.start(act(interface.clone()), interface);
                        }
                        limit::Decision::Later => debug!(
                            interface = %interface,
                            "network change within the re-home window: coalesced"
                        ),
                    }
                }
            }
            Some(interface) = runs.next_ended() => {
                limiter.finished(&interface, tokio::time::Instant::now());
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                for due in limiter.take_due(tokio::time::Instant::now()) {
                    warn!(
                        interface = %due.interface,
                        dropped = due.coalesced,
                        "dropped {} network change(s) for {} within {:?} of its last re-home; \
                         re-homing once with its latest state",
                        due.coalesced,
                        due.interface,
                        limiter.window()
                    );
                    runs.start(act(due.interface.clone()), due.interface);
                }
            }
        }
    }
    while runs.next_ended().await.is_some() {}
}

/// The re-homes [`run_limited`] started, by interface.
#[derive(Default)]
struct Runs {
    tasks: tokio::task::JoinSet<()>,
    interfaces: BTreeMap<tokio::task::Id, String>,
}

impl Runs {
    fn start(&mut self, run: impl Future<Output = ()> + Send + 'static, interface: String) {
        let handle = self.tasks.spawn(run);
        self.interfaces.insert(handle.id(), interface);
    }

    /// Waits for a run to end and names its interface; `None` at once when none runs.
    async fn next_ended(&mut self) -> Option<String> {
        loop {
            let id = match self.tasks.join_next_with_id().await? {
                Ok((id, ())) => id,
                Err(e) => {
                    warn!(error = %e, "a re-home task ended abnormally");
                    e.id()
                }
            };
            if let Some(interface) = self.interfaces.remove(&id) {
                return Some(interface);
            }
        }
    }
}

/// Boot catch-up: once netmon's first discovery arrived (up to [`DISCOVERY_WAIT`]), re-homes the
/// runtimes whose parent subnet changed while the agent was down. Interfaces netmon does not know
/// (down or gone) are logged, not recorded as events.
pub async fn reconcile(rt: &Runtimes) {
    let waited = tokio::time::timeout(DISCOVERY_WAIT, async {
        while !rt.interfaces().is_discovered() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if waited.is_err() {
        warn!("no network discovery from netmon yet; skipping the boot re-home check");
        return;
    }
    rehome_all(rt).await;
}

/// Every parent interface a persisted runtime uses.
async fn parents(rt: &Runtimes) -> BTreeSet<String> {
    persisted_views(rt)
        .await
        .iter()
        .flat_map(|r| r.vnics.iter().map(|v| v.parent.clone()))
        .collect()
}

async fn rehome_all(rt: &Runtimes) {
    let mut set = tokio::task::JoinSet::new();
    for parent in parents(rt).await {
        let rt = rt.clone();
        set.spawn(async move { rehome_interface(&rt, &parent).await });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use crate::netevents::NetworkChange;

    fn change(interface: &str) -> NetworkChange {
        NetworkChange {
            interface: interface.into(),
            previous: None,
            current: None,
        }
    }

    /// Runs [`run_limited`] with a fake re-home taking `takes`, feeding `feed` (offset,
    /// interface) and closing the channel after `close_after`; returns (start offset, interface)
    /// of every run.
    async fn limited_runs(
        window: Duration,
        takes: Duration,
        capacity: usize,
        feed: Vec<(Duration, &'static str)>,
        close_after: Duration,
    ) -> Vec<(Duration, String)> {
        let t0 = tokio::time::Instant::now();
        let (tx, rx) = tokio::sync::broadcast::channel(capacity);
        let starts = Arc::new(Mutex::new(Vec::new()));
        let recorded = starts.clone();
        let shell = tokio::spawn(run_limited(
            rx,
            window,
            || async { vec!["eth0".to_string(), "eth1".to_string()] },
            move |interface| {
                let recorded = recorded.clone();
                async move {
                    recorded.lock().unwrap().push((t0.elapsed(), interface));
                    tokio::time::sleep(takes).await;
                }
            },
        ));
        for (at, interface) in feed {
            tokio::time::sleep_until(t0 + at).await;
            let _ = tx.send(change(interface));
        }
        tokio::time::sleep_until(t0 + close_after).await;
        drop(tx);
        shell.await.unwrap();
        starts.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_parent_is_rehomed_once_at_once_and_once_more_when_the_window_ends() {
        let ms = Duration::from_millis;
        // Ten changes 100 ms apart on eth0, one on eth1 in between.
        let mut feed: Vec<(Duration, &str)> = (0..10).map(|i| (ms(i * 100), "eth0")).collect();
        feed.push((ms(450), "eth1"));
        feed.sort();
        let runs = limited_runs(Duration::from_secs(3), ms(500), 64, feed, ms(10_000)).await;
        assert_eq!(
            runs,
            vec![
                (ms(0), "eth0".to_string()),
                (ms(450), "eth1".to_string()),
                (ms(3000), "eth0".to_string()),
            ],
            "eth0: the first change at once, the other nine coalesced into one at the window's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_spaced_wider_than_the_window_each_rehome_at_once() {
        let ms = Duration::from_millis;
        let feed = vec![(ms(0), "eth0"), (ms(3500), "eth0"), (ms(7000), "eth0")];
        let runs = limited_runs(Duration::from_secs(3), ms(200), 64, feed, ms(12_000)).await;
        let at: Vec<Duration> = runs.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, vec![ms(0), ms(3500), ms(7000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_subscription_rechecks_every_parent_once() {
        let ms = Duration::from_millis;
        // Five changes at once into a channel of two: the shell lags and re-checks both parents.
        let feed = (0..5).map(|_| (ms(0), "eth0")).collect();
        let runs = limited_runs(Duration::from_secs(3), ms(100), 2, feed, ms(10_000)).await;
        let mut interfaces: Vec<&str> = runs.iter().map(|(_, i)| i.as_str()).collect();
        interfaces.sort();
        assert!(
            interfaces == ["eth0", "eth0", "eth1"] || interfaces == ["eth0", "eth1"],
            "{runs:?}"
        );
        assert!(
            runs.iter().all(|(t, _)| *t == ms(0) || *t == ms(3000)),
            "{runs:?}"
        );
    }
}
