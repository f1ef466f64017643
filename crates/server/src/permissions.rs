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
//! This module compiles them ([`Grant`]); [`crate::users`] keeps them;
//! [`crate::access`] checks them for a connection; which method checks
//! what is in [`crate::channel`], where RabbitMQ's `rabbit_channel` checks
//! it.

use std::collections::HashMap;

use regex_lite::Regex;

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
    pub(crate) fn noun(self) -> &'static str {
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
    /// The topic permissions on `exchange`: write, then read.
    pub(crate) fn topic(&self, exchange: &str) -> Option<&(Pattern, Pattern)> {
        self.topics.get(exchange)
    }

    /// Whether there are topic permissions on some exchange.
    pub(crate) fn has_topics(&self) -> bool {
        !self.topics.is_empty()
    }

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

    /// The pattern of one of the three permissions.
    pub(crate) fn pattern(&self, permission: Permission) -> &Pattern {
        match permission {
            Permission::Configure => &self.configure,
            Permission::Write => &self.write,
            Permission::Read => &self.read,
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
