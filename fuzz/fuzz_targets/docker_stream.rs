//! Docker Engine streams: pull progress and the event stream, as newline-delimited JSON inside an
//! HTTP/1.1 (usually chunked) body whose chunks do not line up with the lines.
//! Mode byte 0 (the seeds captured from the engine): raw HTTP response bytes served to hyper's
//! client in pieces, read by the client's streaming line reader; every line is then decoded as a
//! pull progress message and as an event. Other modes: arbitrary chunks through the line
//! splitter, which must yield exactly the non-blank lines of the concatenated stream.
#![no_main]

use docker_api::fuzzing::{
    MAX_LINE, decode_event_line, decode_pull_line, read_streamed_response, split_lines,
};
use libfuzzer_sys::fuzz_target;

fn decode(line: &[u8]) {
    assert!(!line.contains(&b'\n'));
    assert!(line.len() <= MAX_LINE);
    if let Ok(p) = decode_pull_line(line) {
        // A message carrying an error is a failed pull, never progress.
        assert!(p.error.is_none());
        assert!(p.error_detail.is_none_or(|d| d.message.is_empty()));
    }
    let _ = decode_event_line(line);
}

/// The lines a stream holds: split at `\n`, one trailing `\r` dropped, blank lines skipped.
fn reference(stream: &[u8]) -> Vec<Vec<u8>> {
    stream
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        // Two bytes of piece sizes, then the response.
        let Some((sizes, response)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let pieces = [usize::from(sizes[0]) + 1, usize::from(sizes[1]) * 16 + 1];
        if let Ok(lines) = read_streamed_response(response, &pieces) {
            lines.iter().for_each(|l| decode(l));
        }
        return;
    }
    // Chunks separated by 0xFF (a byte UTF-8 text never contains).
    let chunks: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    let (lines, too_long) = split_lines(&chunks);
    assert!(!too_long, "no input here comes near 1 MiB");
    // The last line may lack its `\n`; a trailing `\r` there is kept by the splitter as a final
    // piece of data, so compare the complete lines and the rest separately.
    let stream = chunks.concat();
    let expected = reference(&stream);
    match stream.last() {
        Some(b'\n') | None => assert_eq!(lines, expected),
        Some(_) => {
            assert_eq!(
                lines[..lines.len().saturating_sub(1)],
                expected[..expected.len().saturating_sub(1)]
            );
        }
    }
    lines.iter().for_each(|l| decode(l));
});
