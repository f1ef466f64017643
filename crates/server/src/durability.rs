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

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::error;
use warren_store::Store;

use crate::events::ConfirmTracker;

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
