//! `warren-server` is the Warren broker: it accepts AMQP 0-9-1 connections and
//! runs the channels, virtual host and queues behind them.
//!
//! The binary `warren` is a thin wrapper around [`run`]; integration tests call
//! [`run`] directly on a listener bound to port 0.
//!
//! # Layout
//!
//! - [`broker`]: what every connection shares, opened from the store.
//! - [`listener`]: accepts sockets, spawns one task per connection, and drives
//!   a graceful shutdown.
//! - [`connection`]: the connection task (handshake, frame dispatch, heartbeats,
//!   the one place errors become close methods) and its writer task.
//! - [`channel`]: per-channel state and one handler per AMQP method.
//! - [`vhost`]: exchanges, bindings and the queue table of a virtual host.
//! - [`dedup`]: message deduplication (`x-message-deduplication`).
//! - [`delayed`]: the `x-delayed-message` exchange's held messages.
//! - [`queue`]: the queue actor, sole owner of a queue's messages and consumers.
//! - [`users`]: who may log in (RabbitMQ's password hashes), kept in the store.
//! - [`admin`]: administering a running broker (vhosts, permissions,
//!   connections, queues), for `warren ctl` and the management API.
//! - [`tls`]: AMQP over TLS (rustls), and the EXTERNAL mechanism's user.
//! - [`permissions`]: what a user may do in a virtual host, compiled;
//!   [`access`]: a connection's checks of them, where RabbitMQ checks.
//! - [`gate`]: prefetch and credit limits shared by queues and channels.
//! - [`events`]: the types that cross tasks (queue commands, connection
//!   events, consumers, confirm trackers), at the bottom of the crate so that
//!   connections and queues depend on it rather than on each other.
//! - [`durability`]: how publisher confirms of persistent messages wait for
//!   the store's group commit.
//! - [`alarm`]: memory and disk alarms, which block publishing connections.
//! - [`stats`]: message counters and latency histograms, for operators.
//! - [`ping`]: `warren ping`, whether a broker answers (health checks).
//! - `arguments`: reading typed values of an arguments table, with RabbitMQ's texts.
//! - [`error`] holds [`AmqpError`], a reply code and text as a value.
//! - [`config`] holds [`Config`]; [`config_file`] reads the TOML file.

pub mod access;
pub mod admin;
pub mod alarm;
pub(crate) mod arguments;
pub mod broker;
pub mod channel;
pub(crate) mod clock;
pub mod config;
pub mod config_file;
pub mod connection;
pub mod dedup;
pub mod delayed;
pub mod durability;
pub mod error;
pub mod events;
pub mod gate;
pub mod listener;
pub mod permissions;
pub mod ping;
pub mod queue;
pub mod stats;
pub mod tls;
pub mod users;
pub mod vhost;

pub use config::Config;
pub use error::AmqpError;
pub use listener::{run, serve};
