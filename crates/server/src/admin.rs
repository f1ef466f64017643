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

use crate::broker::Broker;
use crate::events::{ConnEvent, QueueCommand, QueueHandle};
use crate::vhost::{BindingInfo, ExchangeInfo, VHost};
use crate::AmqpError;

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It is malformed, or not allowed.
    #[error("{0}")]
    Invalid(String),
}

impl From<AmqpError> for AdminError {
    fn from(e: AmqpError) -> Self {
        match e.code() {
            404 => AdminError::NotFound(e.to_string()),
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
                // A queue that ends meanwhile is listed empty.
                let (ready, unacked, consumers) = queue.ask(QueueCommand::Counts).await.unwrap_or_default();
                all.push(QueueInfo {
                    vhost: vhost.name.clone(),
                    name: queue.name.to_string(),
                    durable: queue.durable,
                    auto_delete: queue.auto_delete,
                    exclusive: queue.exclusive_owner.is_some(),
                    arguments: queue.arguments.clone(),
                    ready,
                    unacked,
                    consumers,
                });
            }
        }
        Ok(all)
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

    /// Empties a queue; how many messages it dropped.
    pub async fn purge_queue(&self, vhost: &str, name: &str) -> Result<u32, AdminError> {
        let queue = self.queue_or_404(vhost, name)?;
        Ok(queue.ask(QueueCommand::Purge).await.unwrap_or(0))
    }

    /// Deletes a queue, whoever owns or consumes from it; how many
    /// messages went with it.
    pub async fn delete_queue(&self, vhost: &str, name: &str) -> Result<u32, AdminError> {
        let queue = self.queue_or_404(vhost, name)?;
        Ok(delete(&queue).await)
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
