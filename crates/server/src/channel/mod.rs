//! Channels: per-channel state, and the handlers of every method sent on a
//! channel. Channels are state owned by the connection task, not tasks, so
//! a channel's frames are handled strictly in order.
//!
//! Handlers live next to their AMQP class: [`exchange`], [`queue`],
//! [`basic`], and [`modes`] (confirm and tx). Each is a method of
//! [`Connection`] named `handle_<class>_<method>`, returning
//! `Result<(), AmqpError>`; the connection turns errors into closes.

pub(crate) mod ack_timeout;
mod basic;
mod exchange;
mod modes;
mod queue;
pub(crate) mod reply_to;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use amq_protocol::protocol::{access, channel, AMQPClass};
use warren_codec::{ContentAssembler, Message, Published};

use crate::connection::Connection;
use crate::events::ConsumerShared;
use crate::events::{ChannelListing, Enqueue, QueueCommand, QueueHandle};
use crate::gate::Gate;
use crate::stats::MessageCounters;
use crate::vhost::Queues;
use crate::AmqpError;

pub(crate) use modes::{Confirms, Transaction};

/// Whether a channel works normally or awaits close-ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Open.
    Open,
    /// The server sent channel.close; only close-ok (or close) matters now.
    Closing,
}

/// A delivered message awaiting ack, nack or reject.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub tag: u64,
    pub queue: Arc<QueueHandle>,
    pub msg_id: u64,
    /// The consumer it went to, whose prefetch slots it holds; None for basic.get.
    pub consumer: Option<Arc<ConsumerShared>>,
    /// When it times out ([`ack_timeout`]).
    pub deadline: Option<ack_timeout::Deadline>,
}

/// A published message with the queues it was routed to.
#[derive(Debug)]
pub(crate) struct Routed {
    /// basic.publish's mandatory flag: an unroutable message is returned.
    pub mandatory: bool,
    /// The message, shared by its queues.
    pub message: Arc<Message>,
    /// Where it goes; empty means unroutable.
    pub queues: Queues,
    /// The exchange's deduplication cache, if it has one.
    pub dedup: Option<crate::vhost::Dedup>,
}

/// What to do with settled messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// ack: the queue forgets them.
    Remove,
    /// reject/nack without requeue: the queue dead-letters or forgets them.
    Reject,
    /// reject/nack with requeue: back to their positions, redelivered.
    Requeue,
}

/// One channel's state.
#[derive(Debug)]
pub struct Channel {
    /// Open or closing.
    pub state: ChannelState,
    /// basic.publish content in progress.
    pub assembler: ContentAssembler,
    /// The body size its content header announced, counted in the
    /// connection's `partial_bytes` until the body is complete.
    pub(crate) partial_bytes: u64,
    last_delivery_tag: u64,
    /// Ordered by delivery tag (tags only grow).
    unacked: VecDeque<Unacked>,
    /// Consumers by tag.
    pub consumers: HashMap<String, Arc<ConsumerShared>>,
    /// basic.qos global=false: the limit given to consumers created next.
    pub(crate) consumer_prefetch: u32,
    /// basic.qos global=true: the limit all consumers of the channel share.
    pub(crate) channel_prefetch: Arc<Gate>,
    /// Publisher confirms, once confirm.select is seen.
    pub(crate) confirms: Option<Confirms>,
    /// The open transaction, once tx.select is seen.
    pub(crate) tx: Option<Transaction>,
    /// The queue most recently declared on this channel, which an empty
    /// queue name stands for (an AMQP 0-9-1 shortcut RabbitMQ keeps).
    pub(crate) last_queue: Option<String>,
    /// Its direct reply-to consumer: the reply address and the tag.
    pub(crate) reply_to: Option<(String, Arc<str>)>,
    /// Its `message_stats`, for the management API.
    pub(crate) counters: MessageCounters,
}

impl Channel {
    /// A newly opened channel.
    pub fn new() -> Self {
        Self {
            state: ChannelState::Open,
            assembler: ContentAssembler::default(),
            partial_bytes: 0,
            last_delivery_tag: 0,
            unacked: VecDeque::new(),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            channel_prefetch: Arc::new(Gate::new(0)),
            reply_to: None,
            confirms: None,
            tx: None,
            last_queue: None,
            counters: MessageCounters::default(),
        }
    }

    /// What the management API lists of it.
    pub(crate) fn listing(&self, number: u16) -> ChannelListing {
        ChannelListing {
            number,
            consumers: self.consumers.len() as u32,
            prefetch_count: self.consumer_prefetch,
            global_prefetch_count: self.channel_prefetch.limit(),
            unacked: self.unacked.len() as u32,
            unconfirmed: self.confirms.as_ref().map_or(0, |c| c.outstanding.len() as u32),
            confirm: self.confirms.is_some(),
            transactional: self.tx.is_some(),
            uncommitted: self.tx.as_ref().map_or((0, 0), |tx| {
                let acks = tx.settles.iter().map(|(entries, _)| entries.len()).sum::<usize>();
                (tx.publishes.len() as u32, acks as u32)
            }),
            counters: self.counters,
        }
    }

    /// spec: delivery tags start at 1 and grow by one per delivery.
    pub(crate) fn next_delivery_tag(&mut self) -> u64 {
        self.last_delivery_tag += 1;
        self.last_delivery_tag
    }

    pub(crate) fn track_unacked(
        &mut self,
        tag: u64,
        queue: Arc<QueueHandle>,
        msg_id: u64,
        consumer: Option<Arc<ConsumerShared>>,
        deadline: Option<ack_timeout::Deadline>,
    ) {
        self.unacked.push_back(Unacked {
            tag,
            queue,
            msg_id,
            consumer,
            deadline,
        });
    }

    pub(crate) fn take_all_unacked(&mut self) -> Vec<Unacked> {
        self.unacked.drain(..).collect()
    }

    /// Removes the unacked entries an ack/nack/reject names. With
    /// `multiple`, every entry up to and including `tag`; tag 0 with
    /// `multiple` means all (spec). The tag itself must be outstanding, or it
    /// is 406 PRECONDITION_FAILED, as in RabbitMQ.
    pub(crate) fn take_unacked(&mut self, tag: u64, multiple: bool) -> Result<Vec<Unacked>, AmqpError> {
        if multiple && tag == 0 {
            return Ok(self.take_all_unacked());
        }
        let at = self
            .unacked
            .binary_search_by_key(&tag, |u| u.tag)
            .map_err(|_| AmqpError::precondition_failed(format!("unknown delivery tag {tag}")))?;
        Ok(if multiple {
            self.unacked.drain(..=at).collect()
        } else {
            self.unacked.remove(at).into_iter().collect()
        })
    }

    /// The tag of a consumer asked for with `requested`: it, or a fresh
    /// `amq.ctag-…` for an empty one. One already used on this channel is
    /// RabbitMQ's 530, which closes the connection.
    pub(crate) fn new_consumer_tag(&self, requested: &str) -> Result<String, AmqpError> {
        let tag = match requested {
            "" => format!("amq.ctag-{}", crate::vhost::random_suffix()),
            tag => tag.to_owned(),
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        Ok(tag)
    }

    /// Resolves a queue name, where empty means the last declared queue.
    pub(crate) fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        match (name, &self.last_queue) {
            ("", Some(last)) => Ok(last.clone()),
            ("", None) => Err(AmqpError::not_found("no previously declared queue")),
            (name, _) => Ok(name.to_owned()),
        }
    }

    /// Puts entries back (tx.rollback), keeping tag order.
    pub(crate) fn restore_unacked(&mut self, entries: Vec<Unacked>) {
        self.unacked.extend(entries);
        self.unacked.make_contiguous().sort_by_key(|u| u.tag);
    }
}

/// Items for queues, one batch per queue in the order the queues first
/// came: the publishes (routed messages) and acks (message ids) a
/// connection hands over once per batch of frames.
#[derive(Debug)]
pub(crate) struct QueueBatches<T> {
    batches: Vec<(Arc<QueueHandle>, Vec<T>)>,
    /// Where each queue's batch is, once there are too many to scan: a
    /// fanout to thousands of queues, or a multiple ack over thousands of
    /// queues, would otherwise scan every batch for every item.
    index: HashMap<u64, usize>,
}

/// Routed messages not yet handed to their queues.
pub(crate) type PendingPublishes = QueueBatches<Enqueue>;

impl<T> Default for QueueBatches<T> {
    fn default() -> Self {
        Self {
            batches: Vec::new(),
            index: HashMap::new(),
        }
    }
}

/// Batches found by a scan; past this many, by the index.
const SCAN: usize = 16;

impl<T> QueueBatches<T> {
    /// Adds an item to `queue`'s batch.
    pub(crate) fn push(&mut self, queue: &Arc<QueueHandle>, item: T) {
        let at = if self.batches.len() <= SCAN {
            self.batches.iter().position(|(q, _)| q.id == queue.id)
        } else {
            // Index the batches added since the index was last used.
            for (i, (q, _)) in self.batches.iter().enumerate().skip(self.index.len()) {
                self.index.insert(q.id, i);
            }
            self.index.get(&queue.id).copied()
        };
        match at {
            Some(i) => self.batches[i].1.push(item),
            None => self.batches.push((queue.clone(), vec![item])),
        }
    }

    /// Every batch, leaving none.
    pub(crate) fn take(&mut self) -> Vec<(Arc<QueueHandle>, Vec<T>)> {
        self.index.clear();
        std::mem::take(&mut self.batches)
    }
}

/// Adds each entry's message id to its queue's batch.
fn group_by_queue(by_queue: &mut QueueBatches<u64>, entries: Vec<Unacked>) {
    for entry in entries {
        by_queue.push(&entry.queue, entry.msg_id);
    }
}

impl Default for Channel {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    /// [`Channel::queue_name`] for an open channel.
    pub(crate) fn queue_name(&self, id: u16, name: &str) -> Result<String, AmqpError> {
        self.channels.get(&id).expect("open channel").queue_name(name)
    }

    /// Dispatches a method on an open channel.
    pub(crate) async fn handle_method(&mut self, id: u16, method: AMQPClass) -> Result<(), AmqpError> {
        use amq_protocol::protocol::{basic as b, confirm as c, exchange as e, queue as q, tx as t};
        if !matches!(
            method,
            AMQPClass::Basic(b::AMQPMethod::Publish(_) | b::AMQPMethod::Ack(_))
        ) {
            self.flush_publishes().await;
            self.flush_acks().await;
        }
        if !matches!(method, AMQPClass::Basic(b::AMQPMethod::Publish(_))) {
            // Confirms go out before the reply to whatever follows a publish.
            self.flush_channel_confirms(id).await;
        }
        match method {
            AMQPClass::Channel(m) => self.handle_channel_method(id, m).await,
            AMQPClass::Exchange(e::AMQPMethod::Declare(m)) => self.handle_exchange_declare(id, m).await,
            AMQPClass::Exchange(e::AMQPMethod::Delete(m)) => self.handle_exchange_delete(id, m).await,
            AMQPClass::Exchange(e::AMQPMethod::Bind(m)) => self.handle_exchange_bind(id, m).await,
            AMQPClass::Exchange(e::AMQPMethod::Unbind(m)) => self.handle_exchange_unbind(id, m).await,
            AMQPClass::Queue(q::AMQPMethod::Declare(m)) => self.handle_queue_declare(id, m).await,
            AMQPClass::Queue(q::AMQPMethod::Bind(m)) => self.handle_queue_bind(id, m).await,
            AMQPClass::Queue(q::AMQPMethod::Unbind(m)) => self.handle_queue_unbind(id, m).await,
            AMQPClass::Queue(q::AMQPMethod::Purge(m)) => self.handle_queue_purge(id, m).await,
            AMQPClass::Queue(q::AMQPMethod::Delete(m)) => self.handle_queue_delete(id, m).await,
            AMQPClass::Basic(b::AMQPMethod::Qos(m)) => self.handle_basic_qos(id, m).await,
            AMQPClass::Basic(b::AMQPMethod::Consume(m)) => self.handle_basic_consume(id, m).await,
            AMQPClass::Basic(b::AMQPMethod::Cancel(m)) => self.handle_basic_cancel(id, m).await,
            AMQPClass::Basic(b::AMQPMethod::Publish(m)) => self.handle_basic_publish(id, m),
            AMQPClass::Basic(b::AMQPMethod::Get(m)) => self.handle_basic_get(id, m).await,
            AMQPClass::Basic(b::AMQPMethod::Ack(m)) => {
                self.handle_basic_settle(id, m.delivery_tag, m.multiple, Settle::Remove)
                    .await
            }
            AMQPClass::Basic(b::AMQPMethod::Reject(m)) => {
                let how = if m.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.handle_basic_settle(id, m.delivery_tag, false, how).await
            }
            AMQPClass::Basic(b::AMQPMethod::Nack(m)) => {
                let how = if m.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.handle_basic_settle(id, m.delivery_tag, m.multiple, how)
                    .await
            }
            AMQPClass::Basic(b::AMQPMethod::Recover(m)) => {
                self.handle_basic_recover(id, m.requeue, true).await
            }
            AMQPClass::Basic(b::AMQPMethod::RecoverAsync(m)) => {
                self.handle_basic_recover(id, m.requeue, false).await
            }
            AMQPClass::Confirm(c::AMQPMethod::Select(m)) => self.handle_confirm_select(id, m).await,
            AMQPClass::Tx(t::AMQPMethod::Select(_)) => self.handle_tx_select(id).await,
            AMQPClass::Tx(t::AMQPMethod::Commit(_)) => self.handle_tx_commit(id).await,
            AMQPClass::Tx(t::AMQPMethod::Rollback(_)) => self.handle_tx_rollback(id).await,
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    id,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                )
                .await;
                Ok(())
            }
            // Connection methods on a channel, and methods only a server sends
            // (deliver, get-ok, declare-ok, …).
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    async fn handle_channel_method(&mut self, id: u16, method: channel::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            channel::AMQPMethod::Open(_) => Err(AmqpError::channel_error("second 'channel.open' seen")),
            channel::AMQPMethod::Flow(flow) => {
                // Clients asking the server to pause deliveries is not supported by
                // RabbitMQ either; acknowledging active=true is.
                if !flow.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })),
                )
                .await;
                Ok(())
            }
            channel::AMQPMethod::Close(_) => {
                self.release_channel(id).await;
                self.remove_channel(id);
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                )
                .await;
                Ok(())
            }
            // A close-ok for a close we never sent, or a server-only method.
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    /// Releases the prefetch slots held by settled or requeued entries; the
    /// gates wake the queues that were waiting for them.
    pub(crate) fn release_slots(entries: &[Unacked]) {
        for consumer in entries.iter().filter_map(|e| e.consumer.as_ref()) {
            consumer.prefetch.release(1);
            consumer.channel_prefetch.release(1);
        }
    }

    /// Tells queues what became of their messages, one command per queue.
    pub(crate) async fn settle(&mut self, entries: Vec<Unacked>, how: Settle) {
        Self::release_slots(&entries);
        let mut by_queue = QueueBatches::default();
        group_by_queue(&mut by_queue, entries);
        for (queue, ids) in by_queue.take() {
            let command = match how {
                Settle::Remove => QueueCommand::Ack(ids),
                Settle::Reject => QueueCommand::Reject(ids),
                Settle::Requeue => QueueCommand::Requeue {
                    ids,
                    redelivered: true,
                },
            };
            queue.send(command).await;
        }
    }

    /// Acks of basic.ack, held until the end of this batch of frames (or
    /// the next method that is not a publish or an ack), so that a client
    /// acking each message costs each queue one command per socket read.
    /// Prefetch slots are freed at once. Nothing can observe the delay: an
    /// acked message is no longer ready, and is no longer in the channel's
    /// unacked list, whichever way the queue hears of it.
    pub(crate) fn defer_acks(&mut self, entries: Vec<Unacked>) {
        Self::release_slots(&entries);
        group_by_queue(&mut self.pending_acks, entries);
    }

    /// Sends the acks held by [`Connection::defer_acks`].
    pub(crate) async fn flush_acks(&mut self) {
        for (queue, ids) in self.pending_acks.take() {
            queue.send(QueueCommand::Ack(ids)).await;
        }
    }

    pub(crate) async fn handle_published(&mut self, id: u16, published: Published) -> Result<(), AmqpError> {
        let routed = self.route(id, published)?;
        let channel = self.channels.get_mut(&id).expect("an open channel");
        channel.counters.publish += 1;
        match channel.tx.as_mut() {
            Some(tx) => tx.publishes.push(routed),
            None => self.enqueue(id, routed, None).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;

    fn enqueue(n: u8) -> Enqueue {
        Enqueue {
            message: Arc::new(Message {
                exchange: "".into(),
                routing_key: "k".into(),
                properties: BasicProperties::default().into(),
                body: vec![n].into(),
            }),
            stored: None,
            confirm: None,
        }
    }

    #[test]
    fn queue_batches_keep_one_batch_per_queue_past_the_scan() {
        let queues: Vec<_> = (0..100)
            .map(|i| {
                let name = format!("q{i}").as_str().into();
                QueueHandle::new(name, i, None, None, false, Default::default(), Default::default()).0
            })
            .collect();
        let mut pending = PendingPublishes::default();
        for round in 0..3u8 {
            for q in &queues {
                pending.push(q, enqueue(round));
            }
        }
        let batches = pending.take();
        assert_eq!(batches.len(), 100);
        for (i, (q, batch)) in batches.iter().enumerate() {
            assert_eq!(q.id, i as u64);
            let bodies: Vec<u8> = batch.iter().map(|e| e.message.body[0]).collect();
            assert_eq!(bodies, [0, 1, 2]);
        }
        assert!(pending.take().is_empty());
        pending.push(&queues[5], enqueue(9));
        assert_eq!(pending.take().len(), 1);
    }
}
