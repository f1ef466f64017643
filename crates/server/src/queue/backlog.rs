//! The ready messages, in publish order (requeued ones back at their
//! place), and the unacked ones: taking, requeueing, returning.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use warren_codec::Message;

use super::dead_letter::Reason;
use super::expiry::NEVER;
use super::{Entry, Queue, Taken, HEAD};

/// Bodies a queue pages out per step when memory comes under pressure.
const PAGE_OUT_PER_STEP: usize = 4096;
use crate::events::{weight, ConfirmTracker};

/// The ready messages, ordered by id, and what they weigh
/// ([`crate::events::weight`]): all of them, which paces publishers, and
/// those whose body is in memory, which the head bounds. Read through
/// `Deref`; every change goes through a method here, which keeps the sums.
#[derive(Debug, Default)]
pub(super) struct Ready {
    entries: VecDeque<Entry>,
    weight: usize,
    in_memory: usize,
    /// Body octets of every ready message (`x-max-length-bytes`).
    body: u64,
}

impl Deref for Ready {
    type Target = VecDeque<Entry>;

    fn deref(&self) -> &VecDeque<Entry> {
        &self.entries
    }
}

impl FromIterator<Entry> for Ready {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Self {
        let mut ready = Ready::default();
        for entry in entries {
            ready.push_back(entry);
        }
        ready
    }
}

impl Ready {
    /// What every ready message weighs.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The body octets of every ready message.
    pub fn body_bytes(&self) -> u64 {
        self.body
    }

    /// What the ready messages held in memory weigh.
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    fn count(&mut self, entry: &Entry) {
        self.body += u64::from(entry.body);
        self.weight += entry.weight as usize;
        if entry.message.is_some() {
            self.in_memory += entry.weight as usize;
        }
    }

    fn uncount(&mut self, entry: &Entry) {
        self.body -= u64::from(entry.body);
        self.weight -= entry.weight as usize;
        if entry.message.is_some() {
            self.in_memory -= entry.weight as usize;
        }
    }

    pub fn push_back(&mut self, entry: Entry) {
        self.count(&entry);
        self.entries.push_back(entry);
    }

    pub fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        self.uncount(&entry);
        Some(entry)
    }

    /// Inserts an entry where its id places it.
    pub fn insert_in_order(&mut self, entry: Entry) {
        let at = self
            .entries
            .binary_search_by_key(&entry.id, |e| e.id)
            .unwrap_or_else(|at| at);
        self.count(&entry);
        self.entries.insert(at, entry);
    }

    pub fn remove(&mut self, at: usize) -> Option<Entry> {
        let entry = self.entries.remove(at)?;
        self.uncount(&entry);
        Some(entry)
    }

    /// Gives a paged-out entry its body back, and its true weight (an
    /// entry recovered at start is only estimated).
    pub fn set_message(&mut self, at: usize, message: Arc<Message>) {
        let entry = &mut self.entries[at];
        let old = entry.weight as usize;
        self.body = self.body - u64::from(entry.body) + message.body.len() as u64;
        entry.body = message.body.len() as u32;
        entry.weight = weight_u32(&message);
        let new = entry.weight as usize;
        self.weight = self.weight - old + new;
        if entry.message.is_some() {
            self.in_memory -= old;
        }
        self.in_memory += new;
        entry.message = Some(message);
    }

    /// Sets an entry's expiry (learnt when its body is read back).
    pub fn set_expiry(&mut self, at: usize, expires: u64) {
        self.entries[at].expires = expires;
    }

    /// Drops an entry's body, now kept by the store as `stored`.
    pub fn page_out(&mut self, at: usize, stored: u64) {
        let entry = &mut self.entries[at];
        if entry.message.take().is_some() {
            self.in_memory -= entry.weight as usize;
        }
        entry.stored = Some(stored);
    }

    /// Empties it (purge).
    pub fn take_all(&mut self) -> VecDeque<Entry> {
        self.body = 0;
        self.weight = 0;
        self.in_memory = 0;
        std::mem::take(&mut self.entries)
    }

    /// A drained backlog leaves its capacity behind (40 octets a message):
    /// give it back once mostly empty.
    pub fn shrink(&mut self) {
        if self.entries.capacity() > 4 * self.entries.len() + 4096 {
            self.entries.shrink_to(2 * self.entries.len());
        }
    }
}

/// A message's weight as an entry keeps it (a message is at most
/// [`crate::config::MAX_MESSAGE_SIZE`], so this saturates only for a broker
/// misconfigured through the library).
fn weight_u32(message: &Message) -> u32 {
    u32::try_from(weight(message)).unwrap_or(u32::MAX)
}

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
        self.ready.insert_in_order(entry);
    }

    /// A message routed here. A publisher waiting for a confirm is told
    /// whether it was taken (a full queue may refuse it, see
    /// [`super::limits`]).
    pub(super) fn publish(
        &mut self,
        message: Arc<Message>,
        stored: Option<u64>,
        confirm: Option<Arc<ConfirmTracker>>,
    ) {
        if self.args.rejects_publish() && self.would_overflow(message.body.len()) {
            self.refuse(message, stored);
            if let Some(confirm) = confirm {
                confirm.reject();
            }
            return;
        }
        if let Some(confirm) = confirm {
            confirm.done(true);
        }
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        let expires = self.expiry_of(&message);
        if expires != NEVER && expires <= self.now_ms() && self.consumers.is_empty() {
            // A TTL of 0 and no consumer to take it: expired on arrival, as
            // in RabbitMQ (with a consumer, the step's dispatch may still
            // deliver it within the millisecond).
            let entry = Entry {
                id,
                weight: weight_u32(&message),
                body: message.body.len() as u32,
                expires,
                message: Some(message),
                stored,
                redelivered: false,
            };
            self.discard(entry, Reason::Expired);
            return;
        }
        // Beyond the in-memory head, a body is read back from the store when
        // its turn comes near: a stored message's from its record; any other
        // from the transient log, where it is paged now if memory is under
        // pressure (paging is slow while publishers outrun consumers: every
        // read waits behind the store's rounds of page-outs).
        let mut stored = stored;
        let in_memory = match &self.disk {
            _ if self.ready.in_memory() < HEAD => true,
            None => true,
            Some(_) if stored.is_some() => false,
            Some(disk) if disk.memory_pressure.load(Ordering::Relaxed) => {
                stored = Some(disk.store.page_out(message.clone(), disk.queue));
                false
            }
            Some(_) => true,
        };
        self.ready.push_back(Entry {
            id,
            weight: weight_u32(&message),
            body: message.body.len() as u32,
            expires,
            message: in_memory.then_some(message),
            stored,
            redelivered: false,
        });
    }

    /// Under memory pressure, the bodies past the head that were kept in
    /// memory (published before the pressure began) go to the store too,
    /// [`PAGE_OUT_PER_STEP`] at most per step so that the actor stays
    /// responsive: a durable copy's body is just dropped, a transient one is
    /// paged out. Without this, a flood kept the half watermark's worth of
    /// bodies it took in before paging began, and its publishers were
    /// blocked for good once the queues' index reached the other half.
    pub(super) fn page_out_tail(&mut self) {
        let Some(disk) = &self.disk else {
            return;
        };
        if self.ready.in_memory() <= HEAD || !disk.memory_pressure.load(Ordering::Relaxed) {
            return;
        }
        let (store, queue) = (disk.store.clone(), disk.queue);
        let mut kept = 0;
        let mut budget = PAGE_OUT_PER_STEP;
        let mut at = 0;
        while at < self.ready.len() && budget > 0 && self.ready.in_memory() > HEAD {
            let entry = &self.ready[at];
            if let Some(message) = &entry.message {
                if kept < HEAD {
                    kept += entry.weight as usize;
                } else {
                    let stored = match entry.stored {
                        Some(stored) => stored,
                        None => store.page_out(message.clone(), queue),
                    };
                    self.ready.page_out(at, stored);
                    budget -= 1;
                }
            }
            at += 1;
        }
    }

    /// Takes the next ready message for a delivery or a get, unless it is
    /// still on disk (then it is asked for, and None returned): records its
    /// first delivery in the store (so that it comes back redelivered after
    /// a restart), and moves it to `unacked`, or settles it at once for
    /// no-ack.
    pub(super) fn take_next(&mut self, no_ack: bool) -> Option<Taken> {
        self.expire_head();
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
        if entry.stored.is_some() && !self.dead_letters() {
            // The store has it; the delivery carries it to the client. A
            // queue that dead-letters keeps it, to republish it if rejected.
            entry.message = None;
        }
        self.unacked.insert(entry.id, entry);
        Some(taken)
    }

    /// A delivery that never reached the client goes back where it was.
    pub(super) fn undeliverable(&mut self, msg_id: u64, message: Arc<Message>, redelivered: bool) {
        let held = self.unacked.remove(&msg_id);
        let mut stored = held.as_ref().and_then(|e| e.stored);
        // A no-ack delivery is no longer held: its expiry is counted again.
        let expires = held.map_or_else(|| self.expiry_of(&message), |e| e.expires);
        // A no-ack delivery left the store when it was taken; a persistent one
        // that never reached its client goes back into it.
        if let (None, Some(disk), Some(2)) = (stored, &self.disk, *message.properties.delivery_mode()) {
            if disk.durable {
                stored = Some(disk.store.publish(message.clone(), vec![disk.queue], None));
            }
        }
        self.put_back(Entry {
            id: msg_id,
            weight: weight_u32(&message),
            body: message.body.len() as u32,
            expires,
            message: Some(message),
            stored,
            redelivered,
        });
    }
}
