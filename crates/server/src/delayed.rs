//! Delayed messages: the `x-delayed-message` exchange type of the community
//! plugin (`rabbitmq-delayed-message-exchange`), which LavinMQ also offers.
//!
//! A delayed exchange routes as its `x-delayed-type` says, except that a
//! message with a positive `x-delay` header (milliseconds) is held until
//! that much time has passed, then routed from the exchange by the bindings
//! it has then ([`warren_router::delayed`] decides which messages are held).
//!
//! The held messages live in a queue of the exchange's own, which clients
//! never see (`amq.delayed.<exchange>`, absent from the queue table): a held
//! message is published to it like to any queue, so it is stored, counted
//! against memory and confirmed to its publisher as any message is. For a
//! durable exchange the queue is durable and keeps every message, persistent
//! or not, as the plugin keeps every delayed message on disk. A task of the
//! exchange's consumes that queue ([`Delayer`]): it orders the messages by
//! due time and, when one is due, routes it and only then acks it, so a
//! message held across a restart is delivered after it, in due order.
//!
//! The due time must survive a restart, so the queue's copy of a message
//! carries it in the header `x-warren-due` (milliseconds since the Unix
//! epoch), added when it is routed and removed before it is routed again.
//! As the plugin does, the routed message's `x-delay` is turned negative,
//! so that another delayed exchange behind this one does not hold it again,
//! and consumers can tell it was delayed.
//!
//! Unlike the plugin, a held message is not returned to a mandatory
//! publisher: it is not unroutable yet, and whether it will be is decided
//! when it is due (an unroutable delayed message is dropped then, as in the
//! plugin).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::sync::mpsc;
use tokio::time::Instant;
use warren_codec::Message;
use warren_router::delayed::{delay_of, MAX_DELAY};
use warren_store::{Durable, Store};

use crate::clock::wall_ms as now_ms;
use crate::events::{ConnEvent, ConsumerShared, QueueCommand, QueueHandle, QueueRegistry};
use crate::gate::{Gate, CREDIT};

/// The header that carries a held message's due time.
const DUE: &str = "x-warren-due";

/// The name of a delayed exchange's queue. Clients cannot declare `amq.`
/// queues, so it cannot clash with one of theirs in the store.
pub(crate) fn queue_name(exchange: &str) -> String {
    format!("amq.delayed.{exchange}")
}

/// The exchange whose queue this is, if it is a delayed exchange's.
pub(crate) fn exchange_of(queue: &str) -> Option<&str> {
    queue.strip_prefix("amq.delayed.")
}

/// The copy of `message` a delayed exchange's queue holds: stamped with its
/// due time, from its `x-delay`.
pub(crate) fn stamp(message: &Message) -> Arc<Message> {
    with_headers(message, |headers| {
        let delay = delay_of(Some(headers)).unwrap_or(0);
        headers.insert(DUE.into(), AMQPValue::LongLongInt((now_ms() + delay) as i64));
    })
}

/// A copy of `message` (its body shared) with its headers changed by `change`.
fn with_headers(message: &Message, change: impl FnOnce(&mut FieldTable)) -> Arc<Message> {
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    change(&mut headers);
    Arc::new(Message {
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        properties: Arc::new((*message.properties).clone().with_headers(headers)),
        body: message.body.clone(),
    })
}

/// When a held message is due, in milliseconds since the Unix epoch (now,
/// for one without a stamp).
fn due(message: &Message) -> u64 {
    match message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DUE))
    {
        Some(AMQPValue::LongLongInt(due)) => (*due).max(0) as u64,
        _ => now_ms(),
    }
}

/// The message to route once due: without the stamp, its `x-delay`
/// negated (a 32-bit signed integer, as the plugin writes it, where it fits).
fn release(message: &Message) -> Arc<Message> {
    with_headers(message, |headers| {
        let mut table: BTreeMap<_, _> = headers.inner().clone();
        table.remove(DUE);
        *headers = FieldTable::from(table);
        if let Some(delay) = delay_of(Some(headers)) {
            let negated = -(delay as i64);
            let value = i32::try_from(negated).map_or(AMQPValue::LongLongInt(negated), AMQPValue::LongInt);
            headers.insert("x-delay".into(), value);
        }
    })
}

/// The task that consumes a delayed exchange's queue and routes each
/// message when it is due.
pub(crate) struct Delayer {
    vhost: Weak<dyn QueueRegistry>,
    exchange: String,
    queue: Arc<QueueHandle>,
    /// Held messages by due time, then arrival: the queue's id for each.
    held: BTreeMap<(u64, u64), (u64, Arc<Message>)>,
    arrivals: u64,
}

impl Delayer {
    /// Starts consuming `queue` for `exchange`.
    pub(crate) fn start(vhost: Weak<dyn QueueRegistry>, exchange: String, queue: Arc<QueueHandle>) {
        let (inbox, events) = mpsc::unbounded_channel();
        let consumer = Arc::new(ConsumerShared {
            tag: "amq.delayed".into(),
            channel: 0,
            queue: queue.clone(),
            no_ack: false,
            ack_timeout: None,
            // Unlimited: every held message is here, ordered by due time.
            prefetch: Gate::new(0),
            channel_prefetch: Arc::new(Gate::new(0)),
            credit: Gate::new(CREDIT),
        });
        let delayer = Self {
            vhost,
            exchange,
            queue,
            held: BTreeMap::new(),
            arrivals: 0,
        };
        tokio::spawn(delayer.run(consumer, inbox, events));
    }

    async fn run(
        mut self,
        consumer: Arc<ConsumerShared>,
        inbox: mpsc::UnboundedSender<ConnEvent>,
        mut events: mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        let consumed = self
            .queue
            .ask(|reply| QueueCommand::Consume {
                consumer,
                exclusive: true,
                priority: 0,
                inbox,
                reply,
            })
            .await;
        if !matches!(consumed, Some(Ok(()))) {
            return;
        }
        loop {
            let next = self.held.keys().next().map(|&(due, _)| due);
            // Never further than the longest delay: the clock's range holds.
            let wake = next.map(|due| {
                Instant::now() + Duration::from_millis(due.saturating_sub(now_ms()).min(MAX_DELAY))
            });
            tokio::select! {
                event = events.recv() => match event {
                    Some(ConnEvent::Deliver(deliveries)) => {
                        for delivery in deliveries {
                            // Taken in at once: the credit is only for the way here.
                            delivery.consumer.credit.release(delivery.credit);
                            self.arrivals += 1;
                            let key = (due(&delivery.message), self.arrivals);
                            self.held.insert(key, (delivery.msg_id, delivery.message));
                        }
                    }
                    // The exchange, and so its queue, was deleted.
                    Some(ConnEvent::Cancelled(_)) | None => return,
                    Some(ConnEvent::Confirmed { .. } | ConnEvent::Close(_) | ConnEvent::Channels(_)) => {}
                },
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    if !self.route_due().await {
                        return;
                    }
                }
            }
        }
    }

    /// Routes every message that is due, in due order, then acks them.
    /// False once the virtual host is gone.
    async fn route_due(&mut self) -> bool {
        let now = now_ms();
        let Some(vhost) = self.vhost.upgrade() else {
            return false;
        };
        let mut done = Vec::new();
        let mut due = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (msg_id, message) = entry.remove();
            due.push(release(&message));
            done.push(msg_id);
        }
        vhost.release_delayed(&self.exchange, self.queue.id, due);
        // Acked once routed: a crash in between delivers it twice, never
        // loses it.
        self.queue.send(QueueCommand::Ack(done)).await;
        true
    }
}

/// A routed message as each of its queues holds it: as published, or, in a
/// delayed exchange's queue, stamped with its due time.
pub(crate) struct Copies {
    pub plain: Arc<Message>,
    stamped: Option<Arc<Message>>,
}

impl Copies {
    pub(crate) fn new(message: Arc<Message>, queues: &[Arc<QueueHandle>]) -> Self {
        let stamped = queues.iter().any(|q| q.delays).then(|| stamp(&message));
        Self {
            plain: message,
            stamped,
        }
    }

    /// The copy `queue` holds.
    pub(crate) fn of(&self, queue: &QueueHandle) -> &Arc<Message> {
        match (&self.stamped, queue.delays) {
            (Some(stamped), true) => stamped,
            _ => &self.plain,
        }
    }

    /// Whether the store keeps the message for `queue`.
    pub(crate) fn kept_by(&self, queue: &QueueHandle) -> bool {
        queue.keeps(*self.plain.properties.delivery_mode() == Some(2))
    }

    /// Each copy the store must write, with the store ids of the queues
    /// that keep it; none for a message held in memory only.
    pub(crate) fn to_store(&self, queues: &[Arc<QueueHandle>]) -> Vec<(Arc<Message>, Vec<u64>)> {
        [Some(&self.plain), self.stamped.as_ref()]
            .into_iter()
            .flatten()
            .map(|copy| {
                let ids: Vec<u64> = queues
                    .iter()
                    .filter(|q| Arc::ptr_eq(self.of(q), copy) && self.kept_by(q))
                    .filter_map(|q| q.store_id)
                    .collect();
                (copy.clone(), ids)
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect()
    }

    /// Has `store` write each copy [`Copies::to_store`] listed, each with
    /// `confirm`; the store's id for each.
    pub(crate) fn write(
        &self,
        store: &Store,
        writes: Vec<(Arc<Message>, Vec<u64>)>,
        confirm: Option<Arc<dyn Durable>>,
    ) -> Vec<(Arc<Message>, u64)> {
        writes
            .into_iter()
            .map(|(copy, queues)| {
                let id = store.publish(copy.clone(), queues, confirm.clone());
                (copy, id)
            })
            .collect()
    }

    /// The store's id for what `queue` holds, among `written` copies.
    pub(crate) fn stored_for(&self, queue: &QueueHandle, written: &[(Arc<Message>, u64)]) -> Option<u64> {
        let copy = self.of(queue);
        written
            .iter()
            .find(|(c, _)| Arc::ptr_eq(c, copy))
            .map(|&(_, id)| id)
            .filter(|_| self.kept_by(queue))
    }
}
