//! Whether the peer is alive, measured in bytes rather than frames.
//!
//! spec (4.2.7): "If a peer detects no incoming traffic (i.e. received octets)
//! for two heartbeat intervals or longer, it should close the connection." Any
//! octet counts, so a client uploading one large frame slowly, or a frame a
//! byte at a time, is alive. [`Counted`] wraps the socket's read half and
//! stamps [`Activity`] whenever bytes arrive.
//!
//! The writer task is the one that acts on silence ([`super::writer`]),
//! because it is the part that keeps running when the connection task is
//! stuck waiting to hand it frames for a peer that stopped reading. Silence
//! is only counted while the connection task is listening: while it is busy
//! (handling a batch, or waiting on a full writer or queue) it reads nothing,
//! so arriving bytes could not be seen, and [`Activity::busy`] pauses the
//! clock, as RabbitMQ pauses its heartbeat monitor while it does not read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When the peer was last heard from, shared by the connection's reader and
/// writer.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The clock's origin; the atomics hold milliseconds since it.
    start: Instant,
    /// Last time bytes arrived, shifted forward by the time spent busy.
    last_heard: AtomicU64,
    /// The connection task is not reading (see [`Activity::busy`]).
    busy: AtomicBool,
    /// When the current busy period began.
    busy_since: AtomicU64,
    /// Last time the socket accepted bytes from us.
    last_written: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_heard: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
            last_written: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Bytes arrived.
    fn heard(&self) {
        self.last_heard.store(self.now(), Ordering::Relaxed);
    }

    /// How long since the socket last accepted bytes, or since `since`
    /// (the start of the write being waited on), whichever is later.
    pub(crate) fn write_stall(&self, since: Instant) -> Duration {
        let written = self.start + Duration::from_millis(self.last_written.load(Ordering::Relaxed));
        since.max(written).elapsed()
    }

    /// The connection task stops reading (true) or starts again (false).
    /// The time in between does not count as silence.
    pub(crate) fn busy(&self, busy: bool) {
        let now = self.now();
        if busy {
            self.busy_since.store(now, Ordering::Relaxed);
            self.busy.store(true, Ordering::Release);
            return;
        }
        let since = self.busy_since.load(Ordering::Relaxed);
        let last = self.last_heard.load(Ordering::Relaxed);
        // Move the last-heard mark forward by the busy time after it.
        let shifted = last + now.saturating_sub(since.max(last));
        self.last_heard.store(shifted.min(now), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
    }

    /// How long the peer has been silent while the connection listened;
    /// zero while the connection task is busy.
    pub(crate) fn silence(&self) -> Duration {
        if self.busy.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let last = self.last_heard.load(Ordering::Relaxed);
        Duration::from_millis(self.now().saturating_sub(last))
    }
}

/// A socket half that stamps [`Activity`] whenever bytes go through it.
pub(crate) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            let now = this.activity.now();
            this.activity.last_written.store(now, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.heard();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn busy_time_is_not_silence() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(activity.silence(), Duration::from_secs(3));
        activity.busy(true);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(activity.silence(), Duration::ZERO);
        activity.busy(false);
        assert_eq!(activity.silence(), Duration::from_secs(3));
        activity.heard();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.silence(), Duration::from_secs(1));
    }
}
