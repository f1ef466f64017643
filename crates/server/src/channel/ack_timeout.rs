//! The consumer acknowledgement timeout: a delivery left unacked too long
//! closes its channel with 406 PRECONDITION_FAILED, which gives every
//! unacked message of the channel back to its queue, as RabbitMQ does
//! (`rabbit_channel:evaluate_consumer_timeout/1`). It guards a queue against
//! a consumer that hangs while holding messages.
//!
//! The timeout is, from first to last: the consumer's `x-consumer-timeout`
//! argument, its queue's `x-consumer-timeout`, and the broker's
//! `--consumer-timeout` (30 minutes, as RabbitMQ's default). RabbitMQ 3.10
//! checks on a channel tick (every minute by default); Warren arms one timer
//! per connection for the earliest deadline, so a delivery times out when
//! it is due.

use std::time::Duration;

use tokio::time::Instant;

use crate::connection::Connection;
use crate::events::QueueHandle;
use crate::AmqpError;

/// When an unacked delivery times out, and the timeout that set it (for
/// the error text).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    /// The deadline of a delivery made now, if any timeout applies.
    pub(crate) fn of(timeout: Option<Duration>) -> Option<Self> {
        Self::at(Instant::now(), timeout)
    }

    /// The deadline of a delivery made at `now`; none for a timeout past
    /// the clock's range (a client may ask for any `x-consumer-timeout`).
    pub(crate) fn at(now: Instant, timeout: Option<Duration>) -> Option<Self> {
        let timeout = timeout?;
        Some(Self {
            at: now.checked_add(timeout)?,
            timeout,
        })
    }
}

impl super::Channel {
    /// The earliest deadline among its unacked deliveries.
    pub(crate) fn first_deadline(&self) -> Option<Instant> {
        self.unacked.iter().filter_map(|u| u.deadline.map(|d| d.at)).min()
    }

    /// A delivery whose deadline has passed, if any.
    fn overdue(&self, now: Instant) -> Option<Deadline> {
        self.unacked
            .iter()
            .filter_map(|u| u.deadline)
            .find(|d| d.at <= now)
    }
}

impl Connection {
    /// The timeout for deliveries from `queue` to a consumer that asked for
    /// `own` (None for basic.get).
    pub(crate) fn ack_timeout(&self, own: Option<u64>, queue: &QueueHandle) -> Option<Duration> {
        own.or(queue.consumer_timeout)
            .map(Duration::from_millis)
            .or(self.consumer_timeout)
    }

    /// Arms the connection's timer for a new deadline, if it is the earliest.
    pub(crate) fn watch_deadline(&mut self, deadline: Option<Deadline>) {
        if let Some(d) = deadline {
            self.ack_deadline = Some(self.ack_deadline.map_or(d.at, |at| at.min(d.at)));
        }
    }

    /// The timer fired: closes every channel holding an overdue delivery,
    /// with RabbitMQ's text, and arms the timer for the next deadline.
    pub(crate) async fn expire_unacked(&mut self) {
        let now = Instant::now();
        let mut overdue: Vec<(u16, Deadline)> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.state == super::ChannelState::Open)
            .filter_map(|(&id, ch)| ch.overdue(now).map(|d| (id, d)))
            .collect();
        overdue.sort_by_key(|&(id, _)| id);
        for (id, deadline) in overdue {
            let ms = deadline.timeout.as_millis();
            tracing::warn!(
                channel = id,
                timeout_ms = ms as u64,
                "consumer timed out waiting for delivery acknowledgement"
            );
            let error = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {id} timed out. Timeout value used: {ms} ms. \
                 This timeout value can be configured, see consumers doc guide to learn more"
            ));
            // A channel error never closes the connection.
            self.fail(id, error).await;
        }
        self.ack_deadline = self.channels.values().filter_map(|ch| ch.first_deadline()).min();
    }
}
