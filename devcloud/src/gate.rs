//! A switch that makes every accepted TCP stream go silent without closing it.
//!
//! Tests use it to play "a server that stops answering": while frozen, reads and writes on every
//! gated stream return `Pending`, so no ping, pong, ack or TLS record moves and the TCP connection
//! stays open, even when the layers above give up and drop the stream (such streams are kept until
//! thaw). Thawing wakes every parked task and closes the kept streams. This module only parks I/O
//! and holds streams; it never closes a stream that is not frozen.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared switch.
#[derive(Default)]
pub(crate) struct Gate {
    frozen: AtomicBool,
    parked: Mutex<Vec<Waker>>,
    /// Streams dropped by their owners while frozen: held so the peer sees silence, not a close.
    kept: Mutex<Vec<Box<dyn Send>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("frozen", &self.is_frozen())
            .field("kept", &lock(&self.kept).len())
            .finish()
    }
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
        // Dropping them now closes the connections the upper layers already gave up on.
        let kept = std::mem::take(&mut *lock(&self.kept));
        drop(kept);
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
pub(crate) struct Gated<S: Send + 'static> {
    /// Always `Some` until drop.
    inner: Option<S>,
    gate: Arc<Gate>,
}

impl<S: Send + 'static> Gated<S> {
    pub(crate) fn new(inner: S, gate: Arc<Gate>) -> Self {
        Self {
            inner: Some(inner),
            gate,
        }
    }

    fn inner(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gated stream used after drop"))
    }
}

impl<S: Send + 'static> Drop for Gated<S> {
    fn drop(&mut self) {
        if self.gate.is_frozen()
            && let Some(inner) = self.inner.take()
        {
            lock(&self.gate.kept).push(Box::new(inner));
        }
    }
}

impl<S: AsyncRead + Unpin + Send + 'static> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(self.inner()?).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin + Send + 'static> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(self.inner()?).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(self.inner()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.gate.poll_open(cx));
        Pin::new(self.inner()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn frozen_stream_stays_silent_and_open_even_when_dropped_until_thaw() {
        let gate = Arc::new(Gate::default());
        let (near, mut far) = tokio::io::duplex(64);
        let mut gated = Gated::new(near, gate.clone());

        gated.write_all(b"a").await.expect("open gate writes");
        let mut b = [0u8; 1];
        far.read_exact(&mut b).await.expect("far side reads");

        gate.freeze();
        far.write_all(b"b")
            .await
            .expect("far side writes into the buffer");
        let read = tokio::time::timeout(Duration::from_millis(100), gated.read(&mut b)).await;
        assert!(read.is_err(), "a frozen stream must not deliver data");

        drop(gated);
        let eof = tokio::time::timeout(Duration::from_millis(100), far.read(&mut b)).await;
        assert!(eof.is_err(), "a stream dropped while frozen must stay open");

        gate.thaw();
        let n = tokio::time::timeout(Duration::from_secs(1), far.read(&mut b))
            .await
            .expect("thaw closes kept streams")
            .expect("read");
        assert_eq!(n, 0, "EOF after thaw");
    }

    #[tokio::test]
    async fn thaw_wakes_a_parked_reader() {
        let gate = Arc::new(Gate::default());
        let (near, mut far) = tokio::io::duplex(64);
        let mut gated = Gated::new(near, gate.clone());
        gate.freeze();
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 1];
            gated.read_exact(&mut b).await.map(|_| b[0])
        });
        far.write_all(b"z").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished());
        gate.thaw();
        let got = tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("reader woken")
            .expect("join")
            .expect("read");
        assert_eq!(got, b'z');
    }
}
