//! The ready messages, in publish order (requeued ones back at their
//! place), and the unacked ones: taking, requeueing, returning.

use std::sync::Arc;

use warren_codec::Message;

use super::{Entry, Queue, Taken, IN_MEMORY};

impl Queue {
    /// Puts unacked messages back where their ids place them among the ready
    /// ones, so a requeued message is redelivered before later ones.
    pub(super) fn requeue(&mut self, mut ids: Vec<u64>, redelivered: bool) {
        ids.sort_unstable();
        for id in ids {
            let Some(mut entry) = self.unacked.remove(&id) else {
                continue;
            };
            entry.redelivered |= redelivered;
            self.put_back(entry);
        }
    }

    /// Inserts an entry among the ready ones at the place its position (id)
    /// gives it, so that a message back from a consumer goes out before later
    /// ones, as in RabbitMQ.
    pub(super) fn put_back(&mut self, entry: Entry) {
        let at = self
            .ready
            .binary_search_by_key(&entry.id, |e| e.id)
            .unwrap_or_else(|at| at);
        self.ready.insert(at, entry);
    }

    pub(super) fn publish(&mut self, message: Arc<Message>, stored: Option<u64>) {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        // Beyond the in-memory head, a body is read back from the store when
        // its turn comes near: a stored message's from its record; any other
        // from the transient log, where it is paged now if memory is under
        // pressure (paging is slow while publishers outrun consumers: every
        // read waits behind the store's rounds of page-outs).
        let mut stored = stored;
        let in_memory = match &self.disk {
            _ if self.ready.len() < IN_MEMORY => true,
            None => true,
            Some(_) if stored.is_some() => false,
            Some(disk) if disk.memory_pressure.load(std::sync::atomic::Ordering::Relaxed) => {
                stored = Some(disk.store.page_out(message.clone(), disk.queue));
                false
            }
            Some(_) => true,
        };
        self.ready.push_back(Entry {
            id,
            message: in_memory.then_some(message),
            stored,
            redelivered: false,
        });
    }

    /// Takes the next ready message for a delivery or a get, unless it is
    /// still on disk (then it is asked for, and None returned): records its
    /// first delivery in the store (so that it comes back redelivered after
    /// a restart), and moves it to `unacked`, or settles it at once for
    /// no-ack.
    pub(super) fn take_next(&mut self, no_ack: bool) -> Option<Taken> {
        let Some(message) = self.ready.front()?.message.clone() else {
            self.load_ahead();
            return None;
        };
        let mut entry = self.ready.pop_front().expect("a front entry");
        let taken = Taken {
            id: entry.id,
            message,
            redelivered: entry.redelivered,
        };
        if no_ack {
            self.settle_entry(&entry);
            return Some(taken);
        }
        if let (Some(true), Some(stored), false) = (
            self.disk.as_ref().map(|d| d.durable),
            entry.stored,
            entry.redelivered,
        ) {
            self.delivered.push(stored);
        }
        if entry.stored.is_some() {
            // The store has it; the delivery carries it to the client.
            entry.message = None;
        }
        self.unacked.insert(entry.id, entry);
        Some(taken)
    }

    /// A delivery that never reached the client goes back where it was.
    pub(super) fn undeliverable(&mut self, msg_id: u64, message: Arc<Message>, redelivered: bool) {
        let mut stored = self.unacked.remove(&msg_id).and_then(|e| e.stored);
        // A no-ack delivery left the store when it was taken; a persistent one
        // that never reached its client goes back into it.
        if let (None, Some(disk), Some(2)) = (stored, &self.disk, *message.properties.delivery_mode()) {
            if disk.durable {
                stored = Some(disk.store.publish(message.clone(), vec![disk.queue], None));
            }
        }
        self.put_back(Entry {
            id: msg_id,
            message: Some(message),
            stored,
            redelivered,
        });
    }
}
