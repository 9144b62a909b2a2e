//! Pure helpers that turn caller strings into safe URI pieces: percent-encoding of path segments
//! and query values, and the hex host hyperlocal expects. No I/O.

use std::fmt::Write as _;

/// Percent-encodes everything except RFC 3986 unreserved characters, so any caller string (a
/// container name, a filters JSON document) is a single, literal path segment or query value.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Builds `?k1=v1&k2=v2` from already-chosen keys and raw values (values are encoded here);
/// empty when there are no pairs.
pub(crate) fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(&v));
    }
    out
}

/// Lower-case hex of the socket path: hyperlocal carries the socket path in the URI's host.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("plc-1_a.b~"), "plc-1_a.b~");
        assert_eq!(
            percent_encode(r#"{"label":["a=b c"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D"
        );
        assert_eq!(percent_encode("../x/?#&"), "..%2Fx%2F%3F%23%26");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn query_joins_encoded_pairs() {
        assert_eq!(query([]), "");
        assert_eq!(
            query([("fromImage", "a/b".to_string()), ("tag", "1 0".to_string())]),
            "?fromImage=a%2Fb&tag=1%200"
        );
    }

    #[test]
    fn hex_matches_hyperlocal() {
        assert_eq!(hex(b"foo.sock"), "666f6f2e736f636b");
    }
}
