//! A tap under the WebSocket layer that decodes upload files while their frame arrives, so a
//! 32 MiB program never sits in memory as 43 MiB of base64 text (tungstenite assembles whole frames
//! before handing them out; the plan of issue 12 §1.4–1.5).
//!
//! Between the TLS stream and tungstenite, it passes everything through except one kind of frame:
//! a final, unmasked text frame over [`STREAM_OVER`] bytes carrying the event [`STREAMED_EVENT`]
//! (`42<ack id>["run_command",…`). That frame's payload runs through a push JSON tokenizer: every
//! string at `[1].files.<field>.content_base64` is base64-decoded as it arrives into an
//! [`attachments`](crate::attachments) entry and replaced by its placeholder; everything else is
//! copied to a skeleton, which reaches tungstenite as one ordinary text frame once the original
//! frame ended. The link never learns what a file is: it knows an event name, a path and a limit.
//!
//! Must never: change a frame it does not rewrite, reorder bytes, or decode more than
//! [`STREAM_LIMIT`] bytes per message or beyond the [`attachments::BUDGET`] across messages.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::attachments::{self, Attachment};

/// The event whose file contents are decoded on arrival.
pub const STREAMED_EVENT: &str = "run_command";
/// Most bytes the files of one streamed message decode to (`runtime::command::MAX_UPLOAD_BYTES`).
pub const STREAM_LIMIT: usize = 32 << 20;
/// Text frames up to this size are passed through untouched (the link's usual message limit).
pub const STREAM_OVER: u64 = 1 << 20;
/// How many payload bytes may pass before the event name must be known.
const DECIDE_WITHIN: usize = 256;

/// The tap around a stream (see the module documentation).
pub struct Tap<S> {
    inner: S,
    /// Text frames over this size are candidates for rewriting ([`STREAM_OVER`]).
    over: u64,
    /// Bytes of streamed frames consumed so far: the session counts them as signs of life while
    /// a large upload arrives (the server's pings queue behind it).
    progress: Arc<AtomicU64>,
    state: State,
    /// Bytes ready for the reader above.
    out: BytesMut,
    scratch: Box<[u8]>,
    /// The last bytes of the HTTP response head, to find its end.
    head_tail: u32,
}

enum State {
    /// The HTTP upgrade response: passed through up to its blank line.
    Handshake,
    /// Reading a frame header.
    Header(Vec<u8>),
    /// Passing `remaining` payload bytes through.
    Pass(u64),
    /// A large text frame: its first bytes, until the event name is known.
    Decide {
        header: Vec<u8>,
        prefix: Vec<u8>,
        remaining: u64,
    },
    /// Rewriting a streamed frame's payload.
    Rewrite {
        rewriter: Box<Rewriter>,
        remaining: u64,
    },
}

impl<S> Tap<S> {
    /// A tap in front of `inner`, starting with the HTTP upgrade response.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            over: STREAM_OVER,
            progress: Arc::new(AtomicU64::new(0)),
            state: State::Handshake,
            out: BytesMut::new(),
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
            head_tail: 0,
        }
    }

    /// The count of streamed bytes consumed (see the field).
    pub fn progress(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.progress)
    }

    /// Processes bytes read from the inner stream.
    fn process(&mut self, mut input: &[u8]) {
        if matches!(self.state, State::Decide { .. } | State::Rewrite { .. }) {
            self.progress
                .fetch_add(input.len() as u64, Ordering::Relaxed);
        }
        while !input.is_empty() {
            match &mut self.state {
                State::Handshake => {
                    let b = input[0];
                    input = &input[1..];
                    self.out.extend_from_slice(&[b]);
                    self.head_tail = (self.head_tail << 8) | u32::from(b);
                    if self.head_tail == u32::from_be_bytes(*b"\r\n\r\n") {
                        self.state = State::Header(Vec::with_capacity(14));
                    }
                }
                State::Header(buf) => {
                    buf.push(input[0]);
                    input = &input[1..];
                    if let Some((fin, opcode, masked, len)) = parse_header(buf) {
                        let header = std::mem::take(buf);
                        if fin && opcode == 1 && !masked && len > self.over {
                            self.state = State::Decide {
                                header,
                                prefix: Vec::with_capacity(DECIDE_WITHIN),
                                remaining: len,
                            };
                        } else {
                            self.out.extend_from_slice(&header);
                            self.state = if len == 0 {
                                State::Header(Vec::with_capacity(14))
                            } else {
                                State::Pass(len)
                            };
                        }
                    }
                }
                State::Pass(remaining) => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::Header(Vec::with_capacity(14));
                    }
                }
                State::Decide {
                    header,
                    prefix,
                    remaining,
                } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len())
                        .min(DECIDE_WITHIN - prefix.len());
                    prefix.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n as u64;
                    let left = *remaining;
                    match decide(prefix, left == 0 || prefix.len() >= DECIDE_WITHIN) {
                        None => {}
                        Some(false) => {
                            self.out.extend_from_slice(header);
                            self.out.extend_from_slice(prefix);
                            self.state = if left == 0 {
                                State::Header(Vec::with_capacity(14))
                            } else {
                                State::Pass(left)
                            };
                        }
                        Some(true) => {
                            let prefix = std::mem::take(prefix);
                            let mut rewriter = Box::new(Rewriter::new(left + prefix.len() as u64));
                            rewriter.feed(&prefix);
                            self.state = State::Rewrite {
                                rewriter,
                                remaining: left,
                            };
                            self.finish_rewrite_if_done();
                        }
                    }
                }
                State::Rewrite {
                    rewriter,
                    remaining,
                } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    rewriter.feed(&input[..n]);
                    input = &input[n..];
                    *remaining -= n as u64;
                    self.finish_rewrite_if_done();
                }
            }
        }
    }

    fn finish_rewrite_if_done(&mut self) {
        if let State::Rewrite {
            rewriter,
            remaining: 0,
        } = &mut self.state
        {
            let skeleton = rewriter.finish();
            self.out
                .extend_from_slice(&text_frame_header(skeleton.len() as u64));
            self.out.extend_from_slice(&skeleton);
            self.state = State::Header(Vec::with_capacity(14));
        }
    }
}

/// Runs `pieces` (an HTTP response head, then frames) through a tap that rewrites text frames
/// over `over` bytes, and returns what the WebSocket layer above reads: for the fuzzers.
pub(crate) fn run_pieces(pieces: &[&[u8]], over: u64) -> Vec<u8> {
    let mut tap = Tap::new(());
    tap.over = over;
    for piece in pieces {
        tap.process(piece);
    }
    tap.out.to_vec()
}

/// `(fin, opcode, masked, payload length)` once `buf` holds a whole frame header.
fn parse_header(buf: &[u8]) -> Option<(bool, u8, bool, u64)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len_bytes, short) = match buf[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let need = 2 + len_bytes + if masked { 4 } else { 0 };
    if buf.len() < need {
        return None;
    }
    let len = short.unwrap_or_else(|| {
        buf[2..2 + len_bytes]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    Some((fin, opcode, masked, len))
}

/// The header of a final, unmasked text frame of `len` bytes.
fn text_frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81];
    if let Ok(tiny) = u8::try_from(len)
        && tiny < 126
    {
        h.push(tiny);
    } else if let Ok(short) = u16::try_from(len) {
        h.push(126);
        h.extend_from_slice(&short.to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h
}

/// Whether a frame starting with `prefix` is a [`STREAMED_EVENT`] event: `Some(true)` when it is,
/// `Some(false)` when it is not (or `complete` and still unknown), `None` to read more.
fn decide(prefix: &[u8], complete: bool) -> Option<bool> {
    let Some(rest) = prefix.strip_prefix(b"42") else {
        // "" or "4": wait for more, unless there is no more.
        let undecided = !complete && (prefix.is_empty() || prefix == b"4");
        return (!undecided).then_some(false);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = &rest[digits..];
    let wanted = format!("[\"{STREAMED_EVENT}\",");
    let wanted = wanted.as_bytes();
    if rest.len() >= wanted.len() {
        return Some(rest.starts_with(wanted));
    }
    if !wanted.starts_with(rest) || complete {
        return Some(false);
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut scratch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = scratch.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(())); // EOF
                    }
                    let data = scratch.filled().to_vec();
                    this.process(&data);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One level of JSON nesting.
#[derive(Debug)]
enum Level {
    Array(usize),
    /// The key whose value is being read (raw bytes, clipped), and whether a key is expected.
    Object {
        key: Vec<u8>,
        expect_key: bool,
    },
}

/// The push tokenizer of one streamed message: copies the payload to a skeleton, decoding the
/// strings at `[1].files.<field>.content_base64` into attachments on the way.
pub struct Rewriter {
    skeleton: Vec<u8>,
    /// `None` until the first `[` (the Engine.IO/Socket.IO prefix is copied as is).
    stack: Option<Vec<Level>>,
    in_string: bool,
    escape: bool,
    string_is_key: bool,
    /// The decoder of the string being diverted, if it is one.
    decoder: Option<Decoder>,
    /// Payload bytes not fed yet (sizes the decoder's buffer).
    unfed: u64,
    /// Bytes decoded for this message so far.
    decoded: usize,
}

impl Rewriter {
    fn new(total: u64) -> Self {
        Self {
            skeleton: Vec::new(),
            stack: None,
            in_string: false,
            escape: false,
            string_is_key: false,
            decoder: None,
            unfed: total,
            decoded: 0,
        }
    }

    /// Feeds the next payload bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.unfed = self.unfed.saturating_sub(bytes.len() as u64);
        let mut i = 0;
        while i < bytes.len() {
            if let Some(decoder) = &mut self.decoder {
                // Fast path: a run of plain base64 characters.
                let run = bytes[i..]
                    .iter()
                    .take_while(|b| **b != b'"' && **b != b'\\')
                    .count();
                if run > 0 && !self.escape {
                    decoder.push(&bytes[i..i + run]);
                    i += run;
                    continue;
                }
            }
            self.byte(bytes[i]);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8) {
        let Some(stack) = &mut self.stack else {
            self.skeleton.push(b);
            if b == b'[' {
                self.stack = Some(vec![Level::Array(0)]);
            }
            return;
        };
        if self.in_string {
            if !self.escape
                && b == b'"'
                && let Some(decoder) = self.decoder.take()
            {
                self.in_string = false;
                let (attachment, len) = decoder.finish();
                self.decoded += len;
                let placeholder = attachments::put(attachment);
                self.skeleton
                    .extend_from_slice(placeholder.to_string().as_bytes());
                return;
            }
            if let Some(decoder) = &mut self.decoder {
                if self.escape {
                    self.escape = false;
                    match b {
                        b'/' => decoder.push(b"/"),
                        b'n' | b'r' | b't' => {}
                        other => {
                            decoder.fail(format!("contains the JSON escape \\{}", other as char))
                        }
                    }
                } else if b == b'\\' {
                    self.escape = true;
                } else {
                    decoder.push(&[b]);
                }
                return;
            }
            self.skeleton.push(b);
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            } else if self.string_is_key
                && let Some(Level::Object { key, .. }) = stack.last_mut()
                && key.len() < 64
            {
                key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.escape = false;
                self.string_is_key = false;
                if let Some(Level::Object { key, expect_key }) = stack.last_mut()
                    && *expect_key
                {
                    key.clear();
                    self.string_is_key = true;
                } else if is_file_content(stack) {
                    let capacity = usize::try_from(self.unfed / 4 * 3 + 3)
                        .unwrap_or(usize::MAX)
                        .min(STREAM_LIMIT.saturating_sub(self.decoded) + 3);
                    self.decoder = Some(Decoder::new(
                        capacity,
                        STREAM_LIMIT.saturating_sub(self.decoded),
                    ));
                    return; // the opening quote is not part of the skeleton
                }
                self.skeleton.push(b);
            }
            b'[' => {
                stack.push(Level::Array(0));
                self.skeleton.push(b);
            }
            b'{' => {
                stack.push(Level::Object {
                    key: Vec::new(),
                    expect_key: true,
                });
                self.skeleton.push(b);
            }
            b']' | b'}' => {
                stack.pop();
                self.skeleton.push(b);
            }
            b',' => {
                match stack.last_mut() {
                    Some(Level::Array(i)) => *i += 1,
                    Some(Level::Object { expect_key, .. }) => *expect_key = true,
                    None => {}
                }
                self.skeleton.push(b);
            }
            b':' => {
                if let Some(Level::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
                self.skeleton.push(b);
            }
            _ => self.skeleton.push(b),
        }
    }

    /// The skeleton (the message with placeholders), once the whole payload was fed.
    pub fn finish(&mut self) -> Vec<u8> {
        if let Some(decoder) = self.decoder.take() {
            // Truncated message: whatever was decoded is dropped; the skeleton will not parse.
            drop(decoder);
        }
        std::mem::take(&mut self.skeleton)
    }
}

/// `true` when the string about to start is the value at `[1].files.<field>.content_base64`.
fn is_file_content(stack: &[Level]) -> bool {
    matches!(
        stack,
        [
            Level::Array(1),
            Level::Object { key: files, expect_key: false },
            Level::Object { expect_key: false, .. },
            Level::Object { key: content, expect_key: false },
        ] if files == b"files" && content == b"content_base64"
    )
}

/// A streaming base64 decoder: standard alphabet, whitespace skipped, padding at the end only.
struct Decoder {
    out: Vec<u8>,
    /// Characters not decoded yet (fewer than a batch).
    staging: Vec<u8>,
    limit: usize,
    error: Option<String>,
    too_large: bool,
    /// Another upload held the budget when this one started.
    busy: bool,
    padded: bool,
    reservation: Option<attachments::Reservation>,
}

/// Characters decoded at once (a multiple of 4).
const BATCH: usize = 4096;

impl Decoder {
    fn new(capacity: usize, limit: usize) -> Self {
        // The budget across uploads: refuse (busy) when another upload holds it.
        attachments::purge_stale();
        let reservation = attachments::reserve(capacity.min(limit));
        let busy = attachments::resident() > attachments::BUDGET;
        let too_large = busy;
        Self {
            // Reserved once: growing by doubling would peak at twice the file.
            out: if too_large {
                Vec::new()
            } else {
                Vec::with_capacity(capacity)
            },
            staging: Vec::with_capacity(BATCH),
            limit,
            error: None,
            too_large,
            busy,
            padded: false,
            reservation: Some(reservation),
        }
    }

    fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
        self.out = Vec::new();
    }

    fn push(&mut self, chars: &[u8]) {
        if self.error.is_some() || self.too_large {
            return;
        }
        for &c in chars {
            if c.is_ascii_whitespace() {
                continue;
            }
            if self.padded && c != b'=' {
                return self.fail("has data after its padding".into());
            }
            if c == b'=' {
                self.padded = true;
            }
            self.staging.push(c);
            if self.staging.len() == BATCH {
                self.flush(false);
                if self.error.is_some() || self.too_large {
                    return;
                }
            }
        }
    }

    fn flush(&mut self, last: bool) {
        if self.staging.is_empty() {
            return;
        }
        let _ = last; // the last batch may be unpadded; the decoder tells by its length
        let decoded = match attachments::decode_base64_chars(&self.staging) {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        self.staging.clear();
        if self.out.len() + decoded.len() > self.limit {
            self.too_large = true;
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(&decoded);
    }

    /// The attachment and its decoded length.
    fn finish(mut self) -> (Attachment, usize) {
        if self.error.is_none() && !self.too_large {
            self.flush(true);
        }
        if let Some(e) = self.error.take() {
            return (Attachment::Invalid(e), 0);
        }
        if self.busy {
            return (Attachment::Busy, 0);
        }
        if self.too_large {
            return (Attachment::TooLarge, 0);
        }
        let len = self.out.len();
        let out = std::mem::take(&mut self.out);
        // Count what was decoded, not the estimate reserved up front (pages past `len` were
        // never touched).
        let reservation = attachments::reserve(len);
        drop(self.reservation.take());
        (
            Attachment::Data(attachments::counted(out, reservation)),
            len,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The upload budget is process-wide: tests that decode run one at a time.
    static BUDGET_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn budget_lock() -> std::sync::MutexGuard<'static, ()> {
        BUDGET_LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = text_frame_header(payload.len() as u64);
        f.extend_from_slice(payload);
        f
    }

    /// Runs `wire` through a tap in pieces of `step` bytes; returns what the reader above sees.
    fn tap_all(wire: &[u8], step: usize) -> Vec<u8> {
        let pieces: Vec<&[u8]> = wire.chunks(step).collect();
        run_pieces(&pieces, STREAM_OVER)
    }

    /// Resolves placeholders in a rewritten event payload, as the command does.
    fn resolve(v: &mut Value) {
        if let Some(id) = attachments::placeholder_id(v) {
            *v = match attachments::take(id) {
                Some(Attachment::Data(b)) => json!(String::from_utf8_lossy(&b)),
                other => json!(format!("{other:?}")),
            };
            return;
        }
        match v {
            Value::Array(a) => a.iter_mut().for_each(resolve),
            Value::Object(o) => o.values_mut().for_each(resolve),
            _ => {}
        }
    }

    #[test]
    fn large_upload_frames_are_rewritten_and_everything_else_passes_through() {
        let _budget = budget_lock();
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let content = "hello upload ".repeat(120_000); // > STREAM_OVER once encoded
        let b64 = data_encoding::BASE64.encode(content.as_bytes());
        let escaped = b64.replacen('/', "\\/", 3);
        let event = format!(
            r#"4217["run_command",{{"pad":"files","files":{{"f":{{"filename":"a\"b","content_base64":"{escaped}"}},"g":{{"content_base64":"A-=="}}}},"x":{{"content_base64":"QQ=="}},"correlation_id":5}}]"#
        );
        let small = br#"42["other",{"files":{"f":{"content_base64":"QQ=="}}}]"#.to_vec();
        let other_big = format!(r#"42["other",{{"s":"{}"}}]"#, "x".repeat(1 << 21));
        let mut wire = head.clone();
        wire.extend(frame(&small));
        wire.extend(frame(event.as_bytes()));
        wire.extend(frame(other_big.as_bytes()));
        wire.extend([0x89, 0x00]); // a ping frame
        for step in [1usize, 7, 4096, usize::MAX] {
            if step == 1 {
                // Byte by byte is slow on the big frames: the small parts only.
                let mut small_wire = head.clone();
                small_wire.extend(frame(&small));
                assert_eq!(tap_all(&small_wire, 1), small_wire);
                continue;
            }
            let seen = tap_all(&wire, step);
            let mut expected_start = head.clone();
            expected_start.extend(frame(&small));
            assert_eq!(&seen[..expected_start.len()], &expected_start[..]);
            let rest = &seen[expected_start.len()..];
            let (fin, opcode, masked, len) = parse_header(&rest[..10]).expect("header");
            let len = usize::try_from(len).expect("small");
            assert!(fin && opcode == 1 && !masked);
            let hlen = text_frame_header(len as u64).len();
            let payload = &rest[hlen..hlen + len];
            let text = std::str::from_utf8(payload).expect("utf-8");
            let json_text = text.strip_prefix("4217").expect("prefix kept");
            let mut args: Value = serde_json::from_str(json_text).expect("skeleton parses");
            assert!(len < 1024, "the skeleton is small: {len}");
            resolve(&mut args);
            assert_eq!(args[1]["files"]["f"]["content_base64"], json!(content));
            assert_eq!(args[1]["files"]["f"]["filename"], "a\"b");
            assert!(
                args[1]["files"]["g"]["content_base64"]
                    .as_str()
                    .unwrap()
                    .starts_with("Some(Invalid"),
                "{}",
                args[1]["files"]["g"]
            );
            // Only files.<field>.content_base64 is diverted.
            assert_eq!(args[1]["x"]["content_base64"], "QQ==");
            assert_eq!(args[1]["pad"], "files");
            assert_eq!(args[1]["correlation_id"], 5);
            let after = &rest[hlen + len..];
            let mut expected_after = frame(other_big.as_bytes());
            expected_after.extend([0x89, 0x00]);
            assert_eq!(after, &expected_after[..], "step {step}");
        }
    }

    #[test]
    fn files_over_the_limit_become_too_large_placeholders() {
        let _budget = budget_lock();
        let mut r = Rewriter::new(0);
        // Base64 of zero bytes, written out: data_encoding refuses to encode more than 8 MiB on
        // 32-bit targets (the unit tests also run on armv7).
        let b64 = "A".repeat((STREAM_LIMIT + 3).div_ceil(3) * 4);
        r.feed(br#"421["run_command",{"files":{"f":{"content_base64":""#);
        r.feed(b64.as_bytes());
        r.feed(br#""}}}]"#);
        let skeleton = r.finish();
        let mut args: Value =
            serde_json::from_slice(skeleton.strip_prefix(b"421").unwrap()).unwrap();
        resolve(&mut args);
        assert_eq!(args[1]["files"]["f"]["content_base64"], "Some(TooLarge)");
    }

    #[test]
    fn an_upload_arriving_while_another_holds_the_budget_is_not_decoded() {
        let _budget = budget_lock();
        let held = attachments::reserve(attachments::BUDGET);
        let mut r = Rewriter::new(64);
        r.feed(br#"42["run_command",{"files":{"f":{"content_base64":"UEsDBA=="}}}]"#);
        let mut args: Value = serde_json::from_slice(r.finish().strip_prefix(b"42").unwrap())
            .expect("skeleton parses");
        resolve(&mut args);
        assert_eq!(args[1]["files"]["f"]["content_base64"], "Some(Busy)");
        drop(held);
        let mut r = Rewriter::new(64);
        r.feed(br#"42["run_command",{"files":{"f":{"content_base64":"UEsDBA=="}}}]"#);
        let mut args: Value =
            serde_json::from_slice(r.finish().strip_prefix(b"42").unwrap()).unwrap();
        resolve(&mut args);
        assert_eq!(args[1]["files"]["f"]["content_base64"], "PK\u{3}\u{4}");
    }

    #[test]
    fn the_event_name_decides() {
        assert_eq!(decide(b"4", false), None);
        assert_eq!(decide(b"42", false), None);
        assert_eq!(decide(b"4212[\"run_", false), None);
        assert_eq!(decide(b"4212[\"run_command\",", false), Some(true));
        assert_eq!(decide(b"42[\"run_command\",{", false), Some(true));
        assert_eq!(decide(b"42[\"other\",", false), Some(false));
        assert_eq!(decide(b"43[", false), Some(false));
        assert_eq!(decide(b"42[\"run_", true), Some(false));
    }
}
