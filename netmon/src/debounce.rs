//! Per-interface trailing-edge debounce, as a pure state machine over `Instant`s the caller
//! passes in (no clock, no timers: unit-tested and fuzzable without I/O). The daemon sleeps
//! until [`Debouncer::next_deadline`] only while something is pending, so nothing ticks while idle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many debounce periods a continuously changing interface may be held back at most.
const MAX_HOLD_FACTOR: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    deadline: Instant,
}

/// Collects "interface N changed" marks and says when each interface has been quiet long enough.
#[derive(Debug)]
pub struct Debouncer {
    delay: Duration,
    max_hold: Duration,
    pending: HashMap<u32, Pending>,
}

impl Debouncer {
    pub fn new(delay: Duration) -> Self {
        Debouncer {
            delay,
            max_hold: delay.saturating_mul(MAX_HOLD_FACTOR),
            pending: HashMap::new(),
        }
    }

    /// Records a change of `index` at `now`: its report waits until `delay` passes without a
    /// further change, but never longer than `MAX_HOLD_FACTOR × delay` after the first change
    /// (a flapping interface still gets reported).
    pub fn mark(&mut self, index: u32, now: Instant) {
        let delay = self.delay;
        let max_hold = self.max_hold;
        let entry = self.pending.entry(index).or_insert(Pending {
            first: now,
            deadline: now,
        });
        let cap = entry.first.checked_add(max_hold).unwrap_or(entry.first);
        entry.deadline = now
            .checked_add(delay)
            .unwrap_or(now)
            .min(cap)
            .max(entry.deadline);
    }

    /// Interfaces with a change waiting (sorted).
    pub fn pending(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.pending.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The earliest moment an interface becomes due, `None` when nothing is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Removes and returns (sorted) the interfaces whose quiet period has passed at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(i, _)| *i)
            .collect();
        due.sort_unstable();
        for i in &due {
            self.pending.remove(i);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(3);

    #[test]
    fn nothing_pending_means_no_deadline() {
        let d = Debouncer::new(D);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn a_burst_on_one_interface_is_due_once_after_the_last_change() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D);
        for i in 0..50 {
            d.mark(2, t0 + Duration::from_millis(i * 10));
        }
        let last = t0 + Duration::from_millis(490);
        assert_eq!(d.next_deadline(), Some(last + D));
        assert!(d.take_due(last + D - Duration::from_millis(1)).is_empty());
        assert_eq!(d.take_due(last + D), vec![2]);
        assert!(d.take_due(last + D * 2).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn interfaces_are_debounced_independently() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D);
        d.mark(2, t0);
        d.mark(3, t0 + Duration::from_secs(2));
        assert_eq!(d.take_due(t0 + D), vec![2]);
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(d.take_due(t0 + Duration::from_secs(5)), vec![3]);
    }

    #[test]
    fn a_flapping_interface_is_reported_after_the_maximum_hold() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(D);
        let mut now = t0;
        while now < t0 + D * 20 {
            d.mark(4, now);
            now += Duration::from_secs(1);
            if !d.take_due(now).is_empty() {
                break;
            }
        }
        assert!(
            now <= t0 + D * MAX_HOLD_FACTOR + Duration::from_secs(1),
            "{now:?}"
        );
    }

    #[test]
    fn zero_delay_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        d.mark(1, t0);
        assert_eq!(d.take_due(t0), vec![1]);
    }
}
