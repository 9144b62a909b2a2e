//! Waiting in async tests: polling a condition with a deadline, and the next cloud event of a name.

use std::time::Duration;

use devcloud::CloudEvent;
use serde_json::Value;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::Instant;

/// Generous limit for anything an agent does in the background.
pub const SLOW: Duration = Duration::from_secs(90);

/// Polls `f` every 100 ms until it returns `Some`, up to `timeout`; `None` on timeout.
pub async fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Like [`poll`], panicking with `what` on timeout.
pub async fn eventually<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match poll(timeout, f).await {
        Some(v) => v,
        None => panic!("timed out waiting for {what}"),
    }
}

/// Waits (up to [`SLOW`]) for an emitted event named `name` on `rx` and returns its arguments.
pub async fn next_event(rx: &mut Receiver<CloudEvent>, name: &str) -> Vec<Value> {
    let deadline = Instant::now() + SLOW;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(CloudEvent::Event(e))) if e.name == name => return e.args,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended waiting for {name}: {e}"),
            Err(_) => panic!("no {name} event"),
        }
    }
}
