//! The queue actor: one task per queue, the single owner of its messages and
//! its consumers.
//!
//! Responsibilities:
//! - keep ready messages in publish order, and unacked ones by message id;
//! - dispatch round-robin across consumers, never past a consumer's prefetch,
//!   its channel's prefetch, or its credit (see [`crate::gate`]);
//! - put requeued messages back at their original position, marked redelivered;
//! - answer get, purge, delete, and the counts declare-ok reports;
//! - cancel its consumers when deleted, and delete itself when auto-delete and
//!   its last consumer goes;
//! - for a durable queue, tell the store what becomes of its persistent
//!   messages (the connection stored them, see [`crate::durability`]): first
//!   deliveries and settlements, batched per step; keep only a [`HEAD`] of
//!   ready messages' bodies in memory, and have the store read
//!   the rest back, a batch ahead of delivery. The store's thread does the
//!   reading; the actor never waits for it, and a get that finds the head
//!   of the queue on disk waits for the read in the actor's own queue.
//!
//! Files: `actor` (the loop and the commands), `backlog` (ready and unacked
//! messages), `consumers` (dispatch), `index` (what is stored, and read back).
//!
//! Commands arrive on one bounded mpsc, so a queue that cannot keep up slows
//! its publishers (the connection waits to send, and stops reading its socket)
//! instead of growing. The actor itself never waits on anyone: deliveries go to
//! the consuming connection's unbounded inbox, bounded in practice by credit.
//! That one-way waiting is what keeps connections and queues free of deadlock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use amq_protocol::types::FieldTable;
use tokio::sync::{mpsc, oneshot};
use warren_codec::Message;
use warren_router::QueueName;
use warren_store::{RecoveredEntry, Store};

use crate::events::ConsumerShared;
use crate::events::{ConnEvent, Delivery, GetOk, Loaded, QueueHandle, QueueRegistry};
use crate::stats::{LocalHistogram, MessageCounters, LATENCY_BOUNDS_US};
use warren_store::histogram::Metrics;

mod actor;
pub(crate) mod args;
mod backlog;
mod consumers;
pub(crate) mod dead_letter;
pub(crate) mod expiry;
mod index;
mod limits;
mod ready;

pub(crate) use ready::weight_u32;

/// Messages (or other commands) handled before dispatching, so deliveries
/// go out in batches.
const BATCH: usize = 256;
/// What the ready messages a queue keeps in memory may weigh
/// ([`crate::events::weight`]). Beyond it, a persistent message's body on a
/// durable queue stays in the store until its turn comes near, and so does a
/// transient one's while memory is under pressure (see [`Disk`]), so that a
/// backlog larger than memory costs an index entry (~64 bytes) per message,
/// not its body. A queue whose consumers are taking messages also paces its
/// publishers once its backlog weighs more than this (see
/// [`crate::events::Inbox`]).
pub const HEAD: usize = 8 << 20;
/// How far ahead of delivery a queue has the store read its backlog back,
/// and how many messages one read asks for.
const READ_AHEAD: usize = 512;

impl QueueHandle {
    /// Starts the actor of a new (or recovered) queue.
    pub(crate) fn spawn(
        registry: Weak<dyn QueueRegistry>,
        vhost_name: &str,
        id: u64,
        new: NewQueue,
    ) -> Arc<QueueHandle> {
        // A quorum queue, or a durable delayed exchange's, keeps every
        // message in the store, persistent or not.
        let stores_every_message =
            new.args.quorum || (new.delays && new.disk.as_ref().is_some_and(|d| d.durable));
        let (handle, rx) = QueueHandle::new(
            new.name.clone(),
            id,
            new.disk.as_ref().filter(|d| d.durable).map(|d| d.queue),
            new.exclusive_owner,
            new.auto_delete,
            new.arguments,
            crate::events::Traits {
                rejects_publish: new.args.rejects_publish(),
                stores_every_message,
                consumer_timeout: new.args.consumer_timeout,
                delays: new.delays,
            },
        );
        let next_msg_id = new.recovered.len() as u64;
        let mut ready = ready::Ready::new(new.args.max_priority.unwrap_or(0));
        let (message_ttl, now) = (new.args.message_ttl, crate::clock::wall_ms());
        let top_lane = new.args.max_priority.unwrap_or(0);
        let recovered = new.recovered.into_iter().zip(0..).map(|(e, position)| Entry {
            id: position,
            // Not known until read back.
            weight: crate::events::MESSAGE_OVERHEAD as u32,
            // A held delayed message's expiration applies where it is
            // routed when due, as in the plugin, never while it is held.
            expires: match new.delays {
                true => expiry::NEVER,
                false => expiry::recovered(&e, message_ttl, now),
            },
            // Not known until read back; the limit counts it as empty.
            body: 0,
            message: None,
            stored: Some(e.message),
            // Its lane, as `Ready::lane_of` gives it.
            priority: e.priority.min(top_lane),
            redelivered: e.deliveries > 0,
            deliveries: e.deliveries,
            // Waiting since the start, as far as this run knows.
            arrived: 0,
        });
        for entry in recovered {
            ready.push_back(entry);
        }
        let loader = rx.loader();
        let metrics = new.disk.as_ref().map(|d| d.store.metrics().clone());
        let dedup = new.args.dedup.clone().map(crate::dedup::Deduplicator::new);
        let actor = Queue {
            dedup,
            stores_every_message,
            delays: new.delays,
            name: new.name,
            args: new.args,
            epoch: tokio::time::Instant::now(),
            last_used: tokio::time::Instant::now(),
            id,
            registry,
            vhost_name: vhost_name.to_owned(),
            auto_delete: new.auto_delete,
            disk: new.disk,
            settled: Vec::new(),
            delivered: Vec::new(),
            dead: Vec::new(),
            loader,
            loading: false,
            parked_gets: VecDeque::new(),
            ready,
            unacked: HashMap::new(),
            next_msg_id,
            consumers: VecDeque::new(),
            exclusive_consumer: false,
            had_consumers: false,
            counters: MessageCounters::default(),
            dead_lettered: 0,
            now: 0,
            latency: LocalHistogram::new(&LATENCY_BOUNDS_US),
            metrics,
        };
        tokio::spawn(actor.run(rx));
        handle
    }
}

/// What a queue is created with.
#[derive(Debug)]
pub(crate) struct NewQueue {
    pub name: QueueName,
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// What it makes of them.
    pub args: args::QueueArgs,
    /// Its place in the store.
    pub disk: Option<Disk>,
    /// Messages found at start, in order.
    pub recovered: Vec<RecoveredEntry>,
    /// A delayed exchange's queue ([`crate::delayed`]).
    pub delays: bool,
}

/// A queue's place in the store: for a durable queue, where its persistent
/// messages are kept; for every queue, where the bodies beyond its
/// [`HEAD`] of ready messages are paged (the transient log, for those
/// without a durable copy).
#[derive(Debug)]
pub(crate) struct Disk {
    pub store: Store,
    /// Its id there.
    pub queue: u64,
    /// Whether the queue is durable.
    pub durable: bool,
    /// Transient bodies are paged out only while this is set (memory above
    /// the paging ratio of the watermark, see [`crate::alarm`]).
    pub memory_pressure: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
struct Entry {
    /// Position in the queue; also its key in the store's index.
    id: u64,
    /// What it weighs ([`crate::events::weight`]; a message is at most
    /// [`crate::config::MAX_MESSAGE_SIZE`]).
    weight: u32,
    /// When it expires, in milliseconds of the queue's clock, or
    /// [`expiry::NEVER`].
    expires: u64,
    /// The message, unless paged out (then it is read back from the store).
    message: Option<Arc<Message>>,
    /// Its id in the store, for a persistent message on a durable queue.
    stored: Option<u64>,
    /// Its lane ([`ready`]): its priority, capped at the queue's maximum.
    priority: u8,
    /// How often it was delivered (a quorum queue's `x-delivery-count`).
    deliveries: u32,
    /// Its body's length, for `x-max-length-bytes`.
    body: u32,
    /// When it arrived, in milliseconds of the queue's clock (wrapping
    /// after 49 days), for the delivery latency histogram.
    arrived: u32,
    redelivered: bool,
}

#[derive(Debug)]
struct Consumer {
    shared: Arc<ConsumerShared>,
    /// `x-priority`.
    priority: i64,
    inbox: mpsc::UnboundedSender<ConnEvent>,
    /// Deliveries of the dispatch round in progress, sent as one event.
    pending: Vec<Delivery>,
}

struct Queue {
    name: QueueName,
    /// What its declare arguments ask of it.
    args: args::QueueArgs,
    /// Its clock's zero, for expiries.
    epoch: tokio::time::Instant,
    /// When a client last used it (`x-expires`, see [`expiry`]).
    last_used: tokio::time::Instant,
    id: u64,
    /// Its virtual host, to leave when deleted.
    registry: Weak<dyn QueueRegistry>,
    vhost_name: String,
    auto_delete: bool,
    /// The store, for a durable queue.
    disk: Option<Disk>,
    /// Stored messages settled in this step, told to the store at its end.
    settled: Vec<u64>,
    /// Stored messages delivered for the first time in this step.
    delivered: Vec<u64>,
    /// Messages dead-lettered in this step, routed at its end.
    dead: Vec<Arc<Message>>,
    /// Where the store sends what it reads back.
    loader: tokio::sync::mpsc::UnboundedSender<Loaded>,
    /// Whether a read is in flight (one at a time).
    loading: bool,
    /// Gets that found the head of the queue on disk, answered once it is read.
    parked_gets: VecDeque<(bool, oneshot::Sender<Option<GetOk>>)>,
    /// Ready messages, ordered by id: new ones are appended, requeued ones
    /// are inserted back where their id puts them.
    ready: ready::Ready,
    /// Delivered, awaiting ack or requeue.
    unacked: HashMap<u64, Entry>,
    next_msg_id: u64,
    /// Round-robin order: the front gets the next message.
    consumers: VecDeque<Consumer>,
    exclusive_consumer: bool,
    /// auto-delete applies only once a queue has had a consumer.
    had_consumers: bool,
    /// `x-message-deduplication`: the keys seen.
    dedup: Option<crate::dedup::Deduplicator>,
    /// A delayed exchange's queue ([`crate::delayed`]): nothing expires in it.
    delays: bool,
    /// Whether the store keeps every message, persistent or not
    /// ([`QueueHandle::stores_every_message`]).
    stores_every_message: bool,
    /// Its `message_stats`, for the management API.
    counters: MessageCounters,
    /// Messages it dead-lettered, for the topology graph's rates.
    dead_lettered: u64,
    /// The step's reading of its clock, in milliseconds (wrapping): when
    /// the step's messages arrived, or left.
    now: u32,
    /// How long the step's deliveries waited, added to `metrics` at the
    /// step's end.
    latency: LocalHistogram,
    /// The broker's histograms (the store's; none without a store).
    metrics: Option<Arc<Metrics>>,
}

impl Queue {
    /// Whether the queue holds publishes back: it has consumers and its
    /// backlog weighs more than its head (see [`crate::events::Inbox`]).
    fn paced(&self) -> bool {
        !self.consumers.is_empty() && self.ready.weight() > HEAD
    }
}

enum Next {
    Continue,
    Stop,
}

/// A message taken for delivery.
struct Taken {
    id: u64,
    message: Arc<Message>,
    redelivered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::QueueCommand;
    use crate::gate::{Gate, CREDIT};
    use crate::vhost::{QueueSpec, VHost};

    #[tokio::test]
    async fn a_crashed_queue_cancels_its_consumers_and_leaves_the_vhost() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovered) = Store::open(dir.path(), 1 << 20).unwrap();
        let (vhost, _) = VHost::open("/", store, recovered, Default::default());
        let arguments = FieldTable::default();
        let spec = || QueueSpec {
            name: "q",
            server_named: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: &arguments,
        };
        let queue = vhost.declare_queue(spec(), 1).unwrap();
        let consumer = Arc::new(ConsumerShared {
            tag: "c".into(),
            channel: 1,
            queue: queue.clone(),
            no_ack: false,
            ack_timeout: None,
            prefetch: Gate::new(0),
            channel_prefetch: Arc::new(Gate::new(0)),
            credit: Gate::new(CREDIT),
        });
        let (inbox, mut events) = mpsc::unbounded_channel();
        let consumed = queue
            .ask(|reply| QueueCommand::Consume {
                consumer: consumer.clone(),
                exclusive: false,
                priority: 0,
                inbox,
                reply,
            })
            .await;
        assert!(matches!(consumed, Some(Ok(()))));
        assert!(queue.send(QueueCommand::Panic).await);
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .expect("the consumer hears of the crash");
        assert!(matches!(event, Some(ConnEvent::Cancelled(c)) if Arc::ptr_eq(&c, &consumer)));
        // Gone from the vhost, so clients get 404 rather than a dead queue,
        // and the name can be declared again.
        assert_eq!(vhost.queue("q", 1).unwrap_err().code(), 404);
        let again = vhost.declare_queue(spec(), 1).unwrap();
        assert_ne!(again.id, queue.id);
        assert_eq!(again.ask(QueueCommand::Stats).await, Some((0, 0)));
    }
}
