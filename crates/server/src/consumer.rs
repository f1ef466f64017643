//! Limits shared between queue actors and the connection that owns a channel.
//!
//! A queue actor decides what to deliver, but the channel learns of acks, so
//! the counts they both need live in atomics ([`Gate`]) instead of behind
//! messages. A queue takes a slot before it delivers; the connection gives it
//! back on ack (prefetch) or once the delivery is handed to the writer
//! (credit). A queue that found a gate full marks it `blocked`; whoever frees
//! a slot and finds the mark sends the queue a wake-up, so no delivery waits on
//! a timer and no wake-up is lost:
//!
//! ```text
//! queue:      try_acquire fails → blocked = true → try_acquire again
//! connection: release           → if blocked.swap(false) { wake the queue }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::queue::QueueHandle;

/// In-flight deliveries a consumer may have between its queue and the socket
/// writer. It bounds a connection's inbox when prefetch is unlimited or the
/// consumer is no-ack, the way RabbitMQ's credit flow does.
pub const CREDIT: u32 = 1000;

/// A counter with a limit (0 = none) and a wake-up mark.
#[derive(Debug, Default)]
pub struct Gate {
    limit: AtomicU32,
    used: AtomicU32,
    blocked: AtomicBool,
}

impl Gate {
    /// A gate admitting `limit` at once (0 = unlimited).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
        }
    }

    /// Changes the limit (basic.qos global=true changes a live channel's).
    /// Returns whether a blocked queue should be woken.
    pub fn set_limit(&self, limit: u32) -> bool {
        self.limit.store(limit, Ordering::SeqCst);
        self.blocked.swap(false, Ordering::SeqCst)
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::SeqCst);
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (limit == 0 || used < limit).then_some(used + 1)
            })
            .is_ok()
    }

    /// Takes a slot, or marks the gate blocked so the next release wakes the
    /// caller. The second attempt closes the race with a release that ran
    /// between the first attempt and the mark.
    pub fn acquire_or_block(&self) -> bool {
        if self.try_acquire() {
            return true;
        }
        self.blocked.store(true, Ordering::SeqCst);
        self.try_acquire()
    }

    /// Gives back `n` slots. Returns whether a queue is waiting to be woken.
    pub fn release(&self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        // Saturating: a release can never take the count below zero.
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(n))
            });
        self.blocked.swap(false, Ordering::SeqCst)
    }
}

/// One consumer as both its queue and its channel see it.
#[derive(Debug)]
pub struct ConsumerShared {
    /// The consumer tag.
    pub tag: String,
    /// The channel it was created on.
    pub channel: u16,
    /// The queue it consumes from.
    pub queue: Arc<QueueHandle>,
    /// Whether deliveries count as acked once sent.
    pub no_ack: bool,
    /// basic.qos global=false: a limit of this consumer's own.
    pub prefetch: Gate,
    /// basic.qos global=true: the limit shared by the channel's consumers.
    pub channel_prefetch: Arc<Gate>,
    /// Deliveries sent by the queue but not yet handed to the writer.
    pub credit: Gate,
}

impl ConsumerShared {
    /// Takes what one delivery needs: credit always, prefetch slots unless
    /// no-ack. Gives back what it took if any gate is full.
    pub fn try_reserve(&self) -> bool {
        if !self.credit.acquire_or_block() {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if !self.prefetch.acquire_or_block() {
            self.credit.release(1);
            return false;
        }
        if !self.channel_prefetch.acquire_or_block() {
            self.prefetch.release(1);
            self.credit.release(1);
            return false;
        }
        true
    }
}

impl ConsumerShared {
    /// Gives back what [`ConsumerShared::try_reserve`] took, when there turned
    /// out to be nothing to deliver.
    pub fn unreserve(&self) {
        self.credit.release(1);
        if !self.no_ack {
            self.prefetch.release(1);
            self.channel_prefetch.release(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_limits_and_reports_blocked_waiters() {
        let g = Gate::new(2);
        assert!(g.try_acquire());
        assert!(g.acquire_or_block());
        assert!(!g.acquire_or_block());
        assert!(g.release(1), "a blocked queue must be woken");
        assert!(!g.release(1), "nobody waits any more");
        assert!(!g.release(5));
        assert!(g.try_acquire() && g.try_acquire() && !g.try_acquire());
        let unlimited = Gate::new(0);
        assert!((0..10_000).all(|_| unlimited.try_acquire()));
    }
}
