//! Reconnect delays for one device in a fleet of thousands: fast during the first minute of an
//! outage, then growing to a one-minute cap with full jitter.
//!
//! Pure arithmetic over a clock reading and a caller-supplied random number, so the schedule is
//! tested with tokio's paused clock. Two phases, measured from the first failure of an outage:
//!
//! - **Fast** (the first [`FAST_PHASE`]): the ceiling grows exponentially with the time since the
//!   outage began, from [`BASE`] (1 s) to [`FAST_CAP`] (5 s) at one minute; each delay is drawn
//!   from `[ceiling / 2, ceiling]`. The ceiling is a real upper bound, so a short outage ends
//!   quickly for everyone: after a 5 s outage the next attempt comes at most 1.15 s after the
//!   cloud is back, after 30 s at most 2.3 s.
//! - **Slow** (after that): the ceiling doubles per attempt from 10 s to [`CAP`] (60 s), and each
//!   delay is drawn uniformly from `[FLOOR, ceiling]` (full jitter). The draw is taken *after* the
//!   cap and spans the whole range, never clamped: agents that lost the cloud together stay spread
//!   over a minute instead of retrying on the same beat (jitter applied before the cap, or clamped
//!   at zero or at the cap, would pile them up there).
//!
//! No delay is below [`FLOOR`]. A connection that lasted [`STABLE_AFTER`] ends the outage; a
//! shorter one does not, so a cloud that accepts and drops devices does not keep them fast.

use std::time::Duration;

use tokio::time::Instant;

/// The fast phase's first ceiling.
pub const BASE: Duration = Duration::from_secs(1);
/// The fast phase's ceiling at its end.
pub const FAST_CAP: Duration = Duration::from_secs(5);
/// How long after the first failure of an outage the fast phase lasts.
pub const FAST_PHASE: Duration = Duration::from_secs(60);
/// Longest delay.
pub const CAP: Duration = Duration::from_secs(60);
/// No delay is shorter than this.
pub const FLOOR: Duration = Duration::from_millis(500);
/// A connection that reached namespace connect and lasted at least this long ends the outage: the
/// next failure starts a new fast phase.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The range the next delay is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayRange {
    pub min: Duration,
    pub max: Duration,
}

impl DelayRange {
    /// The delay at `unit` in `[0, 1]` of the range (NaN counts as the middle).
    fn at(self, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.5
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.min + (self.max - self.min).mul_f64(unit)
    }
}

/// The range of the delay after a failure `elapsed` into an outage, `slow_attempt` being the
/// number of earlier failures past the fast phase (pure; the schedule table of
/// `docs/benchmarks.md` comes from it).
pub fn delay_range(elapsed: Duration, slow_attempt: u32) -> DelayRange {
    if elapsed < FAST_PHASE {
        // BASE × (FAST_CAP / BASE)^(elapsed / FAST_PHASE): exponential in time, 1 s → 5 s.
        let ratio = FAST_CAP.as_secs_f64() / BASE.as_secs_f64();
        let max = BASE
            .mul_f64(ratio.powf(elapsed.as_secs_f64() / FAST_PHASE.as_secs_f64()))
            .min(FAST_CAP);
        return DelayRange {
            min: (max / 2).max(FLOOR),
            max,
        };
    }
    let max = FAST_CAP
        .saturating_mul(1u32 << slow_attempt.saturating_add(1).min(16))
        .min(CAP);
    DelayRange { min: FLOOR, max }
}

/// The state of the reconnect backoff of one link.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// When the first failure of the current outage happened.
    outage_since: Option<Instant>,
    /// Failures since the fast phase ended.
    slow_attempts: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// The delay before the next attempt, after a failure now; `unit` is a random number in
    /// `[0, 1)` ([`random_unit`]).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        self.next_delay_at(Instant::now(), unit)
    }

    /// [`Backoff::next_delay`] for a failure at `now`.
    pub fn next_delay_at(&mut self, now: Instant, unit: f64) -> Duration {
        let since = *self.outage_since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        let range = delay_range(elapsed, self.slow_attempts);
        if elapsed >= FAST_PHASE {
            self.slow_attempts = self.slow_attempts.saturating_add(1);
        }
        range.at(unit)
    }

    /// Called after a connection ended: one that reached namespace connect and lasted
    /// [`STABLE_AFTER`] ends the outage; a short one keeps the outage going (and its clock
    /// running), so a server that accepts and soon drops us is not hammered.
    pub fn connection_ended(&mut self, reached_namespace: bool, lasted: Duration) {
        if reached_namespace && lasted >= STABLE_AFTER {
            self.reset();
        }
    }

    /// Forgets all failures.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A random number in `[0, 1)` for [`Backoff::next_delay`].
pub fn random_unit() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bucket indexes of test draws
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Fails at once every attempt for `outage`, then succeeds; each attempt takes `attempt`.
    /// Returns how long after the end of the outage the successful attempt started.
    fn back_after(outage: Duration, attempt: Duration, mut unit: impl FnMut() -> f64) -> Duration {
        let start = Instant::now();
        let mut b = Backoff::new();
        let mut t = start;
        loop {
            t += attempt;
            let d = b.next_delay_at(t, unit());
            t += d;
            if t - start >= outage {
                return t - start - outage;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_minute_stays_fast_growing_from_one_to_five_seconds() {
        for unit in [0.0, 0.5, 1.0] {
            let mut b = Backoff::new();
            let start = Instant::now();
            let mut delays = Vec::new();
            while start.elapsed() < FAST_PHASE {
                let d = b.next_delay(unit);
                let elapsed = start.elapsed().as_secs_f64();
                let ceiling = 5f64.powf(elapsed / 60.0);
                assert!(
                    d >= FLOOR && d <= secs(ceiling + 1e-9) && d <= FAST_CAP,
                    "unit {unit}: {d:?} at {elapsed:.1} s"
                );
                assert!(d >= secs(ceiling / 2.0 - 1e-9), "unit {unit}: {d:?}");
                delays.push(d);
                tokio::time::advance(d).await;
            }
            // Non-decreasing for a fixed unit, and many attempts in the first minute.
            assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
            assert!(delays.len() >= 20, "{} attempts", delays.len());
        }
        // The ceiling at the very start and just before the minute.
        assert_eq!(delay_range(Duration::ZERO, 0).max, BASE);
        assert_eq!(delay_range(Duration::ZERO, 0).min, FLOOR);
        let late = delay_range(secs(59.9), 0);
        assert!(late.max > secs(4.9) && late.max <= FAST_CAP, "{late:?}");
    }

    #[test]
    fn a_five_second_outage_reconnects_within_two_seconds_of_the_return() {
        for attempt in [Duration::ZERO, Duration::from_millis(50), secs(0.3)] {
            for unit in [0.0, 0.25, 0.5, 0.75, 1.0] {
                let late = back_after(secs(5.0), attempt, || unit);
                assert!(late <= secs(2.0), "unit {unit}: {late:?}");
            }
            for _ in 0..2000 {
                let late = back_after(secs(5.0), attempt, random_unit);
                assert!(late <= secs(2.0), "{late:?}");
            }
        }
        // Any outage within the first minute ends at most one fast ceiling (≤ 5 s) late.
        for outage in [1.0, 10.0, 30.0, 59.0] {
            for _ in 0..200 {
                let late = back_after(secs(outage), Duration::ZERO, random_unit);
                assert!(late <= FAST_CAP, "{outage} s outage: {late:?} late");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_minute_the_ceiling_doubles_up_to_the_one_minute_cap() {
        let mut b = Backoff::new();
        let start = Instant::now();
        while start.elapsed() < FAST_PHASE {
            let d = b.next_delay(1.0);
            tokio::time::advance(d).await;
        }
        let maxima: Vec<Duration> = (0..7)
            .map(|_| {
                // The top of each range (unit 1), without advancing past the cap's relevance.
                b.next_delay(1.0)
            })
            .collect();
        let s = Duration::from_secs;
        assert_eq!(maxima, [s(10), s(20), s(40), s(60), s(60), s(60), s(60)]);
        // The bottom of the range is the floor, not a fraction of the ceiling (full jitter).
        assert_eq!(b.next_delay(0.0), FLOOR);
        // Long outages never exceed the cap, whatever the unit.
        for unit in [0.0, 0.3, 0.999_999, 1.0, -4.0, 9.0, f64::NAN, f64::INFINITY] {
            for _ in 0..100 {
                let d = b.next_delay(unit);
                assert!((FLOOR..=CAP).contains(&d), "unit {unit}: {d:?}");
                tokio::time::advance(d).await;
            }
        }
        assert_eq!(delay_range(s(3600), u32::MAX).max, CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_spreads_delays_over_the_whole_range_without_a_beat() {
        let mut b = Backoff::new();
        tokio::time::advance(Duration::ZERO).await;
        b.next_delay(0.5);
        tokio::time::advance(FAST_PHASE).await;
        for _ in 0..5 {
            b.next_delay(0.5); // reach the cap
        }
        const N: usize = 20_000;
        let draws: Vec<f64> = (0..N)
            .map(|_| b.next_delay(random_unit()).as_secs_f64())
            .collect();
        let (lo, hi) = (FLOOR.as_secs_f64(), CAP.as_secs_f64());
        let min = draws.iter().copied().fold(f64::MAX, f64::min);
        let max = draws.iter().copied().fold(0.0, f64::max);
        let mean = draws.iter().sum::<f64>() / N as f64;
        assert!(min >= lo && min < lo + 0.5, "min {min}");
        assert!(max <= hi && max > hi - 0.5, "max {max}");
        assert!((mean - (lo + hi) / 2.0).abs() < 1.0, "mean {mean}");
        // Uniform: each of 10 equal buckets holds about a tenth; no spike at the cap or floor.
        let mut buckets = [0usize; 10];
        for d in &draws {
            let i = (((d - lo) / (hi - lo)) * 10.0) as usize;
            buckets[i.min(9)] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((1600..=2400).contains(n), "bucket {i}: {n} of {N}");
        }
        let at_cap = draws.iter().filter(|d| **d >= hi - 1e-6).count();
        let at_floor = draws.iter().filter(|d| **d <= lo + 1e-6).count();
        assert!(
            at_cap < 10 && at_floor < 10,
            "{at_cap} at the cap, {at_floor} at the floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_connection_ends_the_outage_and_a_short_one_does_not() {
        let mut b = Backoff::new();
        b.next_delay(1.0);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(b.next_delay(1.0), Duration::from_secs(10));
        b.connection_ended(true, Duration::from_secs(5));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(20), "still slow");
        b.connection_ended(false, Duration::from_secs(600));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(40), "still slow");
        b.connection_ended(true, STABLE_AFTER);
        assert_eq!(b.next_delay(1.0), BASE, "a new outage starts fast");
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
