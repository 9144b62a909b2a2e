//! Reconnect delays: exponential from 1 s to a 5 s cap, with jitter.
//!
//! Pure arithmetic; the caller supplies the random number so the sequence is testable. The jitter
//! only shortens a delay (a factor in `[1 - JITTER, 1]` of the capped value), so the cap is a real
//! upper bound (the agent is back at most 5 s after the cloud is) while agents that lost the
//! cloud together stay spread out at the cap instead of retrying on the same beat (jitter applied
//! before the cap would collapse to it). No delay is below [`FLOOR`].

use std::time::Duration;

/// First delay.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest delay.
pub const CAP: Duration = Duration::from_secs(5);
/// Relative jitter: the delay is multiplied by a factor in `[1 - JITTER, 1]`.
pub const JITTER: f64 = 0.5;
/// No delay is shorter than this.
pub const FLOOR: Duration = Duration::from_millis(500);
/// A connection that reached namespace connect and lasted at least this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);

/// The state of the reconnect backoff.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// The delay before the next attempt, with `unit` a random number in `[0, 1)`. Advances the
    /// attempt counter.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = BASE.saturating_mul(1u32 << self.attempt.min(16)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 - JITTER * unit;
        base.mul_f64(factor).max(FLOOR)
    }

    /// Called after a connection ended: a connection that reached namespace connect and lasted
    /// [`STABLE_AFTER`] starts the sequence again at 1 s; a short one keeps backing off, so a
    /// server that accepts and immediately drops us is not hammered.
    pub fn connection_ended(&mut self, reached_namespace: bool, lasted: Duration) {
        if reached_namespace && lasted >= STABLE_AFTER {
            self.attempt = 0;
        }
    }

    /// Forgets all failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A random number in `[0, 1)` for [`Backoff::next_delay`].
pub fn random_unit() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_doubles_from_one_second_to_the_cap_without_jitter() {
        let mut b = Backoff::new();
        let got: Vec<_> = (0..7).map(|_| b.next_delay(0.0)).collect();
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            got,
            vec![
                secs(1),
                secs(2),
                secs(4),
                secs(5),
                secs(5),
                secs(5),
                secs(5)
            ]
        );
    }

    #[test]
    fn jitter_spreads_delays_but_never_exceeds_the_cap() {
        for unit in [0.0, 0.1, 0.5, 0.9, 0.999_999, 1.0, -3.0, 7.0, f64::NAN] {
            let mut b = Backoff::new();
            for n in 0..40 {
                let d = b.next_delay(unit);
                assert!(d >= FLOOR, "attempt {n} unit {unit}: {d:?} below floor");
                assert!(d <= CAP, "attempt {n} unit {unit}: {d:?} above the cap");
            }
        }
        // At the cap, delays spread over [2.5 s, 5 s]: agents stay spread out.
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.next_delay(0.5);
        }
        assert_eq!(b.next_delay(0.0), CAP);
        assert_eq!(b.next_delay(1.0), Duration::from_millis(2500));
    }

    #[test]
    fn first_delay_never_drops_below_the_floor() {
        let mut b = Backoff::new();
        assert_eq!(b.next_delay(1.0), FLOOR);
    }

    #[test]
    fn a_lasting_connection_resets_and_a_short_one_does_not() {
        let mut b = Backoff::new();
        for _ in 0..4 {
            b.next_delay(0.0);
        }
        b.connection_ended(true, Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), CAP);
        b.connection_ended(false, Duration::from_secs(60));
        assert_eq!(b.next_delay(0.0), CAP);
        b.connection_ended(true, STABLE_AFTER);
        assert_eq!(b.next_delay(0.0), BASE);
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
