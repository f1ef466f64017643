//! What makes a publisher confirm mean "on disk": the group commit.
//!
//! A persistent message routed to durable queues is written to the store by
//! the publishing connection (the body, once) and by each queue (its index
//! entry). Each of those queues then hands the message's [`ConfirmTracker`]
//! to the [`Syncer`]. The syncer runs one [`Store::sync`] (flush + fdatasync)
//! for every tracker that has arrived by the time it starts, and only then
//! counts the trackers down; the last queue to count down sends the
//! connection the confirm. Writes always happen before the request, and the
//! request before the sync starts, so a sync covers every write it confirms.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::error;
use warren_store::Store;

use crate::connection::ConnEvent;

/// The pending confirm of one publish, shared by the durable queues it went to.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// Queues that have yet to report their write durable.
    remaining: AtomicUsize,
    /// Whether any write or sync failed: then the publish is never confirmed.
    failed: AtomicBool,
    /// The publishing channel.
    pub channel: u16,
    /// That channel's confirm epoch (see `Confirms::epoch`).
    pub epoch: u64,
    /// The publish's sequence number on that channel.
    pub seq: u64,
    inbox: mpsc::UnboundedSender<ConnEvent>,
}

impl ConfirmTracker {
    /// A tracker waiting for `queues` queues.
    pub fn new(
        queues: usize,
        (channel, epoch, seq): (u16, u64, u64),
        inbox: mpsc::UnboundedSender<ConnEvent>,
    ) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(queues),
            failed: AtomicBool::new(false),
            channel,
            epoch,
            seq,
            inbox,
        })
    }

    /// One queue's write is durable (`ok`), or failed. The last one tells
    /// the connection.
    pub fn done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = self.inbox.send(ConnEvent::Confirmed {
                channel: self.channel,
                epoch: self.epoch,
                seq: self.seq,
                ok: !self.failed.load(Ordering::SeqCst),
            });
        }
    }
}

/// Handle to the group-commit task.
#[derive(Clone, Debug)]
pub struct Syncer {
    tx: mpsc::UnboundedSender<Vec<Arc<ConfirmTracker>>>,
}

impl Syncer {
    /// Starts the group-commit task for `store`.
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Arc<ConfirmTracker>>>();
        tokio::spawn(async move {
            while let Some(mut batch) = rx.recv().await {
                // Everything that arrived while the previous sync ran shares this one.
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                let store = store.clone();
                let ok = match tokio::task::spawn_blocking(move || store.sync()).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        error!(error = %e, "store sync failed: the messages it covered are not confirmed");
                        false
                    }
                    Err(e) => {
                        error!(error = %e, "store sync task failed");
                        false
                    }
                };
                for tracker in batch {
                    tracker.done(ok);
                }
            }
        });
        Self { tx }
    }

    /// Asks for the writes behind `trackers` to be made durable.
    pub fn request(&self, trackers: Vec<Arc<ConfirmTracker>>) {
        if !trackers.is_empty() {
            // The task lives as long as any handle; a send cannot fail while
            // this one exists.
            let _ = self.tx.send(trackers);
        }
    }
}
