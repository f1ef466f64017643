//! Permissions, as RabbitMQ's internal authorisation backend
//! (`rabbit_auth_backend_internal`) has them:
//!
//! - a user may use a virtual host only if they have permissions in it;
//! - those are three regular expressions, *configure*, *write* and *read*,
//!   searched for (not anchored) in the name of the queue or exchange a
//!   method acts on; an empty one matches nothing (RabbitMQ reads `""` as
//!   `^$`), and the default exchange is named `amq.default` here;
//! - topic permissions (write and read expressions per topic exchange, with
//!   `{username}` and `{vhost}` replaced) are searched for in the routing
//!   key of a publish to, or a binding from, that exchange. A user without
//!   topic permissions on an exchange may use every key.
//!
//! Which method checks what is in [`crate::channel`], where RabbitMQ's
//! `rabbit_channel` checks it. [`Access`] is a connection's view of its
//! user's permissions in its vhost: it checks without taking a lock, and
//! sees a change made while it is open at its next check, as RabbitMQ's
//! channels do once their permission cache is cleared.

use std::collections::HashMap;
use std::sync::Arc;

use regex_lite::Regex;

use crate::users::Users;
use crate::AmqpError;

/// One of the three permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Declare and delete.
    Configure,
    /// Publish to an exchange; bind to a queue or exchange.
    Write,
    /// Consume from, get from and purge a queue; bind from an exchange.
    Read,
}

/// What a permission is checked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

impl Resource {
    fn noun(self) -> &'static str {
        match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        }
    }
}

/// A permission's regular expression, compiled.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// `None` for `.*`, which matches every name without running a regex:
    /// the permission nearly every deployment gives.
    regex: Option<Regex>,
}

impl Pattern {
    /// Compiles `source` as RabbitMQ reads it (`""` is `^$`). An expression
    /// the regex engine cannot take is refused here, when it is set, never
    /// found out at a check.
    pub fn new(source: &str) -> Result<Self, String> {
        let source = if source.is_empty() { "^$" } else { source };
        if source == ".*" {
            return Ok(Self { regex: None });
        }
        Regex::new(source)
            .map(|regex| Self { regex: Some(regex) })
            .map_err(|e| format!("invalid regular expression '{source}': {e}"))
    }

    /// Matches no name: what a topic pattern grants that no longer
    /// compiles once the user's and vhost's names are put in.
    fn nothing() -> Self {
        Self {
            regex: Some(Regex::new("^$").expect("a valid expression")),
        }
    }

    /// Whether the expression is found in `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.regex.as_ref().is_none_or(|regex| regex.is_match(name))
    }
}

/// A user's permissions in one virtual host, compiled.
#[derive(Clone, Debug)]
pub struct Grant {
    configure: Pattern,
    write: Pattern,
    read: Pattern,
    /// Topic permissions by exchange: write, then read, with the user's
    /// name and the vhost's put in.
    topics: HashMap<String, (Pattern, Pattern)>,
}

impl Grant {
    /// Compiles permissions; the topic permissions' variables are replaced
    /// by `user` and `vhost`. Patterns were checked when they were set.
    pub(crate) fn new<'a>(
        user: &str,
        vhost: &str,
        [configure, write, read]: [&str; 3],
        topics: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Self {
        let compile = |source: &str| Pattern::new(source).unwrap_or(Pattern::nothing());
        let expand = |source: &str| compile(&source.replace("{username}", user).replace("{vhost}", vhost));
        Self {
            configure: compile(configure),
            write: compile(write),
            read: compile(read),
            topics: topics
                .map(|(exchange, write, read)| (exchange.to_owned(), (expand(write), expand(read))))
                .collect(),
        }
    }

    fn pattern(&self, permission: Permission) -> &Pattern {
        match permission {
            Permission::Configure => &self.configure,
            Permission::Write => &self.write,
            Permission::Read => &self.read,
        }
    }
}

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
        self.grant().is_some_and(|g| !g.topics.is_empty())
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
            Some(grant) => match (grant.topics.get(exchange), permission) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_search_unanchored_and_empty_matches_nothing() {
        let p = Pattern::new("^app\\.").unwrap();
        assert!(p.matches("app.orders") && !p.matches("xapp.orders"));
        let p = Pattern::new("orders").unwrap();
        assert!(p.matches("app.orders.dlq"));
        let p = Pattern::new("").unwrap();
        assert!(p.matches("") && !p.matches("q"));
        assert!(Pattern::new(".*").unwrap().matches("anything"));
        assert!(Pattern::new("(unclosed").is_err());
    }

    #[test]
    fn topic_variables_are_put_in() {
        let grant = Grant::new(
            "alice",
            "prod",
            [".*", ".*", ".*"],
            [("amq.topic", "^{username}\\.{vhost}\\.", "")].into_iter(),
        );
        let (write, read) = &grant.topics["amq.topic"];
        assert!(write.matches("alice.prod.x") && !write.matches("bob.prod.x"));
        assert!(!read.matches("alice.prod.x"));
    }
}
