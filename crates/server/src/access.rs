//! A connection's permissions: its user's in its vhost ([`Access`]),
//! checked without taking a lock. A change made while the connection is
//! open is seen at its next check (the users' epoch moved on), as
//! RabbitMQ's channels see one once their permission cache is cleared.

use std::sync::Arc;

use crate::permissions::{Grant, Permission, Resource};
use crate::users::Users;
use crate::vhost::VHost;
use crate::AmqpError;
use warren_codec::Message;

/// A connection's permissions: its user's in its vhost.
#[derive(Debug)]
pub(crate) struct Access {
    users: Arc<Users>,
    user: String,
    vhost: String,
    /// The [`Users::epoch`] `grant` was read at.
    epoch: u64,
    /// `None` once the user has lost every permission in the vhost.
    grant: Option<Arc<Grant>>,
    /// The user's tags allow setting `user_id` to another user.
    impersonator: bool,
}

impl Access {
    /// The user's access to the vhost: 530, as RabbitMQ refuses
    /// connection.open, if they have no permissions there.
    pub(crate) fn open(users: Arc<Users>, user: &str, vhost: &str) -> Result<Self, AmqpError> {
        let epoch = users.epoch();
        let grant = users.grant(user, vhost).ok_or_else(|| {
            AmqpError::not_allowed(format!("access to vhost '{vhost}' refused for user '{user}'"))
        })?;
        let impersonator = users.has_tag(user, "impersonator");
        Ok(Self {
            users,
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            epoch,
            grant: Some(grant),
            impersonator,
        })
    }

    /// The user's name.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The grant, read again if permissions changed since it was read.
    fn grant(&mut self) -> Option<&Grant> {
        let epoch = self.users.epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            self.grant = self.users.grant(&self.user, &self.vhost);
        }
        self.grant.as_deref()
    }

    /// 403 unless the user has `permission` on the queue or exchange `name`.
    pub(crate) fn check(
        &mut self,
        permission: Permission,
        kind: Resource,
        name: &str,
    ) -> Result<(), AmqpError> {
        // rabbit_access_control: the default exchange is `amq.default`.
        let name = match (kind, name) {
            (Resource::Exchange, "") => "amq.default",
            _ => name,
        };
        if self.grant().is_some_and(|g| g.pattern(permission).matches(name)) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "access to {} '{name}' in vhost '{}' refused for user '{}'",
            kind.noun(),
            self.vhost,
            self.user
        )))
    }

    /// Whether the user has topic permissions on some exchange of the
    /// vhost, so that a publish or bind must find out the exchange's type.
    pub(crate) fn has_topic_permissions(&mut self) -> bool {
        self.grant().is_some_and(Grant::has_topics)
    }

    /// 403 unless the user may use `routing_key` on the topic exchange
    /// `exchange` (write: publish; read: bind a queue). Call it only for
    /// topic exchanges.
    pub(crate) fn check_topic(
        &mut self,
        permission: Permission,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let allowed = match self.grant() {
            None => false,
            Some(grant) => match (grant.topic(exchange), permission) {
                (None, _) => true,
                (Some((_, read)), Permission::Read) => read.matches(routing_key),
                (Some((write, _)), _) => write.matches(routing_key),
            },
        };
        if allowed {
            return Ok(());
        }
        Err(AmqpError::access_refused(format!(
            "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// The permissions a binding (queue or exchange, bind or unbind) needs,
    /// in RabbitMQ's order: write on the destination, read on the source,
    /// and topic read for the key on a topic source. A binding to or from
    /// the default exchange is refused by the vhost, with its own 403.
    pub(crate) fn check_binding(
        &mut self,
        vhost: &VHost,
        kind: Resource,
        destination: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        self.check(Permission::Write, kind, destination)?;
        if source.is_empty() || (kind == Resource::Exchange && destination.is_empty()) {
            return Ok(());
        }
        self.check(Permission::Read, Resource::Exchange, source)?;
        if self.has_topic_permissions() && vhost.exchange_is_topic(source) == Some(true) {
            self.check_topic(Permission::Read, source, routing_key)?;
        }
        Ok(())
    }

    /// The permissions a publish needs, and its `user_id`, for channels
    /// and the management API alike: write on the exchange, topic write for
    /// the routing key on a topic exchange, and a `user_id` that is the
    /// user's own (RabbitMQ's `check_user_id_header`). A missing or
    /// internal exchange is the router's to refuse.
    pub(crate) fn check_publish(&mut self, vhost: &VHost, message: &Message) -> Result<(), AmqpError> {
        let exchange = message.exchange.as_str();
        self.check(Permission::Write, Resource::Exchange, exchange)?;
        if self.has_topic_permissions() && vhost.exchange_is_topic(exchange) == Some(true) {
            self.check_topic(Permission::Write, exchange, message.routing_key.as_str())?;
        }
        let user_id = message.properties.user_id().as_ref().map(|u| u.as_str());
        // A missing or internal exchange is reported first, as RabbitMQ
        // looks it up before it reads the properties (looked up only here,
        // on the way to an error).
        self.check_user_id(user_id)
            .map_err(|e| vhost.publishable(exchange).err().unwrap_or(e))
    }

    /// RabbitMQ's check of a published message's `user_id`: 406 unless it
    /// is the user's own name, or the user is an impersonator.
    pub(crate) fn check_user_id(&self, claimed: Option<&str>) -> Result<(), AmqpError> {
        match claimed {
            Some(claimed) if claimed != self.user && !self.impersonator => {
                Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{claimed}' but authenticated user was '{}'",
                    self.user
                )))
            }
            _ => Ok(()),
        }
    }
}
