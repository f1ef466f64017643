//! Dispatch: the consumers in priority order (`x-priority`, highest
//! first, as RabbitMQ serves them: a lower one gets messages only while
//! every higher one is blocked by its prefetch or credit), round-robin among
//! those of one priority; with `x-single-active-consumer`, only the first
//! consumer registered, and the next once it goes. Each consumer's share of
//! a round goes to its connection as one event.

use tokio::sync::mpsc;

use super::{Consumer, Queue};
use crate::events::{ConnEvent, Delivery};

impl Queue {
    /// Adds a consumer after those of its priority or higher (with a single
    /// active consumer, in the order they came).
    pub(super) fn add_consumer(&mut self, consumer: Consumer) {
        let at = match self.args.single_active_consumer {
            true => self.consumers.len(),
            false => self
                .consumers
                .iter()
                .position(|c| c.priority < consumer.priority)
                .unwrap_or(self.consumers.len()),
        };
        self.consumers.insert(at, consumer);
    }

    /// Hands ready messages to consumers while one has room (a consumer
    /// with no room has its gate marked, so the next free slot wakes this
    /// queue).
    pub(super) fn dispatch(&mut self) {
        loop {
            loop {
                // Expired first, so that the credit taken is the weight of
                // the message that goes.
                self.expire_head();
                let Some(front) = self.ready.front() else {
                    break;
                };
                let credit = front.weight;
                let Some(at) = self.next_consumer(credit) else {
                    break;
                };
                let shared = self.consumers[at].shared.clone();
                let Some(taken) = self.take_next(shared.no_ack) else {
                    shared.unreserve(credit);
                    break;
                };
                match shared.no_ack {
                    true => self.counters.deliver_no_ack += 1,
                    false => self.counters.deliver += 1,
                }
                self.consumers[at].pending.push(Delivery {
                    consumer: shared,
                    credit,
                    msg_id: taken.id,
                    message: taken.message,
                    redelivered: taken.redelivered,
                });
                self.rotate_past(at);
            }
            if !self.send_pending() {
                return;
            }
        }
    }

    /// The first consumer, in priority order, that has room for a delivery
    /// of `credit` octets; its slots are taken. One without room is moved
    /// behind the others of its priority, so that the next message does not
    /// try it first again.
    fn next_consumer(&mut self, credit: u32) -> Option<usize> {
        if self.args.single_active_consumer {
            let active = self.consumers.front()?;
            return active.shared.try_reserve(credit).then_some(0);
        }
        let mut start = 0;
        while start < self.consumers.len() {
            let end = self.group_end(start);
            for _ in start..end {
                if self.consumers[start].shared.try_reserve(credit) {
                    return Some(start);
                }
                self.consumers.make_contiguous()[start..end].rotate_left(1);
            }
            start = end;
        }
        None
    }

    /// Where the consumers of the same priority as the one at `at`, and
    /// after it, end.
    fn group_end(&self, at: usize) -> usize {
        let priority = self.consumers[at].priority;
        at + self
            .consumers
            .iter()
            .skip(at)
            .take_while(|c| c.priority == priority)
            .count()
    }

    /// Moves the consumer at `at` behind the others of its priority, so
    /// that they take turns.
    fn rotate_past(&mut self, at: usize) {
        if self.args.single_active_consumer {
            return;
        }
        let end = self.group_end(at);
        self.consumers.make_contiguous()[at..end].rotate_left(1);
    }

    /// Sends each consumer its deliveries of this round. A consumer whose
    /// connection is gone is dropped (the connection's cleanup cancels it)
    /// and its deliveries go back; returns whether that happened, so that
    /// they are dispatched again to the others.
    pub(super) fn send_pending(&mut self) -> bool {
        let mut lost = false;
        let mut i = 0;
        while i < self.consumers.len() {
            let pending = std::mem::take(&mut self.consumers[i].pending);
            if pending.is_empty() {
                i += 1;
                continue;
            }
            match self.consumers[i].inbox.send(ConnEvent::Deliver(pending)) {
                Ok(()) => i += 1,
                Err(mpsc::error::SendError(event)) => {
                    self.consumers.remove(i);
                    if let ConnEvent::Deliver(deliveries) = event {
                        for d in deliveries {
                            self.undeliverable(d.msg_id, d.message, d.redelivered);
                        }
                    }
                    lost = true;
                }
            }
        }
        lost
    }
}
