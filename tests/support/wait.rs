//! Waiting in the agent's tests: the next cloud event of a name, and how long background work may
//! take (polling with a deadline is `test_support`'s).

use std::time::Duration;

use devcloud::CloudEvent;
use serde_json::Value;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::Instant;

/// Generous limit for anything an agent does in the background.
pub const SLOW: Duration = Duration::from_secs(90);

pub use test_support::{eventually, poll};

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
