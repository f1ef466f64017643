//! The ready messages, in publish order (requeued ones back at their
//! place), and the unacked ones: taking, requeueing, returning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::types::AMQPValue;
use warren_codec::Message;

use super::dead_letter::Reason;
use super::expiry::NEVER;
use super::ready::weight_u32;
use super::{Entry, Queue, Taken, HEAD};
use crate::events::Decision;

/// Bodies a queue pages out per step when memory comes under pressure.
const PAGE_OUT_PER_STEP: usize = 4096;

/// The most deliveries of one message a quorum queue records in the store
/// ([`Queue::take_next`]): its delivery count after a restart stops there.
const RECORDED_DELIVERIES: u64 = 255;

impl Queue {
    /// Puts unacked messages back where their ids place them among the ready
    /// ones, so a requeued message is redelivered before later ones.
    /// A quorum queue dead-letters (or drops) a message returned more often
    /// than its `x-delivery-limit`, with reason `delivery_limit`.
    pub(super) fn requeue(&mut self, mut ids: Vec<u64>, redelivered: bool) {
        ids.sort_unstable();
        for id in ids {
            let Some(mut entry) = self.unacked.remove(&id) else {
                continue;
            };
            if self
                .args
                .delivery_limit
                .is_some_and(|limit| u64::from(entry.deliveries) > limit)
            {
                self.discard(entry, Reason::DeliveryLimit);
                continue;
            }
            entry.redelivered |= redelivered;
            self.put_back(entry);
        }
    }

    fn is_durable(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.durable)
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
    pub(super) fn publish(&mut self, message: Arc<Message>, stored: Option<u64>, confirm: Option<Decision>) {
        // A duplicate is dropped as if delivered ([`crate::dedup`]).
        let key = self.dedup.as_ref().and_then(|d| d.key(&message));
        if let (Some(dedup), Some(key)) = (&self.dedup, &key) {
            if dedup.is_duplicate(key) {
                if let Some(confirm) = confirm {
                    confirm.accept();
                }
                self.settled.extend(stored);
                return;
            }
        }
        // RabbitMQ checks the limit against a queue its consumers have
        // already taken what they can from: publishes of one batch arrive
        // together, before the step's dispatch.
        if self.args.rejects_publish()
            && self.would_overflow(message.body.len())
            && !self.consumers.is_empty()
        {
            self.dispatch();
        }
        if self.args.rejects_publish() && self.would_overflow(message.body.len()) {
            self.refuse(message, stored);
            if let Some(confirm) = confirm {
                confirm.refuse();
            }
            return;
        }
        // Taken: a later message with its key is a duplicate.
        if let (Some(dedup), Some(key)) = (&mut self.dedup, key) {
            dedup.remember(key, &message);
        }
        if let Some(confirm) = confirm {
            confirm.accept();
        }
        self.counters.publish += 1;
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        let priority = self.ready.lane_of(*message.properties.priority());
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
                priority,
                redelivered: false,
                deliveries: 0,
                arrived: self.now,
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
            priority,
            redelivered: false,
            deliveries: 0,
            arrived: self.now,
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
        let mut over = self.ready.in_memory() - HEAD;
        let mut chosen = Vec::new();
        for (pos, entry) in self.ready.iter() {
            if chosen.len() >= PAGE_OUT_PER_STEP || over == 0 {
                break;
            }
            let Some(message) = &entry.message else {
                continue;
            };
            if kept < HEAD {
                kept += entry.weight as usize;
                continue;
            }
            over = over.saturating_sub(entry.weight as usize);
            chosen.push((pos, entry.stored, message.clone()));
        }
        for (pos, stored, message) in chosen {
            let stored = stored.unwrap_or_else(|| store.page_out(message, queue));
            self.ready.page_out(pos, stored);
        }
    }

    /// Takes the next ready message for a delivery or a get, unless it is
    /// still on disk (then it is asked for, and None returned): records its
    /// first delivery in the store (so that it comes back redelivered after
    /// a restart), and moves it to `unacked`, or settles it at once for
    /// no-ack. The caller expired the head first ([`Queue::expire_head`]).
    pub(super) fn take_next(&mut self, no_ack: bool) -> Option<Taken> {
        let Some(message) = self.ready.front()?.message.clone() else {
            self.load_ahead();
            return None;
        };
        let mut entry = self.ready.pop_front().expect("a front entry");
        // A quorum queue tells each delivery how often it went out before.
        let message = match self.args.quorum {
            true => with_delivery_count(&message, entry.deliveries),
            false => message,
        };
        entry.deliveries = entry.deliveries.saturating_add(1);
        let waited = u64::from(self.now.wrapping_sub(entry.arrived));
        self.latency.observe(waited * 1000);
        self.counters.redeliver += u64::from(entry.redelivered);
        let taken = Taken {
            id: entry.id,
            message,
            redelivered: entry.redelivered,
        };
        if no_ack {
            self.settle_entry(&entry);
            return Some(taken);
        }
        // The first delivery, for the redelivered mark after a restart; a
        // quorum queue records every one, for its delivery count: at most
        // as many as its limit needs (or RECORDED_DELIVERIES), so that a
        // message returned in a loop cannot grow the store without end.
        let recorded = match self.args.quorum {
            true => {
                let needed = self.args.delivery_limit.map_or(RECORDED_DELIVERIES, |l| {
                    l.saturating_add(1).min(RECORDED_DELIVERIES)
                });
                u64::from(entry.deliveries) <= needed
            }
            false => !entry.redelivered,
        };
        if let (true, Some(stored), true) = (self.is_durable(), entry.stored, recorded) {
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
        // It never reached the client: that delivery does not count.
        let deliveries = held.as_ref().map_or(0, |e| e.deliveries.saturating_sub(1));
        let mut stored = held.as_ref().and_then(|e| e.stored);
        // A no-ack delivery is no longer held: its expiry is counted again.
        let arrived = held.as_ref().map_or(self.now, |e| e.arrived);
        let expires = held.map_or_else(|| self.expiry_of(&message), |e| e.expires);
        // A no-ack delivery left the store when it was taken; a persistent one
        // that never reached its client goes back into it.
        let keeps = self.stores_every_message || *message.properties.delivery_mode() == Some(2);
        if let (None, Some(disk), true) = (stored, &self.disk, keeps) {
            if disk.durable {
                stored = Some(disk.store.publish(message.clone(), vec![disk.queue], None));
            }
        }
        let priority = self.ready.lane_of(*message.properties.priority());
        self.put_back(Entry {
            id: msg_id,
            priority,
            weight: weight_u32(&message),
            body: message.body.len() as u32,
            expires,
            message: Some(message),
            stored,
            redelivered,
            deliveries,
            arrived,
        });
    }
}

/// The message with its `x-delivery-count` header (a quorum queue's; a
/// long, 0 on the first delivery, as RabbitMQ 3.10 writes it).
fn with_delivery_count(message: &Arc<Message>, deliveries: u32) -> Arc<Message> {
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-delivery-count".into(),
        AMQPValue::LongLongInt(i64::from(deliveries)),
    );
    Arc::new(Message {
        properties: Arc::new((*message.properties).clone().with_headers(headers)),
        ..(**message).clone()
    })
}
