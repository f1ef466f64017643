//! The queue actor: one task per queue, the single owner of its messages and
//! its consumers.
//!
//! Responsibilities:
//! - keep ready messages in publish order, and unacked ones by message id;
//! - dispatch round-robin across consumers, never past a consumer's prefetch,
//!   its channel's prefetch, or its credit (see [`crate::consumer`]);
//! - put requeued messages back at their original position, marked redelivered;
//! - answer get, purge, delete, and the counts declare-ok reports;
//! - cancel its consumers when deleted, and delete itself when auto-delete and
//!   its last consumer goes.
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
use tracing::debug;
use warren_codec::Message;
use warren_router::QueueName;

use crate::connection::{ConnEvent, Delivery};
use crate::consumer::ConsumerShared;
use crate::vhost::VHost;
use crate::AmqpError;

/// Commands a queue accepts before it makes its publishers wait.
const INBOX: usize = 4096;
/// Commands handled before dispatching, so deliveries go out in batches.
const BATCH: usize = 256;

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
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Whether it is deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    tx: mpsc::Sender<QueueCommand>,
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
    /// Append a routed message.
    Publish(Arc<Message>),
    /// Add a consumer; refused if the queue is exclusively consumed.
    Consume {
        /// The consumer.
        consumer: Arc<ConsumerShared>,
        /// basic.consume exclusive flag.
        exclusive: bool,
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
    /// Forget acked (or rejected without requeue) messages.
    Ack(Vec<u64>),
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
    /// A gate this queue was blocked on has a free slot again.
    Wake,
    /// Ready messages and consumers, for declare-ok.
    Stats(oneshot::Sender<(u32, u32)>),
    /// Drop every ready message; replies with how many.
    Purge(oneshot::Sender<u32>),
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

impl QueueHandle {
    /// Starts the actor of a new queue.
    pub(crate) fn spawn(
        vhost: &VHost,
        id: u64,
        name: QueueName,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Arc<QueueHandle> {
        let (tx, rx) = mpsc::channel(INBOX);
        let handle = Arc::new(QueueHandle {
            name: name.clone(),
            id,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            tx,
        });
        let actor = Queue {
            name,
            id,
            vhost: vhost.weak(),
            vhost_name: vhost.name.clone(),
            auto_delete,
            ready: VecDeque::new(),
            unacked: HashMap::new(),
            next_msg_id: 0,
            consumers: VecDeque::new(),
            exclusive_consumer: false,
            had_consumers: false,
        };
        tokio::spawn(actor.run(rx));
        handle
    }

    /// Sends a command, waiting while the queue's inbox is full. A deleted
    /// queue drops it, as RabbitMQ drops messages racing a queue's deletion.
    pub async fn send(&self, command: QueueCommand) {
        let _ = self.tx.send(command).await;
    }

    /// Sends a command and waits for its reply; None if the queue is gone.
    pub async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> QueueCommand) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(command(reply)).await.ok()?;
        rx.await.ok()
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Debug)]
struct Consumer {
    shared: Arc<ConsumerShared>,
    inbox: mpsc::UnboundedSender<ConnEvent>,
}

struct Queue {
    name: QueueName,
    id: u64,
    vhost: Weak<VHost>,
    vhost_name: String,
    auto_delete: bool,
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
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCommand>) {
        'outer: while let Some(command) = rx.recv().await {
            if let Next::Stop = self.handle(command) {
                break;
            }
            for _ in 0..BATCH {
                match rx.try_recv() {
                    Ok(command) => {
                        if let Next::Stop = self.handle(command) {
                            break 'outer;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.dispatch();
        }
        debug!(queue = %self.name, "queue stopped");
    }

    fn handle(&mut self, command: QueueCommand) -> Next {
        match command {
            QueueCommand::Publish(message) => {
                let id = self.next_msg_id;
                self.next_msg_id += 1;
                self.ready.push_back(Entry {
                    id,
                    message,
                    redelivered: false,
                });
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
                    if let Some(vhost) = self.vhost.upgrade() {
                        vhost.forget_queue(&self.name, self.id);
                    }
                    return Next::Stop;
                }
            }
            QueueCommand::Get { no_ack, reply } => {
                let got = self.ready.pop_front().map(|entry| {
                    let ok = GetOk {
                        msg_id: entry.id,
                        message: entry.message.clone(),
                        redelivered: entry.redelivered,
                        remaining: self.ready.len() as u32,
                    };
                    if !no_ack {
                        self.unacked.insert(entry.id, entry);
                    }
                    ok
                });
                // A get-ok the channel can no longer send goes back.
                if let Err(Some(ok)) = reply.send(got) {
                    self.requeue(vec![ok.msg_id], false);
                }
            }
            QueueCommand::Ack(ids) => {
                for id in ids {
                    self.unacked.remove(&id);
                }
            }
            QueueCommand::Requeue { ids, redelivered } => self.requeue(ids, redelivered),
            QueueCommand::Undeliverable {
                msg_id,
                message,
                redelivered,
            } => {
                self.unacked.remove(&msg_id);
                let at = self
                    .ready
                    .binary_search_by_key(&msg_id, |e| e.id)
                    .unwrap_or_else(|at| at);
                self.ready.insert(
                    at,
                    Entry {
                        id: msg_id,
                        message,
                        redelivered,
                    },
                );
            }
            QueueCommand::Wake => {}
            QueueCommand::Stats(reply) => {
                let _ = reply.send((self.ready.len() as u32, self.consumers.len() as u32));
            }
            QueueCommand::Purge(reply) => {
                let n = self.ready.len() as u32;
                self.ready.clear();
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
                if let Some(vhost) = self.vhost.upgrade() {
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
            let at = self
                .ready
                .binary_search_by_key(&id, |e| e.id)
                .unwrap_or_else(|at| at);
            self.ready.insert(at, entry);
        }
    }

    /// Hands ready messages to consumers, round-robin, while any consumer
    /// has room. A consumer with no room is skipped (and its gate marked, so
    /// the next free slot wakes this queue).
    fn dispatch(&mut self) {
        let mut skipped = 0;
        while !self.ready.is_empty() && skipped < self.consumers.len() {
            let consumer = &self.consumers[0];
            if !consumer.shared.try_reserve() {
                skipped += 1;
                self.consumers.rotate_left(1);
                continue;
            }
            skipped = 0;
            let entry = self.ready.pop_front().expect("checked non-empty");
            let event = ConnEvent::Deliver(Delivery {
                consumer: consumer.shared.clone(),
                msg_id: entry.id,
                message: entry.message.clone(),
                redelivered: entry.redelivered,
            });
            if consumer.inbox.send(event).is_err() {
                // The connection is gone; its cleanup cancels this consumer.
                self.ready.push_front(entry);
                self.consumers.pop_front();
                continue;
            }
            if !consumer.shared.no_ack {
                self.unacked.insert(entry.id, entry);
            }
            self.consumers.rotate_left(1);
        }
    }
}
