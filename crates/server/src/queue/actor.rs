//! The actor's loop: commands in, one step at a time, each ending with a
//! dispatch round and what the step owes the store.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::{debug, error};

use super::dead_letter::Reason;
use super::{Consumer, Next, Queue, BATCH};
use crate::events::{ConnEvent, ConsumerListing, Enqueue, GetOk, Inbox, QueueCommand, QueueCounts};
use crate::AmqpError;

impl Queue {
    pub(super) async fn run(mut self, mut rx: Inbox) {
        let mut deleted = false;
        while let Some(command) = rx.recv(self.paced(), self.next_expiry()).await {
            // A bug here must cost this queue, not leave it silently stuck
            // with its consumers and publishers waiting on it for ever.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(command, &mut rx)));
            match step {
                // A full step means more is waiting: the consumers'
                // connections get their turn to take the deliveries and
                // send acks before the next one.
                Ok(Next::Continue) if rx.has_waiting(self.paced()) => tokio::task::yield_now().await,
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
        // A step that stopped the queue (delete, auto-delete, x-expires)
        // ended before its dead letters were handed on.
        self.flush_dead_letters();
        self.flush_store();
        // Publishes already in the inbox will never be held. Sends after
        // close() fail, and the publishing connection settles those itself.
        rx.close();
        let mut never_held = Vec::new();
        while let Some(command) = rx.try_recv(false) {
            if let QueueCommand::Publish(batch) = command {
                for enqueue in batch {
                    // A message whose queue is deleted is confirmed, as in
                    // RabbitMQ.
                    if let Some(confirm) = enqueue.confirm {
                        confirm.accept();
                    }
                    never_held.extend(enqueue.stored);
                }
            }
        }
        // A deleted queue's definition left the store first (forget_queue);
        // what it held dies with it. A durable queue that stops because the
        // broker does, or that crashed, keeps everything stored for the next
        // start; a transient one lets go of what it paged out.
        let transient = self.disk.as_ref().is_some_and(|d| !d.durable);
        if let (true, Some(disk)) = (deleted || transient, &self.disk) {
            let held = self
                .ready
                .iter()
                .map(|(_, e)| e)
                .chain(self.unacked.values())
                .filter_map(|e| e.stored);
            disk.store.forget(disk.queue, held.chain(never_held).collect());
        }
        debug!(queue = %self.name, "queue stopped");
    }

    /// Handles a command and whatever else is already in the inbox, then
    /// dispatches and hands the batch's confirms to the group commit.
    pub(super) fn step(&mut self, command: QueueCommand, rx: &mut Inbox) -> Next {
        self.now = self.now_ms() as u32;
        // Counted in messages, so that a run of publish batches does not
        // keep consumers waiting for the next dispatch.
        let mut handled = command.weight();
        if let Next::Stop = self.handle_in_order(command, rx) {
            return Next::Stop;
        }
        while handled < BATCH {
            let Some(command) = rx.try_recv(self.paced()) else {
                break;
            };
            handled += command.weight();
            if let Next::Stop = self.handle_in_order(command, rx) {
                return Next::Stop;
            }
        }
        if self.unused_too_long() {
            debug!(queue = %self.name, "x-expires: unused too long");
            if let Some(vhost) = self.registry.upgrade() {
                vhost.forget_queue(&self.name, self.id);
            }
            return Next::Stop;
        }
        self.expire_head();
        self.dispatch();
        self.enforce_max_length();
        self.load_ahead();
        self.page_out_tail();
        self.flush_dead_letters();
        self.flush_store();
        self.ready.shrink();
        if let Some(metrics) = &self.metrics {
            metrics.delivery_us.absorb(&mut self.latency);
        }
        if self.unacked.capacity() > 4 * self.unacked.len() + 4096 {
            self.unacked.shrink_to(2 * self.unacked.len());
        }
        Next::Continue
    }

    /// The actor panicked: its state can no longer be trusted. Its consumers
    /// are cancelled (clients that announced consumer_cancel_notify get
    /// basic.cancel), and the queue leaves the virtual host. A durable
    /// queue's definition and stored messages stay in the store and come
    /// back at the next start; a transient queue's messages are lost.
    pub(super) fn crashed(&mut self, panic: &(dyn std::any::Any + Send)) {
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

    /// Handles a command, after the publishes already waiting if it looks
    /// at the backlog: commands overtake publishes (see [`Inbox`]), but a
    /// get, a purge, a count or a delete must see every message its
    /// connection published before asking.
    pub(super) fn handle_in_order(&mut self, command: QueueCommand, rx: &mut Inbox) -> Next {
        if matches!(
            command,
            QueueCommand::Get { .. }
                | QueueCommand::Stats(_)
                | QueueCommand::Counts(_)
                | QueueCommand::Purge(_)
                | QueueCommand::Delete { .. }
        ) {
            while let Some(batch) = rx.try_recv_publish() {
                self.handle(QueueCommand::Publish(batch));
            }
            // And sees the queue as the step would leave it: waiting
            // consumers served, then the limits applied.
            self.expire_head();
            self.dispatch();
            self.enforce_max_length();
        }
        self.handle(command)
    }

    pub(super) fn handle(&mut self, command: QueueCommand) -> Next {
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
            QueueCommand::Loaded(batch) => self.loaded(batch),
            QueueCommand::Consume {
                consumer,
                exclusive,
                priority,
                inbox,
                reply,
            } => {
                self.used();
                if self.exclusive_consumer || (exclusive && !self.consumers.is_empty()) {
                    let _ = reply.send(Err(AmqpError::access_refused(format!(
                        "queue '{}' in vhost '{}' in exclusive use",
                        self.name, self.vhost_name
                    ))));
                } else {
                    self.exclusive_consumer = exclusive;
                    self.had_consumers = true;
                    self.add_consumer(Consumer {
                        shared: consumer,
                        priority,
                        inbox,
                        pending: Vec::new(),
                    });
                    let _ = reply.send(Ok(()));
                }
            }
            QueueCommand::Cancel(consumer) => {
                // The x-expires lease starts when the last consumer goes.
                self.used();
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
                self.used();
                self.get(no_ack, reply);
            }
            QueueCommand::Ack(ids) => {
                for id in ids {
                    if let Some(entry) = self.unacked.remove(&id) {
                        self.counters.ack += 1;
                        self.settle_entry(&entry);
                    }
                }
            }
            QueueCommand::Reject(ids) => {
                for id in ids {
                    if let Some(entry) = self.unacked.remove(&id) {
                        self.discard(entry, Reason::Rejected);
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
            QueueCommand::Counts(reply) => {
                let _ = reply.send(QueueCounts {
                    ready: self.ready.len() as u32,
                    unacked: self.unacked.len() as u32,
                    consumers: self.consumers.len() as u32,
                    counters: self.counters,
                    dead_lettered: self.dead_lettered,
                });
            }
            QueueCommand::Consumers(reply) => {
                let single_active = self.args.single_active_consumer;
                let listing = self.consumers.iter().enumerate().map(|(at, c)| ConsumerListing {
                    tag: c.shared.tag.clone(),
                    channel: c.shared.channel,
                    ack_required: !c.shared.no_ack,
                    prefetch_count: c.shared.prefetch.limit(),
                    priority: c.priority,
                    active: !single_active || at == 0,
                    inbox: c.inbox.clone(),
                });
                let _ = reply.send(listing.collect());
            }
            QueueCommand::Stats(reply) => {
                // Asked for by queue.declare (passive or not).
                self.used();
                let _ = reply.send((self.ready.len() as u32, self.consumers.len() as u32));
            }
            QueueCommand::Purge(reply) => {
                let n = self.ready.len() as u32;
                for entry in self.ready.take_all() {
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

    /// basic.get: answered now, or once the head of the queue is read back
    /// (after the gets already waiting, in order).
    pub(super) fn get(&mut self, no_ack: bool, reply: oneshot::Sender<Option<GetOk>>) {
        if !self.parked_gets.is_empty() || self.head_on_disk() {
            self.parked_gets.push_back((no_ack, reply));
            self.load_ahead();
            return;
        }
        self.answer_get(no_ack, reply);
    }

    pub(super) fn answer_get(&mut self, no_ack: bool, reply: oneshot::Sender<Option<GetOk>>) {
        // Dispatch expires the head before each delivery; a get does here.
        self.expire_head();
        let got = self.take_next(no_ack).map(|taken| GetOk {
            msg_id: taken.id,
            message: taken.message,
            redelivered: taken.redelivered,
            remaining: self.ready.len() as u32,
        });
        match (&got, no_ack) {
            (None, _) => {}
            (Some(_), true) => self.counters.get_no_ack += 1,
            (Some(_), false) => self.counters.get += 1,
        }
        // A get-ok the channel can no longer send goes back.
        if let Err(Some(ok)) = reply.send(got) {
            self.requeue(vec![ok.msg_id], false);
        }
    }
}
