//! Commands to netmon (upstream-head §4.2): one request line on the listener's connection,
//! answered by the next response line (a line without `type`), while events keep flowing on the
//! same connection. [`NetmonCommands::send`] is the whole API: it answers
//! `{"success": false, "error": "Not connected to network monitor"}` without I/O when there is no
//! connection, and `"Timeout waiting for netmon response"` after [`COMMAND_TIMEOUT`], as the
//! original.
//!
//! Unlike the original (Defect N2), the answer of a command that timed out is never taken for the
//! next one's: every request carries an `id` (netmon echoes it; the Python netmon ignores it and
//! answers in order), and the outstanding requests are matched in order, an answer for a caller
//! that gave up being dropped. Never does: interpret a response (callers do).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netmon_proto::{Command, Request, Response, request_line};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

/// How long a command may wait for its answer (the original's `COMMAND_RESPONSE_TIMEOUT`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Commands waiting to be written.
const QUEUE: usize = 16;

/// A command on its way, with where its answer goes.
#[derive(Debug)]
pub(super) struct Queued {
    command: Command,
    reply: oneshot::Sender<Response>,
}

/// Requests written and not answered yet, oldest first.
pub(super) type Outstanding = Arc<Mutex<VecDeque<(u64, oneshot::Sender<Response>)>>>;

/// The sending side, shared by every user (cheap to clone).
#[derive(Clone)]
pub struct NetmonCommands {
    tx: mpsc::Sender<Queued>,
    /// Taken by the connection in use (one at a time).
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
}

impl std::fmt::Debug for NetmonCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetmonCommands").finish_non_exhaustive()
    }
}

impl Default for NetmonCommands {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        NetmonCommands {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl NetmonCommands {
    /// Sends `command` when `connected` and waits for its answer (see the module docs).
    pub(super) async fn send(&self, command: Command, connected: bool) -> Response {
        if !connected {
            return Response::error("Not connected to network monitor");
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued { command, reply };
        let work = async {
            if self.tx.send(queued).await.is_err() {
                return Response::error("Not connected to network monitor");
            }
            answer.await.unwrap_or_else(|_| {
                Response::error("The connection to the network monitor closed before it answered")
            })
        };
        tokio::time::timeout(COMMAND_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Response::error("Timeout waiting for netmon response"))
    }

    /// Writes queued commands to `write` for as long as the connection lasts, recording each in
    /// `outstanding` before it is written (its answer cannot come earlier). Ends on a write error.
    pub(super) async fn pump(&self, mut write: OwnedWriteHalf, outstanding: Outstanding) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut rx = self.rx.lock().await;
        while let Some(Queued { command, reply }) = rx.recv().await {
            // The caller gave up while this waited: do not run it late.
            if reply.is_closed() {
                continue;
            }
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let line = request_line(&Request {
                command,
                id: Some(id),
            });
            lock(&outstanding).push_back((id, reply));
            if let Err(e) = write.write_all(line.as_bytes()).await {
                tracing::debug!("cannot write a command to netmon: {e}");
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands a response line to the request it answers: the one with its `id`, else (a netmon that
/// echoes none) the oldest. Requests older than an echoed id were answered out of order or lost:
/// their callers get an error. A response nobody waits for is logged and dropped.
pub(super) fn deliver(outstanding: &Outstanding, response: Response) {
    let mut pending = lock(outstanding);
    let target = match response.id {
        Some(id) => loop {
            match pending.pop_front() {
                Some((i, reply)) if i == id => break Some(reply),
                Some((i, reply)) if i < id => {
                    let _ = reply.send(Response::error(
                        "netmon answered a later command first; this one's answer was lost",
                    ));
                }
                Some(other) => {
                    pending.push_front(other);
                    break None;
                }
                None => break None,
            }
        },
        None => pending.pop_front().map(|(_, reply)| reply),
    };
    match target {
        Some(reply) => {
            if reply.send(response).is_err() {
                tracing::debug!("netmon answered a command whose caller gave up");
            }
        }
        None => tracing::debug!(
            success = response.success,
            "skipping a netmon response no command waits for"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(ids: &[u64]) -> (Outstanding, Vec<oneshot::Receiver<Response>>) {
        let out: Outstanding = Arc::default();
        let mut rxs = Vec::new();
        for id in ids {
            let (tx, rx) = oneshot::channel();
            lock(&out).push_back((*id, tx));
            rxs.push(rx);
        }
        (out, rxs)
    }

    #[test]
    fn answers_go_to_their_request_by_id_or_else_in_order() {
        let (out, mut rxs) = waiting(&[1, 2, 3]);
        // A caller that gave up (timed out): its late answer is dropped, not given to the next.
        drop(rxs.remove(0));
        deliver(
            &out,
            Response {
                id: Some(1),
                ..Response::error("late")
            },
        );
        deliver(
            &out,
            Response {
                id: Some(2),
                ..Response::ok()
            },
        );
        assert!(rxs[0].try_recv().unwrap().success);
        // The Python netmon echoes nothing: the oldest waiting request gets it.
        deliver(&out, Response::error("x"));
        assert_eq!(rxs[1].try_recv().unwrap().error.as_deref(), Some("x"));
        // Nobody waiting: dropped.
        deliver(&out, Response::ok());
        assert!(lock(&out).is_empty());
    }

    #[tokio::test]
    async fn without_a_connection_the_answer_is_the_originals_text_at_once() {
        let c = NetmonCommands::default();
        let r = c.send(Command::GetStatus, false).await;
        assert_eq!(r.error.as_deref(), Some("Not connected to network monitor"));
    }
}
