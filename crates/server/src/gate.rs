//! Gates: limits shared between queue actors and the connection that owns a
//! channel (prefetch and credit).
//!
//! A queue actor decides what to deliver, but the channel learns of acks, so
//! the counts they both need live in atomics ([`Gate`]) instead of behind
//! messages. A queue takes a slot before it delivers; the connection gives it
//! back on ack (prefetch) or once the delivery is handed to the writer
//! (credit). A queue that finds a gate full puts itself on the gate's list of
//! waiters; whoever frees a slot wakes every waiter, so no delivery waits on a
//! timer and no wake-up is lost, even when several queues share one gate (a
//! channel's global prefetch):
//!
//! ```text
//! queue:      try_acquire fails → join the waiters → try_acquire again
//! anyone:     release           → wake and clear the waiters
//! ```
//!
//! The second attempt closes the race with a release that ran between the
//! first attempt and joining the list.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Something that waits on a gate: a queue, woken to try delivering again.
pub trait Wake: Debug + Send + Sync {
    /// A slot was freed (or the limit raised).
    fn wake(&self);
}

/// Octets of deliveries (by [`crate::events::weight`]) a consumer may have
/// between its queue and the socket: in its connection's inbox, in the
/// writer's queue, until the writer has encoded them. It bounds a
/// connection's memory when prefetch is unlimited or the consumer is no-ack,
/// whatever the message size, the way RabbitMQ's credit flow does (in
/// messages there). A message larger than this goes alone.
pub const CREDIT: u32 = 1 << 20;

/// A counter with a limit (0 = none) and the queues waiting for a slot.
#[derive(Debug, Default)]
pub struct Gate {
    limit: AtomicU32,
    used: AtomicU32,
    /// Whether `waiters` may be non-empty: releases skip the lock otherwise.
    has_waiters: AtomicBool,
    /// Queues that found the gate full since the last release.
    waiters: Mutex<Vec<Arc<dyn Wake>>>,
}

impl Gate {
    /// A gate admitting `limit` at once (0 = unlimited).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            ..Self::default()
        }
    }

    /// The limit (0 = unlimited).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit (basic.qos global=true changes a live channel's),
    /// and wakes the waiters.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::SeqCst);
        self.wake_waiters();
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_n(1)
    }

    /// Takes `n` slots if they are free, or if none is taken (so that
    /// something larger than the whole limit can still go, alone).
    pub fn try_acquire_n(&self, n: u32) -> bool {
        let limit = self.limit.load(Ordering::SeqCst);
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (limit == 0 || used == 0 || used.saturating_add(n) <= limit).then(|| used.saturating_add(n))
            })
            .is_ok()
    }

    /// Takes a slot, or puts `queue` on the list of waiters so that the next
    /// release wakes it.
    pub fn acquire_or_wait<W: Wake + 'static>(&self, queue: &Arc<W>) -> bool {
        self.acquire_n_or_wait(1, queue)
    }

    /// Takes `n` slots ([`Gate::try_acquire_n`]), or puts `queue` on the
    /// list of waiters so that the next release wakes it.
    /// Generic rather than `&Arc<dyn Wake>`, so that the common case (a free
    /// slot) costs no reference count: the handle is cloned only to wait.
    pub fn acquire_n_or_wait<W: Wake + 'static>(&self, n: u32, queue: &Arc<W>) -> bool {
        if self.try_acquire_n(n) {
            return true;
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if !waiters
                .iter()
                .any(|w| std::ptr::addr_eq(Arc::as_ptr(w), Arc::as_ptr(queue)))
            {
                waiters.push(queue.clone() as Arc<dyn Wake>);
            }
            self.has_waiters.store(true, Ordering::SeqCst);
        }
        self.try_acquire_n(n)
    }

    /// Gives back `n` slots and wakes the queues waiting for one.
    pub fn release(&self, n: u32) {
        if n == 0 {
            return;
        }
        // Saturating: a release can never take the count below zero.
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(n))
            });
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        if !self.has_waiters.swap(false, Ordering::SeqCst) {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for queue in waiters {
            queue.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::QueueHandle;

    #[tokio::test]
    async fn a_gate_wakes_every_queue_that_waits_on_it() {
        let (a, mut a_rx) = QueueHandle::detached("a");
        let (b, mut b_rx) = QueueHandle::detached("b");
        let g = Gate::new(1);
        assert!(g.acquire_or_wait(&a));
        assert!(!g.acquire_or_wait(&a));
        assert!(!g.acquire_or_wait(&b));
        // A slot taken and given back by someone else (a queue that found
        // nothing to deliver) still wakes both waiters: this was the lost
        // wake-up when the gate had one shared "blocked" flag.
        g.release(1);
        assert!(a_rx.commands().try_recv().is_ok(), "a must be woken");
        assert!(b_rx.commands().try_recv().is_ok(), "b must be woken");
        assert!(g.try_acquire());
        g.release(1);
        assert!(a_rx.commands().try_recv().is_err(), "no waiters, no wake-ups");
        let unlimited = Gate::new(0);
        assert!((0..10_000).all(|_| unlimited.try_acquire()));
    }
}
