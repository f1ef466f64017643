//! The writer task: the only code that writes to a connection's socket.
//!
//! It drains a bounded mpsc of outbound frames, encoding every item already
//! queued before it flushes once, so a burst of deliveries costs one syscall
//! rather than one per frame. A full mpsc makes the connection task wait,
//! which stops it reading its socket: a client that does not read its
//! deliveries is slowed down rather than buffered without limit.
//!
//! It also keeps the connection's heartbeats, because it is the part that is
//! still running when a peer stops reading:
//! - it sends a heartbeat frame every half interval;
//! - it ends the connection when the peer has sent no octet for two
//!   intervals ([`Activity::silence`]), or when a write has made no progress
//!   for two intervals (spec 4.2.7). Either way it drops the socket, the
//!   connection task sees its sender fail, and the connection's unacked
//!   messages are requeued.
//!
//! On shutdown it gives a write that is stuck at most
//! [`SHUTDOWN_WRITE_GRACE`]: the connection task may itself be blocked
//! handing it frames for a client that reads nothing, and only dropping the
//! socket frees it to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;
use tracing::{debug, warn};
use warren_codec::{CodecError, Frame, FrameCodec, Outbound};

use super::liveness::Activity;
use crate::events::ConsumerShared;

/// Outbound items queued for the socket before the connection task waits.
const QUEUE: usize = 1024;
/// Items encoded between flushes at most.
const BATCH: usize = 1024;
/// Encoded bytes buffered before `feed` writes to the socket.
const BUFFER: usize = 128 * 1024;
/// Once the broker shuts down, how long a write may stay stuck.
pub(crate) const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(1);
/// How often a stuck write checks its clocks when there are no heartbeats.
const CHECK_PERIOD: Duration = Duration::from_millis(250);

/// Heartbeat settings of an open connection.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    /// The negotiated interval; zero disables heartbeats and both timeouts.
    pub interval: Duration,
    /// When the peer was last heard from.
    pub activity: Arc<Activity>,
}

impl Heartbeat {
    /// How long silence, or a stalled write, may last.
    fn timeout(&self) -> Option<Duration> {
        (!self.interval.is_zero()).then(|| self.interval * 2)
    }

    /// How often to send a heartbeat and look at the clocks.
    fn period(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(100))
    }
}

/// What the connection hands its writer: a frame or a content, and for a
/// delivery the consumer's credit it holds, given back once it is encoded
/// (or dropped unwritten), so that credit bounds a consumer's deliveries
/// all the way to the socket ([`crate::gate::CREDIT`]).
#[derive(Debug)]
pub(crate) struct Out {
    item: Option<Outbound>,
    credit: Option<(Arc<ConsumerShared>, u32)>,
}

impl Out {
    /// A delivery holding `credit` of `consumer`'s.
    pub fn delivery(item: Outbound, consumer: Arc<ConsumerShared>, credit: u32) -> Self {
        Self {
            item: Some(item),
            credit: Some((consumer, credit)),
        }
    }

    fn take(&mut self) -> Outbound {
        self.item.take().expect("an Out is written once")
    }
}

impl From<Outbound> for Out {
    fn from(item: Outbound) -> Self {
        Self {
            item: Some(item),
            credit: None,
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        if let Some((consumer, credit)) = self.credit.take() {
            consumer.credit.release(credit);
        }
    }
}

/// Why the writer stopped early.
enum Stop {
    /// The socket failed.
    Io(CodecError),
    /// The peer has been silent, or has read nothing, for two intervals.
    Dead(&'static str),
}

/// Starts the writer; dropping the returned sender ends it after it has
/// written everything queued and shut the socket down.
pub(crate) fn spawn<W>(
    mut sink: FramedWrite<W, FrameCodec>,
    heartbeat: Option<Heartbeat>,
    mut shutdown: broadcast::Receiver<()>,
) -> (mpsc::Sender<Out>, JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    sink.set_backpressure_boundary(BUFFER);
    let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
    let task = tokio::spawn(async move {
        let period = heartbeat.as_ref().map(Heartbeat::period);
        let mut ticker = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // Set once the broker shuts down: writes must be done by then.
        let mut stop_by = None;
        let stopped = loop {
            let batch = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => Some(item),
                    None => break None,
                },
                _ = ticker.tick(), if heartbeat.is_some() => None,
                _ = shutdown.recv(), if stop_by.is_none() => {
                    stop_by = Some(Instant::now() + SHUTDOWN_WRITE_GRACE);
                    continue;
                }
            };
            if let Some(Stop::Dead(why)) = check(heartbeat.as_ref()) {
                break Some(Stop::Dead(why));
            }
            let mut watch = Watch {
                heartbeat: heartbeat.as_ref(),
                shutdown: &mut shutdown,
                stop_by: &mut stop_by,
            };
            let written = watch
                .guarded(async {
                    match batch {
                        Some(mut first) => {
                            sink.feed(first.take()).await?;
                            drop(first);
                            for _ in 0..BATCH {
                                let Ok(mut item) = rx.try_recv() else { break };
                                sink.feed(item.take()).await?;
                            }
                        }
                        None => sink.feed(Outbound::Frame(Frame::Heartbeat(0))).await?,
                    }
                    SinkExt::<Outbound>::flush(&mut sink).await
                })
                .await;
            if let Err(stop) = written {
                break Some(stop);
            }
        };
        match stopped {
            // Everything queued is written: close the socket cleanly.
            None => {
                let _ = SinkExt::<Outbound>::close(&mut sink).await;
            }
            Some(Stop::Io(e)) => debug!(error = %e, "write failed"),
            // Dropping the socket unflushed: the peer is gone or not reading.
            Some(Stop::Dead(why)) => warn!(
                timeout_secs = heartbeat.map_or(0, |h| h.interval.as_secs()),
                "{why}, closing"
            ),
        }
    });
    (tx, task)
}

/// Whether the peer has been silent too long.
fn check(heartbeat: Option<&Heartbeat>) -> Option<Stop> {
    let heartbeat = heartbeat?;
    let timeout = heartbeat.timeout()?;
    (heartbeat.activity.silence() > timeout).then_some(Stop::Dead("missed heartbeats from client"))
}

/// What a write in progress keeps an eye on.
struct Watch<'a> {
    heartbeat: Option<&'a Heartbeat>,
    shutdown: &'a mut broadcast::Receiver<()>,
    stop_by: &'a mut Option<Instant>,
}

impl Watch<'_> {
    /// Runs a write, giving up if the socket accepts no byte for two
    /// intervals, if the peer falls silent meanwhile, or if the broker is
    /// shutting down and the write is still stuck after the grace. A slow
    /// reader that keeps taking bytes is served, however long a large
    /// message takes.
    async fn guarded(&mut self, write: impl Future<Output = Result<(), CodecError>>) -> Result<(), Stop> {
        tokio::pin!(write);
        let started = Instant::now();
        let period = self
            .heartbeat
            .map_or(CHECK_PERIOD, |h| h.period().min(CHECK_PERIOD));
        loop {
            tokio::select! {
                done = &mut write => return done.map_err(Stop::Io),
                _ = self.shutdown.recv(), if self.stop_by.is_none() => {
                    *self.stop_by = Some(Instant::now() + SHUTDOWN_WRITE_GRACE);
                }
                _ = tokio::time::sleep(period) => {
                    if self.stop_by.is_some_and(|t| Instant::now() >= t) {
                        return Err(Stop::Dead("shutting down, and the client reads nothing"));
                    }
                    let Some(heartbeat) = self.heartbeat else { continue };
                    let Some(timeout) = heartbeat.timeout() else { continue };
                    if heartbeat.activity.write_stall(started) > timeout {
                        return Err(Stop::Dead("client has read nothing for two heartbeat intervals"));
                    }
                    if let Some(stop) = check(Some(heartbeat)) {
                        return Err(stop);
                    }
                }
            }
        }
    }
}
