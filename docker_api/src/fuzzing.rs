//! The engine-stream decoders, reachable by the cargo-fuzz targets (`fuzz/`).
//!
//! Not an API: hidden from the docs and free to change. Thin wrappers over the crate's own
//! decoding paths (no copies of them), so what the fuzzers check is what the client runs.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{JsonLines, LineEvent};
use crate::error::Result;
use crate::events::Event;
use crate::images::PullProgress;
use crate::lines::LineBuffer;

/// Longest line the stream reader accepts.
pub const MAX_LINE: usize = crate::lines::MAX_LINE;

/// Feeds `chunks` through the stream line splitter, then ends the stream. Returns the lines in
/// order, and whether the splitter refused a line as too long (it stops there, as the client does).
pub fn split_lines(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut buffer = LineBuffer::default();
    let mut lines = Vec::new();
    for chunk in chunks {
        buffer.push(chunk);
        loop {
            match buffer.next_line() {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => break,
                Err(_) => return (lines, true),
            }
        }
    }
    lines.extend(buffer.finish());
    (lines, false)
}

/// One line of a pull's progress stream, as `Docker::pull_image_stream` decodes it.
pub fn decode_pull_line(line: &[u8]) -> Result<PullProgress> {
    crate::images::decode_progress(line, "fuzz/image:latest", "POST /images/create")
}

/// One line of the event stream, as `Docker::events` decodes it.
pub fn decode_event_line(line: &[u8]) -> serde_json::Result<Event> {
    serde_json::from_slice(line)
}

/// Serves `response` (raw HTTP/1.1 response bytes, e.g. a chunked stream) to hyper's client over
/// an in-memory pipe, in pieces of the given sizes, and reads the body with the client's streaming
/// line reader. Returns the lines, or the error the reader reported.
pub fn read_streamed_response(response: &[u8], piece_sizes: &[usize]) -> Result<Vec<Vec<u8>>> {
    thread_local! {
        // Fuzzing only: a runtime that cannot be built is a broken harness, not bad input.
        #[allow(clippy::expect_used)]
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
    }
    let response = response.to_vec();
    let pieces = piece_sizes.to_vec();
    RUNTIME.with(|rt| {
        rt.block_on(async move {
            let (client, mut server) = tokio::io::duplex(64 * 1024);
            let serve = tokio::spawn(async move {
                // Read the request head first, as a server would; then answer and hang up.
                let mut head = [0u8; 1024];
                let _ = server.read(&mut head).await;
                let mut rest = &response[..];
                let mut sizes = pieces.iter().copied().cycle();
                while !rest.is_empty() {
                    let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
                    if server.write_all(&rest[..n]).await.is_err() {
                        return;
                    }
                    rest = &rest[n..];
                }
                let _ = server.shutdown().await;
            });
            let result = async {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(client))
                        .await
                        .map_err(|e| transport(e.into()))?;
                tokio::spawn(connection);
                let request = http::Request::get("/events")
                    .header(http::header::HOST, "docker")
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| transport(e.into()))?;
                let resp = sender
                    .send_request(request)
                    .await
                    .map_err(|e| transport(e.into()))?;
                let mut lines = JsonLines::new(resp, "GET /events".into(), None);
                let mut out = Vec::new();
                loop {
                    match lines.next_line().await? {
                        LineEvent::Line(line) => out.push(line),
                        LineEvent::End | LineEvent::Idle => return Ok(out),
                    }
                }
            }
            .await;
            serve.abort();
            result
        })
    })
}

fn transport(source: crate::error::BoxError) -> crate::error::Error {
    crate::error::Error::Transport {
        what: "fuzz".into(),
        source,
    }
}
