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
//! - for a durable queue, keep its persistent messages' index in the store:
//!   append on publish (then hand the confirm to the group commit, see
//!   [`crate::durability`]), mark on first delivery, remove on ack, and page
//!   bodies out of memory beyond [`IN_MEMORY`] ready messages, reading them
//!   back from the store when they are delivered.
//!
//! Commands arrive on one bounded mpsc, so a queue that cannot keep up slows
//! its publishers (the connection waits to send, and stops reading its socket)
//! instead of growing. The actor itself never waits on anyone: deliveries go to
//! the consuming connection's unbounded inbox, bounded in practice by credit.
//! That one-way waiting is what keeps connections and queues free of deadlock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use amq_protocol::types::FieldTable;
use tokio::sync::mpsc;
use tracing::{debug, error};
use warren_codec::Message;
use warren_router::QueueName;
use warren_store::{IndexEntry, QueueIndex, Store, StoreError};

use crate::durability::Syncer;
use crate::events::ConsumerShared;
use crate::events::{
    ConfirmTracker, ConnEvent, Delivery, Enqueue, GetOk, Inbox, QueueCommand, QueueHandle, QueueRegistry,
};
use crate::AmqpError;

/// Messages (or other commands) handled before dispatching, so deliveries
/// go out in batches.
const BATCH: usize = 256;
/// Ready persistent messages a durable queue keeps in memory; beyond this
/// their bodies stay in the store until delivered, so a backlog larger than
/// memory costs an index entry (~64 bytes) per message, not its body.
pub const IN_MEMORY: usize = 10_000;

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
            new.durable,
            new.exclusive_owner,
            new.auto_delete,
            new.arguments,
        );
        let next_msg_id = new.recovered.last().map_or(0, |e| e.position + 1);
        let ready = new
            .recovered
            .into_iter()
            .map(|e| Entry {
                id: e.position,
                message: None,
                stored: Some(e.message_id),
                redelivered: e.delivered,
            })
            .collect();
        let actor = Queue {
            name: new.name,
            id,
            registry,
            vhost_name: vhost_name.to_owned(),
            auto_delete: new.auto_delete,
            disk: new.disk,
            pending_sync: Vec::new(),
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
    pub durable: bool,
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// The store, for a durable queue.
    pub disk: Option<Disk>,
    /// Index entries found at start, in order.
    pub recovered: Vec<IndexEntry>,
}

/// A durable queue's place in the store.
#[derive(Debug)]
pub(crate) struct Disk {
    pub store: Arc<Store>,
    pub index: QueueIndex,
    pub syncer: Syncer,
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
    /// Confirms waiting for this batch's writes to be synced.
    pending_sync: Vec<Arc<ConfirmTracker>>,
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
                Ok(Next::Stop) => break,
                Err(panic) => {
                    self.crashed(panic.as_ref());
                    break;
                }
            }
        }
        // A queue deleted mid-batch still owes its publishers their confirms.
        self.request_sync();
        // Publishes already in the inbox will never be held: let go of their
        // stored bodies and count their confirms down (RabbitMQ confirms a
        // message whose queue is deleted). Sends after close() fail, and the
        // publishing connection does the same for them.
        rx.close();
        while let Some(command) = rx.try_recv() {
            let QueueCommand::Publish(batch) = command else {
                continue;
            };
            for Enqueue { stored, confirm, .. } in batch {
                if let (Some(disk), Some(message_id)) = (&self.disk, stored) {
                    if let Err(e) = disk.store.release(message_id) {
                        error!(queue = %self.name, error = %e, "cannot release a stored message");
                    }
                }
                if let Some(tracker) = confirm {
                    tracker.done(true);
                }
            }
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
        self.request_sync();
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

    /// Hands this batch's confirms to the group commit.
    fn request_sync(&mut self) {
        if let Some(disk) = &self.disk {
            disk.syncer.request(std::mem::take(&mut self.pending_sync));
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
                for Enqueue {
                    message,
                    stored,
                    confirm,
                } in batch
                {
                    self.publish(message, stored, confirm);
                }
            }
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
            QueueCommand::Get { no_ack, reply } => {
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
            QueueCommand::Ack(ids) => {
                for id in ids {
                    if let Some(entry) = self.unacked.remove(&id) {
                        self.forget_on_disk(&entry);
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
                    self.forget_on_disk(&entry);
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

    fn publish(&mut self, message: Arc<Message>, stored: Option<u64>, confirm: Option<Arc<ConfirmTracker>>) {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        let mut entry = Entry {
            id,
            message: Some(message),
            stored,
            redelivered: false,
        };
        if let (Some(disk), Some(message_id)) = (&self.disk, stored) {
            let written = disk.store.put_entry(
                &disk.index,
                IndexEntry {
                    position: id,
                    message_id,
                    delivered: false,
                },
            );
            if let Err(e) = &written {
                error!(queue = %self.name, error = %e, "cannot store a persistent message");
            }
            match confirm {
                // Confirmed once the group commit after this batch completes.
                Some(tracker) if written.is_ok() => self.pending_sync.push(tracker),
                Some(tracker) => tracker.done(false),
                None => {}
            }
            if self.ready.len() >= IN_MEMORY {
                entry.message = None;
            }
        } else if let Some(tracker) = confirm {
            // Only durable queues are asked to confirm a write.
            tracker.done(true);
        }
        self.ready.push_back(entry);
    }

    /// The message of an entry, read back from the store if paged out.
    fn load(&self, entry: &Entry) -> Loaded {
        if let Some(message) = &entry.message {
            return Loaded::Message(message.clone());
        }
        let (Some(disk), Some(message_id)) = (self.disk.as_ref(), entry.stored) else {
            return Loaded::Corrupt;
        };
        match disk.store.get_message(message_id) {
            Ok(message) => Loaded::Message(Arc::new(message)),
            Err(e @ StoreError::Corrupt { .. }) => {
                error!(queue = %self.name, error = %e, "a stored message does not decode; dropping it");
                Loaded::Corrupt
            }
            Err(e) => {
                error!(queue = %self.name, error = %e, "cannot read a stored message; will retry");
                Loaded::Failed
            }
        }
    }

    /// Removes a settled (or purged) message from the store.
    fn forget_on_disk(&self, entry: &Entry) {
        if let (Some(disk), Some(message_id)) = (&self.disk, entry.stored) {
            let index_entry = IndexEntry {
                position: entry.id,
                message_id,
                delivered: true,
            };
            if let Err(e) = disk.store.remove_entry(&disk.index, index_entry) {
                error!(queue = %self.name, error = %e, "cannot remove a stored message");
            }
        }
    }

    /// Takes the next ready message for a delivery or a get: loads it if
    /// paged out, records its first delivery in the store (so that it comes
    /// back redelivered after a restart), and moves it to `unacked`, or
    /// forgets it at once for no-ack.
    fn take_next(&mut self, no_ack: bool) -> Option<Taken> {
        while let Some(mut entry) = self.ready.pop_front() {
            let message = match self.load(&entry) {
                Loaded::Message(message) => message,
                Loaded::Corrupt => {
                    self.forget_on_disk(&entry);
                    continue;
                }
                // A read that failed (I/O) keeps the message: it is retried
                // at the next dispatch.
                Loaded::Failed => {
                    self.ready.push_front(entry);
                    return None;
                }
            };
            let taken = Taken {
                id: entry.id,
                message,
                redelivered: entry.redelivered,
            };
            if no_ack {
                self.forget_on_disk(&entry);
                return Some(taken);
            }
            if let (Some(disk), Some(message_id), false) = (&self.disk, entry.stored, entry.redelivered) {
                let marked = IndexEntry {
                    position: entry.id,
                    message_id,
                    delivered: true,
                };
                if let Err(e) = disk.store.put_entry(&disk.index, marked) {
                    error!(queue = %self.name, error = %e, "cannot mark a stored message delivered");
                }
            }
            if entry.stored.is_some() {
                // The store has it; the delivery carries it to the client.
                entry.message = None;
            }
            self.unacked.insert(entry.id, entry);
            return Some(taken);
        }
        None
    }

    /// A delivery that never reached the client goes back where it was.
    fn undeliverable(&mut self, msg_id: u64, message: Arc<Message>, redelivered: bool) {
        let mut stored = self.unacked.remove(&msg_id).and_then(|e| e.stored);
        // A no-ack delivery left the store when it was taken; a persistent one
        // that never reached its client goes back into it.
        if let (None, Some(disk), Some(2)) = (stored, &self.disk, *message.properties.delivery_mode()) {
            let entry = |message_id| IndexEntry {
                position: msg_id,
                message_id,
                delivered: false,
            };
            match disk
                .store
                .put_message(&message, 1)
                .and_then(|id| disk.store.put_entry(&disk.index, entry(id)).map(|_| id))
            {
                Ok(id) => stored = Some(id),
                Err(e) => error!(queue = %self.name, error = %e, "cannot store a returned message again"),
            }
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

/// What reading an entry's message gave.
enum Loaded {
    Message(Arc<Message>),
    /// Missing or undecodable: it can never be delivered.
    Corrupt,
    /// The store failed to read it this time.
    Failed,
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
        let store = Arc::new(Store::open(dir.path(), 1 << 20).unwrap());
        let recovered = store.recover().unwrap();
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
