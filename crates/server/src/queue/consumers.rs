//! Dispatch: round-robin over the consumers that have room, each one's
//! share of a round sent to its connection as one event.

use tokio::sync::mpsc;

use super::Queue;
use crate::events::{ConnEvent, Delivery};

impl Queue {
    /// Hands ready messages to consumers, round-robin, while any consumer
    /// has room. A consumer with no room is skipped (and its gate marked, so
    /// the next free slot wakes this queue). Each consumer's share of the
    /// round goes to its connection as one event.
    pub(super) fn dispatch(&mut self) {
        loop {
            let mut skipped = 0;
            while skipped < self.consumers.len() {
                let Some(front) = self.ready.front() else {
                    break;
                };
                let credit = front.weight;
                let shared = self.consumers[0].shared.clone();
                if !shared.try_reserve(credit) {
                    skipped += 1;
                    self.consumers.rotate_left(1);
                    continue;
                }
                skipped = 0;
                let Some(taken) = self.take_next(shared.no_ack) else {
                    shared.unreserve(credit);
                    break;
                };
                self.consumers[0].pending.push(Delivery {
                    consumer: shared,
                    credit,
                    msg_id: taken.id,
                    message: taken.message,
                    redelivered: taken.redelivered,
                });
                self.consumers.rotate_left(1);
            }
            if !self.send_pending() {
                return;
            }
        }
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
