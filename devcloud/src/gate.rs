//! A switch that makes every accepted TCP stream go silent without closing it.
//!
//! Tests use it to play "a server that stops answering": while frozen, reads and writes on every
//! gated stream return `Pending`, so no ping, pong, ack or TLS record moves and the TCP connection
//! stays open. Thawing wakes every parked task. This module only parks I/O; it never closes a stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared switch.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    frozen: AtomicBool,
    parked: Mutex<Vec<Waker>>,
}

impl Gate {
    pub(crate) fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub(crate) fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        let parked = std::mem::take(&mut *lock(&self.parked));
        for w in parked {
            w.wake();
        }
    }

    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Ready when open; otherwise parks the task until [`Gate::thaw`].
    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_frozen() {
            return Poll::Ready(());
        }
        let mut parked = lock(&self.parked);
        // Re-check under the lock: thaw() drains under the same lock, so no wake-up is lost.
        if !self.is_frozen() {
            return Poll::Ready(());
        }
        if !parked.iter().any(|w| w.will_wake(cx.waker())) {
            parked.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned waker list is still a valid list of wakers.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stream whose I/O stops while its [`Gate`] is frozen.
pub(crate) struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Gated<S> {
    pub(crate) fn new(inner: S, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
