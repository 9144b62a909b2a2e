//! Splits a byte stream of newline-delimited JSON (events, pull progress) into lines. The engine's
//! HTTP chunks do not line up with JSON objects, so bytes are buffered until a `\n`. Pure; no I/O.

/// A line longer than this is not an engine message; refuse it rather than buffer without bound.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// Accumulates bytes and hands out complete lines (without the `\n`, and without a trailing `\r`).
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for `\n` (so a long line is not rescanned per chunk).
    scanned: usize,
}

/// A line exceeded [`MAX_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

impl LineBuffer {
    /// Appends a chunk.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line, if one is buffered.
    pub(crate) fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    return Err(LineTooLong);
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            self.scanned = 0;
            line.pop(); // the '\n'
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                return Err(LineTooLong);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }

    /// What is left when the stream ends (a last line without `\n`), if not blank.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(lb: &mut LineBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = lb.next_line().unwrap() {
            out.push(String::from_utf8(l).unwrap());
        }
        out
    }

    #[test]
    fn splits_objects_across_and_within_chunks() {
        let mut lb = LineBuffer::default();
        lb.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(drain(&mut lb), ["{\"a\":1}"]);
        lb.push(b":2}\r\n\n  \n{\"c\":3}\n{\"d\"");
        assert_eq!(drain(&mut lb), ["{\"b\":2}", "{\"c\":3}"]);
        lb.push(b":4}");
        assert_eq!(drain(&mut lb), Vec::<String>::new());
        assert_eq!(lb.finish().unwrap(), b"{\"d\":4}");
        assert_eq!(lb.finish(), None);
    }

    #[test]
    fn refuses_unbounded_lines() {
        let mut lb = LineBuffer::default();
        lb.push(&vec![b'x'; MAX_LINE + 1]);
        assert_eq!(lb.next_line(), Err(LineTooLong));
    }
}
