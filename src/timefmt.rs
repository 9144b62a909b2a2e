//! ISO 8601 / RFC 3339 parsing and formatting shared by the agent's modules.
//!
//! Owns the one definition of "a date the cloud may send" ([`parse_iso8601`]) and the one format
//! the agent writes ([`format_utc_micros`], e.g. `2025-11-20T20:30:45.123456Z`). Pure functions
//! only: it never reads the clock except in the explicitly named `now_*` helpers.
//!
//! Accepted input (the real-ISO-8601 part of what the original agent accepted, upstream §3.2):
//! - a calendar date in extended format: `2025-11-20`;
//! - a date, a `T` or a single space, then `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction` (`.` or `,`
//!   as the decimal sign, any number of digits, truncated to microseconds);
//! - optionally followed by `Z` or an offset `±hh:mm`, `±hhmm` or `±hh`.
//!
//! Everything else is refused: ordinal and week dates, basic-format dates, trailing text or
//! whitespace, out-of-range fields (`2025-02-30`, `24:00`).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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
    let bytes = text.as_bytes();
    if bytes.len() < 10 || !text.is_ascii() {
        return None;
    }
    let date = parse_date(&text[..10])?;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some(IsoDateTime {
            local: PrimitiveDateTime::new(date, Time::MIDNIGHT),
            offset: None,
        });
    }
    let sep = rest.as_bytes()[0];
    if sep != b'T' && sep != b't' && sep != b' ' {
        return None;
    }
    let rest = &rest[1..];
    // The time part ends where the offset begins.
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

fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_date(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&text[0..4])?).ok()?;
    let month = Month::try_from(u8::try_from(digits(&text[5..7])?).ok()?).ok()?;
    let day = u8::try_from(digits(&text[8..10])?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

fn parse_time(text: &str) -> Option<Time> {
    let (hms, fraction) = match text.find(['.', ',']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let b = hms.as_bytes();
    let (hour, minute, second) = match b.len() {
        5 if b[2] == b':' => (digits(&hms[0..2])?, digits(&hms[3..5])?, 0),
        8 if b[2] == b':' && b[5] == b':' => (
            digits(&hms[0..2])?,
            digits(&hms[3..5])?,
            digits(&hms[6..8])?,
        ),
        _ => return None,
    };
    let micros = match fraction {
        None => 0,
        Some(f) => {
            // A fraction needs seconds before it and at least one digit.
            if b.len() != 8 || f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut padded: String = f.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            padded.parse::<u32>().ok()?
        }
    };
    Time::from_hms_micro(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        micros,
    )
    .ok()
}

fn parse_offset(zone: &str) -> Option<UtcOffset> {
    let b = zone.as_bytes();
    let sign: i8 = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = &zone[1..];
    let (hours, minutes) = match body.len() {
        2 => (digits(body)?, 0),
        4 => (digits(&body[0..2])?, digits(&body[2..4])?),
        5 if body.as_bytes()[2] == b':' => (digits(&body[0..2])?, digits(&body[3..5])?),
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

/// Formats an instant as UTC with microseconds and a `Z`: `2025-11-20T20:30:45.123456Z`.
pub fn format_utc_micros(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

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

    #[test]
    fn accepts_the_real_iso8601_forms_upstream_accepted() {
        for ok in [
            "2025-11-20",
            "2025-11-20T20:30:45",
            "2025-11-20 20:30:45",
            "2025-11-20T20:30",
            "2025-11-20T20:30:45.1",
            "2025-11-20T20:30:45.123456789",
            "2025-11-20T20:30:45,5",
            "2025-11-20T20:30:45Z",
            "2025-11-20T20:30:45.123Z",
            "2025-11-20T20:30:45+03:00",
            "2025-11-20T20:30:45-0300",
            "2025-11-20T20:30:45+03",
            "2024-02-29T00:00:00",
        ] {
            assert!(is_iso8601(ok), "{ok} should parse");
        }
    }

    #[test]
    fn refuses_garbage_and_non_iso_forms() {
        for bad in [
            "",
            "Z",
            "2025-11",
            "2025-324",
            "2025-W47-4",
            "20251120",
            "2025-11-20 ",
            "2025-11-20T20:30:45ZZ",
            "2025-11-20x20:30:45",
            "2025-02-30",
            "2025-11-20T24:00:00",
            "2025-11-20T20:30:60",
            "2025-11-20T20:30:45.",
            "2025-11-20T20:30.5",
            "2025-11-20T20:30:45+24:00",
            "2025-11-20T20",
            "tomorrow",
            "2025-11-20T20:30:45+03:00junk",
            "２０２５-11-20",
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
    fn formats_utc_with_micros_and_z() {
        let at = OffsetDateTime::from_unix_timestamp(1_732_130_000).unwrap();
        assert_eq!(format_utc_micros(at), "2024-11-20T19:13:20.000000Z");
        let text = now_utc_micros();
        assert!(text.ends_with('Z') && text.len() == 27, "{text}");
        assert!(is_iso8601(&text));
    }

    #[test]
    fn mutated_dates_never_panic() {
        use rand::RngExt;
        let mut rng = rand::rng();
        let alphabet = b"0123456789-:T Zz+.,xW\xc3";
        let seed = b"2025-11-20T20:30:45.123456+03:00";
        for _ in 0..50_000 {
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
}
