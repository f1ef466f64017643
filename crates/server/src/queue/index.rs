//! What a durable queue tells the store, and reads back from it: first
//! deliveries and settlements, batched per step; paged-out bodies, read a
//! batch ahead of delivery by the store's thread and sent to the inbox.

use std::sync::Arc;

use tracing::error;

use super::{Entry, Queue, HEAD, READ_AHEAD};
use crate::events::Loaded;

impl Queue {
    /// Tells the store this step's first deliveries and settlements, in
    /// that order (a message may be both).
    pub(super) fn flush_store(&mut self) {
        if let Some(disk) = &self.disk {
            disk.store
                .delivered(disk.queue, std::mem::take(&mut self.delivered));
            disk.store.settle(disk.queue, std::mem::take(&mut self.settled));
        }
    }

    /// Has the store read back the paged-out messages near the head of the
    /// queue, one batch at a time.
    pub(super) fn load_ahead(&mut self) {
        if self.disk.is_none() || self.loading {
            return;
        }
        // Within the head too, so that what is read back is never paged out
        // again ([`Queue::page_out_tail`]) before it is delivered.
        let mut ahead = 0;
        let wanted: Vec<(u8, u64, u64)> = self
            .ready
            .iter()
            .map(|(_, e)| e)
            .take(READ_AHEAD)
            .take_while(|e| {
                ahead += e.weight as usize;
                ahead <= HEAD || ahead == e.weight as usize
            })
            .filter(|e| e.message.is_none())
            .filter_map(|e| Some((e.priority, e.id, e.stored?)))
            .collect();
        self.read_back(wanted);
    }

    /// Has the store read these (lane, position, store id) back, unless a
    /// read is already in flight (its answer wakes the queue to ask again).
    pub(super) fn read_back(&mut self, wanted: Vec<(u8, u64, u64)>) {
        let Some(disk) = &self.disk else {
            return;
        };
        if wanted.is_empty() || self.loading {
            return;
        }
        self.loading = true;
        let loader = self.loader.clone();
        let ids = wanted.iter().map(|&(_, _, id)| id).collect();
        disk.store.read(
            ids,
            Box::new(move |read| {
                let batch = wanted
                    .into_iter()
                    .zip(read)
                    .map(|((lane, position, id), message)| (lane, position, id, message))
                    .collect();
                // A queue gone meanwhile no longer needs them.
                let _ = loader.send(batch);
            }),
        );
    }

    /// Messages read back: they rejoin their entries, if still ready. One
    /// that cannot be read is lost, and said so.
    pub(super) fn loaded(&mut self, batch: Loaded) {
        self.loading = false;
        for (lane, position, id, read) in batch {
            let Some(at) = self.ready.find(lane, position) else {
                continue;
            };
            if self.ready.get(at).stored != Some(id) || self.ready.get(at).message.is_some() {
                continue;
            }
            match read {
                Ok(message) => self.ready.set_message(at, Arc::new(message)),
                // The broker is stopping: it stays stored for the next start.
                Err(warren_store::StoreError::Closed) => {}
                Err(e) => {
                    error!(queue = %self.name, error = %e, "a stored message cannot be read back: it is lost");
                    if let Some(entry) = self.ready.remove(at) {
                        self.settle_entry(&entry);
                    }
                }
            }
        }
        while !self.parked_gets.is_empty() && !self.head_on_disk() {
            let (no_ack, reply) = self.parked_gets.pop_front().expect("not empty");
            self.answer_get(no_ack, reply);
        }
    }

    pub(super) fn head_on_disk(&self) -> bool {
        self.ready.front().is_some_and(|e| e.message.is_none())
    }

    /// A settled (or purged) message: the store is told at the end of the step.
    pub(super) fn settle_entry(&mut self, entry: &Entry) {
        if let (Some(_), Some(stored)) = (&self.disk, entry.stored) {
            self.settled.push(stored);
        }
    }
}
