//! The cloud link's upload tap (`cloud::tap`), which sits under the WebSocket layer and rewrites
//! large `run_command` text frames (files decoded on arrival, placeholders in a skeleton): fed an
//! HTTP response head and arbitrary frames in arbitrary pieces, it never panics and never changes
//! a byte of a stream without such a frame, however the stream is split. (That a rewrite does not
//! depend on the split is a unit test: placeholder ids differ between runs.)
//! The rewrite threshold is lowered to a few bytes so small inputs reach the tokenizer.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use orchestrator_agent::fuzzing::upload_tap;

const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
const PIECES: &[&str] = &[
    "42",
    "4217",
    "[\"run_command\",",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"files\"",
    "\"f\"",
    "\"content_base64\"",
    "\"UEsDBA==\"",
    "\"QUJD\\/\"",
    "\"\\\"",
    "\\u0041",
    "\"",
    "=",
    " ",
    "\n",
    "A-_",
    "null",
];

#[derive(Debug)]
struct Input {
    /// `(header byte 0, masked, payload)`.
    frames: Vec<(u8, bool, Vec<u8>)>,
    /// Where the wire is split.
    cuts: Vec<usize>,
    over: u64,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut frames = Vec::new();
        u.arbitrary_loop(None, Some(4), |u| {
            let first = *u.choose(&[0x81u8, 0x01, 0x80, 0x82, 0x89, 0x8a, 0x88])?;
            let mut payload = Vec::new();
            u.arbitrary_loop(None, Some(24), |u| {
                if u.ratio(4, 5)? {
                    payload.extend_from_slice(u.choose(PIECES)?.as_bytes());
                } else {
                    payload.push(u.arbitrary()?);
                }
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            frames.push((first, u.ratio(1, 8)?, payload));
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let mut cuts: Vec<usize> = u.arbitrary()?;
        cuts.truncate(16);
        Ok(Input {
            frames,
            cuts,
            over: u.int_in_range(0..=64)?,
        })
    }
}

fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&[0, 0, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// Whether the tap may rewrite this frame.
fn candidate(first: u8, masked: bool, payload: &[u8], over: u64) -> bool {
    let Some(rest) = payload.strip_prefix(b"42") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    first == 0x81
        && !masked
        && payload.len() as u64 > over
        && rest[digits..].starts_with(b"[\"run_command\",")
}

fuzz_target!(|i: Input| {
    let mut wire = HEAD.to_vec();
    for (first, masked, payload) in &i.frames {
        wire.extend(frame(*first, *masked, payload));
    }
    let mut cuts: Vec<usize> = i.cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts {
        pieces.push(&wire[at..c]);
        at = c;
    }
    pieces.push(&wire[at..]);
    let out = upload_tap(&pieces, i.over);
    if !i
        .frames
        .iter()
        .any(|(first, masked, payload)| candidate(*first, *masked, payload, i.over))
    {
        assert_eq!(out, wire, "a stream without an upload frame was changed");
    }
});
