//! The per-interface rate limit of re-homes, as a pure state machine over instants the caller
//! passes in (no clock, no timers, no I/O): a parent interface is re-homed at most once per window;
//! changes that arrive inside the window (or while its re-home runs) are coalesced into one
//! re-home when the window ends, which reads the interface's state at that moment, so the last
//! change is never lost.
//!
//! Why: netmon already debounces, but a flapping link or a stream of forged events must not move
//! PLCs between networks every few hundred milliseconds; each re-home disconnects and reconnects
//! every runtime on the parent.
//!
//! Never does: run a re-home itself, or forget a change it did not let through.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// What to do with a change now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Re-home the interface now (the window starts).
    Now,
    /// Coalesced: the interface is re-homed when [`Limiter::next_deadline`] says.
    Later,
}

/// A coalesced re-home that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The parent interface.
    pub interface: String,
    /// How many changes were coalesced into it (none had a re-home of its own).
    pub coalesced: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the interface's last re-home started: its window runs from here.
    started: Instant,
    /// That re-home has not reported its end yet.
    running: bool,
    /// Changes since it started; `> 0` means one more re-home is owed.
    coalesced: u32,
}

impl Slot {
    fn window_end(&self, window: Duration) -> Instant {
        self.started.checked_add(window).unwrap_or(self.started)
    }
}

/// Per-interface windows. One owner: the re-home subscription task.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    slots: HashMap<String, Slot>,
}

impl Limiter {
    pub fn new(window: Duration) -> Self {
        Limiter {
            window,
            slots: HashMap::new(),
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// A change of `interface` arrived at `now`. [`Decision::Now`] starts its re-home (tell
    /// [`Limiter::finished`] when it ends); [`Decision::Later`] coalesces it.
    pub fn change(&mut self, interface: &str, now: Instant) -> Decision {
        let window = self.window;
        // Forget interfaces that are quiet again, so the map stays as small as the set of
        // interfaces that changed within the last window.
        self.slots
            .retain(|_, s| s.running || s.coalesced > 0 || now < s.window_end(window));
        match self.slots.get_mut(interface) {
            Some(slot) => {
                slot.coalesced = slot.coalesced.saturating_add(1);
                Decision::Later
            }
            None => {
                self.slots.insert(
                    interface.to_owned(),
                    Slot {
                        started: now,
                        running: true,
                        coalesced: 0,
                    },
                );
                Decision::Now
            }
        }
    }

    /// The re-home of `interface` ended at `now` (successfully or not).
    pub fn finished(&mut self, interface: &str, _now: Instant) {
        if let Some(slot) = self.slots.get_mut(interface) {
            slot.running = false;
        }
    }

    /// When the next coalesced re-home becomes due; `None` when none is owed (or every owed one
    /// waits for a running re-home to end).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| !s.running && s.coalesced > 0)
            .map(|s| s.window_end(self.window))
            .min()
    }

    /// The coalesced re-homes due at `now`, sorted by interface; each starts a new window.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let window = self.window;
        let mut due: Vec<Due> = Vec::new();
        for (name, slot) in &mut self.slots {
            if !slot.running && slot.coalesced > 0 && slot.window_end(window) <= now {
                due.push(Due {
                    interface: name.clone(),
                    coalesced: slot.coalesced,
                });
                *slot = Slot {
                    started: now,
                    running: true,
                    coalesced: 0,
                };
            }
        }
        due.sort_by(|a, b| a.interface.cmp(&b.interface));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_change_runs_at_once_and_a_burst_is_coalesced_to_the_window_end() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        assert_eq!(l.change("eth0", t0), Decision::Now);
        assert_eq!(l.next_deadline(), None, "nothing owed yet");
        for i in 1..=9 {
            assert_eq!(l.change("eth0", t0 + ms(i * 100)), Decision::Later);
        }
        // Owed, but not while the first re-home still runs.
        assert_eq!(l.next_deadline(), None);
        l.finished("eth0", t0 + ms(1500));
        assert_eq!(l.next_deadline(), Some(t0 + W));
        assert!(l.take_due(t0 + W - ms(1)).is_empty());
        assert_eq!(
            l.take_due(t0 + W),
            vec![Due {
                interface: "eth0".into(),
                coalesced: 9
            }]
        );
        assert_eq!(l.next_deadline(), None);
        assert!(l.take_due(t0 + W * 5).is_empty(), "owed exactly once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_window_runs_at_once_again() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        assert_eq!(l.change("eth0", t0), Decision::Now);
        l.finished("eth0", t0 + ms(200));
        assert_eq!(l.change("eth0", t0 + W), Decision::Now);
        l.finished("eth0", t0 + W + ms(200));
        assert_eq!(l.change("eth0", t0 + W * 3), Decision::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_home_that_outlasts_the_window_delays_the_owed_one_until_it_ends() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        assert_eq!(l.change("eth0", t0), Decision::Now);
        assert_eq!(l.change("eth0", t0 + ms(100)), Decision::Later);
        // Still running at the window's end: nothing starts beside it.
        assert!(l.take_due(t0 + W * 2).is_empty());
        assert_eq!(
            l.change("eth0", t0 + W * 2),
            Decision::Later,
            "still running"
        );
        l.finished("eth0", t0 + W * 2 + ms(1));
        assert_eq!(l.next_deadline(), Some(t0 + W), "overdue: due at once");
        let due = l.take_due(t0 + W * 2 + ms(1));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].coalesced, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn interfaces_are_limited_independently() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        assert_eq!(l.change("eth0", t0), Decision::Now);
        assert_eq!(l.change("eth1", t0 + ms(10)), Decision::Now);
        assert_eq!(l.change("eth0", t0 + ms(20)), Decision::Later);
        l.finished("eth0", t0 + ms(50));
        l.finished("eth1", t0 + ms(50));
        assert_eq!(l.next_deadline(), Some(t0 + W));
        let due = l.take_due(t0 + W + ms(10));
        assert_eq!(
            due.iter().map(|d| d.interface.as_str()).collect::<Vec<_>>(),
            ["eth0"]
        );
        assert_eq!(l.change("eth1", t0 + W + ms(10)), Decision::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_flood_starts_at_most_one_re_home_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        let mut starts = Vec::new();
        let mut running_until: Option<Instant> = None;
        // One change every 50 ms for a minute; each re-home takes 400 ms.
        for step in 0..1200u64 {
            let now = t0 + ms(step * 50);
            if running_until.is_some_and(|end| end <= now) {
                l.finished("eth0", now);
                running_until = None;
            }
            for due in l.take_due(now) {
                starts.push(now);
                running_until = Some(now + ms(400));
                assert!(due.coalesced > 0);
            }
            if l.change("eth0", now) == Decision::Now {
                starts.push(now);
                running_until = Some(now + ms(400));
            }
        }
        assert!(starts.len() <= 21, "{} starts in 60 s", starts.len());
        assert!(starts.windows(2).all(|w| w[1] - w[0] >= W), "{starts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_interfaces_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::new(W);
        for i in 0..100 {
            assert_eq!(l.change(&format!("if{i}"), t0), Decision::Now);
            l.finished(&format!("if{i}"), t0);
        }
        assert_eq!(l.change("eth0", t0 + W), Decision::Now);
        assert_eq!(l.slots.len(), 1);
    }
}
