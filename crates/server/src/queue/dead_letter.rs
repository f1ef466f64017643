//! Dead-lettering (`x-dead-letter-exchange`, `x-dead-letter-routing-key`):
//! a message rejected without requeue, expired, or pushed out by a length
//! limit ([`super::limits`]) leaves its queue and is
//! republished to the dead-letter exchange, with the headers RabbitMQ 3.10
//! writes (compared with the reference in `dead_letter` tests):
//!
//! - `x-death`: an array of tables, the most recent death first, one per
//!   (queue, reason), each with `count`, `reason`, `queue`, `time`,
//!   `exchange`, `routing-keys` and, if the message had one,
//!   `original-expiration`; a second death for the same queue and reason
//!   counts up its table and moves it first;
//! - `x-first-death-reason`, `-queue` and `-exchange`, set once;
//! - `x-last-death-reason`, `-queue` and `-exchange`, set at every death:
//!   RabbitMQ 3.13 added them (`mc:record_death/3`), 3.10 does not write
//!   them, and a client that reads them finds them;
//! - the `expiration` property removed (it is in `original-expiration`);
//! - routed with the dead-letter routing key, or else its own.
//!
//! The queue only rewrites the message; its virtual host routes it
//! ([`crate::events::QueueRegistry::dead_letter`]) and hands it to its new
//! queues without waiting on them, so that two queues dead-lettering into
//! each other cannot deadlock. Cycles are cut as RabbitMQ cuts them: a
//! message that would reach a queue it already died in, with no rejection
//! since, is dropped.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use warren_codec::Message;

use super::{Entry, Queue};
use crate::arguments::as_integer;

/// Why a message was dead-lettered, in RabbitMQ's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// basic.reject or basic.nack without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit pushed it out, or refused it (`reject-publish-dlx`).
    Maxlen,
    /// Returned more often than a quorum queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

impl Queue {
    /// Whether this queue dead-letters what it rejects or expires.
    pub(super) fn dead_letters(&self) -> bool {
        self.args.dead_letter_exchange.is_some()
    }

    /// A message leaves this queue: dead-lettered if the queue has a
    /// dead-letter exchange (the entry must hold its body then), dropped
    /// otherwise.
    pub(super) fn discard(&mut self, entry: Entry, reason: Reason) {
        if let (Some(exchange), Some(message)) = (&self.args.dead_letter_exchange, &entry.message) {
            let routing_key = self
                .args
                .dead_letter_routing_key
                .as_deref()
                .unwrap_or(message.routing_key.as_str());
            let dead = rewrite(message, reason, self.name.as_str(), exchange, routing_key);
            self.dead.push(dead);
            self.dead_lettered += 1;
        }
        self.settle_entry(&entry);
    }

    /// Hands this step's dead-lettered messages to the virtual host.
    pub(super) fn flush_dead_letters(&mut self) {
        if self.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut self.dead);
        if let Some(vhost) = self.registry.upgrade() {
            vhost.dead_letter(dead);
        }
    }
}

/// The message as it is republished: to `exchange` with `routing_key`, its
/// death recorded in its headers.
fn rewrite(
    message: &Message,
    reason: Reason,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Arc<Message> {
    let properties = &message.properties;
    let mut headers = properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = deaths.iter().position(|d| {
        matches!(d, AMQPValue::FieldTable(t)
            if text(t.inner().get("queue")) == Some(queue) && text(t.inner().get("reason")) == Some(reason.as_str()))
    });
    let death = match same {
        Some(at) => {
            let AMQPValue::FieldTable(mut table) = deaths.remove(at) else {
                unreachable!("matched a table")
            };
            // Whatever integer type a client republished it with, as
            // RabbitMQ counts it.
            let count = table.inner().get("count").and_then(as_integer).unwrap_or(0);
            table.insert("count".into(), AMQPValue::LongLongInt(count.saturating_add(1)));
            table
        }
        None => {
            let mut table = FieldTable::default();
            table.insert("count".into(), AMQPValue::LongLongInt(1));
            table.insert("reason".into(), long_string(reason.as_str()));
            table.insert("queue".into(), long_string(queue));
            let now = crate::clock::wall_ms() / 1000;
            table.insert("time".into(), AMQPValue::Timestamp(now));
            table.insert("exchange".into(), long_string(message.exchange.as_str()));
            let keys = FieldArray::from(vec![long_string(message.routing_key.as_str())]);
            table.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
            if let Some(expiration) = properties.expiration() {
                table.insert("original-expiration".into(), long_string(expiration.as_str()));
            }
            table
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(death));
    headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    for (key, value) in [
        ("x-first-death-reason", reason.as_str()),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", message.exchange.as_str()),
    ] {
        if !headers.inner().contains_key(key) {
            headers.insert(key.into(), long_string(value));
        }
    }
    for (key, value) in [
        ("x-last-death-reason", reason.as_str()),
        ("x-last-death-queue", queue),
        ("x-last-death-exchange", message.exchange.as_str()),
    ] {
        headers.insert(key.into(), long_string(value));
    }
    Arc::new(Message {
        exchange: ShortString::from(exchange),
        routing_key: ShortString::from(routing_key),
        properties: Arc::new(without_expiration(properties, headers)),
        body: message.body.clone(),
    })
}

/// Whether delivering a dead-lettered message (its `x-death` already
/// updated) to `queue` would close a cycle RabbitMQ cuts: `queue` is among
/// its deaths, and none of the deaths since that one, that one included,
/// was a rejection (a client's decision breaks the cycle).
pub(crate) fn is_cycle(message: &Message, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let mut since = Vec::new();
    for death in deaths.as_slice() {
        let AMQPValue::FieldTable(t) = death else {
            continue;
        };
        since.push(text(t.inner().get("reason")));
        if text(t.inner().get("queue")) == Some(queue) {
            return since.iter().all(|reason| *reason != Some("rejected"));
        }
    }
    false
}

fn text(value: Option<&AMQPValue>) -> Option<&str> {
    match value? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The same properties with these headers and no expiration (amq-protocol
/// has no way to unset one property, so the others are copied).
fn without_expiration(p: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut out = BasicProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}
