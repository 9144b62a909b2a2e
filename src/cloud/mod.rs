//! The cloud link: Engine.IO v4 / Socket.IO v5 over one mutual-TLS WebSocket, reconnecting forever.
//!
//! This module owns the connection and nothing else: it knows packets, pings, acks and backoff, not
//! topic names. Inbound events go to a [`Handler`] (the dispatch table in `topics`), each in its own
//! task; what the handler returns is sent back as the ack when the server asked for one. The
//! handler's [`Handler::on_connect`] future runs once per established connection (the heartbeat)
//! and is dropped when that connection ends, so exactly one such loop exists per connection.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

/// A boxed, sendable future, as the [`Handler`] methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the link calls for inbound traffic. Implemented by `topics::App`.
pub trait Handler: Send + Sync + 'static {
    /// One inbound EVENT `name` with its arguments (everything after the name in the packet's
    /// array). Runs in its own task. The returned values are the ACK's argument list, sent only when
    /// the server asked for an ack (an empty list is a valid ack).
    fn on_event(&self, name: String, args: Vec<Value>, link: Link) -> BoxFuture<Vec<Value>>;

    /// Called once the namespace `/` is connected. The future lives as long as that connection and
    /// is dropped (cancelled) when it ends.
    fn on_connect(&self, link: Link) -> BoxFuture<()>;
}

/// A cheap, cloneable handle for emitting events on the current connection.
#[derive(Clone, Debug)]
pub struct Link {
    tx: tokio::sync::mpsc::Sender<Outbound>,
}

/// The connection the [`Link`] belonged to is gone.
#[derive(Debug, thiserror::Error)]
#[error("the cloud connection is closed")]
pub struct LinkClosed;

/// A packet queued for the writer task of a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// `42["event", payload]`
    Event { name: String, payload: Value },
}

impl Link {
    /// Emits `event` with one argument. Fails only when the connection is gone.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<(), LinkClosed> {
        self.tx
            .send(Outbound::Event { name: event.to_owned(), payload })
            .await
            .map_err(|_| LinkClosed)
    }

    /// A link whose packets land in the returned receiver: for unit tests of handlers.
    pub fn for_test() -> (Self, tokio::sync::mpsc::Receiver<OutboundForTest>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Outbound>(64);
        let (ttx, trx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Outbound::Event { name, payload }) = rx.recv().await {
                if ttx.send(OutboundForTest { name, payload }).await.is_err() {
                    break;
                }
            }
        });
        (Self { tx }, trx)
    }
}

/// An emitted event as seen by a test link.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundForTest {
    pub name: String,
    pub payload: Value,
}
