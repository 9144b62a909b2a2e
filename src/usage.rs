//! Usage history in two tiers of fixed-capacity rings, the period syntax of `cpuPeriod` /
//! `memoryPeriod` (upstream §4.3), and [`downsample`], which keeps any window's answer under the
//! cloud's message limit.
//!
//! A [`UsageHistory`] keeps the raw 5 s samples of the last hour ([`RAW_CAPACITY`]) and one mean
//! per minute for the rest of 48 h ([`MINUTE_CAPACITY`]). Both tiers are [`Ring`]s: they grow on
//! demand (a runtime that lived five minutes holds five minutes) and never past the capacity they
//! were built with, so a series costs at most about 58 KiB whatever the uptime (the single 48 h
//! raw buffer before cost 1–1.5 MiB per series once grown). A query takes the minute means
//! where the raw samples have been dropped and the raw samples after that, with neither gap nor
//! overlap at the boundary, and nothing older than [`RETENTION`].
//!
//! Owns only data structures and pure parsing; it never reads the clock itself (callers pass
//! `now` and timestamps) and never samples anything (the host sampler and the runtime sampler do).

/// Seconds between two samples.
pub const SAMPLE_INTERVAL_SECS: i64 = 5;
/// Raw samples kept: an hour at one per 5 s, plus a minute of slack so the whole last hour is raw.
pub const RAW_CAPACITY: usize = 732;
/// How long the history goes back: 48 h.
pub const RETENTION: i64 = 48 * 3600;
/// One-minute means kept: 48 h of them (the last hour is also there as raw samples).
pub const MINUTE_CAPACITY: usize = 48 * 60;
/// Seconds in one bucket of the second tier.
const MINUTE: i64 = 60;

/// Most points per series in one consumption answer. 48 h of history is about 3,540 points (720
/// raw samples and 2,820 minute means); longer windows are averaged into at most this many
/// buckets of equal duration (2 min over 48 h). An hour (720 points) stays as is.
pub const MAX_POINTS: usize = 1440;

/// A ring buffer of at most `capacity` items, oldest first; the oldest is overwritten when full.
/// Its storage grows on demand, exactly up to the capacity and never beyond (no doubling past
/// it), and is never reallocated once full.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    buf: Vec<T>,
    /// Index of the oldest item once full.
    head: usize,
    capacity: usize,
}

impl<T: Copy> Ring<T> {
    /// An empty ring holding at most `capacity` items (at least one). Allocates nothing yet.
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            capacity: capacity.max(1),
        }
    }

    /// Appends an item, overwriting the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.buf.len() < self.capacity {
            if self.buf.len() == self.buf.capacity() {
                // Double, but never past the capacity: the storage ends exactly at it.
                let room = self.capacity - self.buf.len();
                self.buf.reserve_exact(self.buf.len().max(16).min(room));
            }
            self.buf.push(item);
        } else {
            self.buf[self.head] = item;
            self.head = (self.head + 1) % self.capacity;
        }
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// True once the oldest items are being overwritten.
    pub fn is_full(&self) -> bool {
        self.buf.len() == self.capacity
    }

    /// The maximum number of items held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items the storage has room for now (≤ [`Ring::capacity`]).
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        let (newer, older) = self.buf.split_at(self.head);
        older.iter().chain(newer)
    }

    /// The oldest item.
    pub fn first(&self) -> Option<&T> {
        self.iter().next()
    }

    /// The newest item.
    pub fn last(&self) -> Option<&T> {
        self.iter().next_back()
    }

    /// Forgets every item (keeps the storage).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

/// One usage sample: CPU % (100 = one CPU) and memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub cpu: f32,
    pub memory: f32,
}

impl Usage {
    /// A sample from full-precision readings. `f32` keeps percentages and MiB to seven digits,
    /// which is all an answer shows, at half the history's memory.
    #[allow(clippy::cast_possible_truncation)]
    pub fn new(cpu: f64, memory_mib: f64) -> Self {
        Self {
            cpu: cpu as f32,
            memory: memory_mib as f32,
        }
    }
}

/// A sample or a minute mean at unix second `ts` (a mean is stamped with its last sample's time).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    ts: i64,
    usage: Usage,
}

/// The minute being filled: the sums of its samples.
#[derive(Debug, Clone, Copy)]
struct OpenMinute {
    start: i64,
    last_ts: i64,
    cpu: f64,
    memory: f64,
    count: u32,
}

impl OpenMinute {
    fn mean(&self) -> Point {
        let n = f64::from(self.count.max(1));
        Point {
            ts: self.last_ts,
            usage: Usage::new(self.cpu / n, self.memory / n),
        }
    }
}

/// Which value of a [`Usage`] a series is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Cpu,
    Memory,
}

impl Field {
    fn of(self, u: &Usage) -> f64 {
        f64::from(match self {
            Self::Cpu => u.cpu,
            Self::Memory => u.memory,
        })
    }
}

/// 48 h of one source's usage in two tiers: raw samples for the last hour, minute means for the
/// rest (see the module documentation).
#[derive(Debug, Clone)]
pub struct UsageHistory {
    raw: Ring<Point>,
    minutes: Ring<Point>,
    open: Option<OpenMinute>,
}

impl Default for UsageHistory {
    fn default() -> Self {
        Self::with_capacity(RAW_CAPACITY, MINUTE_CAPACITY)
    }
}

impl UsageHistory {
    /// A history of the default capacities (1 h raw, 48 h of minutes).
    pub fn new() -> Self {
        Self::default()
    }

    /// A history with other tier capacities (for tests).
    pub fn with_capacity(raw: usize, minutes: usize) -> Self {
        Self {
            raw: Ring::new(raw),
            minutes: Ring::new(minutes),
            open: None,
        }
    }

    /// Records a sample taken at unix second `ts`. Timestamps are expected to increase; a clock
    /// stepped back before the newest sample restarts the history (the old points would sit in
    /// the future of the new ones).
    pub fn push(&mut self, ts: i64, usage: Usage) {
        if self.raw.last().is_some_and(|p| ts < p.ts) {
            self.raw.clear();
            self.minutes.clear();
            self.open = None;
        }
        self.raw.push(Point { ts, usage });
        let start = ts.div_euclid(MINUTE) * MINUTE;
        match &mut self.open {
            Some(m) if m.start == start => {
                m.last_ts = ts;
                m.cpu += f64::from(usage.cpu);
                m.memory += f64::from(usage.memory);
                m.count += 1;
            }
            open => {
                if let Some(done) = open.take() {
                    self.minutes.push(done.mean());
                }
                *open = Some(OpenMinute {
                    start,
                    last_ts: ts,
                    cpu: f64::from(usage.cpu),
                    memory: f64::from(usage.memory),
                    count: 1,
                });
            }
        }
    }

    /// Number of raw samples held (the last hour at most).
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Number of completed minute means held.
    pub fn minute_len(&self) -> usize {
        self.minutes.len()
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(i64, Usage)> {
        self.raw.last().map(|p| (p.ts, p.usage))
    }

    /// Bytes of storage the two tiers hold now (at most the figure for full capacities).
    pub fn allocated_bytes(&self) -> usize {
        (self.raw.allocated() + self.minutes.allocated()) * std::mem::size_of::<Point>()
    }

    /// The points of `field` in `period` (inclusive), oldest first, never older than
    /// [`RETENTION`] before `now`: minute means up to the minute of the oldest raw sample still
    /// held, raw samples after it.
    pub fn series(&self, field: Field, period: Period, now: i64) -> Vec<(i64, f64)> {
        let start = period.start.max(now.saturating_sub(RETENTION));
        let in_period = |ts: i64| start <= ts && ts <= period.end;
        // Only once raw samples were dropped does the minute tier hold anything they do not.
        let boundary = match self.raw.first() {
            Some(oldest) if self.raw.is_full() => oldest.ts.div_euclid(MINUTE) * MINUTE + MINUTE,
            _ => i64::MIN,
        };
        let minutes = self
            .minutes
            .iter()
            .filter(|p| p.ts < boundary && in_period(p.ts));
        let raw = self
            .raw
            .iter()
            .filter(|p| p.ts >= boundary && in_period(p.ts));
        minutes
            .chain(raw)
            .map(|p| (p.ts, field.of(&p.usage)))
            .collect()
    }
}

/// Fills `history` with 48 h of 5 s samples ending at `now`, values varying with `seed`: the
/// memory benchmark's way to make the agent hold what two days of sampling leave
/// (`docs/benchmarks.md`). Not for anything else.
#[doc(hidden)]
pub fn fill_for_benchmark(history: &mut UsageHistory, now: i64, seed: u64) {
    let n = RETENTION / SAMPLE_INTERVAL_SECS;
    for i in 0..n {
        let ts = now - SAMPLE_INTERVAL_SECS * (n - 1 - i);
        let x = i
            .unsigned_abs()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(seed)
            % 1000;
        history.push(
            ts,
            Usage {
                cpu: (x % 100) as f32,
                memory: 100.0 + x as f32 / 10.0,
            },
        );
    }
}

/// An inclusive window of unix seconds. `start > end` selects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// A period string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid period {text:?}")]
pub struct PeriodError {
    pub text: String,
}

impl Period {
    /// The last hour before `now`.
    pub fn last_hour(now: i64) -> Self {
        Self {
            start: now.saturating_sub(3600),
            end: now,
        }
    }

    /// Parses upstream §4.3's syntax: `"<start>,<end>"` (unix seconds; further parts ignored), or
    /// `N` seconds / `Nm` / `Nh` / `Nd` back from `now` (case-sensitive suffixes; N an integer
    /// as Python's `int()` reads it: surrounding whitespace, a sign and `_` between digits).
    pub fn parse(text: &str, now: i64) -> Result<Self, PeriodError> {
        let err = || PeriodError {
            text: text.to_owned(),
        };
        if text.contains(',') {
            let mut parts = text.split(',');
            let start = parts.next().and_then(py_int).ok_or_else(err)?;
            let end = parts.next().and_then(py_int).ok_or_else(err)?;
            return Ok(Self { start, end });
        }
        let (number, unit) = match text.as_bytes().last() {
            Some(b'h') => (&text[..text.len() - 1], 3600),
            Some(b'm') => (&text[..text.len() - 1], 60),
            Some(b'd') => (&text[..text.len() - 1], 86_400),
            _ => (text, 1),
        };
        let n = py_int(number).ok_or_else(err)?;
        let back = n.checked_mul(unit).ok_or_else(err)?;
        let start = now.checked_sub(back).ok_or_else(err)?;
        Ok(Self { start, end: now })
    }

    /// [`Period::parse`], falling back to the last hour (logged) like the original.
    pub fn parse_or_last_hour(text: &str, now: i64) -> Self {
        Self::parse(text, now).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "falling back to the last hour");
            Self::last_hour(now)
        })
    }
}

/// Python `int(text)` for base 10: optional surrounding whitespace, optional sign, ASCII digits
/// with single `_` separators between digits.
fn py_int(text: &str) -> Option<i64> {
    let t = text.trim();
    let (negative, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let bytes = digits.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_digit() || !bytes[bytes.len() - 1].is_ascii_digit() {
        return None;
    }
    let mut value: i64 = 0;
    let mut prev_underscore = false;
    for &b in bytes {
        if b == b'_' {
            if prev_underscore {
                return None;
            }
            prev_underscore = true;
            continue;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        prev_underscore = false;
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Averages the points into at most `max` buckets of equal duration (each stamped with its last
/// point's time), keeping every point when there are at most `max`. Time buckets, not point
/// counts, so a window spanning both tiers is averaged evenly over time.
pub fn downsample(points: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    if max == 0 || points.len() <= max {
        return points.to_vec();
    }
    let span = i128::from(last.0) - i128::from(first.0) + 1;
    let max_points = i128::try_from(max).unwrap_or(i128::MAX);
    let width = ((span.max(1) + max_points - 1) / max_points).max(1);
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(max);
    let mut bucket: Option<(i128, i64, f64, u32)> = None;
    for &(ts, v) in points {
        let index = (i128::from(ts) - i128::from(first.0)) / width;
        match &mut bucket {
            Some((i, last_ts, sum, n)) if *i == index => {
                *last_ts = ts;
                *sum += v;
                *n += 1;
            }
            slot => {
                if let Some((_, t, sum, n)) = slot.take() {
                    out.push((t, sum / f64::from(n)));
                }
                *slot = Some((index, ts, v, 1));
            }
        }
    }
    if let Some((_, t, sum, n)) = bucket {
        out.push((t, sum / f64::from(n)));
    }
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_wrap)] // small test counts
mod tests {
    use super::*;

    const NOW: i64 = 1_732_130_000;

    const ALL: Period = Period {
        start: i64::MIN,
        end: i64::MAX,
    };

    fn u(cpu: f32, memory: f32) -> Usage {
        Usage { cpu, memory }
    }

    #[test]
    fn a_ring_overwrites_its_oldest_and_grows_exactly_to_its_capacity() {
        let mut ring = Ring::new(100);
        assert_eq!(ring.allocated(), 0, "nothing allocated up front");
        for i in 0..250 {
            ring.push(i);
            assert!(ring.allocated() <= 100, "never past the capacity");
        }
        assert_eq!(ring.len(), 100);
        assert_eq!(ring.allocated(), 100);
        let all: Vec<i32> = ring.iter().copied().collect();
        assert_eq!(all, (150..250).collect::<Vec<_>>());
        assert_eq!((ring.first(), ring.last()), (Some(&150), Some(&249)));
        let mut tiny = Ring::new(3);
        for i in 0..5 {
            tiny.push(i);
        }
        assert_eq!(tiny.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(tiny.allocated(), 3);
        tiny.clear();
        assert!(tiny.is_empty() && tiny.last().is_none());
    }

    /// A history of `hours` of 5 s samples ending at `NOW`: the value is the sample's age in
    /// seconds, for CPU, and its index for memory.
    fn filled(hours: i64) -> UsageHistory {
        let mut h = UsageHistory::new();
        let n = hours * 720;
        for i in 0..n {
            let ts = NOW - 5 * (n - 1 - i);
            h.push(ts, u((NOW - ts) as f32, i as f32));
        }
        h
    }

    #[test]
    fn the_last_hour_is_raw_and_older_samples_become_minute_means() {
        let h = filled(3);
        assert_eq!(h.raw_len(), RAW_CAPACITY);
        let pts = h.series(Field::Cpu, ALL, NOW);
        // 3 h: the last hour (and a minute of slack) raw, two hours of minute means before it.
        let raw_from = NOW - 5 * (RAW_CAPACITY as i64 - 1);
        let boundary = raw_from.div_euclid(60) * 60 + 60;
        let (minutes, raw): (Vec<_>, Vec<_>) = pts.iter().partition(|(ts, _)| *ts < boundary);
        assert!(raw.iter().all(|(ts, _)| (ts - NOW) % 5 == 0));
        assert_eq!(
            raw.len() as i64,
            (NOW - boundary) / 5 + 1,
            "raw from the boundary on"
        );
        assert!(raw.len() >= 720, "the whole last hour is raw");
        // Minute means: one per minute, stamped with the minute's last sample, averaging its 12
        // samples (ages a, a-5, ..., a-55 average to a-27.5).
        for w in minutes.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 60, "{w:?}");
        }
        let (ts, mean) = minutes[minutes.len() - 1];
        let age_of_last = (NOW - ts) as f64;
        assert!(
            (mean - (age_of_last + 27.5)).abs() < 1e-3,
            "{mean} at age {age_of_last}"
        );
        // No gap and no overlap at the boundary: consecutive points are at most a minute apart
        // and strictly increasing.
        for w in pts.windows(2) {
            assert!(w[0].0 < w[1].0 && w[1].0 - w[0].0 <= 60, "{w:?}");
        }
        // The oldest point is the mean of the minute of the very first sample.
        let first_sample = NOW - 5 * (3 * 720 - 1);
        let first = pts.first().expect("points").0;
        assert!(
            first >= first_sample && first < first_sample + 60,
            "{first}"
        );
    }

    #[test]
    fn a_period_across_the_tier_boundary_takes_means_then_raw_samples() {
        let h = filled(2);
        let p = Period {
            start: NOW - 3600 - 600,
            end: NOW - 3000,
        };
        let pts = h.series(Field::Memory, p, NOW);
        assert!(pts.iter().all(|(ts, _)| p.start <= *ts && *ts <= p.end));
        let raw_from = NOW - 5 * (RAW_CAPACITY as i64 - 1);
        let boundary = raw_from.div_euclid(60) * 60 + 60;
        let before = pts.iter().filter(|(ts, _)| *ts < boundary).count();
        let after = pts.iter().filter(|(ts, _)| *ts >= boundary).count();
        assert!((9..=11).contains(&before), "{before} minute means");
        assert_eq!(after as i64, (p.end - boundary) / 5 + 1);
        // A window entirely inside the raw hour is all raw samples.
        let last_hour = h.series(Field::Cpu, Period::last_hour(NOW), NOW);
        assert_eq!(last_hour.len(), 721);
        assert_eq!(last_hour[0], ((NOW - 3600), 3600.0));
    }

    #[test]
    fn nothing_older_than_48_hours_is_answered_or_kept() {
        let h = filled(50);
        let pts = h.series(Field::Cpu, ALL, NOW);
        let oldest = pts.first().expect("points").0;
        assert!(oldest >= NOW - RETENTION, "{} s old", NOW - oldest);
        assert!(oldest <= NOW - RETENTION + 120, "{} s old", NOW - oldest);
        assert_eq!(h.minute_len(), MINUTE_CAPACITY);
        // Bounded by construction: full capacities whatever the uptime (16 B a point).
        assert_eq!(h.allocated_bytes(), (RAW_CAPACITY + MINUTE_CAPACITY) * 16);
        // Later, the same history answers less as its points age past 48 h.
        let later = h.series(Field::Cpu, ALL, NOW + 6 * 3600);
        assert!(later.first().expect("points").0 >= NOW + 6 * 3600 - RETENTION);
        assert!(later.len() < pts.len());
    }

    #[test]
    fn a_short_history_is_all_raw_and_small() {
        let mut h = UsageHistory::new();
        for i in 0..60 {
            h.push(NOW - 300 + i * 5, u(i as f32, 1.0));
        }
        assert_eq!(h.series(Field::Cpu, ALL, NOW).len(), 60);
        assert_eq!(h.last(), Some((NOW - 5, u(59.0, 1.0))));
        assert!(
            h.allocated_bytes() <= 128 * 16 + 16 * 16,
            "{}",
            h.allocated_bytes()
        );
    }

    #[test]
    fn a_clock_stepped_back_restarts_the_history() {
        let mut h = UsageHistory::new();
        h.push(NOW, u(1.0, 1.0));
        h.push(NOW + 5, u(2.0, 2.0));
        h.push(NOW - 3600, u(3.0, 3.0));
        assert_eq!(h.series(Field::Cpu, ALL, NOW), vec![(NOW - 3600, 3.0)]);
    }

    #[test]
    fn window_is_inclusive_and_empty_when_reversed() {
        let mut h = UsageHistory::new();
        for ts in [10, 20, 30, 40] {
            h.push(ts, u(ts as f32, 0.0));
        }
        let ts: Vec<i64> = h
            .series(Field::Cpu, Period { start: 20, end: 30 }, 40)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(ts, vec![20, 30]);
        assert!(
            h.series(Field::Cpu, Period { start: 30, end: 20 }, 40)
                .is_empty()
        );
    }

    #[test]
    fn period_suffixes_and_plain_seconds() {
        assert_eq!(
            Period::parse("1h", NOW),
            Ok(Period {
                start: NOW - 3600,
                end: NOW
            })
        );
        assert_eq!(
            Period::parse("30m", NOW),
            Ok(Period {
                start: NOW - 1800,
                end: NOW
            })
        );
        assert_eq!(
            Period::parse("2d", NOW),
            Ok(Period {
                start: NOW - 172_800,
                end: NOW
            })
        );
        assert_eq!(
            Period::parse("90", NOW),
            Ok(Period {
                start: NOW - 90,
                end: NOW
            })
        );
        assert_eq!(
            Period::parse(" 2h", NOW),
            Ok(Period {
                start: NOW - 7200,
                end: NOW
            })
        );
        assert_eq!(
            Period::parse("1_0m", NOW),
            Ok(Period {
                start: NOW - 600,
                end: NOW
            })
        );
    }

    #[test]
    fn period_start_end_pair_ignores_further_parts() {
        assert_eq!(
            Period::parse("100,200", NOW),
            Ok(Period {
                start: 100,
                end: 200
            })
        );
        assert_eq!(
            Period::parse(" 100 , 200 ,x", NOW),
            Ok(Period {
                start: 100,
                end: 200
            })
        );
    }

    #[test]
    fn negative_period_selects_nothing() {
        let p = Period::parse("-1h", NOW).unwrap();
        assert!(p.start > p.end);
    }

    #[test]
    fn bad_periods_fail_and_fall_back_to_last_hour() {
        for bad in [
            "1.5h",
            "2H",
            "",
            ",5",
            "5,",
            "h",
            "1__0",
            "_1",
            "1_",
            "2h ",
            "abc",
            "99999999999999999999d",
        ] {
            assert!(Period::parse(bad, NOW).is_err(), "{bad:?} should fail");
            assert_eq!(Period::parse_or_last_hour(bad, NOW), Period::last_hour(NOW));
        }
    }

    #[test]
    fn random_periods_never_panic() {
        use rand::RngExt;
        let mut rng = rand::rng();
        let alphabet = [
            "1", "9", "-", "+", "_", " ", ",", "h", "m", "d", "H", ".", "é", "\u{3000}",
        ];
        for _ in 0..50_000 {
            let text: String = (0..rng.random_range(0..8))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            for now in [0, NOW, i64::MAX, i64::MIN] {
                let _ = Period::parse(&text, now);
            }
        }
    }

    #[test]
    fn downsampling_averages_buckets_and_keeps_small_series() {
        let points: Vec<(i64, f64)> = (0..10).map(|i| (i, i as f64)).collect();
        assert_eq!(downsample(&points, 20), points);
        assert_eq!(
            downsample(&points, 5),
            vec![(1, 0.5), (3, 2.5), (5, 4.5), (7, 6.5), (9, 8.5)]
        );
        assert_eq!(downsample(&points, 3).len(), 3);
        assert!(downsample(&[], 3).is_empty());
    }

    #[test]
    fn a_48_hour_window_downsamples_to_at_most_1440_even_time_buckets() {
        let h = filled(48);
        let pts = h.series(Field::Memory, Period::parse("48h", NOW).unwrap(), NOW);
        assert!(pts.len() > MAX_POINTS, "{} points", pts.len());
        let out = downsample(&pts, MAX_POINTS);
        assert!(
            out.len() <= MAX_POINTS && out.len() > MAX_POINTS - 10,
            "{}",
            out.len()
        );
        // Buckets of equal duration: about 2 min apart, in the raw hour as before it.
        for w in out.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!((60..=180).contains(&gap), "{gap} s between {w:?}");
        }
        assert_eq!(out.last().map(|p| p.0), Some(NOW));
    }
}
