//! `warren-store` keeps what must survive a restart: durable exchanges,
//! queues and bindings in sled, and the persistent messages of durable
//! queues in an append-only message log beside it. One thread owns all of
//! it (see [`writer`]); the broker only sends it work through a [`Store`]
//! handle, so no I/O ever runs on the broker's async threads. It has no
//! tokio dependency.
//!
//! # Layout of a data directory
//!
//! - sled (`db`, `conf`, `blobs/`, `snap.*`), with trees:
//!
//!   | tree | key | value |
//!   |---|---|---|
//!   | `exchanges` | vhost, name | kind, flags, arguments |
//!   | `queues` | vhost, name | id, flags, arguments |
//!   | `bindings` | vhost, source, destination, routing key, arguments | empty |
//!   | `users` | name | password hash, tags |
//!   | `vhosts` | name | empty |
//!   | `permissions` | user, vhost | configure, write, read patterns |
//!   | `topic_permissions` | user, vhost, exchange | write, read patterns |
//!   | `segments` | segment number | active, or closed with its message count per queue |
//!   | `meta` | `generation`, `next-queue-id` | u64 |
//!
//! - `segments/<n>.seg`: message records, each written once, in the order
//!   they were committed, framed and checksummed ([`record`]); a message
//!   routed to several durable queues is one record naming them all.
//! - `segments/<n>.ack`: 24-byte records saying which queue settled (or
//!   delivered) which message of segment `n`.
//!
//! - `segments-transient/<n>.seg`: bodies paged out of long queues that
//!   have no durable copy ([`transient`]): never synced, emptied at start.
//!
//! A segment is deleted when every message in it is settled, so a drained
//! backlog gives its space back. Why this layout, and its measurements, are
//! in `docs/durability.md`.
#![deny(missing_docs)]

pub mod definitions;
pub mod error;
pub mod histogram;
mod io;
mod locations;
mod messages;
pub mod record;
pub mod recovery;
mod segments;
pub mod store;
pub mod transient;
mod trees;
pub mod writer;

pub use definitions::{
    BindingDef, DestinationKind, ExchangeDef, PermissionDef, QueueDef, TopicPermissionDef, UserDef,
    DEFAULT_VHOST,
};
pub use error::StoreError;
pub use recovery::{Damage, Recovered, RecoveredEntry, RecoveredQueue};
pub use store::Store;
pub use writer::{Durable, ReadReply};

/// Milliseconds since the Unix epoch: when a message record was written.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
