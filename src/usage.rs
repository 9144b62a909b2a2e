//! Usage history: fixed-capacity ring buffers of timestamped samples, the period syntax of
//! `cpuPeriod` / `memoryPeriod` (upstream §4.3), and [`downsample`], which keeps any window's
//! answer under the cloud's message limit.
//!
//! Owns only data structures and pure parsing; it never reads the clock itself (callers pass
//! `now`) and never samples anything. The heartbeat fills the host buffer; the runtime side may
//! keep one [`RingBuffer`] per runtime the same way.

use std::collections::VecDeque;

/// 48 h at one sample per 5 s.
pub const CAPACITY: usize = 34_560;

/// Most points per series in one consumption answer. 48 h of 5 s samples is 34 560 points (about
/// 1.2 MB of JSON per series, over the cloud's 1 MB message limit); longer windows are averaged
/// into at most this many buckets (one per 2 min over 48 h). An hour (720 points) stays as is.
pub const MAX_POINTS: usize = 1440;

/// A ring buffer of `(unix seconds, sample)` pairs, oldest first; the oldest is dropped when full.
#[derive(Debug, Clone)]
pub struct RingBuffer<T> {
    samples: VecDeque<(i64, T)>,
    capacity: usize,
}

impl<T> Default for RingBuffer<T> {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl<T> RingBuffer<T> {
    /// An empty buffer holding at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Grow on demand: a 48 h buffer that has seen five minutes should not hold 48 h of RAM.
        Self {
            samples: VecDeque::new(),
            capacity,
        }
    }

    /// Appends a sample, dropping the oldest when full.
    pub fn push(&mut self, timestamp: i64, sample: T) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((timestamp, sample));
    }

    /// Number of stored samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The maximum number of samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest sample.
    pub fn last(&self) -> Option<&(i64, T)> {
        self.samples.back()
    }

    /// Samples with `period.start <= timestamp <= period.end`, oldest first.
    pub fn window(&self, period: Period) -> impl Iterator<Item = &(i64, T)> + '_ {
        self.samples
            .iter()
            .filter(move |(ts, _)| period.start <= *ts && *ts <= period.end)
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

/// Averages consecutive points into at most `max` buckets (timestamp of each bucket's last
/// point), keeping every point when there are at most `max`.
pub fn downsample(points: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if max == 0 || points.len() <= max {
        return points.to_vec();
    }
    let per_bucket = points.len().div_ceil(max);
    points
        .chunks(per_bucket)
        .filter_map(|chunk| {
            let last = chunk.last()?;
            let mean = chunk.iter().map(|(_, v)| v).sum::<f64>() / chunk.len() as f64;
            Some((last.0, mean))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_732_130_000;

    #[test]
    fn ring_buffer_drops_oldest_beyond_capacity() {
        let mut buf = RingBuffer::new(3);
        for ts in 0..5 {
            buf.push(ts, ts * 10);
        }
        assert_eq!(buf.len(), 3);
        let all: Vec<_> = buf
            .window(Period {
                start: i64::MIN,
                end: i64::MAX,
            })
            .copied()
            .collect();
        assert_eq!(all, vec![(2, 20), (3, 30), (4, 40)]);
    }

    #[test]
    fn default_capacity_is_48_hours_of_5_second_samples() {
        let mut buf = RingBuffer::<u8>::default();
        assert_eq!(buf.capacity(), 34_560);
        for ts in 0..(CAPACITY as i64 + 10) {
            buf.push(ts, 0);
        }
        assert_eq!(buf.len(), CAPACITY);
        assert_eq!(buf.window(Period { start: 0, end: 9 }).count(), 0);
        assert_eq!(buf.last().map(|s| s.0), Some(CAPACITY as i64 + 9));
    }

    #[test]
    fn window_is_inclusive_and_empty_when_reversed() {
        let mut buf = RingBuffer::new(10);
        for ts in [10, 20, 30, 40] {
            buf.push(ts, ());
        }
        let ts: Vec<i64> = buf
            .window(Period { start: 20, end: 30 })
            .map(|s| s.0)
            .collect();
        assert_eq!(ts, vec![20, 30]);
        assert_eq!(buf.window(Period { start: 30, end: 20 }).count(), 0);
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
    }
}
