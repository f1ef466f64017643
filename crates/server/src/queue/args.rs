//! A queue's declare arguments, parsed and checked once, at declare.
//!
//! Every argument RabbitMQ 3.10 checks is checked here with RabbitMQ's reply
//! text (406 PRECONDITION_FAILED), found by declaring each bad value against
//! the reference broker (`queue::invalid_arguments_are_refused_as_rabbitmq_does`).
//! An argument RabbitMQ honours and Warren does not yet is refused too, with
//! a text that says so, rather than accepted and ignored: a queue declared
//! with a priority or a consumer mode it does not get would mislead its
//! application. Arguments neither broker knows are kept and ignored, as
//! RabbitMQ does.

use amq_protocol::types::FieldTable;

use super::expiry::MAX_EXPIRY;
use crate::arguments::{as_string, type_name, Arguments};
use crate::AmqpError;

/// What a full queue does with a new message (`x-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest message.
    #[default]
    DropHead,
    /// Refuse the new one: basic.nack to a confirming publisher.
    RejectPublish,
    /// Refuse it, and dead-letter it.
    RejectPublishDlx,
}

/// The arguments a queue honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl`, in milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-expires`: the queue is deleted once unused this long, in
    /// milliseconds.
    pub expires: Option<u64>,
    /// `x-max-length`, in messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`, in body octets.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-single-active-consumer`: only the first consumer gets messages.
    pub single_active_consumer: bool,
    /// `x-max-priority`: the highest message priority the queue orders by.
    pub max_priority: Option<u8>,
    /// `x-queue-type: quorum`: every message is stored, each delivery
    /// carries `x-delivery-count`, and `x-delivery-limit` applies.
    pub quorum: bool,
    /// `x-delivery-limit` (quorum queues): how many times a message may be
    /// returned before it is dead-lettered (reason `delivery_limit`).
    pub delivery_limit: Option<u64>,
    /// `x-consumer-timeout`: how long a delivery may stay unacked, in
    /// milliseconds (RabbitMQ 3.12 and later; 3.10 ignores it).
    pub consumer_timeout: Option<u64>,
    /// `x-message-deduplication` and its settings ([`crate::dedup`]).
    pub dedup: Option<crate::dedup::DedupArgs>,
}

/// basic.consume's arguments, checked with RabbitMQ's texts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumeArgs {
    /// `x-priority`: any integer, 0 by default.
    pub priority: i64,
    /// `x-consumer-timeout`, in milliseconds: overrides the queue's and the
    /// broker's (RabbitMQ 3.12 and later).
    pub timeout: Option<u64>,
}

impl ConsumeArgs {
    pub fn parse(table: &FieldTable, queue: &str, vhost: &str) -> Result<Self, AmqpError> {
        let args = Arguments::new(table, |key: &str, why: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            ))
        });
        Ok(Self {
            priority: args.integer("x-priority")?.unwrap_or(0),
            timeout: args.non_negative("x-consumer-timeout")?,
        })
    }
}

/// Arguments only quorum queues take: RabbitMQ 3.10 refuses them on a
/// classic queue.
const QUORUM_ONLY: &[&str] = &[
    "x-delivery-limit",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
];

/// Arguments only classic queues take: RabbitMQ 3.10 refuses them on a
/// quorum queue.
const CLASSIC_ONLY: &[&str] = &["x-max-priority", "x-queue-mode", "x-queue-version"];

impl QueueArgs {
    /// Whether the queue refuses publishes when full (rather than dropping
    /// its oldest message).
    pub fn rejects_publish(&self) -> bool {
        (self.max_length.is_some() || self.max_length_bytes.is_some()) && self.overflow != Overflow::DropHead
    }

    /// Parses and checks `table` for queue `queue` in `vhost`.
    pub fn parse(table: &FieldTable, queue: &str, vhost: &str) -> Result<Self, AmqpError> {
        let args = Arguments::new(table, |key: &str, why: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            ))
        });
        let unsupported = |key: &str, what: &str| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {what} is not supported by Warren"
            ))
        };

        let quorum = match args.string("x-queue-type")?.as_deref() {
            None | Some("classic") => false,
            Some("quorum") => true,
            Some("stream") => return Err(unsupported("x-queue-type", "a stream queue")),
            Some(other) => {
                return Err(args.invalid("x-queue-type", format!("\"unsupported queue type '{other}'\"")))
            }
        };
        // Arguments of the other queue type, refused as RabbitMQ 3.10 does.
        let (foreign, kind): (&[&str], _) = match quorum {
            false => (QUORUM_ONLY, "rabbit_classic_queue"),
            true => (CLASSIC_ONLY, "rabbit_quorum_queue"),
        };
        for key in foreign {
            if args.get(key).is_some() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type {kind}"
                )));
            }
        }
        let delivery_limit = args.integer("x-delivery-limit")?;
        // RabbitMQ's check_expiry: ten years at most.
        let too_large = |key: &str, n: u64| args.invalid(key, format!("{{value_too_large,{n}}}"));
        let message_ttl = match args.non_negative("x-message-ttl")? {
            Some(n) if n > MAX_EXPIRY => return Err(too_large("x-message-ttl", n)),
            n => n,
        };
        let expires = match args.integer("x-expires")? {
            Some(n @ ..0) => return Err(args.invalid("x-expires", format!("{{value_negative,{n}}}"))),
            Some(0) => return Err(args.invalid("x-expires", "{value_zero,0}".into())),
            Some(n) if n as u64 > MAX_EXPIRY => return Err(too_large("x-expires", n as u64)),
            n => n.map(|n| n as u64),
        };
        let max_length = args.non_negative("x-max-length")?;
        let consumer_timeout = args.non_negative("x-consumer-timeout")?;
        let dedup = crate::dedup::DedupArgs::parse(&args)?;
        let max_length_bytes = args.non_negative("x-max-length-bytes")?;
        let max_priority = match args.non_negative("x-max-priority")? {
            Some(n) if n > 255 => {
                return Err(args.invalid("x-max-priority", format!("{{max_value_exceeded,{n}}}")))
            }
            n => n.map(|n| n as u8),
        };
        let overflow = match args.string("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(_) => return Err(args.invalid("x-overflow", "invalid_overflow".into())),
        };
        let dead_letter_exchange = match args.get("x-dead-letter-exchange") {
            None => None,
            Some(value) => match as_string(value) {
                Some(s) => Some(s),
                None => {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'",
                        type_name(value)
                    )))
                }
            },
        };
        let dead_letter_routing_key = args.string("x-dead-letter-routing-key")?;
        if dead_letter_routing_key.is_some() && dead_letter_exchange.is_none() {
            return Err(args.invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
        match args.string("x-queue-mode")?.as_deref() {
            // Every queue pages its tail to disk already; lazy changes nothing
            // a client can see.
            None | Some("default" | "lazy") => {}
            Some(other) => {
                return Err(args.invalid("x-queue-mode", format!("\"unsupported queue mode '{other}'\"")))
            }
        }
        if let Some(n) = args.integer("x-queue-version")? {
            if !(1..=2).contains(&n) {
                return Err(args.invalid("x-queue-version", format!("\"unsupported queue version '{n}'\"")));
            }
        }
        let single_active_consumer = args.boolean("x-single-active-consumer")?.unwrap_or(false);
        Ok(Self {
            quorum,
            // A negative limit is taken, and means none, as in 3.10.
            delivery_limit: delivery_limit.filter(|&n| n >= 0).map(|n| n as u64),
            message_ttl,
            expires,
            max_priority,
            single_active_consumer,
            max_length,
            max_length_bytes,
            overflow,
            dead_letter_exchange,
            dead_letter_routing_key,
            consumer_timeout,
            dedup,
        })
    }
}
