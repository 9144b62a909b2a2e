//! ISO 8601 dates (`requested_at` of every message) and the consumption period syntax.
//! Properties: nothing panics; a parsed date with an offset formats and re-parses to the same
//! instant (year 0 at the earliest); every RFC 3339 timestamp the `time` crate accepts (leap seconds aside, which the
//! agent refuses on purpose) is accepted with the same instant, to the microsecond; a relative
//! period ends now and starts no later than now for a non-negative count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::{Period, format_utc_micros, parse_iso8601};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn micros(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos().div_euclid(1000)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_iso8601(text);
    if let Some(iso) = parsed
        && let Some(offset) = iso.offset
    {
        let at = iso.local.assume_offset(offset);
        let written = format_utc_micros(at);
        let again = parse_iso8601(&written)
            .unwrap_or_else(|| panic!("{written:?} (from {text:?}) does not parse"));
        let again = again
            .local
            .assume_offset(again.offset.expect("written with an offset"));
        // Instants before year 0 (UTC) have no RFC 3339 form: they are written as year 0's first.
        let year_0 = time::macros::datetime!(0000-01-01 00:00 UTC);
        assert_eq!(
            micros(again),
            micros(at.max(year_0)),
            "{text:?} -> {written:?}"
        );
    }
    if let Ok(reference) = OffsetDateTime::parse(text, &Rfc3339)
        && !text.contains(":60")
        // `time` takes any byte between date and time; RFC 3339 allows `T`, `t` or a space.
        && matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' '))
    {
        let iso = parsed.unwrap_or_else(|| panic!("RFC 3339 {text:?} refused"));
        let at = iso
            .local
            .assume_offset(iso.offset.expect("RFC 3339 has an offset"));
        assert_eq!(micros(at), micros(reference), "{text:?}");
    }

    for now in [0, 1_764_000_000, i64::MAX, i64::MIN] {
        if let Ok(p) = Period::parse(text, now)
            && !text.contains(',')
        {
            assert_eq!(p.end, now, "{text:?}");
        }
    }
});
