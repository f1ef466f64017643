//! `warren-store` keeps what must survive a restart, on sled: durable
//! exchanges, queues and bindings, and the persistent messages of durable
//! queues. It has no tokio dependency; the server calls it from its tasks and
//! runs [`Store::sync`] (flush + fdatasync) as its group commit.
//!
//! # Layout
//!
//! - [`definitions`] holds [`ExchangeDef`], [`QueueDef`], [`BindingDef`] and
//!   their encodings.
//! - [`messages`] holds message bodies (stored once, chunked) and the per-queue
//!   indexes that say which messages a queue holds, in order.
//! - [`store`] holds [`Store`]: opening, [`Store::sync`], recovery.
//! - [`error`] holds [`StoreError`].
//!
//! # On-disk layout (one sled database)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `exchanges` | name | kind, flags, arguments |
//! | `queues` | name | flags, arguments |
//! | `bindings` | source, destination, routing key, arguments | empty |
//! | `messages` | message id (u64 BE) ++ chunk (u32 BE) | chunk 0: exchange, routing key, properties, body length; chunks 1..: body |
//! | `queue:<name>` | queue position (u64 BE) | message id (u64 BE), flags |
//!
//! Bodies are cut into chunks of at most [`messages::CHUNK`] octets so that no
//! value goes to sled's separate blob files, which sled never fsyncs: every
//! write lands in the one `db` file that [`Store::sync`] makes durable.
#![deny(missing_docs)]

pub mod definitions;
pub mod error;
pub mod messages;
pub mod store;

pub use definitions::{BindingDef, DestinationKind, ExchangeDef, QueueDef};
pub use error::StoreError;
pub use messages::IndexEntry;
pub use store::{QueueIndex, Recovered, RecoveredQueue, Store};
