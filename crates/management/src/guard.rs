//! What keeps the HTTP servers from costing the broker its file
//! descriptors or memory: each listener serves at most a fixed number of
//! connections at once (the next wait in the kernel's backlog), and a
//! connection that neither sends nor takes anything for [`IDLE`] is closed,
//! so that clients that open connections and go silent (or never finish a
//! request) give their places back. The AMQP listener has its own limit
//! (`--max-connections`); these are separate, so a flood of HTTP
//! connections cannot starve AMQP clients of descriptors, nor the other way
//! round.
//!
//! axum's `serve` sets no read timeout of its own (hyper's header timeout
//! needs a timer it does not give), so the timeout is on the socket, with
//! `tokio-io-timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

/// How long a connection may stay silent, or leave what it is sent
/// unread, before it is closed (a browser's keep-alive connection
/// reconnects): RabbitMQ's `management.tcp.idle_timeout`, 120 s. hyper
/// keeps a read open while it handles a request, so a request the broker
/// takes longer than this to answer is cut too.
pub const IDLE: Duration = Duration::from_secs(120);

/// Connections the management API serves at once: a few browsers (about
/// six each), `warren ctl`, monitoring and scripts.
pub const MANAGEMENT_CONNECTIONS: usize = 128;

/// Connections the Prometheus endpoint serves at once: its scrapers.
pub const PROMETHEUS_CONNECTIONS: usize = 16;

/// A listener that serves at most so many connections at once.
pub struct Guarded {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Guarded {
    /// `listener`, serving at most `max` connections at once, each closed
    /// once silent for `idle`.
    pub fn new(listener: TcpListener, max: usize, idle: Duration) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            idle,
        }
    }
}

/// An accepted connection: its socket, with read and write timeouts, and
/// its place, given back when it closes.
pub struct GuardedIo {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
}

impl Listener for Guarded {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedIo, SocketAddr) {
        // The semaphore is never closed.
        let slot = loop {
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        // TcpListener's accept retries (and logs) failed accepts itself.
        let (stream, peer) = Listener::accept(&mut self.listener).await;
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(self.idle));
        io.set_write_timeout(Some(self.idle));
        (
            GuardedIo {
                io: Box::pin(io),
                _slot: slot,
            },
            peer,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The peer's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Guarded>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Guarded>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One place, taken by a client that says nothing: the next client is
    /// served once the silent one is closed for its silence.
    #[tokio::test]
    async fn a_silent_client_gives_its_place_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let guarded = Guarded::new(listener, 1, Duration::from_millis(200));
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(async move { axum::serve(guarded, app).await });
        let within = |f| tokio::time::timeout(Duration::from_secs(10), f);
        within(async {
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            // The silent one was closed to make room.
            let mut rest = Vec::new();
            assert_eq!(silent.read_to_end(&mut rest).await.unwrap_or(0), 0);
        })
        .await
        .expect("served within the timeout");
    }
}
