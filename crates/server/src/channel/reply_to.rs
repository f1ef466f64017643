//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ documents it: an
//! RPC client consumes from the pseudo-queue `amq.rabbitmq.reply-to` with
//! no-ack, and publishes requests with `reply_to: amq.rabbitmq.reply-to`;
//! the broker rewrites that to `amq.rabbitmq.reply-to.<key>`, and a reply
//! published to the default exchange with that routing key goes straight to
//! the client's consumer, with no queue in between. The errors are
//! RabbitMQ 3.10's, probed with pika.
//!
//! The keys live in the virtual host ([`crate::vhost::VHost::replies`]); a
//! reply to a key that is gone (its channel closed) is dropped, as in
//! RabbitMQ. The reply is delivered at once, also from inside a transaction.
//! A reply consumer has a consumer's credit (1 MiB of replies on their way
//! to its socket); a reply past it is dropped, since replies are not
//! queued anywhere and a requester that stops reading must not grow the
//! broker.

use std::sync::Arc;

use amq_protocol::protocol::basic;
use warren_codec::Message;

use crate::connection::Connection;
use crate::events::{ConnEvent, ConsumerShared, Delivery, QueueHandle, ReplyConsumer};
use crate::gate::{Gate, CREDIT};
use crate::queue::weight_u32;
use crate::vhost::random_suffix;
use crate::AmqpError;
use tracing::debug;

/// The pseudo-queue's name, and the prefix of every reply address.
pub(crate) const REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Connection {
    /// basic.consume from `amq.rabbitmq.reply-to`.
    pub(crate) async fn consume_reply_to(&mut self, id: u16, m: basic::Consume) -> Result<(), AmqpError> {
        if !m.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let channel = self
            .channels
            .get_mut(&id)
            .expect("handlers run only for open channels");
        if channel.reply_to.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let tag = channel.new_consumer_tag(m.consumer_tag.as_str())?;
        // No queue behind it: deliveries come from the publishers' own
        // connections, and a delivery handed back has nowhere to go.
        let (queue, _) = QueueHandle::new(
            REPLY_TO.into(),
            0,
            None,
            None,
            false,
            Default::default(),
            Default::default(),
        );
        let consumer = Arc::new(ConsumerShared {
            tag: tag.as_str().into(),
            channel: id,
            queue,
            no_ack: true,
            ack_timeout: None,
            prefetch: Gate::new(0),
            channel_prefetch: channel.channel_prefetch.clone(),
            credit: Gate::new(CREDIT),
        });
        let key = format!("{REPLY_TO}.{}", random_suffix());
        channel.consumers.insert(tag.clone(), consumer.clone());
        channel.reply_to = Some((key.clone(), tag.as_str().into()));
        self.vhost.replies().insert(
            key,
            ReplyConsumer {
                consumer,
                inbox: self.inbox.clone(),
            },
        );
        self.consume_ok(id, m.nowait, &tag).await;
        Ok(())
    }

    /// Forgets channel `id`'s reply consumer if `tag` is it (cancelled, or
    /// its channel closing).
    pub(crate) fn forget_reply_to(&mut self, id: u16, tag: &str) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        if channel.reply_to.as_ref().is_some_and(|(_, t)| &**t == tag) {
            if let Some((key, _)) = channel.reply_to.take() {
                self.vhost.replies().remove(&key);
            }
        }
    }

    /// A request asking for a direct reply gets its channel's reply address
    /// in `reply_to`; none without a reply consumer.
    pub(crate) fn address_reply_to(&self, id: u16, message: &mut Message) -> Result<(), AmqpError> {
        if message.properties.reply_to().as_ref().map(|r| r.as_str()) != Some(REPLY_TO) {
            return Ok(());
        }
        let Some((key, _)) = self.channels.get(&id).and_then(|c| c.reply_to.as_ref()) else {
            return Err(AmqpError::precondition_failed(
                "fast reply consumer does not exist",
            ));
        };
        let properties = (*message.properties).clone().with_reply_to(key.as_str().into());
        message.properties = Arc::new(properties);
        Ok(())
    }

    /// A reply to a reply address goes to its consumer; true if it was
    /// one (delivered, or dropped because the address is gone).
    pub(crate) fn deliver_reply(&self, message: &Arc<Message>) -> bool {
        let reply_address = message
            .routing_key
            .as_str()
            .strip_prefix(REPLY_TO)
            .is_some_and(|rest| rest.starts_with('.'));
        if !message.exchange.as_str().is_empty() || !reply_address {
            return false;
        }
        let target = self.vhost.replies().get(message.routing_key.as_str()).cloned();
        let Some(ReplyConsumer { consumer, inbox }) = target else {
            return true;
        };
        // Bounded like any consumer's deliveries: a requester that does not
        // read its replies loses them rather than growing the broker.
        let credit = weight_u32(message);
        if !consumer.credit.try_acquire_n(credit) {
            debug!(address = %message.routing_key, "direct reply dropped: its consumer is not reading");
            return true;
        }
        let _ = inbox.send(ConnEvent::Deliver(vec![Delivery {
            consumer,
            credit,
            msg_id: 0,
            message: message.clone(),
            redelivered: false,
        }]));
        true
    }
}
