//! What the broker counts for its operators: messages through channels and
//! queues (the management API's `message_stats`), and the latency
//! histograms Prometheus scrapes.
//!
//! Counters are plain integers owned by whoever moves the messages (a
//! channel in its connection's task, a queue in its actor), so counting
//! costs an increment and no shared cache line; they are read by asking
//! their owner. A connection that closes hands its totals to the broker
//! ([`crate::broker::Broker::retire`]), so that the broker's totals never
//! go down. Rates are the management API's: it samples these totals.
//!
//! The histograms are the store's ([`warren_store::histogram`]), shared
//! with it: the store observes fsyncs and group commits, the queues
//! deliveries.

use std::ops::AddAssign;

/// Messages counted, in the names of RabbitMQ's `message_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounters {
    /// Published: by a channel (whether routed or not), or into a queue.
    pub publish: u64,
    /// Publisher confirms sent (basic.ack of a publish).
    pub confirm: u64,
    /// Mandatory publishes returned unroutable.
    pub return_unroutable: u64,
    /// Publishes routed nowhere and dropped.
    pub drop_unroutable: u64,
    /// Delivered to consumers that ack.
    pub deliver: u64,
    /// Delivered to consumers that do not ack.
    pub deliver_no_ack: u64,
    /// Taken with basic.get, to be acked.
    pub get: u64,
    /// Taken with basic.get, no ack.
    pub get_no_ack: u64,
    /// Acked by consumers.
    pub ack: u64,
    /// Delivered or got again after a requeue.
    pub redeliver: u64,
}

impl MessageCounters {
    /// Each counter by its RabbitMQ name, in `message_stats` order.
    pub fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("publish", self.publish),
            ("confirm", self.confirm),
            ("return_unroutable", self.return_unroutable),
            ("drop_unroutable", self.drop_unroutable),
            ("deliver", self.deliver),
            ("deliver_no_ack", self.deliver_no_ack),
            ("get", self.get),
            ("get_no_ack", self.get_no_ack),
            ("ack", self.ack),
            ("redeliver", self.redeliver),
        ]
    }

    /// Each counter the larger of the two.
    pub fn max(self, o: Self) -> Self {
        Self {
            publish: self.publish.max(o.publish),
            confirm: self.confirm.max(o.confirm),
            return_unroutable: self.return_unroutable.max(o.return_unroutable),
            drop_unroutable: self.drop_unroutable.max(o.drop_unroutable),
            deliver: self.deliver.max(o.deliver),
            deliver_no_ack: self.deliver_no_ack.max(o.deliver_no_ack),
            get: self.get.max(o.get),
            get_no_ack: self.get_no_ack.max(o.get_no_ack),
            ack: self.ack.max(o.ack),
            redeliver: self.redeliver.max(o.redeliver),
        }
    }

    /// RabbitMQ's `deliver_get`: every way a message went to a client.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

impl AddAssign for MessageCounters {
    fn add_assign(&mut self, o: Self) {
        self.publish += o.publish;
        self.confirm += o.confirm;
        self.return_unroutable += o.return_unroutable;
        self.drop_unroutable += o.drop_unroutable;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.ack += o.ack;
        self.redeliver += o.redeliver;
    }
}

pub use warren_store::histogram::{Histogram, LocalHistogram, LATENCY_BOUNDS_US};

/// A step messages take between an exchange and a queue or exchange,
/// counted for the topology graph's rates. Several bindings between the
/// same two ends are one step (a message that matches two of them goes
/// once).
pub use warren_router::Edge as Flow;

/// How many messages took each step.
pub type Flows = std::collections::HashMap<Flow, u64>;
