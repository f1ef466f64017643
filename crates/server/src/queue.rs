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
//!   deliveries and settlements, batched per step; keep only the first
//!   [`IN_MEMORY`] ready messages' bodies in memory, and have the store read
//!   the rest back, a batch ahead of delivery. The store's thread does the
//!   reading; the actor never waits for it, and a get that finds the head
//!   of the queue on disk waits for the read in the actor's own queue.
//!
//! Commands arrive on one bounded mpsc, so a queue that cannot keep up slows
//! its publishers (the connection waits to send, and stops reading its socket)
//! instead of growing. The actor itself never waits on anyone: deliveries go to
//! the consuming connection's unbounded inbox, bounded in practice by credit.
//! That one-way waiting is what keeps connections and queues free of deadlock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use tokio::sync::oneshot;

use amq_protocol::types::FieldTable;
use tokio::sync::mpsc;
use tracing::{debug, error};
use warren_codec::Message;
use warren_router::QueueName;
use warren_store::{RecoveredEntry, Store};

use crate::events::ConsumerShared;
use crate::events::{
    ConnEvent, Delivery, Enqueue, GetOk, Inbox, Loaded, QueueCommand, QueueHandle, QueueRegistry,
};
use crate::AmqpError;

/// Messages (or other commands) handled before dispatching, so deliveries
/// go out in batches.
const BATCH: usize = 256;
/// Ready persistent messages a durable queue keeps in memory; beyond this
/// their bodies stay in the store until delivered, so a backlog larger than
/// memory costs an index entry (~64 bytes) per message, not its body.
pub const IN_MEMORY: usize = 10_000;
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
        let (handle, rx) = QueueHandle::new(
            new.name.clone(),
            id,
            new.disk.as_ref().map(|d| d.queue),
            new.exclusive_owner,
            new.auto_delete,
            new.arguments,
        );
        let next_msg_id = new.recovered.len() as u64;
        let ready = new
            .recovered
            .into_iter()
            .zip(0..)
            .map(|(e, position)| Entry {
                id: position,
                message: None,
                stored: Some(e.message),
                redelivered: e.delivered,
            })
            .collect();
        let loader = rx.loader();
        let actor = Queue {
            name: new.name,
            id,
            registry,
            vhost_name: vhost_name.to_owned(),
            auto_delete: new.auto_delete,
            disk: new.disk,
            settled: Vec::new(),
            delivered: Vec::new(),
            loader,
            loading: false,
            parked_gets: VecDeque::new(),
            ready,
            unacked: HashMap::new(),
            next_msg_id,
            consumers: VecDeque::new(),
            exclusive_consumer: false,
            had_consumers: false,
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
    /// The store, for a durable queue.
    pub disk: Option<Disk>,
    /// Messages found at start, in order.
    pub recovered: Vec<RecoveredEntry>,
}

/// A durable queue's place in the store.
#[derive(Debug)]
pub(crate) struct Disk {
    pub store: Store,
    /// Its id there.
    pub queue: u64,
}

#[derive(Debug)]
struct Entry {
    /// Position in the queue; also its key in the store's index.
    id: u64,
    /// The message, unless paged out (then it is read back from the store).
    message: Option<Arc<Message>>,
    /// Its id in the store, for a persistent message on a durable queue.
    stored: Option<u64>,
    redelivered: bool,
}

#[derive(Debug)]
struct Consumer {
    shared: Arc<ConsumerShared>,
    inbox: mpsc::UnboundedSender<ConnEvent>,
    /// Deliveries of the dispatch round in progress, sent as one event.
    pending: Vec<Delivery>,
}

struct Queue {
    name: QueueName,
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
    /// Where the store sends what it reads back.
    loader: tokio::sync::mpsc::UnboundedSender<Loaded>,
    /// Whether a read is in flight (one at a time).
    loading: bool,
    /// Gets that found the head of the queue on disk, answered once it is read.
    parked_gets: VecDeque<(bool, oneshot::Sender<Option<GetOk>>)>,
    /// Ready messages, ordered by id: new ones are appended, requeued ones
    /// are inserted back where their id puts them.
    ready: VecDeque<Entry>,
    /// Delivered, awaiting ack or requeue.
    unacked: HashMap<u64, Entry>,
    next_msg_id: u64,
    /// Round-robin order: the front gets the next message.
    consumers: VecDeque<Consumer>,
    exclusive_consumer: bool,
    /// auto-delete applies only once a queue has had a consumer.
    had_consumers: bool,
}

enum Next {
    Continue,
    Stop,
}

impl Queue {
    async fn run(mut self, mut rx: Inbox) {
        let mut deleted = false;
        while let Some(command) = rx.recv().await {
            // A bug here must cost this queue, not leave it silently stuck
            // with its consumers and publishers waiting on it for ever.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(command, &mut rx)));
            match step {
                // A full step means more is waiting: the consumers'
                // connections get their turn to take the deliveries and
                // send acks before the next one.
                Ok(Next::Continue) if rx.has_waiting() => tokio::task::yield_now().await,
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => {
                    deleted = true;
                    break;
                }
                Err(panic) => {
                    self.crashed(panic.as_ref());
                    break;
                }
            }
        }
        self.flush_store();
        // Publishes already in the inbox will never be held. Sends after
        // close() fail, and the publishing connection settles those itself.
        rx.close();
        let mut never_held = Vec::new();
        while let Some(command) = rx.try_recv() {
            if let QueueCommand::Publish(batch) = command {
                never_held.extend(batch.into_iter().filter_map(|e| e.stored));
            }
        }
        // A deleted queue's definition left the store first (forget_queue);
        // what it held dies with it. A queue that stops because the broker
        // does, or that crashed, keeps everything stored for the next start.
        if let (true, Some(disk)) = (deleted, &self.disk) {
            let held = self
                .ready
                .iter()
                .chain(self.unacked.values())
                .filter_map(|e| e.stored);
            disk.store.forget(disk.queue, held.chain(never_held).collect());
        }
        debug!(queue = %self.name, "queue stopped");
    }

    /// Handles a command and whatever else is already in the inbox, then
    /// dispatches and hands the batch's confirms to the group commit.
    fn step(&mut self, command: QueueCommand, rx: &mut Inbox) -> Next {
        // Counted in messages, so that a run of publish batches does not
        // keep consumers waiting for the next dispatch.
        let mut handled = command.weight();
        if let Next::Stop = self.handle_in_order(command, rx) {
            return Next::Stop;
        }
        while handled < BATCH {
            let Some(command) = rx.try_recv() else {
                break;
            };
            handled += command.weight();
            if let Next::Stop = self.handle_in_order(command, rx) {
                return Next::Stop;
            }
        }
        self.dispatch();
        self.load_ahead();
        self.flush_store();
        Next::Continue
    }

    /// The actor panicked: its state can no longer be trusted. Its consumers
    /// are cancelled (clients that announced consumer_cancel_notify get
    /// basic.cancel), and the queue leaves the virtual host. A durable
    /// queue's definition and stored messages stay in the store and come
    /// back at the next start; a transient queue's messages are lost.
    fn crashed(&mut self, panic: &(dyn std::any::Any + Send)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        error!(queue = %self.name, panic = %what, "queue crashed; removing it");
        for consumer in self.consumers.drain(..) {
            let _ = consumer.inbox.send(ConnEvent::Cancelled(consumer.shared));
        }
        if let Some(vhost) = self.registry.upgrade() {
            vhost.drop_crashed_queue(&self.name, self.id);
        }
    }

    /// Tells the store this step's first deliveries and settlements, in
    /// that order (a message may be both).
    fn flush_store(&mut self) {
        if let Some(disk) = &self.disk {
            disk.store
                .delivered(disk.queue, std::mem::take(&mut self.delivered));
            disk.store.settle(disk.queue, std::mem::take(&mut self.settled));
        }
    }

    /// Has the store read back the paged-out messages near the head of the
    /// queue, one batch at a time.
    fn load_ahead(&mut self) {
        let Some(disk) = &self.disk else {
            return;
        };
        if self.loading {
            return;
        }
        let wanted: Vec<(u64, u64)> = self
            .ready
            .iter()
            .take(READ_AHEAD)
            .filter(|e| e.message.is_none())
            .filter_map(|e| Some((e.id, e.stored?)))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.loading = true;
        let loader = self.loader.clone();
        let ids = wanted.iter().map(|&(_, id)| id).collect();
        disk.store.read(
            ids,
            Box::new(move |read| {
                let batch = wanted
                    .into_iter()
                    .zip(read)
                    .map(|((position, id), message)| (position, id, message))
                    .collect();
                // A queue gone meanwhile no longer needs them.
                let _ = loader.send(batch);
            }),
        );
    }

    /// Messages read back: they rejoin their entries, if still ready. One
    /// that cannot be read is lost, and said so.
    fn loaded(&mut self, batch: Loaded) {
        self.loading = false;
        for (position, id, read) in batch {
            let Ok(at) = self.ready.binary_search_by_key(&position, |e| e.id) else {
                continue;
            };
            if self.ready[at].stored != Some(id) || self.ready[at].message.is_some() {
                continue;
            }
            match read {
                Ok(message) => self.ready[at].message = Some(Arc::new(message)),
                // The broker is stopping: it stays stored for the next start.
                Err(warren_store::StoreError::Closed) => {}
                Err(e) => {
                    error!(queue = %self.name, error = %e, "a stored message cannot be read back: it is lost");
                    if let Some(entry) = self.ready.remove(at) {
                        self.settle_entry(&entry);
                    }
                }
            }
        }
        while !self.parked_gets.is_empty() && !self.head_on_disk() {
            let (no_ack, reply) = self.parked_gets.pop_front().expect("not empty");
            self.answer_get(no_ack, reply);
        }
    }

    fn head_on_disk(&self) -> bool {
        self.ready.front().is_some_and(|e| e.message.is_none())
    }

    /// basic.get: answered now, or once the head of the queue is read back
    /// (after the gets already waiting, in order).
    fn get(&mut self, no_ack: bool, reply: oneshot::Sender<Option<GetOk>>) {
        if !self.parked_gets.is_empty() || self.head_on_disk() {
            self.parked_gets.push_back((no_ack, reply));
            self.load_ahead();
            return;
        }
        self.answer_get(no_ack, reply);
    }

    fn answer_get(&mut self, no_ack: bool, reply: oneshot::Sender<Option<GetOk>>) {
        let got = self.take_next(no_ack).map(|taken| GetOk {
            msg_id: taken.id,
            message: taken.message,
            redelivered: taken.redelivered,
            remaining: self.ready.len() as u32,
        });
        // A get-ok the channel can no longer send goes back.
        if let Err(Some(ok)) = reply.send(got) {
            self.requeue(vec![ok.msg_id], false);
        }
    }

    /// Handles a command, after the publishes already waiting if it looks
    /// at the backlog: commands overtake publishes (see [`Inbox`]), but a
    /// get, a purge, a count or a delete must see every message its
    /// connection published before asking.
    fn handle_in_order(&mut self, command: QueueCommand, rx: &mut Inbox) -> Next {
        if matches!(
            command,
            QueueCommand::Get { .. }
                | QueueCommand::Stats(_)
                | QueueCommand::Purge(_)
                | QueueCommand::Delete { .. }
        ) {
            while let Some(batch) = rx.try_recv_publish() {
                self.handle(QueueCommand::Publish(batch));
            }
        }
        self.handle(command)
    }

    fn handle(&mut self, command: QueueCommand) -> Next {
        match command {
            QueueCommand::Publish(batch) => {
                for Enqueue { message, stored } in batch {
                    self.publish(message, stored);
                }
            }
            QueueCommand::Loaded(batch) => self.loaded(batch),
            QueueCommand::Consume {
                consumer,
                exclusive,
                inbox,
                reply,
            } => {
                if self.exclusive_consumer || (exclusive && !self.consumers.is_empty()) {
                    let _ = reply.send(Err(AmqpError::access_refused(format!(
                        "queue '{}' in vhost '{}' in exclusive use",
                        self.name, self.vhost_name
                    ))));
                } else {
                    self.exclusive_consumer = exclusive;
                    self.had_consumers = true;
                    self.consumers.push_back(Consumer {
                        shared: consumer,
                        inbox,
                        pending: Vec::new(),
                    });
                    let _ = reply.send(Ok(()));
                }
            }
            QueueCommand::Cancel(consumer) => {
                let before = self.consumers.len();
                self.consumers.retain(|c| !Arc::ptr_eq(&c.shared, &consumer));
                if self.consumers.len() < before {
                    self.exclusive_consumer = false;
                }
                if self.auto_delete && self.had_consumers && self.consumers.is_empty() {
                    debug!(queue = %self.name, "auto-delete: last consumer gone");
                    if let Some(vhost) = self.registry.upgrade() {
                        vhost.forget_queue(&self.name, self.id);
                    }
                    return Next::Stop;
                }
            }
            QueueCommand::Get { no_ack, reply } => self.get(no_ack, reply),
            QueueCommand::Ack(ids) => {
                for id in ids {
                    if let Some(entry) = self.unacked.remove(&id) {
                        self.settle_entry(&entry);
                    }
                }
            }
            QueueCommand::Requeue { ids, redelivered } => self.requeue(ids, redelivered),
            QueueCommand::Undeliverable {
                msg_id,
                message,
                redelivered,
            } => self.undeliverable(msg_id, message, redelivered),
            QueueCommand::Wake => {}
            #[cfg(test)]
            QueueCommand::Panic => panic!("asked to"),
            QueueCommand::Stats(reply) => {
                let _ = reply.send((self.ready.len() as u32, self.consumers.len() as u32));
            }
            QueueCommand::Purge(reply) => {
                let n = self.ready.len() as u32;
                for entry in std::mem::take(&mut self.ready) {
                    self.settle_entry(&entry);
                }
                let _ = reply.send(n);
            }
            QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if if_unused && !self.consumers.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' in use",
                        self.name, self.vhost_name
                    ))));
                    return Next::Continue;
                }
                if if_empty && !self.ready.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' not empty",
                        self.name, self.vhost_name
                    ))));
                    return Next::Continue;
                }
                for consumer in self.consumers.drain(..) {
                    let _ = consumer.inbox.send(ConnEvent::Cancelled(consumer.shared));
                }
                if let Some(vhost) = self.registry.upgrade() {
                    vhost.forget_queue(&self.name, self.id);
                }
                let _ = reply.send(Ok(self.ready.len() as u32));
                return Next::Stop;
            }
        }
        Next::Continue
    }

    /// Puts unacked messages back where their ids place them among the ready
    /// ones, so a requeued message is redelivered before later ones.
    fn requeue(&mut self, mut ids: Vec<u64>, redelivered: bool) {
        ids.sort_unstable();
        for id in ids {
            let Some(mut entry) = self.unacked.remove(&id) else {
                continue;
            };
            entry.redelivered |= redelivered;
            self.put_back(entry);
        }
    }

    /// Inserts an entry among the ready ones at the place its position (id)
    /// gives it, so that a message back from a consumer goes out before later
    /// ones, as in RabbitMQ.
    fn put_back(&mut self, entry: Entry) {
        let at = self
            .ready
            .binary_search_by_key(&entry.id, |e| e.id)
            .unwrap_or_else(|at| at);
        self.ready.insert(at, entry);
    }

    fn publish(&mut self, message: Arc<Message>, stored: Option<u64>) {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        // Beyond the in-memory head, a stored message's body is read back
        // from the store when its turn comes near.
        let in_memory = stored.is_none() || self.ready.len() < IN_MEMORY;
        self.ready.push_back(Entry {
            id,
            message: in_memory.then_some(message),
            stored,
            redelivered: false,
        });
    }

    /// A settled (or purged) message: the store is told at the end of the step.
    fn settle_entry(&mut self, entry: &Entry) {
        if let (Some(_), Some(stored)) = (&self.disk, entry.stored) {
            self.settled.push(stored);
        }
    }

    /// Takes the next ready message for a delivery or a get, unless it is
    /// still on disk (then it is asked for, and None returned): records its
    /// first delivery in the store (so that it comes back redelivered after
    /// a restart), and moves it to `unacked`, or settles it at once for
    /// no-ack.
    fn take_next(&mut self, no_ack: bool) -> Option<Taken> {
        let Some(message) = self.ready.front()?.message.clone() else {
            self.load_ahead();
            return None;
        };
        let mut entry = self.ready.pop_front().expect("a front entry");
        let taken = Taken {
            id: entry.id,
            message,
            redelivered: entry.redelivered,
        };
        if no_ack {
            self.settle_entry(&entry);
            return Some(taken);
        }
        if let (Some(_), Some(stored), false) = (&self.disk, entry.stored, entry.redelivered) {
            self.delivered.push(stored);
        }
        if entry.stored.is_some() {
            // The store has it; the delivery carries it to the client.
            entry.message = None;
        }
        self.unacked.insert(entry.id, entry);
        Some(taken)
    }

    /// A delivery that never reached the client goes back where it was.
    fn undeliverable(&mut self, msg_id: u64, message: Arc<Message>, redelivered: bool) {
        let mut stored = self.unacked.remove(&msg_id).and_then(|e| e.stored);
        // A no-ack delivery left the store when it was taken; a persistent one
        // that never reached its client goes back into it.
        if let (None, Some(disk), Some(2)) = (stored, &self.disk, *message.properties.delivery_mode()) {
            stored = Some(disk.store.publish(message.clone(), vec![disk.queue], None));
        }
        self.put_back(Entry {
            id: msg_id,
            message: Some(message),
            stored,
            redelivered,
        });
    }

    /// Hands ready messages to consumers, round-robin, while any consumer
    /// has room. A consumer with no room is skipped (and its gate marked, so
    /// the next free slot wakes this queue). Each consumer's share of the
    /// round goes to its connection as one event.
    fn dispatch(&mut self) {
        loop {
            let mut skipped = 0;
            while !self.ready.is_empty() && skipped < self.consumers.len() {
                let shared = self.consumers[0].shared.clone();
                if !shared.try_reserve() {
                    skipped += 1;
                    self.consumers.rotate_left(1);
                    continue;
                }
                skipped = 0;
                let Some(taken) = self.take_next(shared.no_ack) else {
                    shared.unreserve();
                    break;
                };
                self.consumers[0].pending.push(Delivery {
                    consumer: shared,
                    msg_id: taken.id,
                    message: taken.message,
                    redelivered: taken.redelivered,
                });
                self.consumers.rotate_left(1);
            }
            if !self.send_pending() {
                return;
            }
        }
    }

    /// Sends each consumer its deliveries of this round. A consumer whose
    /// connection is gone is dropped (the connection's cleanup cancels it)
    /// and its deliveries go back; returns whether that happened, so that
    /// they are dispatched again to the others.
    fn send_pending(&mut self) -> bool {
        let mut lost = false;
        let mut i = 0;
        while i < self.consumers.len() {
            let pending = std::mem::take(&mut self.consumers[i].pending);
            if pending.is_empty() {
                i += 1;
                continue;
            }
            match self.consumers[i].inbox.send(ConnEvent::Deliver(pending)) {
                Ok(()) => i += 1,
                Err(mpsc::error::SendError(event)) => {
                    self.consumers.remove(i);
                    if let ConnEvent::Deliver(deliveries) = event {
                        for d in deliveries {
                            self.undeliverable(d.msg_id, d.message, d.redelivered);
                        }
                    }
                    lost = true;
                }
            }
        }
        lost
    }
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
    use crate::gate::{Gate, CREDIT};
    use crate::vhost::{QueueSpec, VHost};

    #[tokio::test]
    async fn a_crashed_queue_cancels_its_consumers_and_leaves_the_vhost() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovered) = Store::open(dir.path(), 1 << 20).unwrap();
        let (vhost, _) = VHost::open("/", store, recovered);
        let arguments = FieldTable::default();
        let spec = || QueueSpec {
            name: "q",
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
            prefetch: Gate::new(0),
            channel_prefetch: Arc::new(Gate::new(0)),
            credit: Gate::new(CREDIT),
        });
        let (inbox, mut events) = mpsc::unbounded_channel();
        let consumed = queue
            .ask(|reply| QueueCommand::Consume {
                consumer: consumer.clone(),
                exclusive: false,
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
