//! The project's one timestamp format: RFC 3339 in UTC with microseconds and a `+00:00` offset,
//! e.g. `2025-11-20T20:30:45.123456+00:00` — netmon's event timestamps and the agent's (heartbeat,
//! state files, operation records). `+00:00` rather than `Z` because Python's
//! `datetime.fromisoformat` before 3.11, a likely reader in the cloud, refuses `Z`; upstream
//! netmon sent local time without an offset, which no reader can place in time.

use time::{OffsetDateTime, UtcOffset};

/// `2025-11-20T20:30:45.123456+00:00` for any instant.
///
/// RFC 3339 has four-digit years only: an instant before year 0 in UTC (as `0000-01-01T00+10`
/// is) is written as the first instant of year 0 rather than as an unparseable `-001-…`.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(UtcOffset::UTC)
        .max(time::macros::datetime!(0000-01-01 00:00 UTC));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// Now, as [`format_timestamp`] writes it.
pub fn timestamp_now() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds_and_an_offset() {
        let t = time::macros::datetime!(2025-11-20 20:30:45.123456789 +02:00);
        assert_eq!(format_timestamp(t), "2025-11-20T18:30:45.123456+00:00");
        let before_year_0 = time::macros::datetime!(0000-01-01 00:00 +10:00);
        assert_eq!(
            format_timestamp(before_year_0),
            "0000-01-01T00:00:00.000000+00:00"
        );
    }
}
