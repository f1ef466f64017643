//! Administration of a running broker: what `warren ctl` and the management
//! API do (rabbitmqctl's verbs), in one place, with no HTTP in it.
//!
//! - virtual hosts: add, delete (closing its connections and deleting its
//!   queues, whose messages go with them), list;
//! - permissions and topic permissions: set, checked against the users and
//!   virtual hosts that exist, and clear;
//! - connections: list, close (320 CONNECTION_FORCED, as
//!   `rabbitmqctl close_connection` does);
//! - queues, exchanges, bindings and consumers: list with their counts;
//!   purge and delete a queue.
//!
//! Users themselves are [`crate::users::Users`]'.

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use tokio::sync::mpsc;
use tracing::info;
use warren_store::{PermissionDef, TopicPermissionDef};

use crate::access::Access;
use crate::broker::{Broker, ConnectionInfo};
use crate::events::{ChannelListing, ConnEvent, QueueCommand, QueueHandle};
use crate::permissions::{Permission, Resource};
use crate::stats::{Flows, MessageCounters};
use crate::vhost::{BindingInfo, DeadLetterRoute, ExchangeInfo, VHost};
use crate::AmqpError;
use std::collections::HashMap;
use warren_router::Explanation;

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It is malformed, or not allowed.
    #[error("{0}")]
    Invalid(String),
    /// The user may not do it (their permissions in the vhost).
    #[error("{0}")]
    Refused(String),
}

impl From<AmqpError> for AdminError {
    fn from(e: AmqpError) -> Self {
        match e.code() {
            404 => AdminError::NotFound(e.to_string()),
            // 403 access refused, 530 no access to the vhost.
            403 | 530 => AdminError::Refused(e.to_string()),
            _ => AdminError::Invalid(e.to_string()),
        }
    }
}

/// A queue, as listed.
#[derive(Clone, Debug)]
pub struct QueueInfo {
    /// Its virtual host.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Owned by one connection.
    pub exclusive: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Messages ready for delivery.
    pub ready: u32,
    /// Messages delivered and not yet acked.
    pub unacked: u32,
    /// Consumers.
    pub consumers: u32,
    /// What it has done since it started (`message_stats`).
    pub counters: MessageCounters,
    /// Messages it dead-lettered since it started.
    pub dead_lettered: u64,
}

/// What the connections have done: [`Broker::channels`].
#[derive(Debug)]
pub struct Activity {
    /// The open channels.
    pub channels: Vec<ChannelInfo>,
    /// The broker's `message_stats`: never lower than reported before.
    pub totals: MessageCounters,
    /// How many publishes took each step between exchanges and queues,
    /// by vhost (for the topology graph's rates).
    pub flows: HashMap<String, Flows>,
}

/// How long a listing waits for the connections' answers.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A channel, as listed, with its connection.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    /// Its connection.
    pub connection: ConnectionInfo,
    /// The channel.
    pub channel: ChannelListing,
}

/// A consumer, as listed.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    /// Its queue's virtual host.
    pub vhost: String,
    /// Its queue.
    pub queue: String,
    /// Its tag.
    pub tag: String,
    /// Its connection's name (empty for the broker's own consumers).
    pub connection: String,
    /// Its channel.
    pub channel: u16,
    /// Deliveries wait for an ack.
    pub ack_required: bool,
    /// Its own prefetch limit (0: none).
    pub prefetch_count: u32,
    /// `x-priority`.
    pub priority: i64,
    /// Served now (false: a single-active consumer waiting its turn).
    pub active: bool,
}

impl Broker {
    /// Closes the connection called `name` with 320 and `reason`; false if
    /// there is none.
    pub fn close_connection(&self, name: &str, reason: &str) -> bool {
        let connections = self.connections();
        let Some(info) = connections.iter().find(|c| c.name == name) else {
            return false;
        };
        info!(connection = name, reason, "closing connection on request");
        let _ = info.inbox.send(ConnEvent::Close(reason.to_owned()));
        true
    }

    /// Deletes a virtual host: its queues are deleted with their messages,
    /// its connections closed (320), and its definitions and permissions
    /// forgotten. False if there is none.
    pub async fn delete_vhost(&self, name: &str) -> bool {
        let Some(vhost) = self.remove_vhost(name) else {
            return false;
        };
        // First, nothing more is allowed or declared in it: its users'
        // permissions go (every check of its connections fails from now
        // on), and declares fail.
        self.users.forget_vhost(name);
        vhost.mark_deleted();
        // RabbitMQ's order: the queues go (their consumers are cancelled),
        // then the exchanges, then the connections are closed.
        for queue in vhost.queue_handles() {
            delete(&queue).await;
        }
        vhost.delete_exchanges();
        for info in self.connections().into_iter().filter(|c| c.vhost == name) {
            let _ = info
                .inbox
                .send(ConnEvent::Close(format!("vhost '{name}' is deleted")));
        }
        self.store.delete_vhost(name);
        info!(vhost = name, "virtual host deleted");
        true
    }

    fn vhost_or_404(&self, name: &str) -> Result<Arc<VHost>, AdminError> {
        self.vhost(name)
            .ok_or_else(|| AdminError::NotFound(format!("no vhost '{name}'")))
    }

    fn user_or_404(&self, name: &str) -> Result<(), AdminError> {
        match self.users.exists(name) {
            true => Ok(()),
            false => Err(AdminError::NotFound(format!("no user '{name}'"))),
        }
    }

    /// Sets a user's permissions in a vhost; both must exist.
    pub fn set_permissions(&self, def: PermissionDef) -> Result<(), AdminError> {
        self.user_or_404(&def.user)?;
        self.vhost_or_404(&def.vhost)?;
        self.users.set_permissions(def).map_err(AdminError::Invalid)
    }

    /// Sets a user's topic permissions on an exchange of a vhost; the user
    /// and the vhost must exist (the exchange need not, as in RabbitMQ).
    pub fn set_topic_permissions(&self, def: TopicPermissionDef) -> Result<(), AdminError> {
        self.user_or_404(&def.user)?;
        self.vhost_or_404(&def.vhost)?;
        self.users.set_topic_permissions(def).map_err(AdminError::Invalid)
    }

    fn vhosts_named(&self, vhost: Option<&str>) -> Result<Vec<Arc<VHost>>, AdminError> {
        let mut vhosts = match vhost {
            Some(name) => vec![self.vhost_or_404(name)?],
            None => self.vhosts(),
        };
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vhosts)
    }

    /// The queues of a vhost, or of all, with their counts.
    pub async fn queues(&self, vhost: Option<&str>) -> Result<Vec<QueueInfo>, AdminError> {
        let mut all = Vec::new();
        for vhost in self.vhosts_named(vhost)? {
            let mut handles = vhost.queue_handles();
            handles.sort_by(|a, b| a.name.cmp(&b.name));
            for queue in handles {
                all.push(queue_info(&vhost.name, &queue).await);
            }
        }
        Ok(all)
    }

    /// One queue, with its counts: only that queue is asked.
    pub async fn queue(&self, vhost: &str, name: &str) -> Result<QueueInfo, AdminError> {
        let queue = self.queue_or_404(vhost, name)?;
        Ok(queue_info(vhost, &queue).await)
    }

    /// The open channels of every connection, with the connection's name,
    /// user and vhost; what every channel has counted since the broker
    /// started, closed ones included (RabbitMQ's overview `message_stats`);
    /// and how many publishes took each step, by vhost.
    pub async fn channels(&self) -> Activity {
        let mut all = Vec::new();
        // Read first: a connection that answers and then closes is counted
        // once (by its answer), never twice; one that closes before it
        // answers is missed this time, and the report below keeps the
        // totals from going down meanwhile.
        let (mut totals, mut flows) = self.retired();
        // Every connection is asked first, so that they answer at once,
        // and all within one deadline.
        let asked: Vec<_> = self
            .connections()
            .into_iter()
            .filter_map(|connection| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                connection.inbox.send(ConnEvent::Channels(reply)).ok()?;
                Some((connection, answer))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        for (connection, answer) in asked {
            // A connection that closes meanwhile, or is too busy to answer
            // soon, is left out of this listing (the report's clamp keeps
            // the totals from going down; a closed one is in `retired` next
            // time).
            let Ok(Ok(activity)) = tokio::time::timeout_at(deadline, answer).await else {
                continue;
            };
            totals += activity.closed;
            let counted = flows.entry(connection.vhost.clone()).or_default();
            for (flow, n) in activity.flows {
                *counted.entry(flow).or_default() += n;
            }
            for channel in activity.channels {
                totals += channel.counters;
                all.push(ChannelInfo {
                    connection: connection.clone(),
                    channel,
                });
            }
        }
        Activity {
            channels: all,
            totals: self.report(totals),
            flows,
        }
    }

    /// The consumers of a vhost's queues, or of all, by queue.
    pub async fn consumers(&self, vhost: Option<&str>) -> Result<Vec<ConsumerInfo>, AdminError> {
        let connections = self.connections();
        let connection_of = |inbox: &mpsc::UnboundedSender<ConnEvent>| {
            connections
                .iter()
                .find(|c| c.inbox.same_channel(inbox))
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let mut all = Vec::new();
        for vhost in self.vhosts_named(vhost)? {
            let mut handles = vhost.queue_handles();
            handles.sort_by(|a, b| a.name.cmp(&b.name));
            for queue in handles {
                let listed = queue.ask(QueueCommand::Consumers).await.unwrap_or_default();
                all.extend(listed.into_iter().map(|c| ConsumerInfo {
                    vhost: vhost.name.clone(),
                    queue: queue.name.to_string(),
                    tag: c.tag.to_string(),
                    connection: connection_of(&c.inbox),
                    channel: c.channel,
                    ack_required: c.ack_required,
                    prefetch_count: c.prefetch_count,
                    priority: c.priority,
                    active: c.active,
                }));
            }
        }
        Ok(all)
    }

    /// The exchanges of a vhost, or of all.
    pub fn exchanges(&self, vhost: Option<&str>) -> Result<Vec<ExchangeInfo>, AdminError> {
        Ok(self
            .vhosts_named(vhost)?
            .iter()
            .flat_map(|v| v.exchange_infos())
            .collect())
    }

    /// The bindings of a vhost, or of all.
    pub fn bindings(&self, vhost: Option<&str>) -> Result<Vec<BindingInfo>, AdminError> {
        Ok(self
            .vhosts_named(vhost)?
            .iter()
            .flat_map(|v| v.binding_infos())
            .collect())
    }

    fn queue_or_404(&self, vhost: &str, name: &str) -> Result<Arc<QueueHandle>, AdminError> {
        self.vhost_or_404(vhost)?
            .queue_handles()
            .into_iter()
            .find(|q| q.name.as_str() == name)
            .ok_or_else(|| AdminError::NotFound(format!("no queue '{name}' in vhost '{vhost}'")))
    }

    /// Where a message would go in a vhost, and why (the route explainer).
    pub fn explain(
        &self,
        vhost: &str,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<(Explanation, Vec<DeadLetterRoute>), AdminError> {
        Ok(self
            .vhost_or_404(vhost)?
            .explain(exchange, routing_key, headers)?)
    }

    /// Empties a queue, as `user` (queue.purge: read permission); how
    /// many messages it dropped.
    pub async fn purge_queue(&self, user: &str, vhost: &str, name: &str) -> Result<u32, AdminError> {
        let (_, mut access) = self.access(user, vhost)?;
        let queue = self.queue_or_404(vhost, name)?;
        access.check(Permission::Read, Resource::Queue, name)?;
        Ok(queue.ask(QueueCommand::Purge).await.unwrap_or(0))
    }

    /// Deletes a queue, as `user` (queue.delete: configure permission),
    /// whoever owns or consumes from it unless `if_unused`, and only if it
    /// is empty with `if_empty` (RabbitMQ's `?if-unused=true`,
    /// `?if-empty=true`: 400 with the precondition's text otherwise); how
    /// many messages went with it.
    pub async fn delete_queue(
        &self,
        user: &str,
        vhost: &str,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AdminError> {
        let (_, mut access) = self.access(user, vhost)?;
        let queue = self.queue_or_404(vhost, name)?;
        access.check(Permission::Configure, Resource::Queue, name)?;
        let deleted = queue
            .ask(|reply| QueueCommand::Delete {
                if_unused,
                if_empty,
                reply,
            })
            .await;
        match deleted {
            Some(Err(refused)) => Err(AdminError::Invalid(refused.text)),
            Some(Ok(messages)) => Ok(messages),
            // It ended meanwhile.
            None => Ok(0),
        }
    }
}

/// A queue as listed, with its counts (empty if it ends meanwhile).
async fn queue_info(vhost: &str, queue: &QueueHandle) -> QueueInfo {
    let counts = queue.ask(QueueCommand::Counts).await.unwrap_or_default();
    QueueInfo {
        vhost: vhost.to_owned(),
        name: queue.name.to_string(),
        durable: queue.durable,
        auto_delete: queue.auto_delete,
        exclusive: queue.exclusive_owner.is_some(),
        arguments: queue.arguments.clone(),
        ready: counts.ready,
        unacked: counts.unacked,
        consumers: counts.consumers,
        counters: counts.counters,
        dead_lettered: counts.dead_lettered,
    }
}

/// Deletes a queue unconditionally; how many messages went with it.
async fn delete(queue: &QueueHandle) -> u32 {
    queue
        .ask(|reply| QueueCommand::Delete {
            if_unused: false,
            if_empty: false,
            reply,
        })
        .await
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// How a management-API get leaves the messages it took (RabbitMQ's
/// `ackmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetMode {
    /// `ack_requeue_true`: looked at, put back (redelivered).
    AckRequeueTrue,
    /// `ack_requeue_false`: taken.
    AckRequeueFalse,
    /// `reject_requeue_true`: rejected and put back.
    RejectRequeueTrue,
    /// `reject_requeue_false`: rejected: dead-lettered, or dropped.
    RejectRequeueFalse,
}

/// A message a management-API get took.
#[derive(Clone, Debug)]
pub struct Got {
    /// The message.
    pub message: Arc<warren_codec::Message>,
    /// Whether it had been delivered before.
    pub redelivered: bool,
    /// Messages left ready after it.
    pub remaining: u32,
}

/// Declaring, binding, publishing and getting through the management API,
/// as `user`: refused as the same methods over AMQP would be, permissions
/// included (RabbitMQ's API acts with the user's rights in the vhost).
impl Broker {
    fn access(&self, user: &str, vhost: &str) -> Result<(Arc<VHost>, Access), AdminError> {
        let vhost = self.vhost_or_404(vhost)?;
        let access = Access::open(self.users.clone(), user, &vhost.name)?;
        Ok((vhost, access))
    }

    /// exchange.declare (not passive).
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &self,
        user: &str,
        vhost: &str,
        name: &str,
        kind: &str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &FieldTable,
    ) -> Result<(), AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        if !name.is_empty() {
            access.check(Permission::Configure, Resource::Exchange, name)?;
        }
        vhost.declare_exchange(name, kind, false, durable, auto_delete, internal, arguments)?;
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(
        &self,
        user: &str,
        vhost: &str,
        name: &str,
        if_unused: bool,
    ) -> Result<(), AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        if vhost.exchange_is_topic(name).is_none() {
            return Err(AdminError::NotFound(format!("no exchange '{name}'")));
        }
        if !name.is_empty() && !name.starts_with("amq.") {
            access.check(Permission::Configure, Resource::Exchange, name)?;
        }
        vhost.delete_exchange(name, if_unused)?;
        Ok(())
    }

    /// queue.declare (not passive, not exclusive).
    pub fn declare_queue(
        &self,
        user: &str,
        vhost: &str,
        name: &str,
        durable: bool,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<(), AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        access.check(Permission::Configure, Resource::Queue, name)?;
        let spec = crate::vhost::QueueSpec {
            name,
            server_named: false,
            passive: false,
            durable,
            exclusive: false,
            auto_delete,
            arguments,
        };
        vhost.declare_queue(spec, 0)?;
        Ok(())
    }

    /// queue.bind or exchange.bind (`to_queue` says which), or with
    /// `bind` false their unbind: the same checks as over AMQP.
    #[allow(clippy::too_many_arguments)]
    pub fn binding(
        &self,
        user: &str,
        vhost: &str,
        bind: bool,
        source: &str,
        to_queue: bool,
        destination: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        let kind = match to_queue {
            true => Resource::Queue,
            false => Resource::Exchange,
        };
        access.check_binding(&vhost, kind, destination, source, routing_key)?;
        match (bind, to_queue) {
            (true, true) => vhost.bind_queue(destination, source, routing_key, arguments, 0)?,
            (true, false) => vhost.bind_exchange(destination, source, routing_key, arguments)?,
            (false, true) => vhost.unbind_queue(destination, source, routing_key, arguments, 0)?,
            (false, false) => vhost.unbind_exchange(destination, source, routing_key, arguments)?,
        }
        Ok(())
    }

    /// basic.publish, unconfirmed; whether it reached a queue.
    pub fn publish(
        &self,
        user: &str,
        vhost: &str,
        message: warren_codec::Message,
    ) -> Result<bool, AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        // RabbitMQ's API answers a refused publish with 400 and the AMQP
        // error (probed on 3.10.8): `404 NOT_FOUND - no exchange 'x' in
        // vhost '/'`, `403 ACCESS_REFUSED - access to topic …`, `406
        // PRECONDITION_FAILED - user_id property set to …`. The checks are
        // basic.publish's: write, topic write, user_id.
        let refused = |e: AmqpError| AdminError::Invalid(format!("{} {}", e.code(), e.reply_text()));
        access.check_publish(&vhost, &message).map_err(refused)?;
        vhost.publish(Arc::new(message)).map_err(refused)
    }

    /// basic.get, `count` times, then `mode` for what was taken.
    pub async fn get(
        &self,
        user: &str,
        vhost: &str,
        queue: &str,
        count: u32,
        mode: GetMode,
    ) -> Result<Vec<Got>, AdminError> {
        let (vhost, mut access) = self.access(user, vhost)?;
        access.check(Permission::Read, Resource::Queue, queue)?;
        let handle = vhost.queue(queue, 0)?;
        let mut got = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..count {
            let Some(one) = handle
                .ask(|reply| QueueCommand::Get { no_ack: false, reply })
                .await
                .flatten()
            else {
                break;
            };
            ids.push(one.msg_id);
            got.push(Got {
                message: one.message,
                redelivered: one.redelivered,
                remaining: one.remaining,
            });
        }
        if !ids.is_empty() {
            let settle = match mode {
                GetMode::AckRequeueTrue | GetMode::RejectRequeueTrue => QueueCommand::Requeue {
                    ids,
                    redelivered: true,
                },
                GetMode::AckRequeueFalse => QueueCommand::Ack(ids),
                GetMode::RejectRequeueFalse => QueueCommand::Reject(ids),
            };
            handle.send(settle).await;
        }
        Ok(got)
    }
}
