//! Message TTL: the queue's `x-message-ttl` and each message's `expiration`
//! property, the lower winning. As in RabbitMQ, a message expires when it
//! reaches the head of the queue past its time, or when the head's time
//! comes while no consumer takes it (a timer the actor's inbox keeps): it is
//! never delivered, and it leaves even a queue nobody reads. A message with
//! a later expiry at the head holds back the expiry of those behind it, as
//! in RabbitMQ's classic queues. A requeued message keeps its expiry. A
//! message recovered at start keeps its time: its TTL counts from when the
//! store wrote it (the message record carries that time), so one whose
//! time ran out while the broker was down expires at once, as in RabbitMQ.
//!
//! Also the queue's own expiry, `x-expires`: a queue nobody has used for
//! that long (no consumer, no basic.get, no declare) deletes itself, as an
//! auto-delete queue does, messages and all. The lease starts again at
//! every start of the broker.

use std::time::Duration;

use tokio::time::Instant;
use warren_codec::Message;

pub(crate) use warren_codec::expiration::{parse as parse_expiration, MAX_EXPIRY};

use super::dead_letter::Reason;
use super::{Entry, Queue};

/// An entry that never expires.
pub(super) const NEVER: u64 = u64::MAX;

/// When a recovered message expires, on the clock of a queue started `now`
/// (wall-clock milliseconds): its TTL (the lower of the queue's and its
/// own) counts from when the store wrote it, so a message whose time ran
/// out while the broker was down expires at once. One from a record
/// written before Warren kept the time counts from its recovery.
pub(crate) fn recovered(entry: &warren_store::RecoveredEntry, queue_ttl: Option<u64>, now: u64) -> u64 {
    let by_queue = queue_ttl.map_or(u64::MAX, |ttl| entry.written.saturating_add(ttl));
    match by_queue.min(entry.expires) {
        u64::MAX => NEVER,
        at => at.saturating_sub(now),
    }
}

impl Queue {
    /// Milliseconds since the queue started: the clock entries' expiries
    /// are kept on.
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// When a message arriving now expires: its TTL is the lower of the
    /// queue's and its own. Never, in a delayed exchange's queue.
    pub(super) fn expiry_of(&self, message: &Message) -> u64 {
        if self.delays {
            return NEVER;
        }
        let own = message
            .properties
            .expiration()
            .as_ref()
            .and_then(|e| parse_expiration(e.as_str()).ok());
        match (self.args.message_ttl, own) {
            (None, None) => NEVER,
            (a, b) => self
                .now_ms()
                .saturating_add(a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX))),
        }
    }

    /// Whether `entry` is past its time. A TTL of 0 gives a message the
    /// millisecond it arrived in, so that a consumer ready then still gets
    /// it, as RabbitMQ delivers such a message if it can at once.
    pub(super) fn expired(&self, entry: &Entry, now: u64) -> bool {
        entry.expires != NEVER && now > entry.expires
    }

    /// Removes the expired messages at the head of the queue, dead-lettering
    /// them if the queue does (in a priority queue, at the head of each
    /// priority's lane). One that must be dead-lettered while its body is on
    /// disk is read back first: the queue expires it once it is in, and
    /// goes on with the other lanes meanwhile.
    pub(super) fn expire_head(&mut self) {
        if self.ready.lane_fronts().all(|e| e.expires == NEVER) {
            return;
        }
        let now = self.now_ms();
        let dead_letters = self.dead_letters();
        let mut on_disk = None;
        loop {
            let next = self
                .ready
                .lane_fronts()
                .filter(|e| self.expired(e, now))
                .find(|e| {
                    let waits = dead_letters && e.message.is_none();
                    if waits && on_disk.is_none() {
                        on_disk = e.stored.map(|stored| (e.priority, e.id, stored));
                    }
                    !waits
                })
                .map(|e| e.priority);
            let Some(lane) = next else {
                break;
            };
            let entry = self.ready.pop_lane(lane).expect("a front entry");
            self.discard(entry, Reason::Expired);
        }
        if let Some(wanted) = on_disk {
            self.read_back(vec![wanted]);
        }
    }

    /// When the actor must wake to expire the head of the queue, or the
    /// queue itself, if ever.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        // An expired head waiting to be read back is expired when it comes
        // in (the read wakes the queue), not by a timer.
        let now = self.now_ms();
        let dead_letters = self.dead_letters();
        let head = self
            .ready
            .lane_fronts()
            .filter(|e| !(dead_letters && e.message.is_none() && self.expired(e, now)))
            .map(|e| e.expires)
            .filter(|&expires| expires != NEVER)
            .min()
            .and_then(|expires| {
                self.epoch
                    .checked_add(Duration::from_millis(expires.saturating_add(1)))
            });
        match (head, self.unused_until()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `x-expires`: when the queue is deleted if nobody uses it meanwhile.
    /// A queue with consumers is in use; so is one that gets a basic.get or
    /// a declare (RabbitMQ's rule: publishing does not count).
    pub(super) fn unused_until(&self) -> Option<Instant> {
        let expires = self.args.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used + Duration::from_millis(expires.min(MAX_EXPIRY)))
    }

    /// A client used the queue: its `x-expires` lease starts again.
    pub(super) fn used(&mut self) {
        self.last_used = Instant::now();
    }

    /// Whether its `x-expires` lease ran out.
    pub(super) fn unused_too_long(&self) -> bool {
        self.unused_until().is_some_and(|at| Instant::now() >= at)
    }
}
