//! The types that cross tasks: what connections ask of queues, what queues
//! send back, and what both share. They live here, at the bottom of the
//! crate, so that the tasks that exchange them depend on this module rather
//! than on each other: `connection → channel → vhost → queue`, and each of
//! them `→ events`.
//!
//! - [`QueueHandle`] and [`QueueCommand`]: how to reach a queue actor.
//! - [`ConnEvent`] and [`Delivery`]: what a queue actor sends a connection.
//! - [`ConsumerShared`]: one consumer as its queue and its channel both see it.
//! - [`ConfirmTracker`]: a durability wait (a publisher confirm, or a
//!   tx.commit), released by the store's group commit ([`crate::durability`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::types::FieldTable;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use warren_codec::Message;
use warren_router::QueueName;

use crate::gate::{Gate, Wake};
use crate::stats::{Flows, MessageCounters};
use crate::AmqpError;

/// Where a queue actor takes itself off when it is deleted (auto-delete,
/// queue.delete) or crashes: its virtual host. A trait, so that queues do
/// not depend on the virtual host that owns them.
pub trait QueueRegistry: Send + Sync {
    /// The queue with this name and id is gone: forget it, its bindings and
    /// (if durable) its stored definition and messages.
    fn forget_queue(&self, name: &QueueName, id: u64);
    /// The queue's actor crashed: forget it in memory only, keeping what is
    /// stored for the next start.
    fn drop_crashed_queue(&self, name: &QueueName, id: u64);
    /// Routes messages a queue dead-lettered (each already addressed to its
    /// dead-letter exchange and routing key) and hands them to their queues
    /// without waiting ([`crate::queue::dead_letter`]).
    fn dead_letter(&self, messages: Vec<Arc<Message>>);
    /// Routes messages a delayed exchange held, now due, from that exchange
    /// ([`crate::delayed`]), and hands them to their queues without waiting;
    /// unless `queue` (by id) is no longer the exchange's queue of held
    /// messages: the exchange was deleted, what it held goes with it, even
    /// if one of the same name was declared since.
    fn release_delayed(&self, exchange: &str, queue: u64, messages: Vec<Arc<Message>>);
}

/// Commands a queue accepts before it makes their senders wait.
const INBOX: usize = 4096;
/// Octets of published messages (see [`weight`]) waiting in a queue's inbox
/// before its publishers wait: the queue's credit. A queue gives credit back
/// as it takes messages in, whatever it then does with them, so it never
/// waits on a publisher (RabbitMQ's credit flow works the same way, in
/// messages: 400 per link).
pub(crate) const PUBLISH_CREDIT: usize = 1 << 20;
/// How long a paced queue (see [`Inbox::recv`]) holds a publish batch at
/// most. With [`PUBLISH_CREDIT`] this sets the least a paced queue takes in:
/// 1 MiB per 10 ms, 100 MiB/s, whatever its consumers do.
const HOLD: Duration = Duration::from_millis(10);
/// What a message costs in memory beside its body (entry, `Arc`, shared
/// properties), so that credit also bounds floods of empty messages.
pub(crate) const MESSAGE_OVERHEAD: usize = 128;

/// What a message weighs for credit and the in-memory head: its body and
/// a fixed overhead.
pub(crate) fn weight(message: &Message) -> usize {
    message.body.len() + MESSAGE_OVERHEAD
}

/// How to reach a queue, and the properties fixed at declare time.
#[derive(Debug)]
pub struct QueueHandle {
    /// Its name.
    pub name: QueueName,
    /// Unique per queue ever created, so a redeclared queue of the same name
    /// is never mistaken for the old one.
    pub id: u64,
    /// Whether it survives a restart.
    pub durable: bool,
    /// Its id in the store, if durable: persistent messages name it.
    pub store_id: Option<u64>,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Whether it is deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Whether it refuses publishes when full (`x-overflow` `reject-publish`
    /// or `reject-publish-dlx` with a length limit): its publishers'
    /// confirms then wait for its decision.
    pub rejects_publish: bool,
    /// Whether the store keeps every message routed to it, persistent or
    /// not (a quorum queue).
    pub stores_every_message: bool,
    /// `x-consumer-timeout`: how long its deliveries may stay unacked, in
    /// milliseconds, instead of the broker's default.
    pub consumer_timeout: Option<u64>,
    /// Whether it is a delayed exchange's queue ([`crate::delayed`]): it
    /// holds messages stamped with their due time.
    pub delays: bool,
    tx: mpsc::Sender<QueueCommand>,
    /// Unbounded: [`QueueHandle::publish_credit`] bounds what it holds.
    publish_tx: mpsc::UnboundedSender<PublishBatch>,
    publish_credit: Arc<Semaphore>,
}

/// Messages a connection hands a queue after one socket read, with the
/// queue's credit they hold until the queue takes them in.
#[derive(Debug)]
pub(crate) struct PublishBatch {
    messages: Vec<Enqueue>,
    /// When it entered the inbox.
    sent: Instant,
    /// None for dead-lettered messages, which a queue sends without
    /// waiting ([`QueueHandle::send_dead_lettered`]).
    _credit: Option<OwnedSemaphorePermit>,
}

/// What a queue actor reads. Publishes come on an inbox of their own, so
/// that acks, wake-ups and consumers' commands never wait behind a backlog
/// of publishes: a consumer whose acks queued behind thousands of batches
/// would starve while its queue grew.
///
/// **Pacing.** A queue whose consumers are taking messages but whose ready
/// messages in memory are past its head ([`crate::queue`]) is *paced*: it
/// leaves publish batches in the inbox, holding their credit, until its
/// consumers bring it back under its head, or for [`HOLD`] at most. At
/// saturation the publishers then go as fast as the consumers, and the
/// backlog (and so latency) stays at the head, instead of publishers taking
/// the CPU that consumers need and the backlog growing for as long as they
/// publish. The time limit keeps a queue a buffer: a slow consumer slows
/// its publishers to no less than 100 MiB/s (more than RabbitMQ takes in on
/// this machine), and a queue that waits for acks from a connection that is
/// itself waiting for this queue's credit cannot deadlock.
#[derive(Debug)]
pub(crate) struct Inbox {
    commands: mpsc::Receiver<QueueCommand>,
    publishes: mpsc::UnboundedReceiver<PublishBatch>,
    publish_credit: Arc<Semaphore>,
    /// The oldest publish batch, taken out of `publishes` by a paced queue
    /// to wait for its time.
    held: Option<PublishBatch>,
    /// Messages the store read back for this queue. Unbounded: the queue
    /// asks for one batch at a time.
    loaded: mpsc::UnboundedReceiver<Loaded>,
    loader: mpsc::UnboundedSender<Loaded>,
}

/// Messages read back from the store: (lane, queue position, store id,
/// message).
pub(crate) type Loaded = Vec<(u8, u64, u64, Result<Message, warren_store::StoreError>)>;

impl Inbox {
    /// The next input, commands first; None once every handle is gone.
    /// `paced`: whether the queue holds publishes back (see [`Inbox`]).
    /// `wake_at`: when the queue has something to do of its own (expire
    /// its head); it gets a [`QueueCommand::Wake`] then.
    pub async fn recv(&mut self, paced: bool, wake_at: Option<Instant>) -> Option<QueueCommand> {
        loop {
            if let Some(batch) = self.held.take_if(|b| !paced || b.sent.elapsed() >= HOLD) {
                return Some(QueueCommand::Publish(batch.messages));
            }
            let due = self.held.as_ref().map(|b| b.sent + HOLD);
            tokio::select! {
                biased;
                // The loader's sender is kept here, so this branch never ends.
                Some(loaded) = self.loaded.recv() => return Some(QueueCommand::Loaded(loaded)),
                command = self.commands.recv() => return match command {
                    Some(command) => Some(command),
                    // Every handle is gone: the publishes already in, then the end.
                    None => match self.held.take() {
                        Some(batch) => Some(QueueCommand::Publish(batch.messages)),
                        None => self.publishes.recv().await.map(|b| QueueCommand::Publish(b.messages)),
                    },
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
                () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {
                    return Some(QueueCommand::Wake);
                }
                Some(batch) = self.publishes.recv(), if self.held.is_none() => self.held = Some(batch),
            }
        }
    }

    /// An input already waiting, commands first.
    pub fn try_recv(&mut self, paced: bool) -> Option<QueueCommand> {
        if let Ok(loaded) = self.loaded.try_recv() {
            return Some(QueueCommand::Loaded(loaded));
        }
        if let Ok(command) = self.commands.try_recv() {
            return Some(command);
        }
        if self.held.is_none() {
            self.held = self.publishes.try_recv().ok();
        }
        self.held
            .take_if(|b| !paced || b.sent.elapsed() >= HOLD)
            .map(|b| QueueCommand::Publish(b.messages))
    }

    /// A publish batch already waiting, paced or not. A command that looks
    /// at the backlog (get, purge, counts, delete) takes these first: its
    /// connection handed over every publish it made before sending the
    /// command.
    pub fn try_recv_publish(&mut self) -> Option<Vec<Enqueue>> {
        let batch = self.held.take().or_else(|| self.publishes.try_recv().ok())?;
        Some(batch.messages)
    }

    /// Whether anything is waiting that [`Inbox::try_recv`] would return now.
    pub fn has_waiting(&self, paced: bool) -> bool {
        !self.commands.is_empty()
            || !self.loaded.is_empty()
            || (!paced && (self.held.is_some() || !self.publishes.is_empty()))
    }

    /// Where the store sends messages it reads back for this queue.
    pub fn loader(&self) -> mpsc::UnboundedSender<Loaded> {
        self.loader.clone()
    }

    /// Refuses anything more; what is already in is still received, and
    /// publishers waiting for credit are turned away.
    pub fn close(&mut self) {
        self.commands.close();
        self.publishes.close();
        self.publish_credit.close();
    }

    /// The commands side, for tests that stand in for an actor.
    #[cfg(test)]
    pub fn commands(&mut self) -> &mut mpsc::Receiver<QueueCommand> {
        &mut self.commands
    }
}

/// A routed message, as handed to one of its queues.
#[derive(Debug)]
pub struct Enqueue {
    /// The message, shared with the other queues it was routed to.
    pub message: Arc<Message>,
    /// Its id in the store, if persistent and this queue is durable.
    pub stored: Option<u64>,
    /// For a queue that may refuse it ([`QueueHandle::rejects_publish`]) and
    /// a publisher that waits for a confirm: told whether it was taken.
    pub confirm: Option<Decision>,
}

/// A queue's decision on a message, which its publisher's confirm waits for:
/// taken ([`Decision::accept`]) or refused ([`Decision::refuse`]). Dropped
/// undecided (a queue actor that crashed mid-batch), it counts as a failure,
/// so that the publisher is neither left waiting for ever nor told that a
/// lost message is safe.
#[derive(Debug)]
pub struct Decision(Option<Arc<ConfirmTracker>>);

impl Decision {
    /// The decision `confirm` waits for.
    pub fn new(confirm: Arc<ConfirmTracker>) -> Self {
        Self(Some(confirm))
    }

    /// The queue took the message (or is gone: RabbitMQ confirms a message
    /// whose queue was deleted).
    pub fn accept(mut self) {
        if let Some(confirm) = self.0.take() {
            confirm.done(true);
        }
    }

    /// The queue refused it: basic.nack.
    pub fn refuse(mut self) {
        if let Some(confirm) = self.0.take() {
            confirm.reject();
        }
    }
}

impl Drop for Decision {
    fn drop(&mut self) {
        if let Some(confirm) = self.0.take() {
            confirm.done(false);
        }
    }
}

/// A message handed out by basic.get.
#[derive(Debug)]
pub struct GetOk {
    /// The queue's id for it, used to ack or requeue it.
    pub msg_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// Messages left ready after this one.
    pub remaining: u32,
}

/// What a queue can be asked to do.
#[derive(Debug)]
pub enum QueueCommand {
    /// Append routed messages: a connection sends each queue one batch per
    /// socket read, on the publish inbox ([`QueueHandle::try_send_publish`]).
    Publish(Vec<Enqueue>),
    /// Messages of the backlog the store read back (the queue's own request).
    Loaded(Loaded),
    /// Add a consumer; refused if the queue is exclusively consumed.
    Consume {
        /// The consumer.
        consumer: Arc<ConsumerShared>,
        /// basic.consume exclusive flag.
        exclusive: bool,
        /// Its `x-priority`: higher ones are served first.
        priority: i64,
        /// The consuming connection's inbox.
        inbox: mpsc::UnboundedSender<ConnEvent>,
        /// Ok, or 403 ACCESS_REFUSED.
        reply: oneshot::Sender<Result<(), AmqpError>>,
    },
    /// Remove a consumer (cancel, or its channel closed).
    Cancel(Arc<ConsumerShared>),
    /// basic.get.
    Get {
        /// Whether the message counts as acked once handed out.
        no_ack: bool,
        /// The message, or None if the queue is empty.
        reply: oneshot::Sender<Option<GetOk>>,
    },
    /// Forget acked messages.
    Ack(Vec<u64>),
    /// Rejected without requeue: dead-lettered, or forgotten.
    Reject(Vec<u64>),
    /// Put unacked messages back at their original positions.
    Requeue {
        /// Message ids.
        ids: Vec<u64>,
        /// Whether to mark them redelivered (false when they never reached
        /// the client, e.g. a delivery that arrived at a closed channel).
        redelivered: bool,
    },
    /// A delivery that reached its connection after the consumer or channel
    /// went: it goes back where it was, without the redelivered mark.
    Undeliverable {
        /// The queue's id for it.
        msg_id: u64,
        /// The message (a no-ack delivery is no longer in `unacked`).
        message: Arc<Message>,
        /// Its mark before this delivery.
        redelivered: bool,
    },
    /// A gate this queue was blocked on has a free slot again, or the
    /// queue's own timer fired (see [`Inbox::recv`]).
    Wake,
    /// Ready messages and consumers, for declare-ok.
    Stats(oneshot::Sender<(u32, u32)>),
    /// Ready messages, unacked messages and consumers, for administrators:
    /// unlike `Stats`, looking does not count as using the queue (its
    /// `x-expires` lease is not renewed), as in RabbitMQ.
    Counts(oneshot::Sender<QueueCounts>),
    /// Its consumers, for administrators ([`crate::admin`]).
    Consumers(oneshot::Sender<Vec<ConsumerListing>>),
    /// Drop every ready message; replies with how many.
    Purge(oneshot::Sender<u32>),
    /// Panic, to test what a bug in the actor costs.
    #[cfg(test)]
    Panic,
    /// Delete the queue, with queue.delete's conditions.
    Delete {
        /// Refuse if it has consumers.
        if_unused: bool,
        /// Refuse if it has ready messages.
        if_empty: bool,
        /// The number of messages deleted, or 406.
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
}

impl QueueCommand {
    /// How much work it is: the messages of a publish batch, else one.
    pub fn weight(&self) -> usize {
        match self {
            QueueCommand::Publish(batch) => batch.len().max(1),
            _ => 1,
        }
    }
}

/// What others need to know of a queue's arguments (see [`QueueHandle`]'s
/// fields of the same names).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Traits {
    pub rejects_publish: bool,
    pub stores_every_message: bool,
    pub consumer_timeout: Option<u64>,
    pub delays: bool,
}

impl QueueHandle {
    /// A handle, and the inbox its actor reads.
    pub(crate) fn new(
        name: QueueName,
        id: u64,
        store_id: Option<u64>,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        traits: Traits,
    ) -> (Arc<QueueHandle>, Inbox) {
        let Traits {
            rejects_publish,
            stores_every_message,
            consumer_timeout,
            delays,
        } = traits;
        let (tx, commands) = mpsc::channel(INBOX);
        let (publish_tx, publishes) = mpsc::unbounded_channel();
        let publish_credit = Arc::new(Semaphore::new(PUBLISH_CREDIT));
        let (loader, loaded) = mpsc::unbounded_channel();
        let handle = QueueHandle {
            name,
            id,
            durable: store_id.is_some(),
            store_id,
            exclusive_owner,
            auto_delete,
            arguments,
            rejects_publish,
            stores_every_message,
            consumer_timeout,
            delays,
            tx,
            publish_tx,
            publish_credit: publish_credit.clone(),
        };
        let inbox = Inbox {
            commands,
            publishes,
            publish_credit,
            held: None,
            loaded,
            loader,
        };
        (Arc::new(handle), inbox)
    }

    /// Whether the store keeps a message routed here: a durable queue's if
    /// persistent, a quorum queue's always. Publishes and dead letters ask
    /// the same question.
    pub fn keeps(&self, persistent: bool) -> bool {
        self.store_id.is_some() && (persistent || self.stores_every_message)
    }

    /// Sends a command, waiting while the queue's inbox is full. Returns
    /// false if the queue is gone (a deleted queue drops what races its
    /// deletion, as in RabbitMQ).
    pub async fn send(&self, command: QueueCommand) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// A handle with no actor behind it, and the receiving end of its inbox.
    #[cfg(test)]
    pub(crate) fn detached(name: &str) -> (Arc<QueueHandle>, Inbox) {
        Self::new(
            QueueName::from(name),
            0,
            None,
            None,
            false,
            FieldTable::default(),
            Default::default(),
        )
    }

    /// Sends a batch of messages once the queue has credit for them (all
    /// of its credit, for a batch that weighs more); gives it back if the
    /// queue is gone.
    pub async fn try_send_publish(&self, batch: Vec<Enqueue>) -> Result<(), Vec<Enqueue>> {
        let octets: usize = batch.iter().map(|e| weight(&e.message)).sum();
        let permits = octets.clamp(1, PUBLISH_CREDIT) as u32;
        let Ok(credit) = self.publish_credit.clone().acquire_many_owned(permits).await else {
            return Err(batch);
        };
        self.publish_tx
            .send(PublishBatch {
                messages: batch,
                sent: Instant::now(),
                _credit: Some(credit),
            })
            .map_err(|mpsc::error::SendError(batch)| batch.messages)
    }

    /// Hands over messages another queue dead-lettered, without waiting for
    /// credit: a queue actor never waits on another queue. Gives them back
    /// if this queue is gone.
    pub fn send_dead_lettered(&self, batch: Vec<Enqueue>) -> Result<(), Vec<Enqueue>> {
        self.publish_tx
            .send(PublishBatch {
                messages: batch,
                sent: Instant::now(),
                _credit: None,
            })
            .map_err(|mpsc::error::SendError(batch)| batch.messages)
    }

    /// Sends a command and waits for its reply; None if the queue is gone.
    pub async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> QueueCommand) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(command(reply)).await.ok()?;
        rx.await.ok()
    }
}

impl Wake for QueueHandle {
    /// Asks the queue to try delivering again: a gate it waited on has a
    /// free slot. Never waits: a queue whose inbox is full has commands to
    /// handle, and dispatches after handling them anyway.
    fn wake(&self) {
        let _ = self.tx.try_send(QueueCommand::Wake);
    }
}

/// A message a queue hands to one of a connection's consumers.
#[derive(Debug)]
pub struct Delivery {
    /// The consumer.
    pub consumer: Arc<ConsumerShared>,
    /// The consumer's credit it holds ([`ConsumerShared::credit`]), given
    /// back once the writer has encoded it.
    pub credit: u32,
    /// The queue's id for the message.
    pub msg_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
}

impl Delivery {
    /// Gives the message back to its queue unmarked: the client never saw it
    /// (its consumer was cancelled, or its channel or connection closed,
    /// while it was on its way). The slots the queue took for it go back
    /// too: the channel's global prefetch is shared with its other
    /// consumers, which would otherwise stall.
    pub(crate) async fn hand_back(self) {
        self.consumer.unreserve(self.credit);
        let queue = self.consumer.queue.clone();
        queue
            .send(QueueCommand::Undeliverable {
                msg_id: self.msg_id,
                message: self.message,
                redelivered: self.redelivered,
            })
            .await;
    }
}

/// What queues send to a connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// Messages for one of this connection's consumers, in queue order: a
    /// queue sends each consumer one batch per dispatch round, so a burst
    /// costs the connection one wake-up, not one per message.
    Deliver(Vec<Delivery>),
    /// The consumer's queue was deleted.
    Cancelled(Arc<ConsumerShared>),
    /// A publish is settled: its writes durable and its queues' decisions
    /// made; see [`crate::durability`].
    Confirmed {
        /// The publishing channel.
        channel: u16,
        /// The channel's confirm epoch: a stale one is ignored.
        epoch: u64,
        /// The publish's sequence number.
        seq: u64,
        /// What to tell the publisher.
        outcome: Outcome,
    },
    /// An administrator closes the connection (320, with this reason).
    Close(String),
    /// The management API lists the channels, with what closed ones
    /// counted, and the steps its publishes took.
    Channels(oneshot::Sender<ConnectionActivity>),
}

/// What a connection tells the management API of itself.
#[derive(Debug)]
pub struct ConnectionActivity {
    /// Its open channels.
    pub channels: Vec<ChannelListing>,
    /// What its closed channels counted.
    pub closed: MessageCounters,
    /// How many of its publishes took each step.
    pub flows: Flows,
}

/// A channel, as listed for administrators.
#[derive(Clone, Debug)]
pub struct ChannelListing {
    /// Its number.
    pub number: u16,
    /// Its consumers.
    pub consumers: u32,
    /// basic.qos global=false: the limit its next consumers get.
    pub prefetch_count: u32,
    /// basic.qos global=true: the limit its consumers share.
    pub global_prefetch_count: u32,
    /// Deliveries not yet acked.
    pub unacked: u32,
    /// Publishes not yet confirmed.
    pub unconfirmed: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In a transaction.
    pub transactional: bool,
    /// Publishes and acks (or rejects) waiting for tx.commit.
    pub uncommitted: (u32, u32),
    /// Its `message_stats`.
    pub counters: MessageCounters,
}

/// A queue's counts, for administrators.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueCounts {
    /// Ready messages.
    pub ready: u32,
    /// Delivered and not yet acked.
    pub unacked: u32,
    /// Consumers.
    pub consumers: u32,
    /// What it has done since it started.
    pub counters: MessageCounters,
    /// Messages it dead-lettered since it started.
    pub dead_lettered: u64,
}

/// A consumer as its queue sees it, for administrators.
#[derive(Clone, Debug)]
pub struct ConsumerListing {
    /// Its tag.
    pub tag: Arc<str>,
    /// Its channel.
    pub channel: u16,
    /// Deliveries wait for an ack.
    pub ack_required: bool,
    /// Its own prefetch limit (basic.qos global=false; 0 = none).
    pub prefetch_count: u32,
    /// `x-priority`.
    pub priority: i64,
    /// It is served: always, but for a waiting single-active consumer.
    pub active: bool,
    /// Its connection's inbox, which tells which connection it is.
    pub(crate) inbox: mpsc::UnboundedSender<ConnEvent>,
}

/// A channel's direct reply-to consumer, as its virtual host finds it by
/// reply address ([`crate::channel::reply_to`]).
#[derive(Debug, Clone)]
pub(crate) struct ReplyConsumer {
    pub consumer: Arc<ConsumerShared>,
    pub inbox: mpsc::UnboundedSender<ConnEvent>,
}

/// How a publish ends, for its publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// basic.ack: every write durable, every queue took it.
    Ack,
    /// basic.nack: a queue refused it (a full queue with `x-overflow`
    /// `reject-publish`).
    Nack,
    /// A write or a sync failed: the connection closes with 541.
    Failed,
}

/// One consumer as both its queue and its channel see it.
#[derive(Debug)]
pub struct ConsumerShared {
    /// The consumer tag, shared with every delivery written for it.
    pub tag: Arc<str>,
    /// The channel it was created on.
    pub channel: u16,
    /// The queue it consumes from.
    pub queue: Arc<QueueHandle>,
    /// Whether deliveries count as acked once sent.
    pub no_ack: bool,
    /// How long its deliveries may stay unacked
    /// ([`crate::channel::ack_timeout`]).
    pub ack_timeout: Option<std::time::Duration>,
    /// basic.qos global=false: a limit of this consumer's own.
    pub prefetch: Gate,
    /// basic.qos global=true: the limit shared by the channel's consumers.
    pub channel_prefetch: Arc<Gate>,
    /// Octets of deliveries sent by the queue but not yet encoded by the
    /// writer ([`crate::gate::CREDIT`]).
    pub credit: Gate,
}

impl ConsumerShared {
    /// Takes what one delivery needs: `credit` (its weight) always,
    /// prefetch slots unless no-ack. Gives back what it took if any gate is
    /// full.
    pub fn try_reserve(&self, credit: u32) -> bool {
        let queue = &self.queue;
        if !self.credit.acquire_n_or_wait(credit, queue) {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if !self.prefetch.acquire_or_wait(queue) {
            self.credit.release(credit);
            return false;
        }
        if !self.channel_prefetch.acquire_or_wait(queue) {
            self.prefetch.release(1);
            self.credit.release(credit);
            return false;
        }
        true
    }

    /// Gives back what [`ConsumerShared::try_reserve`] took, when nothing
    /// reached the client after all: the queue found nothing to deliver, or
    /// the delivery came back unseen ([`Delivery::hand_back`]).
    pub fn unreserve(&self, credit: u32) {
        self.credit.release(credit);
        if !self.no_ack {
            self.prefetch.release(1);
            self.channel_prefetch.release(1);
        }
    }
}

/// A durability wait shared by the durable queues a publish (or a whole
/// transaction) went to: publisher confirms, and tx.commit-ok.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// Writes that have yet to be reported durable.
    remaining: AtomicUsize,
    /// Whether any write or sync failed: then nothing is confirmed.
    failed: AtomicBool,
    /// Whether a queue refused the message: it is nacked.
    rejected: AtomicBool,
    /// Who is told when the last write is durable.
    notify: Notify,
}

#[derive(Debug)]
enum Notify {
    /// A publisher confirm: the connection acks (channel, epoch, seq).
    Confirm {
        channel: u16,
        epoch: u64,
        seq: u64,
        inbox: mpsc::UnboundedSender<ConnEvent>,
    },
    /// A tx.commit waiting in its connection's task.
    Commit(Mutex<Option<oneshot::Sender<bool>>>),
}

impl ConfirmTracker {
    /// A publisher confirm waiting for one write or queue decision; more
    /// are added with [`ConfirmTracker::add_one`].
    pub fn new((channel, epoch, seq): (u16, u64, u64), inbox: mpsc::UnboundedSender<ConnEvent>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            rejected: AtomicBool::new(false),
            notify: Notify::Confirm {
                channel,
                epoch,
                seq,
                inbox,
            },
        })
    }

    /// A tx.commit's wait: it starts with one count, the commit's own, which
    /// [`ConfirmTracker::done`] releases once every publish has been handed
    /// over (each adding its durable writes with [`ConfirmTracker::add_one`]).
    pub fn commit(done: oneshot::Sender<bool>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            rejected: AtomicBool::new(false),
            notify: Notify::Commit(Mutex::new(Some(done))),
        })
    }

    /// Waits for one more write (a commit's persistent message).
    pub fn add_one(&self) {
        self.remaining.fetch_add(1, Ordering::SeqCst);
    }

    /// A queue refused the message (and counts as one decision made).
    pub fn reject(&self) {
        self.rejected.store(true, Ordering::SeqCst);
        self.done(true);
    }

    /// One write is durable, or one queue took the message (`ok`), or a
    /// write failed. The last one tells.
    pub fn done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let ok = !self.failed.load(Ordering::SeqCst);
        let outcome = match (ok, self.rejected.load(Ordering::SeqCst)) {
            (false, _) => Outcome::Failed,
            (true, true) => Outcome::Nack,
            (true, false) => Outcome::Ack,
        };
        match &self.notify {
            Notify::Confirm {
                channel,
                epoch,
                seq,
                inbox,
            } => {
                let _ = inbox.send(ConnEvent::Confirmed {
                    channel: *channel,
                    epoch: *epoch,
                    seq: *seq,
                    outcome,
                });
            }
            Notify::Commit(done) => {
                if let Some(done) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = done.send(ok);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(decide: impl FnOnce(Decision)) -> Outcome {
        let (inbox, mut events) = mpsc::unbounded_channel();
        decide(Decision::new(ConfirmTracker::new((1, 1, 1), inbox)));
        match events.try_recv() {
            Ok(ConnEvent::Confirmed { outcome, .. }) => outcome,
            other => panic!("expected a confirm, got {other:?}"),
        }
    }

    #[test]
    fn a_decision_dropped_undecided_fails_its_confirm() {
        assert_eq!(outcome(Decision::accept), Outcome::Ack);
        assert_eq!(outcome(Decision::refuse), Outcome::Nack);
        // A queue that crashed mid-batch: neither left waiting nor acked.
        assert_eq!(outcome(drop), Outcome::Failed);
    }
}
