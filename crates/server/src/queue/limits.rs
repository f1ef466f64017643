//! Length limits: `x-max-length` (ready messages) and `x-max-length-bytes`
//! (their body octets), with `x-overflow`, as RabbitMQ 3.10 applies them:
//!
//! - `drop-head` (the default): a new message goes in, and messages leave
//!   from the head (the next to deliver: in a priority queue, the oldest of
//!   the highest priority, as RabbitMQ drops them), dead-lettered with
//!   reason `maxlen` if the queue has a dead-letter exchange, until the
//!   queue is within its limits. Consumers
//!   are served first, so a consumer waiting on a queue limited to 0 still
//!   gets each message.
//! - `reject-publish`: a message that would take the queue over a limit is
//!   refused: a confirming publisher gets basic.nack, another loses it.
//! - `reject-publish-dlx`: refused the same way, and dead-lettered.
//!
//! Unacked messages do not count, as in RabbitMQ.

use std::sync::Arc;

use warren_codec::Message;

use super::args::Overflow;
use super::dead_letter::Reason;
use super::{expiry, Entry, Queue};

impl Queue {
    /// Whether a new message with a body of `body` octets would take the
    /// queue over a limit (RabbitMQ's `will_overflow`).
    pub(super) fn would_overflow(&self, body: usize) -> bool {
        self.args
            .max_length
            .is_some_and(|max| self.ready.len() as u64 + 1 > max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready.body_bytes() + body as u64 > max)
    }

    /// A publish a full queue refuses: the store lets go of it, and with
    /// `reject-publish-dlx` it is dead-lettered.
    pub(super) fn refuse(&mut self, message: Arc<Message>, stored: Option<u64>) {
        let entry = Entry {
            id: 0,
            weight: 0,
            expires: expiry::NEVER,
            body: 0,
            message: Some(message),
            stored,
            priority: 0,
            redelivered: false,
            deliveries: 0,
            arrived: 0,
        };
        if self.args.overflow == Overflow::RejectPublishDlx {
            self.discard(entry, Reason::Maxlen);
        } else {
            self.settle_entry(&entry);
        }
    }

    /// With `drop-head`, removes the oldest ready messages while the queue
    /// is over a limit. One whose body is on disk and must be dead-lettered
    /// waits to be read back first.
    pub(super) fn enforce_max_length(&mut self) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        let over = |q: &Queue| {
            q.args.max_length.is_some_and(|max| q.ready.len() as u64 > max)
                || q.args
                    .max_length_bytes
                    .is_some_and(|max| q.ready.body_bytes() > max)
        };
        while over(self) {
            if self.dead_letters() && self.head_on_disk() {
                self.load_ahead();
                return;
            }
            let entry = self.ready.pop_front().expect("over a limit, so not empty");
            self.discard(entry, Reason::Maxlen);
        }
    }
}
