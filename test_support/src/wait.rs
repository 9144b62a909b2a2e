//! Waiting in async tests: polling a condition with a deadline.

use std::time::Duration;

use tokio::time::Instant;

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
