//! The writer task: the only code that writes to a connection's socket.
//!
//! It drains a bounded mpsc of outbound frames, encoding every item already
//! queued before it flushes once, so a burst of deliveries costs one syscall
//! rather than one per frame. A full mpsc makes the connection task wait,
//! which stops it reading its socket: a client that does not read its
//! deliveries is slowed down rather than buffered without limit.

use futures::SinkExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedWrite;
use tracing::debug;
use warren_codec::{FrameCodec, Outbound};

/// Outbound items queued for the socket before the connection task waits.
const QUEUE: usize = 1024;
/// Items encoded between flushes at most.
const BATCH: usize = 1024;
/// Encoded bytes buffered before `feed` writes to the socket.
const BUFFER: usize = 128 * 1024;

/// Starts the writer; dropping the returned sender ends it after it has
/// written everything queued and shut the socket down.
pub(crate) fn spawn(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
) -> (mpsc::Sender<Outbound>, JoinHandle<()>) {
    sink.set_backpressure_boundary(BUFFER);
    let (tx, mut rx) = mpsc::channel::<Outbound>(QUEUE);
    let task = tokio::spawn(async move {
        'outer: while let Some(item) = rx.recv().await {
            if let Err(e) = sink.feed(item).await {
                debug!(error = %e, "write failed");
                break;
            }
            for _ in 0..BATCH {
                let Ok(item) = rx.try_recv() else { break };
                if let Err(e) = sink.feed(item).await {
                    debug!(error = %e, "write failed");
                    break 'outer;
                }
            }
            if let Err(e) = SinkExt::<Outbound>::flush(&mut sink).await {
                debug!(error = %e, "flush failed");
                break;
            }
        }
        let _ = SinkExt::<Outbound>::close(&mut sink).await;
    });
    (tx, task)
}
