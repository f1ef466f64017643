//! The basic class: qos, consume, cancel, publish, get, ack/nack/reject, recover.

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use warren_codec::{Message, Published};

use super::ack_timeout::Deadline;
use super::reply_to::REPLY_TO;
use super::{ChannelState, Routed, Settle};
use crate::connection::Connection;
use crate::delayed::Copies;
use crate::events::ConfirmTracker;
use crate::events::ConsumerShared;
use crate::events::{Decision, Enqueue, QueueCommand};
use crate::gate::{Gate, CREDIT};
use crate::permissions::{Permission, Resource};
use crate::queue::args::ConsumeArgs;
use crate::queue::expiry::parse_expiration;
use crate::vhost::Queues;
use crate::AmqpError;

const PUBLISH: (u16, u16) = (60, 40);
/// Octets of message bodies the store's thread may have to write (for all
/// connections together) before a publishing connection waits for it: two
/// of its rounds' worth of 1 KiB messages.
const STORE_CREDIT: u64 = 32 << 20;

impl Connection {
    fn open_channel(&mut self, id: u16) -> &mut super::Channel {
        self.channels
            .get_mut(&id)
            .expect("handlers run only for open channels")
    }

    pub(crate) async fn handle_basic_qos(&mut self, id: u16, m: basic::Qos) -> Result<(), AmqpError> {
        let count = u32::from(m.prefetch_count);
        let channel = self.open_channel(id);
        // RabbitMQ 3.x: global=false limits each consumer created after this;
        // global=true limits the channel's consumers together, at once.
        if m.global {
            channel.channel_prefetch.set_limit(count);
        } else {
            channel.consumer_prefetch = count;
        }
        self.send(id, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            .await;
        Ok(())
    }

    pub(crate) async fn handle_basic_consume(&mut self, id: u16, m: basic::Consume) -> Result<(), AmqpError> {
        if m.queue.as_str() == REPLY_TO {
            return self.consume_reply_to(id, m).await;
        }
        let queue_name = self.queue_name(id, m.queue.as_str())?;
        self.access
            .check(Permission::Read, Resource::Queue, &queue_name)?;
        let queue = self.vhost.queue(&queue_name, self.id)?;
        let args = ConsumeArgs::parse(&m.arguments, queue_name.as_str(), &self.vhost.name)?;
        let ack_timeout = self.ack_timeout(args.timeout, &queue);
        let channel = self.open_channel(id);
        let tag = channel.new_consumer_tag(m.consumer_tag.as_str())?;
        let consumer = Arc::new(ConsumerShared {
            tag: tag.as_str().into(),
            channel: id,
            queue: queue.clone(),
            no_ack: m.no_ack,
            ack_timeout,
            prefetch: Gate::new(channel.consumer_prefetch),
            channel_prefetch: channel.channel_prefetch.clone(),
            credit: Gate::new(CREDIT),
        });
        // Registered before the queue can deliver: deliveries are handled by
        // this task only after this handler returns.
        channel.consumers.insert(tag.clone(), consumer.clone());
        let inbox = self.inbox.clone();
        let accepted = queue
            .ask(|reply| QueueCommand::Consume {
                consumer: consumer.clone(),
                exclusive: m.exclusive,
                priority: args.priority,
                inbox,
                reply,
            })
            .await
            .unwrap_or_else(|| {
                Err(AmqpError::not_found(format!(
                    "no queue '{queue_name}' in vhost '{}'",
                    self.vhost.name
                )))
            });
        if let Err(e) = accepted {
            self.open_channel(id).consumers.remove(&tag);
            return Err(e);
        }
        self.consume_ok(id, m.nowait, &tag).await;
        Ok(())
    }

    /// basic.consume-ok, unless nowait.
    pub(crate) async fn consume_ok(&self, id: u16, nowait: bool, tag: &str) {
        let ok = basic::ConsumeOk {
            consumer_tag: tag.into(),
        };
        self.reply(id, nowait, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)))
            .await;
    }

    pub(crate) async fn handle_basic_cancel(&mut self, id: u16, m: basic::Cancel) -> Result<(), AmqpError> {
        // Cancelling an unknown tag is not an error (RabbitMQ replies cancel-ok).
        if let Some(consumer) = self.open_channel(id).consumers.remove(m.consumer_tag.as_str()) {
            self.forget_reply_to(id, &consumer.tag);
            consumer.queue.send(QueueCommand::Cancel(consumer.clone())).await;
        }
        self.reply(
            id,
            m.nowait,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: m.consumer_tag,
            })),
        )
        .await;
        Ok(())
    }

    /// basic.publish starts content assembly; the message is routed once its
    /// body is complete ([`Connection::publish`]).
    pub(crate) fn handle_basic_publish(&mut self, id: u16, m: basic::Publish) -> Result<(), AmqpError> {
        let channel = self.open_channel(id);
        channel
            .assembler
            .start(m)
            .map_err(|e| AmqpError::unexpected_frame(e.to_string()))
    }

    /// Routes a complete message: the checks RabbitMQ makes once the content
    /// has arrived (immediate, exchange exists, not internal), and the queues
    /// it goes to. In a transaction this happens at publish time too; only
    /// the hand-over to the queues waits for commit.
    pub(crate) fn route(&mut self, id: u16, published: Published) -> Result<Routed, AmqpError> {
        let Published {
            mandatory,
            immediate,
            mut message,
        } = published;
        if immediate {
            return Err(AmqpError::not_implemented("immediate=true").for_method(PUBLISH.0, PUBLISH.1));
        }
        self.check_publish(&message)
            .map_err(|e| e.for_method(PUBLISH.0, PUBLISH.1))?;
        if let Some(expiration) = message.properties.expiration() {
            if let Err(why) = parse_expiration(expiration.as_str()) {
                let invalid =
                    AmqpError::precondition_failed(format!("invalid expiration '{expiration}': {why}"));
                let first = self.vhost.publishable(message.exchange.as_str()).err();
                return Err(first.unwrap_or(invalid).for_method(PUBLISH.0, PUBLISH.1));
            }
        }
        self.address_reply_to(id, &mut message)
            .map_err(|e| e.for_method(PUBLISH.0, PUBLISH.1))?;
        let message = Arc::new(message);
        if self.deliver_reply(&message) {
            return Ok(Routed {
                mandatory: false,
                message,
                queues: Vec::new().into(),
                dedup: None,
            });
        }
        let (queues, dedup) = self
            .vhost
            .route(&mut self.route_cache, &message)
            .map_err(|e| e.for_method(PUBLISH.0, PUBLISH.1))?;
        // (`publish` is counted by the caller, which has the channel at hand.)
        if queues.is_empty() {
            let counters = &mut self.open_channel(id).counters;
            match mandatory {
                true => counters.return_unroutable += 1,
                false => counters.drop_unroutable += 1,
            }
        }
        Ok(Routed {
            mandatory,
            message,
            queues,
            dedup,
        })
    }

    fn check_publish(&mut self, message: &Message) -> Result<(), AmqpError> {
        self.access.check_publish(&self.vhost, message)
    }

    /// Hands a routed message to its queues (or returns it, if mandatory and
    /// unroutable) and confirms it: at once if held in memory only, after the
    /// store's group commit if persistent and routed to durable queues (see
    /// [`crate::durability`]). In a commit, its write is added to the
    /// commit's wait instead.
    pub(crate) async fn enqueue(
        &mut self,
        id: u16,
        routed: Routed,
        commit: Option<&Arc<ConfirmTracker>>,
    ) -> Result<(), AmqpError> {
        let Routed {
            mandatory,
            message,
            queues,
            dedup,
        } = routed;
        // An exchange that deduplicates decides here, as the message goes
        // to its queues (at commit, in a transaction): a duplicate goes
        // nowhere, and is confirmed, not returned ([`crate::dedup`]).
        let duplicate =
            dedup.is_some_and(|dedup| dedup.lock().unwrap_or_else(|e| e.into_inner()).admit(&message));
        let (mandatory, queues) = match duplicate {
            true => (false, Queues::from(Vec::new())),
            false => (mandatory, queues),
        };
        if queues.is_empty() && mandatory {
            let returned = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }));
            self.send_content(id, returned, message.clone()).await;
        }
        // Stored for a durable queue if persistent; for a quorum queue (or
        // a durable delayed exchange's) always. A delayed exchange's queue
        // holds a copy of its own, so there may be two writes.
        let copies = Copies::new(message, &queues);
        let writes = copies.to_store(&queues);
        let mut tracker: Option<Arc<ConfirmTracker>> = None;
        if let (Some(commit), false) = (commit, writes.is_empty()) {
            for _ in &writes {
                commit.add_one();
            }
            tracker = Some(commit.clone());
        }
        // A publisher confirm waits for the store's write, and for the
        // decision of every queue that may refuse the message.
        let mut deciding: Option<Arc<ConfirmTracker>> = None;
        if let Some(confirms) = self.channels.get_mut(&id).and_then(|c| c.confirms.as_mut()) {
            confirms.published += 1;
            let decisions = queues.iter().filter(|q| q.rejects_publish).count();
            let waits = writes.len() + decisions;
            if waits > 0 {
                confirms.outstanding.insert(confirms.published);
                let confirm =
                    ConfirmTracker::new((id, confirms.epoch, confirms.published), self.inbox.clone());
                for _ in 1..waits {
                    confirm.add_one();
                }
                deciding = (decisions > 0).then(|| confirm.clone());
                tracker = (!writes.is_empty()).then_some(confirm);
            }
            if !self.pending_confirms.contains(&id) {
                self.pending_confirms.push(id);
            }
        }
        // Stored once, for all its durable queues, before any of them has
        // it: what a queue later tells the store about it comes after.
        self.stored_since_flush |= !writes.is_empty();
        let confirm = tracker.map(|t| t as Arc<dyn warren_store::Durable>);
        let written = copies.write(&self.vhost.store, writes, confirm);
        for queue in queues.iter() {
            let enqueue = Enqueue {
                message: copies.of(queue).clone(),
                stored: copies.stored_for(queue, &written),
                confirm: deciding
                    .clone()
                    .filter(|_| queue.rejects_publish)
                    .map(Decision::new),
            };
            self.pending_publishes.push(queue, enqueue);
        }
        Ok(())
    }

    /// Hands each queue the messages routed to it since the last flush, in
    /// one command. Called at the end of every batch of frames, and before
    /// any method other than a publish, so that nothing a client does next
    /// (a get, a purge, a declare's count, a commit) can miss them.
    pub(crate) async fn flush_publishes(&mut self) {
        for (queue, batch) in self.pending_publishes.take() {
            let Err(returned) = queue.try_send_publish(batch).await else {
                continue;
            };
            // Deleted meanwhile: it will never hold them (RabbitMQ confirms
            // a message whose queue is deleted; the store does).
            let mut ids = Vec::new();
            for enqueue in returned {
                if let Some(confirm) = enqueue.confirm {
                    confirm.accept();
                }
                ids.extend(enqueue.stored);
            }
            if let Some(store_id) = queue.store_id {
                self.vhost.store.settle(store_id, ids);
            }
        }
        // A publisher faster than the disk waits for the store's thread to
        // catch up before it reads more: what it sent is in memory until
        // written. Only a connection that stored something waits (consumers
        // keep draining). The store never waits on a connection, so this
        // cannot deadlock.
        if std::mem::take(&mut self.stored_since_flush) && self.vhost.store.unwritten() > STORE_CREDIT {
            let (done, written) = tokio::sync::oneshot::channel();
            self.vhost.store.barrier(ConfirmTracker::commit(done));
            let _ = written.await;
        }
    }

    pub(crate) async fn handle_basic_get(&mut self, id: u16, m: basic::Get) -> Result<(), AmqpError> {
        let name = self.queue_name(id, m.queue.as_str())?;
        self.access.check(Permission::Read, Resource::Queue, &name)?;
        let queue = self.vhost.queue(&name, self.id)?;
        let got = queue
            .ask(|reply| QueueCommand::Get {
                no_ack: m.no_ack,
                reply,
            })
            .await
            .flatten();
        let Some(got) = got else {
            self.send(
                id,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            )
            .await;
            return Ok(());
        };
        let channel = self.open_channel(id);
        match m.no_ack {
            true => channel.counters.get_no_ack += 1,
            false => channel.counters.get += 1,
        }
        channel.counters.redeliver += u64::from(got.redelivered);
        let delivery_tag = channel.next_delivery_tag();
        if !m.no_ack {
            let deadline = Deadline::of(self.ack_timeout(None, &queue));
            self.open_channel(id)
                .track_unacked(delivery_tag, queue, got.msg_id, None, deadline);
            self.watch_deadline(deadline);
        }
        let method = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.clone(),
            routing_key: got.message.routing_key.clone(),
            message_count: got.remaining,
        }));
        self.send_content(id, method, got.message).await;
        Ok(())
    }

    /// basic.ack, basic.nack and basic.reject. In a transaction the outcome
    /// waits for tx.commit; the tag is checked now, as RabbitMQ does.
    pub(crate) async fn handle_basic_settle(
        &mut self,
        id: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
    ) -> Result<(), AmqpError> {
        let channel = self.open_channel(id);
        let entries = channel.take_unacked(tag, multiple)?;
        if let Settle::Remove = how {
            channel.counters.ack += entries.len() as u64;
        }
        if let Some(tx) = channel.tx.as_mut() {
            tx.settles.push((entries, how));
            return Ok(());
        }
        match how {
            Settle::Remove => self.defer_acks(entries),
            Settle::Reject | Settle::Requeue => self.settle(entries, how).await,
        }
        Ok(())
    }

    /// basic.recover / recover-async with requeue=true: every unacked message
    /// of the channel goes back to its queue, redelivered.
    pub(crate) async fn handle_basic_recover(
        &mut self,
        id: u16,
        requeue: bool,
        reply: bool,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let entries = self.open_channel(id).take_all_unacked();
        self.settle(entries, Settle::Requeue).await;
        if reply {
            self.send(
                id,
                AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            )
            .await;
        }
        Ok(())
    }

    /// Sends the confirms of every channel that published in this batch.
    pub(crate) async fn flush_confirms(&mut self) {
        for id in std::mem::take(&mut self.pending_confirms) {
            self.flush_channel_confirms(id).await;
        }
    }

    /// Settles every publish confirmed since the last flush, in order:
    /// runs of acks as one `multiple` basic.ack each, and a basic.nack for
    /// each message a queue refused.
    pub(crate) async fn flush_channel_confirms(&mut self, id: u16) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        if channel.state != ChannelState::Open {
            return;
        }
        let Some(confirms) = channel.confirms.as_mut() else {
            return;
        };
        let confirmable = confirms.confirmable();
        if confirmable <= confirms.acked {
            return;
        }
        let from = confirms.acked;
        // The usual case, nothing refused: one ack, no list to build.
        if confirms.nacked.is_empty() {
            confirms.acked = confirmable;
            channel.counters.confirm += confirmable - from;
            self.send(id, ack(confirmable, confirmable - from > 1)).await;
            return;
        }
        let mut replies = Vec::new();
        let mut from = from;
        let mut nacks = 0;
        let nacked: Vec<u64> = confirms.nacked.range(..=confirmable).copied().collect();
        for seq in nacked {
            nacks += 1;
            confirms.nacked.remove(&seq);
            if seq > from + 1 {
                replies.push(ack(seq - 1, seq - 1 - from > 1));
            }
            replies.push(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: seq,
                multiple: false,
                requeue: false,
            })));
            from = seq;
        }
        if confirmable > from {
            replies.push(ack(confirmable, confirmable - from > 1));
        }
        channel.counters.confirm += confirmable - confirms.acked - nacks;
        confirms.acked = confirmable;
        for reply in replies {
            self.send(id, reply).await;
        }
    }
}

fn ack(delivery_tag: u64, multiple: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag,
        multiple,
    }))
}
