//! Definitions in RabbitMQ's JSON format (`rabbitmqctl export_definitions`,
//! `GET /api/definitions`): users with their password hashes, virtual
//! hosts, permissions, topic permissions, and durable exchanges, queues
//! and bindings. A file exported from RabbitMQ imports here, and its users
//! log in with their passwords (same hashing); one exported here imports
//! into RabbitMQ.
//!
//! What Warren does not have is refused, never skipped: a password hashed
//! otherwise than with SHA-256, policies, and vhost parameters (shovels,
//! federation). Global parameters (`cluster_name`, `internal_cluster_id`),
//! which every RabbitMQ export carries, describe the exporting cluster and
//! are left out. User limits and vhost limits are refused when set.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_server::admin::AdminError;
use warren_server::broker::Broker;
use warren_server::vhost::QueueSpec;
use warren_store::{PermissionDef, TopicPermissionDef, UserDef};

use crate::json::{json_to_table, table_to_json};

/// RabbitMQ's only hashing algorithm that Warren's users use.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

/// A whole definitions file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Definitions {
    /// Which broker wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Virtual hosts.
    #[serde(default)]
    pub vhosts: Vec<VHost>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// Topic permissions.
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermission>,
    /// Vhost parameters: none in an export of Warren's.
    #[serde(default)]
    pub parameters: Vec<Value>,
    /// Global parameters: left out on import.
    #[serde(default)]
    pub global_parameters: Vec<Value>,
    /// Policies: none in an export of Warren's.
    #[serde(default)]
    pub policies: Vec<Value>,
    /// Durable queues.
    #[serde(default)]
    pub queues: Vec<Queue>,
    /// Durable exchanges, but the predeclared ones.
    #[serde(default)]
    pub exchanges: Vec<Exchange>,
    /// Bindings between durable things.
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

/// A user.
#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    /// Name.
    pub name: String,
    /// base64(salt ++ SHA-256(salt ++ password)).
    pub password_hash: String,
    /// Must be [`SHA256`].
    #[serde(default = "sha256")]
    pub hashing_algorithm: String,
    /// Tags: a list, or (older exports) one comma-separated string.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    /// Per-user limits: refused when set.
    #[serde(default, skip_serializing_if = "is_empty_object")]
    pub limits: Value,
}

fn sha256() -> String {
    SHA256.to_owned()
}

/// No limits: absent, `{}`, or (as RabbitMQ 3.10 writes a vhost's) `[]`.
fn is_empty_object(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Tags as RabbitMQ writes them: `["a","b"]`, or `"a,b"`.
pub fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => split_tags(&s),
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

/// `"a, b"` as tags.
pub fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A virtual host.
#[derive(Debug, Serialize, Deserialize)]
pub struct VHost {
    /// Name.
    pub name: String,
    /// Vhost limits: refused when set.
    #[serde(default, skip_serializing_if = "is_empty_object")]
    pub limits: Value,
}

/// Permissions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Permission {
    /// User.
    pub user: String,
    /// Virtual host.
    pub vhost: String,
    /// Configure pattern.
    pub configure: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

/// Topic permissions.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicPermission {
    /// User.
    pub user: String,
    /// Virtual host.
    pub vhost: String,
    /// Topic exchange.
    pub exchange: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

/// A queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct Queue {
    /// Name.
    pub name: String,
    /// Virtual host.
    pub vhost: String,
    /// Durable.
    #[serde(default)]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// Arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// An exchange.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exchange {
    /// Name.
    pub name: String,
    /// Virtual host.
    pub vhost: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable.
    #[serde(default)]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// Internal.
    #[serde(default)]
    pub internal: bool,
    /// Arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// A binding.
#[derive(Debug, Serialize, Deserialize)]
pub struct Binding {
    /// Source exchange.
    pub source: String,
    /// Virtual host.
    pub vhost: String,
    /// Destination.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// Binding key.
    #[serde(default)]
    pub routing_key: String,
    /// Arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// Everything durable the broker holds, as a definitions file.
pub async fn export(broker: &Broker) -> Result<Definitions, AdminError> {
    let users = broker.users.list().into_iter().map(|u| User {
        name: u.name,
        password_hash: u.password_hash,
        hashing_algorithm: sha256(),
        tags: u.tags,
        limits: Value::Null,
    });
    let mut vhosts: Vec<VHost> = broker
        .vhosts()
        .iter()
        .map(|v| VHost {
            name: v.name.clone(),
            limits: Value::Null,
        })
        .collect();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let permissions = broker.users.permissions().into_iter().map(|p| Permission {
        user: p.user,
        vhost: p.vhost,
        configure: p.configure,
        write: p.write,
        read: p.read,
    });
    let topic_permissions = broker
        .users
        .topic_permissions()
        .into_iter()
        .map(|t| TopicPermission {
            user: t.user,
            vhost: t.vhost,
            exchange: t.exchange,
            write: t.write,
            read: t.read,
        });
    let queues = broker
        .queues(None)
        .await?
        .into_iter()
        .filter(|q| q.durable)
        .map(|q| Queue {
            name: q.name,
            vhost: q.vhost,
            durable: true,
            auto_delete: q.auto_delete,
            arguments: table_to_json(&q.arguments),
        });
    let exchanges = broker
        .exchanges(None)?
        .into_iter()
        .filter(|x| x.durable && !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| Exchange {
            name: x.name,
            vhost: x.vhost,
            kind: x.kind,
            durable: true,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: table_to_json(&x.arguments),
        });
    let durable_queues: std::collections::HashSet<(String, String)> = broker
        .queues(None)
        .await?
        .into_iter()
        .filter(|q| q.durable)
        .map(|q| (q.vhost, q.name))
        .collect();
    let exchanges: Vec<Exchange> = exchanges.collect();
    let durable_exchange = |vhost: &str, name: &str| {
        name.starts_with("amq.") || exchanges.iter().any(|x| x.vhost == vhost && x.name == name)
    };
    let bindings: Vec<Binding> = broker
        .bindings(None)?
        .into_iter()
        .filter(|b| {
            durable_exchange(&b.vhost, &b.source)
                && match b.destination_type {
                    "queue" => durable_queues.contains(&(b.vhost.clone(), b.destination.clone())),
                    _ => durable_exchange(&b.vhost, &b.destination),
                }
        })
        .map(|b| Binding {
            source: b.source,
            vhost: b.vhost,
            destination: b.destination,
            destination_type: b.destination_type.to_owned(),
            routing_key: b.routing_key,
            arguments: table_to_json(&b.arguments),
        })
        .collect();
    Ok(Definitions {
        product_name: Some("Warren".to_owned()),
        product_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        users: users.collect(),
        vhosts,
        permissions: permissions.collect(),
        topic_permissions: topic_permissions.collect(),
        parameters: Vec::new(),
        global_parameters: Vec::new(),
        policies: Vec::new(),
        queues: queues.collect(),
        exchanges,
        bindings,
    })
}

fn invalid(what: impl Into<String>) -> AdminError {
    AdminError::Invalid(what.into())
}

/// Checks what can be checked before anything changes: patterns compile,
/// every user, vhost, exchange and queue named is there or in the file,
/// names and types are valid. What only declaring finds out (a queue
/// declared already with other arguments) stops the import half-way, as
/// in RabbitMQ.
fn check(broker: &Broker, defs: &Definitions) -> Result<(), AdminError> {
    use std::collections::HashSet;
    use warren_server::permissions::Pattern;
    let users: HashSet<&str> = defs.users.iter().map(|u| u.name.as_str()).collect();
    let vhosts: HashSet<&str> = defs.vhosts.iter().map(|v| v.name.as_str()).collect();
    let user = |name: &str| match users.contains(name) || broker.users.exists(name) {
        true => Ok(()),
        false => Err(invalid(format!("no user '{name}'"))),
    };
    let vhost = |name: &str| match vhosts.contains(name) || broker.vhost(name).is_some() {
        true => Ok(()),
        false => Err(invalid(format!("no vhost '{name}'"))),
    };
    let pattern = |source: &str| {
        Pattern::new(&source.replace("{username}", "u").replace("{vhost}", "v")).map_err(invalid)
    };
    for p in &defs.permissions {
        user(&p.user)?;
        vhost(&p.vhost)?;
        for source in [&p.configure, &p.write, &p.read] {
            pattern(source)?;
        }
    }
    for t in &defs.topic_permissions {
        user(&t.user)?;
        vhost(&t.vhost)?;
        pattern(&t.write)?;
        pattern(&t.read)?;
    }
    let known_exchange = |vhost_name: &str, name: &str| {
        name.is_empty()
            || name.starts_with("amq.")
            || defs
                .exchanges
                .iter()
                .any(|x| x.vhost == vhost_name && x.name == name)
            || broker
                .exchanges(Some(vhost_name))
                .is_ok_and(|all| all.iter().any(|x| x.name == name))
    };
    for x in &defs.exchanges {
        vhost(&x.vhost)?;
        if x.name.is_empty() || x.name.starts_with("amq.") {
            return Err(invalid(format!("exchange name '{}' is reserved", x.name)));
        }
        if !["direct", "fanout", "topic", "headers", "x-delayed-message"].contains(&x.kind.as_str()) {
            return Err(invalid(format!(
                "exchange '{}': unknown type '{}'",
                x.name, x.kind
            )));
        }
        json_to_table(&x.arguments).map_err(invalid)?;
    }
    for q in &defs.queues {
        vhost(&q.vhost)?;
        if q.name.is_empty() || q.name.starts_with("amq.") {
            return Err(invalid(format!("queue name '{}' is reserved or empty", q.name)));
        }
        json_to_table(&q.arguments).map_err(invalid)?;
    }
    for b in &defs.bindings {
        vhost(&b.vhost)?;
        json_to_table(&b.arguments).map_err(invalid)?;
        let destination = match b.destination_type.as_str() {
            "queue" => {
                defs.queues
                    .iter()
                    .any(|q| q.vhost == b.vhost && q.name == b.destination)
                    || broker
                        .vhost(&b.vhost)
                        .is_some_and(|v| v.queue(&b.destination, 0).is_ok())
            }
            "exchange" => known_exchange(&b.vhost, &b.destination),
            other => return Err(invalid(format!("unknown destination_type '{other}'"))),
        };
        if !destination || !known_exchange(&b.vhost, &b.source) {
            return Err(invalid(format!(
                "binding from '{}' to {} '{}' in vhost '{}': an end is missing",
                b.source, b.destination_type, b.destination, b.vhost
            )));
        }
    }
    Ok(())
}

/// Checks everything it can first ([`check`]), then imports.
pub async fn import(broker: &Broker, defs: Definitions) -> Result<(), AdminError> {
    if !defs.policies.is_empty() {
        return Err(invalid(
            "policies are not supported by Warren; remove them from the file",
        ));
    }
    if !defs.parameters.is_empty() {
        return Err(invalid(
            "vhost parameters (shovels, federation) are not supported by Warren; remove them from the file",
        ));
    }
    for user in &defs.users {
        if user.hashing_algorithm != SHA256 {
            return Err(invalid(format!(
                "user '{}': hashing algorithm '{}' is not supported (only {SHA256})",
                user.name, user.hashing_algorithm
            )));
        }
        if !is_empty_object(&user.limits) {
            return Err(invalid(format!(
                "user '{}': user limits are not supported",
                user.name
            )));
        }
    }
    if let Some(v) = defs.vhosts.iter().find(|v| !is_empty_object(&v.limits)) {
        return Err(invalid(format!(
            "vhost '{}': vhost limits are not supported",
            v.name
        )));
    }
    check(broker, &defs)?;
    for user in defs.users {
        broker.users.put(UserDef {
            name: user.name,
            password_hash: user.password_hash,
            tags: user.tags,
        });
    }
    for vhost in &defs.vhosts {
        broker.add_vhost(&vhost.name);
    }
    for p in defs.permissions {
        broker.set_permissions(PermissionDef {
            user: p.user,
            vhost: p.vhost,
            configure: p.configure,
            write: p.write,
            read: p.read,
        })?;
    }
    for t in defs.topic_permissions {
        broker.set_topic_permissions(TopicPermissionDef {
            user: t.user,
            vhost: t.vhost,
            exchange: t.exchange,
            write: t.write,
            read: t.read,
        })?;
    }
    let vhost = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| AdminError::NotFound(format!("no vhost '{name}'")))
    };
    for x in defs.exchanges {
        let arguments = json_to_table(&x.arguments).map_err(invalid)?;
        vhost(&x.vhost)?.declare_exchange(
            &x.name,
            &x.kind,
            false,
            x.durable,
            x.auto_delete,
            x.internal,
            &arguments,
        )?;
    }
    for q in defs.queues {
        let arguments = json_to_table(&q.arguments).map_err(invalid)?;
        let spec = QueueSpec {
            name: &q.name,
            server_named: false,
            passive: false,
            durable: q.durable,
            exclusive: false,
            auto_delete: q.auto_delete,
            arguments: &arguments,
        };
        vhost(&q.vhost)?.declare_queue(spec, 0)?;
    }
    for b in defs.bindings {
        let arguments = json_to_table(&b.arguments).map_err(invalid)?;
        let v = vhost(&b.vhost)?;
        match b.destination_type.as_str() {
            "queue" => v.bind_queue(&b.destination, &b.source, &b.routing_key, &arguments, 0)?,
            "exchange" => v.bind_exchange(&b.destination, &b.source, &b.routing_key, &arguments)?,
            other => return Err(invalid(format!("unknown destination_type '{other}'"))),
        }
    }
    Ok(())
}
