//! A virtual host: its exchanges and bindings (a [`Router`]) and its queue
//! table, behind one `std::sync::RwLock`.
//!
//! Every method here is synchronous and takes the lock for a few map
//! operations; none holds it across an `.await` (a std lock held there would
//! block a runtime thread, see mini-redis's `db.rs`). Publishing takes the read
//! lock once to route and resolve the queue handles.
//!
//! Durable definitions are sent to the store as they change, under the same
//! write lock, so the store's order of changes is the router's: durable
//! exchanges and queues on declare and delete, and bindings whose two ends are
//! both durable (RabbitMQ's rule). Sending is a channel send: the store's
//! thread does the writing, and the lock is never held across I/O. At start,
//! [`VHost::open`] rebuilds everything from [`Recovered`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use amq_protocol::types::{AMQPValue, FieldTable};
use tracing::warn;
use warren_router::delayed::parse_type;
use warren_router::{Destination, Exchange, Explanation, QueueName, Router, RouterError, Routing};
use warren_store::{BindingDef, DestinationKind, ExchangeDef, QueueDef, Recovered, RecoveredEntry, Store};

use crate::arguments::{as_string, type_name, Arguments};
use crate::dedup::{DedupArgs, Deduplicator};
use crate::delayed::{self, Delayer};
use crate::events::{Enqueue, QueueHandle, QueueRegistry, ReplyConsumer};
use crate::queue::args::QueueArgs;
use crate::queue::dead_letter::is_cycle;
use crate::queue::{Disk, NewQueue};
use crate::stats::{Flow, Flows};
use crate::AmqpError;
use warren_codec::Message;

/// Queue arguments RabbitMQ compares when a queue is redeclared.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
];

#[derive(Debug)]
struct Definitions {
    router: Router,
    queues: HashMap<QueueName, Arc<QueueHandle>>,
    /// Each delayed exchange's queue of held messages, by exchange name
    /// ([`crate::delayed`]); not in `queues`, so no client can reach it.
    delays: HashMap<String, Arc<QueueHandle>>,
    /// The keys seen by each `x-message-deduplication` exchange
    /// ([`crate::dedup`]).
    dedup: HashMap<String, Dedup>,
}

impl Definitions {
    /// The queues a routing reached: those of its queues `keep` lets
    /// through, and the queues of the delayed exchanges that held the
    /// message.
    fn targets<'a>(
        &'a self,
        routing: &'a Routing<'_>,
        keep: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = Arc<QueueHandle>> + 'a {
        let queues = routing.queues.iter().filter(move |name| keep(name));
        queues.filter_map(|name| self.queues.get(*name).cloned()).chain(
            routing
                .delayed
                .iter()
                .filter_map(|x| self.delays.get(*x).cloned()),
        )
    }
}

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Its name, e.g. `/`.
    pub name: String,
    state: RwLock<Definitions>,
    /// Queue actors hold this to remove themselves (auto-delete).
    weak_self: Weak<VHost>,
    next_queue_id: AtomicU64,
    /// Bumped whenever the definitions may change (every write lock), so
    /// that connections know when their [`RouteCache`] is stale.
    epoch: AtomicU64,
    /// Where durable things are kept.
    pub(crate) store: Store,
    /// Set while memory is high enough for queues to page (see [`crate::alarm`]).
    memory_pressure: Arc<std::sync::atomic::AtomicBool>,
    /// Direct reply-to addresses and their consumers
    /// ([`crate::channel::reply_to`]).
    replies: std::sync::Mutex<HashMap<String, ReplyConsumer>>,
    /// Set, under the write lock, when the vhost is being deleted: nothing
    /// more is declared in it ([`crate::admin`]).
    deleted: std::sync::atomic::AtomicBool,
}

/// An exchange, as listed.
#[derive(Clone, Debug)]
pub struct ExchangeInfo {
    /// Its virtual host.
    pub vhost: String,
    /// Its name (empty: the default exchange).
    pub name: String,
    /// Its type.
    pub kind: String,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients may not publish to it.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A binding, as listed.
#[derive(Clone, Debug)]
pub struct BindingInfo {
    /// Its virtual host.
    pub vhost: String,
    /// The source exchange.
    pub source: String,
    /// The destination's name.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: &'static str,
    /// The binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default)]
pub struct RecoveryStats {
    /// Durable exchanges restored.
    pub exchanges: usize,
    /// Durable queues restored.
    pub queues: usize,
    /// Persistent messages restored, over all queues.
    pub messages: usize,
    /// Bindings restored.
    pub bindings: usize,
    /// Messages held by delayed exchanges, restored.
    pub delayed: usize,
}

impl RecoveryStats {
    /// Adds another virtual host's figures.
    pub fn add(&mut self, other: &RecoveryStats) {
        self.exchanges += other.exchanges;
        self.queues += other.queues;
        self.messages += other.messages;
        self.bindings += other.bindings;
        self.delayed += other.delayed;
    }
}

/// What queue.declare asked for.
#[derive(Debug)]
pub struct QueueSpec<'a> {
    /// The name.
    pub name: &'a str,
    /// The server chose the name ([`server_named_queue`]): it may start
    /// with `amq.`.
    pub server_named: bool,
    /// Only check that it exists.
    pub passive: bool,
    /// Survive a restart.
    pub durable: bool,
    /// Owned by the declaring connection.
    pub exclusive: bool,
    /// Delete when the last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: &'a FieldTable,
}

impl VHost {
    /// A virtual host with the predeclared exchanges and what the store
    /// recovered for it (the broker hands each virtual host its own). Must
    /// run inside the tokio runtime (it starts queue actors).
    pub fn open(
        name: &str,
        store: Store,
        recovered: Recovered,
        memory_pressure: Arc<std::sync::atomic::AtomicBool>,
    ) -> (Arc<Self>, RecoveryStats) {
        let vhost = Arc::new_cyclic(|weak_self| Self {
            name: name.to_owned(),
            state: RwLock::new(Definitions {
                router: Router::new(),
                queues: HashMap::new(),
                delays: HashMap::new(),
                dedup: HashMap::new(),
            }),
            weak_self: weak_self.clone(),
            next_queue_id: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            deleted: Default::default(),
            store,
            memory_pressure,
            replies: Default::default(),
        });
        let stats = vhost.restore(recovered);
        (vhost, stats)
    }

    fn restore(&self, recovered: Recovered) -> RecoveryStats {
        let mut stats = RecoveryStats::default();
        let mut state = self.write();
        for x in recovered.exchanges {
            let Ok((kind, delays)) = parse_type(&x.kind, &x.arguments) else {
                warn!(exchange = %x.name, kind = %x.kind, "skipping a stored exchange of unknown type");
                continue;
            };
            match self.exchange_dedup(&x.name, &x.arguments) {
                Ok(Some(dedup)) => {
                    state.dedup.insert(x.name.clone(), dedup);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(exchange = %x.name, error = %e, "a stored exchange's arguments are not honoured")
                }
            }
            let exchange = Exchange::new(x.name.into(), kind, true, x.auto_delete, x.internal, x.arguments)
                .delayed(delays);
            if state.router.declare(exchange).is_ok() {
                stats.exchanges += 1;
            }
        }
        for q in recovered.queues {
            if let Some(exchange) = delayed::exchange_of(&q.def.name) {
                let exchange = exchange.to_owned();
                stats.delayed += q.entries.len();
                let queue = self.spawn_durable_queue(q.def, QueueArgs::default(), q.entries, true);
                if state.router.exchange(&exchange).is_some_and(|x| x.delayed) {
                    Delayer::start(self.registry(), exchange.clone(), queue.clone());
                    state.delays.insert(exchange, queue);
                } else {
                    // Its exchange was deleted as the broker stopped.
                    self.drop_delay_queue(queue);
                }
                continue;
            }
            stats.queues += 1;
            stats.messages += q.entries.len();
            // A queue stored by an earlier version that took arguments it did
            // not honour keeps working, without them, and says so.
            let args = QueueArgs::parse(&q.def.arguments, &q.def.name, &self.name).unwrap_or_else(|e| {
                warn!(queue = %q.def.name, error = %e, "a stored queue's arguments are not honoured");
                QueueArgs::default()
            });
            let handle = self.spawn_durable_queue(q.def, args, q.entries, false);
            state.queues.insert(handle.name.clone(), handle);
        }
        for b in recovered.bindings {
            let destination = match b.destination_kind {
                DestinationKind::Queue => Destination::Queue(b.destination.into()),
                DestinationKind::Exchange => Destination::Exchange(b.destination.into()),
            };
            if state
                .router
                .bind(&b.source, destination, &b.routing_key, b.arguments)
                .is_ok()
            {
                stats.bindings += 1;
            }
        }
        stats
    }

    /// A queue that does not survive a restart: the store holds only its
    /// paged-out bodies.
    fn spawn_transient_queue(
        &self,
        name: QueueName,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        args: QueueArgs,
        delays: bool,
    ) -> Arc<QueueHandle> {
        self.spawn_queue(NewQueue {
            name,
            exclusive_owner,
            auto_delete,
            arguments,
            args,
            disk: Some(self.disk(self.store.new_queue_id(), false)),
            recovered: Vec::new(),
            delays,
        })
    }

    fn spawn_durable_queue(
        &self,
        def: QueueDef,
        args: QueueArgs,
        entries: Vec<RecoveredEntry>,
        delays: bool,
    ) -> Arc<QueueHandle> {
        self.spawn_queue(NewQueue {
            name: def.name.into(),
            exclusive_owner: None,
            auto_delete: def.auto_delete,
            arguments: def.arguments,
            args,
            disk: Some(self.disk(def.id, true)),
            recovered: entries,
            delays,
        })
    }

    /// A queue's place in the store, as store queue `id`.
    fn disk(&self, id: u64, durable: bool) -> Disk {
        Disk {
            store: self.store.clone(),
            queue: id,
            durable,
            memory_pressure: self.memory_pressure.clone(),
        }
    }

    /// Starts a queue's actor, with an id no other queue had.
    fn spawn_queue(&self, new: NewQueue) -> Arc<QueueHandle> {
        let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
        QueueHandle::spawn(self.registry(), &self.name, id, new)
    }

    /// Waits until every queue has handled the commands sent to it so far.
    pub(crate) async fn quiesce(&self) {
        let queues: Vec<Arc<QueueHandle>> = self.read().queues.values().cloned().collect();
        for queue in queues {
            let _ = queue.ask(crate::events::QueueCommand::Stats).await;
        }
    }

    /// Forgets the durable ones among exchanges the router deleted
    /// (auto-delete cascades included); the others were never stored.
    fn forget_exchanges(&self, state: &mut Definitions, removed: &[Exchange]) {
        for exchange in removed {
            if exchange.durable {
                self.store.delete_exchange(&self.name, exchange.name.as_str());
            }
            if let Some(queue) = state.delays.remove(exchange.name.as_str()) {
                self.drop_delay_queue(queue);
            }
            state.dedup.remove(exchange.name.as_str());
        }
    }

    /// The deduplication cache an exchange's arguments ask for, if any.
    fn exchange_dedup(&self, name: &str, arguments: &FieldTable) -> Result<Option<Dedup>, AmqpError> {
        let args = DedupArgs::parse(&Arguments::new(arguments, |key: &str, why: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for exchange '{name}' in vhost '{}': {why}",
                self.name
            ))
        }))?;
        Ok(args.map(|args| Arc::new(Mutex::new(Deduplicator::new(args)))))
    }

    /// A delayed exchange's queue: durable (and keeping every message) if
    /// the exchange is, and consumed by its [`Delayer`].
    fn start_delay_queue(&self, state: &mut Definitions, exchange: &str, durable: bool) {
        let name = delayed::queue_name(exchange);
        let queue = if durable {
            let def = QueueDef {
                vhost: self.name.clone(),
                name,
                id: self.store.new_queue_id(),
                auto_delete: false,
                arguments: FieldTable::default(),
            };
            self.store.put_queue(def.clone());
            self.spawn_durable_queue(def, QueueArgs::default(), Vec::new(), true)
        } else {
            let arguments = FieldTable::default();
            self.spawn_transient_queue(name.into(), None, false, arguments, QueueArgs::default(), true)
        };
        Delayer::start(self.registry(), exchange.to_owned(), queue.clone());
        state.delays.insert(exchange.to_owned(), queue);
    }

    /// Deletes a delayed exchange's queue, and the messages it held, as the
    /// plugin drops them with their exchange.
    fn drop_delay_queue(&self, queue: Arc<QueueHandle>) {
        if queue.durable {
            self.store.delete_queue(&self.name, queue.name.as_str());
        }
        tokio::spawn(async move {
            queue
                .ask(|reply| crate::events::QueueCommand::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply,
                })
                .await
        });
    }

    /// The stored form of a binding, if both its ends are durable.
    fn durable_binding(
        &self,
        state: &Definitions,
        source: &str,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Option<BindingDef> {
        if !state.router.exchange(source)?.durable {
            return None;
        }
        let (destination_kind, name) = match destination {
            Destination::Queue(q) => (DestinationKind::Queue, q.as_str()),
            Destination::Exchange(x) => (DestinationKind::Exchange, x.as_str()),
        };
        let durable = match destination_kind {
            DestinationKind::Queue => state.queues.get(name)?.durable,
            DestinationKind::Exchange => state.router.exchange(name)?.durable,
        };
        durable.then(|| BindingDef {
            vhost: self.name.clone(),
            source: source.to_owned(),
            destination_kind,
            destination: name.to_owned(),
            routing_key: routing_key.to_owned(),
            arguments: arguments.clone(),
        })
    }

    /// A weak reference to this virtual host, for its queue actors.
    /// What queue actors hold to take themselves off this virtual host.
    fn registry(&self) -> Weak<dyn QueueRegistry> {
        self.weak_self.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Definitions> {
        // A panic while holding the lock is a bug elsewhere; the data is still
        // consistent (every write is a few map operations), so keep serving.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Definitions> {
        let state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Bumped while holding the lock and before any change: a route read
        // after a change carries at least this epoch's number, so a cache
        // that saw the old number throws it away.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        state
    }

    /// Turns a router refusal into the AMQP error RabbitMQ sends for it.
    fn router_error(&self, e: RouterError) -> AmqpError {
        let vhost = &self.name;
        match e {
            RouterError::ExchangeNotFound(x) => {
                AmqpError::not_found(format!("no exchange '{x}' in vhost '{vhost}'"))
            }
            // RabbitMQ 3.10 closes the connection with 503 here; later versions,
            // and the client suites written against them, close the channel.
            RouterError::UnknownKind(kind) if kind.starts_with("x-") => {
                AmqpError::precondition_failed(format!("unknown exchange type '{kind}'"))
            }
            RouterError::UnknownKind(kind) => {
                AmqpError::precondition_failed(format!("invalid exchange type '{kind}'"))
            }
            RouterError::Inequivalent {
                exchange,
                field,
                received,
                current,
            } => AmqpError::precondition_failed(format!(
                "inequivalent arg '{field}' for exchange '{exchange}' in vhost '{vhost}': \
                 received '{received}' but current is '{current}'"
            )),
            RouterError::InUse(x) => {
                AmqpError::precondition_failed(format!("exchange '{x}' in vhost '{vhost}' in use"))
            }
            RouterError::DefaultExchange => {
                AmqpError::access_refused("operation not permitted on the default exchange")
            }
            RouterError::InvalidArgument(text) => AmqpError::precondition_failed(text),
        }
    }

    /// The direct reply-to addresses in use.
    pub(crate) fn replies(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReplyConsumer>> {
        self.replies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue_not_found(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be \
             originally declared on another connection or the exclusive property value does not \
             match that of the original declaration.",
            self.name
        ))
    }

    /// exchange.declare.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(self.router_error(RouterError::DefaultExchange));
        }
        // A passive declare changes nothing: the read lock, so that it does
        // not empty every connection's route cache (see `write`).
        if passive {
            if self.read().router.exchange(name).is_some() {
                return Ok(());
            }
            return Err(self.router_error(RouterError::ExchangeNotFound(name.into())));
        }
        let mut state = self.write();
        self.check_not_deleted()?;
        let (kind, delays) = parse_type(kind, arguments).map_err(|e| self.router_error(e))?;
        let dedup = self.exchange_dedup(name, arguments)?;
        if !name.is_empty() && state.router.exchange(name).is_none() && name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let exchange = Exchange::new(
            name.into(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments.clone(),
        )
        .delayed(delays);
        let type_name = exchange.type_name();
        let created = state.router.declare(exchange).map_err(|e| self.router_error(e))?;
        if created && delays {
            self.start_delay_queue(&mut state, name, durable);
        }
        if let (true, Some(dedup)) = (created, dedup) {
            state.dedup.insert(name.to_owned(), dedup);
        }
        if created && durable {
            let def = ExchangeDef {
                vhost: self.name.clone(),
                name: name.to_owned(),
                kind: type_name,
                auto_delete,
                internal,
                arguments: arguments.clone(),
            };
            self.store.put_exchange(def);
        }
        Ok(())
    }

    /// Routes a message the broker publishes itself (a dead letter, a
    /// delayed message now due) from `exchange` to the queues `keep` lets
    /// through, stores it once for those that keep it, and hands it to them
    /// without waiting: a queue never waits on another queue. A missing
    /// exchange drops it, as in RabbitMQ.
    /// Returns how many queues it reached.
    fn publish_internal(&self, exchange: &str, message: Arc<Message>, keep: impl Fn(&str) -> bool) -> usize {
        let queues: Vec<Arc<QueueHandle>> = {
            let state = self.read();
            let routing = state.router.route_detail(
                exchange,
                message.routing_key.as_str(),
                message.properties.headers().as_ref(),
            );
            state.targets(&routing, keep).collect()
        };
        let reached = queues.len();
        let copies = delayed::Copies::new(message, &queues);
        let written = copies.write(&self.store, copies.to_store(&queues), None);
        for queue in queues {
            let enqueue = Enqueue {
                message: copies.of(&queue).clone(),
                stored: copies.stored_for(&queue, &written),
                confirm: None,
            };
            if let (Err(returned), Some(store_id)) = (queue.send_dead_lettered(vec![enqueue]), queue.store_id)
            {
                self.store
                    .settle(store_id, returned.into_iter().filter_map(|e| e.stored).collect());
            }
        }
        reached
    }

    /// A publish from the management API: refused as a client's would be
    /// (404 missing exchange, 403 internal), then routed, stored for the
    /// durable queues it reaches if persistent, and handed over without
    /// waiting, as the API's publish is not confirmed in RabbitMQ either.
    /// Whether it reached a queue.
    pub fn publish(&self, message: Arc<Message>) -> Result<bool, AmqpError> {
        let exchange = message.exchange.to_string();
        self.publishable(&exchange)?;
        Ok(self.publish_internal(&exchange, message, |_| true) > 0)
    }

    /// Where a message published to `exchange` with this key and headers
    /// would go, and why ([`warren_router::explain`]): the default
    /// exchange's implicit binding only to a queue that exists; and where
    /// each queue reached would dead-letter it to.
    pub fn explain(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<(Explanation, Vec<DeadLetterRoute>), AmqpError> {
        let state = self.read();
        let mut explained = state
            .router
            .explain(exchange, routing_key, headers)
            .ok_or_else(|| self.router_error(RouterError::ExchangeNotFound(exchange.into())))?;
        explained
            .queues
            .retain(|a| state.queues.contains_key(a.queue.as_str()));
        let text = |q: &QueueHandle, key: &str| q.arguments.inner().get(key).and_then(as_string);
        let dead_letters = explained
            .queues
            .iter()
            .filter_map(|a| {
                let queue = state.queues.get(a.queue.as_str())?;
                Some(DeadLetterRoute {
                    queue: a.queue.clone(),
                    exchange: text(queue, "x-dead-letter-exchange")?,
                    routing_key: text(queue, "x-dead-letter-routing-key"),
                })
            })
            .collect();
        Ok((explained, dead_letters))
    }

    /// Keeps the steps ([`Flow`]) whose two ends still exist, under one
    /// read of the definitions.
    pub(crate) fn retain_steps(&self, flows: &mut Flows) {
        let state = self.read();
        flows.retain(|flow, _| {
            let destination = match &flow.destination {
                Destination::Queue(q) => state.queues.contains_key(q),
                Destination::Exchange(x) => state.router.exchange(x.as_str()).is_some(),
            };
            destination && state.router.exchange(flow.source.as_str()).is_some()
        });
    }

    /// exchange.delete. Deleting a missing exchange succeeds, as in RabbitMQ;
    /// the predeclared `amq.*` exchanges cannot be deleted.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let state = &mut *self.write();
        match state.router.delete(name, if_unused) {
            Ok(removed) => {
                self.forget_exchanges(state, &removed);
                Ok(())
            }
            Err(RouterError::ExchangeNotFound(_)) => Ok(()),
            Err(e) => Err(self.router_error(e)),
        }
    }

    /// queue.declare. Returns the queue and whether this call created it.
    pub fn declare_queue(&self, spec: QueueSpec<'_>, connection: u64) -> Result<Arc<QueueHandle>, AmqpError> {
        if spec.passive {
            // Changes nothing: the read lock (see `declare_exchange`).
            let state = self.read();
            let queue = state
                .queues
                .get(spec.name)
                .ok_or_else(|| self.queue_not_found(spec.name))?;
            return self.check_access(queue, connection).map(|_| queue.clone());
        }
        let shown = spec.name;
        let args = QueueArgs::parse(spec.arguments, shown, &self.name)?;
        // A quorum queue is durable, shared and kept (RabbitMQ 3.10's texts).
        let improper = match () {
            _ if !args.quorum => None,
            _ if spec.exclusive => Some("exclusive-owner"),
            _ if !spec.durable => Some("non-durable"),
            _ if spec.auto_delete => Some("auto-delete"),
            _ => None,
        };
        if let Some(property) = improper {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property '{property}' for queue '{shown}' in vhost '{}'",
                self.name
            )));
        }
        let mut state = self.write();
        self.check_not_deleted()?;
        if let Some(queue) = state.queues.get(spec.name) {
            // Another connection's exclusive queue, or exclusivity that differs
            // from the original declaration, even on the owning connection.
            if queue.exclusive_owner.is_some_and(|owner| owner != connection)
                || spec.exclusive != queue.exclusive_owner.is_some()
            {
                return Err(self.locked(spec.name));
            }
            self.check_queue_equivalent(queue, &spec)?;
            return Ok(queue.clone());
        }
        let name = if spec.server_named {
            QueueName::from(spec.name)
        } else if spec.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        } else {
            QueueName::from(spec.name)
        };
        let queue = if spec.durable {
            let def = QueueDef {
                vhost: self.name.clone(),
                name: name.to_string(),
                id: self.store.new_queue_id(),
                auto_delete: spec.auto_delete,
                arguments: spec.arguments.clone(),
            };
            self.store.put_queue(def.clone());
            self.spawn_durable_queue(def, args, Vec::new(), false)
        } else {
            let owner = spec.exclusive.then_some(connection);
            self.spawn_transient_queue(
                name.clone(),
                owner,
                spec.auto_delete,
                spec.arguments.clone(),
                args,
                false,
            )
        };
        state.queues.insert(name, queue.clone());
        Ok(queue)
    }

    fn check_queue_equivalent(&self, queue: &QueueHandle, spec: &QueueSpec<'_>) -> Result<(), AmqpError> {
        let mismatch = |field: &str, detail: String| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{field}' for queue '{}' in vhost '{}': {detail}",
                queue.name, self.name
            ))
        };
        let differs = |received: &dyn std::fmt::Display, current: &dyn std::fmt::Display| {
            format!("received '{received}' but current is '{current}'")
        };
        if queue.durable != spec.durable {
            return Err(mismatch("durable", differs(&spec.durable, &queue.durable)));
        }
        if queue.auto_delete != spec.auto_delete {
            return Err(mismatch(
                "auto_delete",
                differs(&spec.auto_delete, &queue.auto_delete),
            ));
        }
        for key in EQUIVALENCE_ARGS {
            let detail = match (
                spec.arguments.inner().get(*key),
                queue.arguments.inner().get(*key),
            ) {
                (Some(r), Some(c)) if r != c => differs(&show(r), &show(c)),
                (Some(r), None) => format!(
                    "received the value '{}' of type '{}' but current is none",
                    show(r),
                    type_name(r)
                ),
                (None, Some(c)) => format!(
                    "received none but current is the value '{}' of type '{}'",
                    show(c),
                    type_name(c)
                ),
                _ => continue,
            };
            return Err(mismatch(key, detail));
        }
        Ok(())
    }

    fn check_access(&self, queue: &QueueHandle, connection: u64) -> Result<(), AmqpError> {
        match queue.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(queue.name.as_str())),
            _ => Ok(()),
        }
    }

    /// The queue with this name, if this connection may use it: 404 if it is
    /// missing, 405 if another connection owns it.
    pub fn queue(&self, name: &str, connection: u64) -> Result<Arc<QueueHandle>, AmqpError> {
        let state = self.read();
        let queue = state.queues.get(name).ok_or_else(|| self.queue_not_found(name))?;
        self.check_access(queue, connection)?;
        Ok(queue.clone())
    }

    /// Whether the exchange is a topic exchange (the only kind topic
    /// permissions apply to); `None` if there is no such exchange.
    pub fn exchange_is_topic(&self, name: &str) -> Option<bool> {
        let state = self.read();
        let exchange = state.router.exchange(name)?;
        // A delayed exchange routing as a topic one is not of type topic.
        Some(exchange.kind == warren_router::ExchangeKind::Topic && !exchange.delayed)
    }

    /// Checks the exchange of a queue.bind or exchange.bind: not the
    /// default exchange (403), and existing (404).
    fn check_bindable(&self, router: &Router, exchange: &str) -> Result<(), AmqpError> {
        if exchange.is_empty() {
            return Err(self.router_error(RouterError::DefaultExchange));
        }
        if router.exchange(exchange).is_none() {
            return Err(self.router_error(RouterError::ExchangeNotFound(exchange.into())));
        }
        Ok(())
    }

    /// queue.bind. RabbitMQ reports a missing exchange before a missing queue.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), AmqpError> {
        let mut state = self.write();
        self.check_bindable(&state.router, exchange)?;
        let q = state
            .queues
            .get(queue)
            .ok_or_else(|| self.queue_not_found(queue))?;
        self.check_access(q, connection)?;
        let destination = Destination::Queue(q.name.clone());
        self.bind(&mut state, exchange, destination, routing_key, arguments)
    }

    /// queue.unbind. Unbinding what is not bound, from a missing queue or a
    /// missing exchange, succeeds, as in RabbitMQ.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), AmqpError> {
        let mut state = self.write();
        if exchange.is_empty() {
            return Err(self.router_error(RouterError::DefaultExchange));
        }
        let Some(q) = state.queues.get(queue) else {
            return Ok(());
        };
        self.check_access(q, connection)?;
        let destination = Destination::Queue(q.name.clone());
        self.unbind(&mut state, exchange, destination, routing_key, arguments)
    }

    /// Adds a binding, and stores it if both its ends are durable.
    fn bind(
        &self,
        state: &mut Definitions,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let durable = self.durable_binding(state, source, &destination, routing_key, arguments);
        state
            .router
            .bind(source, destination, routing_key, arguments.clone())
            .map_err(|e| self.router_error(e))?;
        match durable {
            Some(def) => {
                self.store.put_binding(def);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Removes a binding (and from the store), and any auto-delete exchange
    /// it leaves unbound. A missing exchange is no error (RabbitMQ answers
    /// unbind-ok).
    fn unbind(
        &self,
        state: &mut Definitions,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let durable = self.durable_binding(state, source, &destination, routing_key, arguments);
        match state.router.unbind(source, &destination, routing_key, arguments) {
            Ok(deleted) => {
                if let Some(def) = durable {
                    self.store.delete_binding(def);
                }
                self.forget_exchanges(state, &deleted);
                Ok(())
            }
            Err(RouterError::ExchangeNotFound(_)) => Ok(()),
            Err(e) => Err(self.router_error(e)),
        }
    }

    /// exchange.bind (destination ← source). RabbitMQ reports a missing
    /// source before a missing destination.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        let mut state = self.write();
        self.check_bindable(&state.router, source)?;
        self.check_bindable(&state.router, destination)?;
        self.bind(
            &mut state,
            source,
            Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        )
    }

    /// exchange.unbind; like queue.unbind, what is not there is no error.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if source.is_empty() || destination.is_empty() {
            return Err(self.router_error(RouterError::DefaultExchange));
        }
        let destination = Destination::Exchange(destination.into());
        self.unbind(&mut self.write(), source, destination, routing_key, arguments)
    }

    /// A publish's exchange: 404 if it is missing, 403 if it is internal
    /// (as [`VHost::route`] refuses them). For error paths that must report
    /// these first, as RabbitMQ does.
    pub(crate) fn publishable(&self, exchange: &str) -> Result<(), AmqpError> {
        let state = self.read();
        let x = state
            .router
            .exchange(exchange)
            .ok_or_else(|| self.router_error(RouterError::ExchangeNotFound(exchange.into())))?;
        if x.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        Ok(())
    }

    /// The queues a publish goes to: 404 if the exchange is missing, 403 if
    /// it is internal. An empty result means unroutable. Answers from the
    /// connection's `cache` while the definitions have not changed.
    /// With the exchange's deduplication cache, if it has one
    /// ([`crate::dedup`]): the publish path asks it when it hands the
    /// message to its queues. A route to such an exchange is never cached.
    pub(crate) fn route(
        &self,
        cache: &mut RouteCache,
        message: &Message,
    ) -> Result<(Queues, Option<Dedup>), AmqpError> {
        let (exchange, routing_key) = (message.exchange.as_str(), message.routing_key.as_str());
        let headers = message.properties.headers().as_ref();
        let epoch = self.epoch.load(Ordering::Acquire);
        if cache.epoch != epoch {
            cache.clear(epoch);
            if cache.flows.len() > ROUTE_CACHE_ENTRIES {
                self.retain_steps(&mut cache.flows);
            }
        }
        if let Some(queues) = cache.hit(exchange, routing_key) {
            return Ok((queues.clone(), None));
        }
        self.publishable(exchange)?;
        let state = self.read();
        let dedup = state.dedup.get(exchange).cloned();
        let routing = state.router.route_detail(exchange, routing_key, headers);
        let queues: Queues = state.targets(&routing, |_| true).collect();
        let flows = routing.edges;
        if !routing.used_headers && dedup.is_none() {
            cache.insert(exchange, routing_key, queues.clone(), flows);
        } else {
            cache.count(flows);
        }
        Ok((queues, dedup))
    }
}

/// Where a queue sends the messages it dead-letters
/// (`x-dead-letter-exchange`), for the route explainer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRoute {
    /// The queue.
    pub queue: String,
    /// Its dead-letter exchange.
    pub exchange: String,
    /// Its `x-dead-letter-routing-key`; None keeps the message's own keys.
    pub routing_key: Option<String>,
}

/// The queues a message is routed to, shared between the route cache and
/// the publishes that use it.
pub(crate) type Queues = Arc<[Arc<QueueHandle>]>;

/// An exchange's deduplication cache, shared by its publishers.
pub(crate) type Dedup = Arc<Mutex<Deduplicator>>;

/// Routes a connection has looked up, by exchange and routing key, valid
/// for one epoch of its virtual host's definitions. Most publishers send
/// to a handful of exchange and key pairs, so a publish usually costs two
/// hash lookups here instead of the lock, the routing walk and the queue
/// lookups. Routes that depend on message headers are never kept.
///
/// Bounded in routes and in queue handles, so that a client cycling
/// through endless routing keys of a fanout to thousands of queues costs
/// each of its connections at most ~2.5 MB (1,024 keys of 510 octets,
/// 16,384 handles and as many steps), not a copy of the queue list per key.
///
/// It also counts the publishes on each route, and so the steps they took
/// ([`Flow`]), for the topology graph's rates: a hit costs an increment.
/// Steps whose ends are gone are dropped when the counts are read, and
/// when the bindings change with many steps counted, so that bindings to
/// queues that come and go do not grow a long-lived connection's counts.
#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    epoch: u64,
    routes: HashMap<String, HashMap<String, CachedRoute>>,
    len: usize,
    handles: usize,
    /// What routes no longer cached (and routes never cached: headers,
    /// deduplication) counted.
    flows: Flows,
}

#[derive(Debug)]
struct CachedRoute {
    queues: Queues,
    flows: Box<[Flow]>,
    /// Publishes that took it since it was cached.
    hits: u64,
}

/// Routes a cache keeps before it starts again.
const ROUTE_CACHE_ENTRIES: usize = 1024;
/// Queue handles, over all its routes, a cache keeps before it starts
/// again; a route to more queues than this is never kept (routing it costs
/// far more than the lookup it would save).
const ROUTE_CACHE_HANDLES: usize = 16 * 1024;

impl RouteCache {
    fn clear(&mut self, epoch: u64) {
        for route in self.routes.drain().flat_map(|(_, keys)| keys.into_values()) {
            for flow in route.flows.iter() {
                *self.flows.entry(flow.clone()).or_default() += route.hits;
            }
        }
        self.len = 0;
        self.handles = 0;
        self.epoch = epoch;
    }

    /// The cached route, counting one more publish on it.
    fn hit(&mut self, exchange: &str, routing_key: &str) -> Option<&Queues> {
        let route = self.routes.get_mut(exchange)?.get_mut(routing_key)?;
        route.hits += 1;
        Some(&route.queues)
    }

    /// Counts a publish on a route that is not cached.
    fn count(&mut self, flows: Vec<Flow>) {
        for flow in flows {
            *self.flows.entry(flow).or_default() += 1;
        }
    }

    /// How many publishes took each step, cached routes' included, once
    /// `prune` dropped the steps whose ends are gone
    /// ([`VHost::retain_steps`]).
    pub(crate) fn flows(&mut self, prune: impl FnOnce(&mut Flows)) -> Flows {
        prune(&mut self.flows);
        let mut all = self.flows.clone();
        for route in self.routes.values().flat_map(HashMap::values) {
            for flow in route.flows.iter() {
                *all.entry(flow.clone()).or_default() += route.hits;
            }
        }
        all
    }

    fn insert(&mut self, exchange: &str, routing_key: &str, queues: Queues, flows: Vec<Flow>) {
        if queues.len() > ROUTE_CACHE_HANDLES {
            self.count(flows);
            return;
        }
        if self.len >= ROUTE_CACHE_ENTRIES || self.handles + queues.len() > ROUTE_CACHE_HANDLES {
            let epoch = self.epoch;
            self.clear(epoch);
        }
        self.handles += queues.len();
        let route = CachedRoute {
            queues,
            flows: flows.into_boxed_slice(),
            hits: 1,
        };
        self.routes
            .entry(exchange.to_owned())
            .or_default()
            .insert(routing_key.to_owned(), route);
        self.len += 1;
    }
}

impl QueueRegistry for VHost {
    /// Removes a deleted queue and its bindings. Only the queue with this id
    /// goes: a newer queue that took the name stays.
    fn forget_queue(&self, name: &QueueName, id: u64) {
        let mut state = self.write();
        let Some(queue) = state.queues.get(name).filter(|q| q.id == id) else {
            return;
        };
        let durable = queue.durable;
        state.queues.remove(name);
        let deleted = state.router.unbind_queue(name);
        // The store's thread forgets the definition and its bindings; the
        // queue then tells it to forget its messages.
        if durable {
            self.store.delete_queue(&self.name, name.as_str());
        }
        self.forget_exchanges(&mut state, &deleted);
    }

    /// Removes a queue whose actor crashed from the tables in memory only:
    /// a durable queue's definition, bindings and messages stay stored and
    /// are recovered at the next start.
    fn drop_crashed_queue(&self, name: &QueueName, id: u64) {
        let mut state = self.write();
        if state.queues.get(name).is_some_and(|q| q.id == id) {
            state.queues.remove(name);
            state.router.unbind_queue(name);
        }
    }

    /// Routes dead-lettered messages as a publish would be (a missing
    /// dead-letter exchange drops them, as in RabbitMQ), leaving out the
    /// queues that would close a cycle, and stores a persistent one once for
    /// its durable queues.
    fn dead_letter(&self, messages: Vec<Arc<Message>>) {
        for message in messages {
            let exchange = message.exchange.clone();
            let died = message.clone();
            self.publish_internal(exchange.as_str(), message, |name| {
                let cycle = is_cycle(&died, name);
                if cycle {
                    warn!(queue = %name, "dead-letter cycle: message dropped");
                }
                !cycle
            });
        }
    }

    fn release_delayed(&self, exchange: &str, queue: u64, messages: Vec<Arc<Message>>) {
        if self.read().delays.get(exchange).is_none_or(|q| q.id != queue) {
            return;
        }
        for message in messages {
            self.publish_internal(exchange, message, |_| true);
        }
    }
}

/// A field value as RabbitMQ prints it in reply texts.
fn show(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Timestamp(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// RabbitMQ's name for a field type.
/// A random suffix for server-chosen names (`amq.gen-…`, `amq.ctag-…`):
/// 128 bits from std's randomly keyed hasher, in URL-safe base64 as RabbitMQ
/// writes them. Written by hand because it is ten lines and names need no
/// cryptographic randomness, only uniqueness.
/// A name for a queue declared without one, as RabbitMQ makes them.
pub(crate) fn server_named_queue() -> String {
    format!("amq.gen-{}", random_suffix())
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits =
        (u128::from(RandomState::new().hash_one(n)) << 64) | u128::from(RandomState::new().hash_one(!n));
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// Listing and deleting, for [`crate::admin`].
impl VHost {
    /// Its queues.
    pub(crate) fn queue_handles(&self) -> Vec<Arc<QueueHandle>> {
        self.read().queues.values().cloned().collect()
    }

    /// Marks it deleted: declares fail from now on, so that nothing new is
    /// made while its queues and exchanges go.
    pub(crate) fn mark_deleted(&self) {
        let _state = self.write();
        self.deleted.store(true, Ordering::Release);
    }

    /// 320 once the vhost is being deleted (its connections are closed
    /// with the same reason). Called under the write lock.
    fn check_not_deleted(&self) -> Result<(), AmqpError> {
        match self.deleted.load(Ordering::Acquire) {
            true => Err(AmqpError::connection_forced(format!(
                "vhost '{}' is deleted",
                self.name
            ))),
            false => Ok(()),
        }
    }

    /// Whether it was deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Deletes its exchanges but the predeclared ones, as its deletion
    /// does; its queues are deleted first.
    pub(crate) fn delete_exchanges(&self) {
        let names: Vec<String> = self
            .read()
            .router
            .exchanges()
            .map(|x| x.name.to_string())
            .filter(|n| !n.is_empty() && !n.starts_with("amq."))
            .collect();
        for name in names {
            let _ = self.delete_exchange(&name, false);
        }
    }

    /// Its exchanges, by name.
    pub(crate) fn exchange_infos(&self) -> Vec<ExchangeInfo> {
        let state = self.read();
        let mut all: Vec<ExchangeInfo> = state
            .router
            .exchanges()
            .map(|x| ExchangeInfo {
                vhost: self.name.clone(),
                name: x.name.to_string(),
                kind: x.type_name(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Its bindings, by source, with the default exchange's.
    pub(crate) fn binding_infos(&self) -> Vec<BindingInfo> {
        let state = self.read();
        let mut all: Vec<BindingInfo> = state
            .router
            .exchanges()
            .flat_map(|x| x.bindings.iter().map(move |b| (x, b)))
            .map(|(x, b)| {
                let (destination_type, destination) = match &b.destination {
                    Destination::Queue(q) => ("queue", q.to_string()),
                    Destination::Exchange(e) => ("exchange", e.to_string()),
                };
                BindingInfo {
                    vhost: self.name.clone(),
                    source: x.name.to_string(),
                    destination,
                    destination_type,
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                }
            })
            .collect();
        // The default exchange's bindings, one per queue with its name as
        // the key, as RabbitMQ lists them (they are implicit here: the
        // default exchange routes by queue name). Not the hidden queues of
        // delayed exchanges, which no client can reach.
        all.extend(state.queues.keys().map(|queue| BindingInfo {
            vhost: self.name.clone(),
            source: String::new(),
            destination: queue.to_string(),
            destination_type: "queue",
            routing_key: queue.to_string(),
            arguments: FieldTable::default(),
        }));
        all.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route to `n` queues (one handle, n times: only the count matters).
    fn queues(n: usize) -> Queues {
        let (queue, _) = QueueHandle::detached("q");
        std::iter::repeat_n(queue, n).collect()
    }

    #[test]
    fn the_route_cache_stays_within_its_bounds() {
        let mut cache = RouteCache::default();
        for key in 0..ROUTE_CACHE_ENTRIES + 10 {
            cache.insert("x", &key.to_string(), queues(1), Vec::new());
            assert!(cache.len <= ROUTE_CACHE_ENTRIES);
        }
        assert!(cache.hit("x", &(ROUTE_CACHE_ENTRIES + 9).to_string()).is_some());
        let wide = queues(ROUTE_CACHE_HANDLES / 4);
        for key in 0..10 {
            cache.insert("fanout", &key.to_string(), wide.clone(), Vec::new());
            assert!(cache.handles <= ROUTE_CACHE_HANDLES);
        }
        cache.insert("fanout", "too-wide", queues(ROUTE_CACHE_HANDLES + 1), Vec::new());
        assert!(cache.hit("fanout", "too-wide").is_none());
        cache.clear(7);
        assert_eq!((cache.len, cache.handles, cache.epoch), (0, 0, 7));
    }

    /// Publishes on each route are counted on its steps, whether the route
    /// is cached, was cached, or never is.
    #[test]
    fn the_route_cache_counts_each_step() {
        let step = |destination: &str| Flow {
            source: "x".into(),
            destination: Destination::Queue(destination.into()),
            alternate: false,
        };
        let mut cache = RouteCache::default();
        cache.insert("x", "k", queues(1), vec![step("a")]);
        cache.hit("x", "k");
        cache.count(vec![step("a"), step("b")]);
        assert_eq!(cache.flows(|_| {}), Flows::from([(step("a"), 3), (step("b"), 1)]));
        // The bindings changed: the route is forgotten, its counts are not.
        cache.clear(1);
        cache.insert("x", "k", queues(1), vec![step("b")]);
        assert_eq!(cache.flows(|_| {}), Flows::from([(step("a"), 3), (step("b"), 2)]));
        // Queue `a` is gone: its step is forgotten.
        let queue_a_gone =
            |flows: &mut Flows| flows.retain(|f, _| f.destination != Destination::Queue("a".into()));
        assert_eq!(cache.flows(queue_a_gone), Flows::from([(step("b"), 2)]));
    }

    #[test]
    fn suffixes_are_22_url_safe_chars_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
