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
//! A tx.commit waits the same way, once for all the transaction's publishes,
//! before commit-ok.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::error;
use warren_store::Store;

use crate::connection::ConnEvent;

/// A durability wait shared by the durable queues a publish (or a whole
/// transaction) went to: publisher confirms, and tx.commit-ok.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// Writes that have yet to be reported durable.
    remaining: AtomicUsize,
    /// Whether any write or sync failed: then nothing is confirmed.
    failed: AtomicBool,
    /// Who is told when the last write is durable.
    notify: Notify,
}

#[derive(Debug)]
enum Notify {
    /// A publisher confirm: the connection acks (channel, epoch, seq).
    Confirm {
        channel: u16,
        epoch: u64,
        seq: u64,
        inbox: mpsc::UnboundedSender<ConnEvent>,
    },
    /// A tx.commit waiting in its connection's task.
    Commit(Mutex<Option<oneshot::Sender<bool>>>),
}

impl ConfirmTracker {
    /// A publisher confirm waiting for `queues` queues' writes.
    pub fn new(
        queues: usize,
        (channel, epoch, seq): (u16, u64, u64),
        inbox: mpsc::UnboundedSender<ConnEvent>,
    ) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(queues),
            failed: AtomicBool::new(false),
            notify: Notify::Confirm {
                channel,
                epoch,
                seq,
                inbox,
            },
        })
    }

    /// A tx.commit's wait: it starts with one count, the commit's own, which
    /// [`ConfirmTracker::done`] releases once every publish has been handed
    /// over (each adding its durable writes with [`ConfirmTracker::add`]).
    pub fn commit(done: oneshot::Sender<bool>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            notify: Notify::Commit(Mutex::new(Some(done))),
        })
    }

    /// Waits for `writes` more writes.
    pub fn add(&self, writes: usize) {
        self.remaining.fetch_add(writes, Ordering::SeqCst);
    }

    /// One write is durable (`ok`), or failed. The last one tells.
    pub fn done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let ok = !self.failed.load(Ordering::SeqCst);
        match &self.notify {
            Notify::Confirm {
                channel,
                epoch,
                seq,
                inbox,
            } => {
                let _ = inbox.send(ConnEvent::Confirmed {
                    channel: *channel,
                    epoch: *epoch,
                    seq: *seq,
                    ok,
                });
            }
            Notify::Commit(done) => {
                if let Some(done) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = done.send(ok);
                }
            }
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
