//! ISO 8601 / RFC 3339 parsing and formatting shared by the agent's modules.
//!
//! Owns the one definition of "a date the cloud may send" ([`parse_iso8601`]) and the one format
//! the agent writes ([`format_utc_micros`], e.g. `2025-11-20T20:30:45.123456+00:00`: RFC 3339 UTC,
//! with `+00:00` rather than `Z` because Python's `datetime.fromisoformat` before 3.11, a likely
//! reader in the cloud, refuses `Z`). Pure functions only: it never reads the clock except in the
//! explicitly named `now_*` helpers.
//!
//! Accepted input: the ISO 8601 forms that name a day, optionally with a time of day (spec
//! README §2 "real ISO 8601 / RFC 3339 dates"; a superset of the real-ISO part of what the
//! original agent accepted, upstream §3.2):
//! - a date, in extended or basic format: calendar `2025-11-20` / `20251120`, week
//!   `2025-W47-4` / `2025W474`, ordinal `2025-324` / `2025324` (four-digit years);
//! - optionally a `T` (or `t`, or a single space as RFC 3339 allows), then a time of hour, minute
//!   or second precision in extended (`20`, `20:30`, `20:30:45`) or basic (`2030`, `203045`)
//!   format; seconds may carry a fraction (`.` or `,`, any number of digits, truncated to
//!   microseconds). Date and time formats may differ (`2025-11-20T2030`), as upstream allowed;
//! - after a time, optionally `Z` or an offset `±hh:mm`, `±hhmm` or `±hh`.
//!
//! Everything else is refused: reduced-precision dates (`2025-11`, `2025-W47`), any other
//! separator, trailing text or whitespace, fractions of hours or minutes, `24:00` and leap
//! seconds, out-of-range fields (`2025-02-30`, week 54, hour 25, offset `+24:00`).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// A parsed ISO 8601 instant: a local date-time plus the offset when the text carried one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoDateTime {
    /// Date and time as written (midnight for a date-only value).
    pub local: PrimitiveDateTime,
    /// `Some` when the text ended in `Z` or an explicit offset.
    pub offset: Option<UtcOffset>,
}

/// Parses an ISO 8601 date or date-time (see the module docs for the accepted forms).
pub fn parse_iso8601(text: &str) -> Option<IsoDateTime> {
    // ASCII only, so every byte index below is a char boundary.
    if !text.is_ascii() {
        return None;
    }
    // Dates are made of digits, `-` and `W`; the first separator ends the date.
    let (date_text, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let date = parse_date(date_text)?;
    let Some(rest) = rest else {
        return Some(IsoDateTime {
            local: PrimitiveDateTime::new(date, Time::MIDNIGHT),
            offset: None,
        });
    };
    // The time part ends where the offset begins (a time itself has no `Z`, `+` or `-`).
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let time = parse_time(&rest[..zone_at])?;
    let offset = match &rest[zone_at..] {
        "" => None,
        "Z" | "z" => Some(UtcOffset::UTC),
        zone => Some(parse_offset(zone)?),
    };
    Some(IsoDateTime {
        local: PrimitiveDateTime::new(date, time),
        offset,
    })
}

/// True when `text` is a date the contracts accept.
pub fn is_iso8601(text: &str) -> bool {
    parse_iso8601(text).is_some()
}

/// The value of a non-empty run of ASCII digits (at most 9, so it fits a `u32`).
fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A two-digit field as a `u8`.
fn two(text: &str) -> Option<u8> {
    if text.len() != 2 {
        return None;
    }
    u8::try_from(digits(text)?).ok()
}

fn parse_date(text: &str) -> Option<Date> {
    let year = i32::try_from(digits(text.get(0..4)?)?).ok()?;
    let rest = &text[4..];
    let b = rest.as_bytes();
    match b {
        // Week dates: `-Www-D` or `WwwD`.
        [b'-', b'W', _, _, b'-', _] => week_date(year, &rest[2..4], &rest[5..6]),
        [b'W', _, _, _] => week_date(year, &rest[1..3], &rest[3..4]),
        // Calendar dates `-MM-DD` and ordinal dates `-DDD` (before `MMDD`, which `-DDD` would
        // also match).
        [b'-', _, _, b'-', _, _] => calendar_date(year, &rest[1..3], &rest[4..6]),
        [b'-', _, _, _] => ordinal_date(year, &rest[1..4]),
        // Basic formats: calendar `MMDD`, ordinal `DDD`.
        [_, _, _, _] => calendar_date(year, &rest[0..2], &rest[2..4]),
        [_, _, _] => ordinal_date(year, rest),
        _ => None,
    }
}

fn calendar_date(year: i32, month: &str, day: &str) -> Option<Date> {
    let month = Month::try_from(two(month)?).ok()?;
    Date::from_calendar_date(year, month, two(day)?).ok()
}

fn week_date(year: i32, week: &str, day: &str) -> Option<Date> {
    // ISO weekday numbers: 1 = Monday … 7 = Sunday.
    let weekday = match digits(day)? {
        1 => Weekday::Monday,
        2 => Weekday::Tuesday,
        3 => Weekday::Wednesday,
        4 => Weekday::Thursday,
        5 => Weekday::Friday,
        6 => Weekday::Saturday,
        7 => Weekday::Sunday,
        _ => return None,
    };
    // Refuses week 0, week 54, and week 53 of a year that has 52 weeks.
    Date::from_iso_week_date(year, two(week)?, weekday).ok()
}

fn ordinal_date(year: i32, day: &str) -> Option<Date> {
    if day.len() != 3 {
        return None;
    }
    Date::from_ordinal_date(year, u16::try_from(digits(day)?).ok()?).ok()
}

fn parse_time(text: &str) -> Option<Time> {
    let (hms, fraction) = match text.find(['.', ',']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let b = hms.as_bytes();
    let (hour, minute, second) = match b {
        [_, _] => (two(hms)?, 0, 0),
        [_, _, _, _] => (two(&hms[0..2])?, two(&hms[2..4])?, 0),
        [_, _, b':', _, _] => (two(&hms[0..2])?, two(&hms[3..5])?, 0),
        [_, _, _, _, _, _] => (two(&hms[0..2])?, two(&hms[2..4])?, two(&hms[4..6])?),
        [_, _, b':', _, _, b':', _, _] => (two(&hms[0..2])?, two(&hms[3..5])?, two(&hms[6..8])?),
        _ => return None,
    };
    let has_seconds = b.len() >= 6;
    let micros = match fraction {
        None => 0,
        Some(f) => {
            // A fraction needs seconds before it and at least one digit.
            if !has_seconds || f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut padded: String = f.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            digits(&padded)?
        }
    };
    Time::from_hms_micro(hour, minute, second, micros).ok()
}

fn parse_offset(zone: &str) -> Option<UtcOffset> {
    let sign: i8 = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = &zone[1..];
    let (hours, minutes) = match body.as_bytes() {
        [_, _] => (two(body)?, 0),
        [_, _, _, _] => (two(&body[0..2])?, two(&body[2..4])?),
        [_, _, b':', _, _] => (two(&body[0..2])?, two(&body[3..5])?),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    UtcOffset::from_hms(
        sign * i8::try_from(hours).ok()?,
        sign * i8::try_from(minutes).ok()?,
        0,
    )
    .ok()
}

/// The project's one timestamp format (`2025-11-20T20:30:45.123456+00:00`), shared with netmon's
/// events: see [`netmon_proto::format_timestamp`].
pub use netmon_proto::format_timestamp as format_utc_micros;

/// The current time as [`format_utc_micros`] writes it.
pub fn now_utc_micros() -> String {
    format_utc_micros(OffsetDateTime::now_utc())
}

/// The current Unix time in whole seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` and renders it as `YYYY-MM-DD hh:mm:ss.ffffff` plus the offset, if any.
    fn render(text: &str) -> Option<String> {
        let p = parse_iso8601(text)?;
        let l = p.local;
        let mut out = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            l.year(),
            u8::from(l.month()),
            l.day(),
            l.hour(),
            l.minute(),
            l.second(),
            l.microsecond()
        );
        if let Some(o) = p.offset {
            out.push_str(&format!(
                " {:+03}:{:02}",
                o.whole_hours(),
                o.minutes_past_hour().abs()
            ));
        }
        Some(out)
    }

    #[test]
    fn accepts_every_iso8601_form_upstream_accepted() {
        for (text, want) in [
            ("2025-11-20", "2025-11-20 00:00:00.000000"),
            ("20251120", "2025-11-20 00:00:00.000000"),
            ("2025-W47-4", "2025-11-20 00:00:00.000000"),
            ("2025-11-20T20:30:45", "2025-11-20 20:30:45.000000"),
            ("2025-11-20 20:30:45", "2025-11-20 20:30:45.000000"),
            ("2025-11-20T20", "2025-11-20 20:00:00.000000"),
            ("2025-11-20T2030", "2025-11-20 20:30:00.000000"),
            ("2025-11-20T20:30", "2025-11-20 20:30:00.000000"),
            ("2025-11-20T20:30:45.1", "2025-11-20 20:30:45.100000"),
            (
                "2025-11-20T20:30:45.123456789",
                "2025-11-20 20:30:45.123456",
            ),
            ("2025-11-20T20:30:45,5", "2025-11-20 20:30:45.500000"),
            ("2025-11-20T20:30:45Z", "2025-11-20 20:30:45.000000 +00:00"),
            (
                "2025-11-20T20:30:45.123Z",
                "2025-11-20 20:30:45.123000 +00:00",
            ),
            (
                "2025-11-20T20:30:45+03:00",
                "2025-11-20 20:30:45.000000 +03:00",
            ),
            (
                "2025-11-20T20:30:45+0300",
                "2025-11-20 20:30:45.000000 +03:00",
            ),
            (
                "2025-11-20T20:30:45-0330",
                "2025-11-20 20:30:45.000000 -03:30",
            ),
            (
                "2025-11-20T20:30:45+03",
                "2025-11-20 20:30:45.000000 +03:00",
            ),
            ("2024-02-29T00:00:00", "2024-02-29 00:00:00.000000"),
        ] {
            assert_eq!(render(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn accepts_the_other_iso8601_date_and_time_forms() {
        for (text, want) in [
            // Basic-format week date and both ordinal forms.
            ("2025W474", "2025-11-20 00:00:00.000000"),
            ("2025-324", "2025-11-20 00:00:00.000000"),
            ("2025324", "2025-11-20 00:00:00.000000"),
            ("2024-366", "2024-12-31 00:00:00.000000"),
            // Week 1 of 2025 starts in 2024; 2020 has a week 53.
            ("2025-W01-1", "2024-12-30 00:00:00.000000"),
            ("2020-W53-7", "2021-01-03 00:00:00.000000"),
            // Basic-format times, with fraction and offsets, on basic dates too.
            ("20251120T203045", "2025-11-20 20:30:45.000000"),
            ("20251120T203045.25Z", "2025-11-20 20:30:45.250000 +00:00"),
            ("20251120T20+0100", "2025-11-20 20:00:00.000000 +01:00"),
            (
                "2025-W47-4T20:30:45-05:00",
                "2025-11-20 20:30:45.000000 -05:00",
            ),
            ("2025-324T2030Z", "2025-11-20 20:30:00.000000 +00:00"),
            // RFC 3339 allows lower-case `t` and `z`.
            ("2025-11-20t20:30:45z", "2025-11-20 20:30:45.000000 +00:00"),
        ] {
            assert_eq!(render(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_garbage_and_non_iso_forms() {
        for bad in [
            "",
            "Z",
            "2025",
            "2025-11",
            "202511",
            "2025-W47",
            "2025W47",
            "2025-W474",
            "2025W47-4",
            "2025-1120",
            "202511-20",
            "2025-11-20 ",
            " 2025-11-20",
            "2025-11-20T",
            "2025-11-20Z",
            "2025-11-20T20:30:45ZZ",
            "2025-11-20T20:30:45Z ",
            "2025-11-20x20:30:45",
            "2025-11-20_20:30:45",
            "2025-11-20TT20:30:45",
            "2025-11-20T20:3045",
            "2025-11-20T2030:45",
            "2025-11-20T203",
            "2025-11-20T20:30:4",
            "2025-13-01",
            "2025-00-10",
            "2025-11-32",
            "2025-11-00",
            "2025-02-30",
            "2025-02-29",
            "2025-366",
            "2025-000",
            "2025-W54-1",
            "2025-W53-1",
            "2025-W00-1",
            "2025-W47-8",
            "2025-W47-0",
            "2025-11-20T25:00",
            "2025-11-20T24:00:00",
            "2025-11-20T20:60",
            "2025-11-20T20:30:60",
            "2025-11-20T20:30:45.",
            "2025-11-20T20:30.5",
            "2025-11-20T20.5",
            "2025-11-20T20:30:45.5x",
            "2025-11-20T20:30:45+24:00",
            "2025-11-20T20:30:45+03:60",
            "2025-11-20T20:30:45+3",
            "2025-11-20T20:30:45+03:0",
            "2025-11-20T20:30:45+03:00:00",
            "2025-11-20T20:30:45+",
            "+2025-11-20",
            "-2025-11-20",
            "12025-11-20",
            "tomorrow",
            "2025-11-20T20:30:45+03:00junk",
            "２０２５-11-20",
            "2025-11-20T20:30:45\u{a0}",
        ] {
            assert!(!is_iso8601(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn keeps_offset_and_truncates_fraction_to_micros() {
        let parsed = parse_iso8601("2025-11-20T20:30:45.1234567+03:00").unwrap();
        assert_eq!(parsed.local.microsecond(), 123_456);
        assert_eq!(parsed.offset, Some(UtcOffset::from_hms(3, 0, 0).unwrap()));
        assert_eq!(parse_iso8601("2025-11-20").unwrap().offset, None);
    }

    #[test]
    fn formats_utc_with_micros_and_a_zero_offset() {
        let at = OffsetDateTime::from_unix_timestamp(1_732_130_000).unwrap();
        assert_eq!(format_utc_micros(at), "2024-11-20T19:13:20.000000+00:00");
        let text = now_utc_micros();
        assert!(text.ends_with("+00:00") && text.len() == 32, "{text}");
        assert!(is_iso8601(&text));
    }

    #[test]
    fn mutated_dates_never_panic() {
        use rand::RngExt;
        let mut rng = rand::rng();
        let alphabet = b"0123456789-:T Zz+.,xW\xc3";
        let seeds: [&[u8]; 3] = [
            b"2025-11-20T20:30:45.123456+03:00",
            b"2025-W47-4T203045,5-0330",
            b"2025324T20Z",
        ];
        for _ in 0..50_000 {
            let seed = seeds[rng.random_range(0..seeds.len())];
            let mut bytes = seed[..rng.random_range(0..=seed.len())].to_vec();
            for _ in 0..rng.random_range(0..4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.random_range(0..bytes.len());
                bytes[at] = alphabet[rng.random_range(0..alphabet.len())];
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse_iso8601(text);
            }
        }
    }

    #[test]
    fn instants_before_year_0_are_written_as_parseable_text() {
        // Found by the `timefmt` fuzz target (input kept in fuzz/regressions/timefmt/): day 1 of
        // year 0 at 00:00 +10:00 is 14:00 UTC on 31 December of year -1, which was written as
        // "-001-12-31T14:00:00.000000+00:00", a text no RFC 3339 reader (this one included) takes.
        let iso = parse_iso8601("0000001T00+1000").unwrap();
        let written = format_utc_micros(iso.local.assume_offset(iso.offset.unwrap()));
        assert_eq!(written, "0000-01-01T00:00:00.000000+00:00");
        assert!(is_iso8601(&written));
    }
}
