//! Broker settings. The binary fills them from the command line and `WARREN_*`
//! environment variables; tests build them directly.

use std::path::PathBuf;
use std::time::Duration;

/// What a broker needs to run.
/// The largest `max_message_size` that can be set: 512 MiB, RabbitMQ's
/// ceiling. It also lets a queue keep a message's weight in 32 bits.
pub const MAX_MESSAGE_SIZE: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// The user created on the first start (no user stored yet), with its
    /// password: guest/guest by default, as RabbitMQ's.
    pub default_user: String,
    pub default_pass: String,
    /// channel_max offered in connection.tune.
    pub channel_max: u16,
    /// frame_max offered in connection.tune.
    pub frame_max: u32,
    /// Heartbeat interval offered in connection.tune, in seconds.
    pub heartbeat: u16,
    /// How long a client may take from the protocol header to connection.open.
    pub handshake_timeout: Duration,
    /// sled's page cache, in bytes: the store's share of memory.
    pub store_cache_bytes: u64,
    /// Whether `guest` may log in from a non-loopback address. RabbitMQ
    /// allows it only from loopback (`loopback_users`).
    pub allow_remote_guest: bool,
    /// The largest message body accepted (RabbitMQ's `max_message_size`), at
    /// most [`MAX_MESSAGE_SIZE`].
    pub max_message_size: u64,
    /// Open connections allowed at once (RabbitMQ's `connection_max`);
    /// None for no limit.
    pub max_connections: Option<usize>,
    /// Octets of message bodies announced by content headers and not yet
    /// complete, summed over a connection's channels: what one connection
    /// may make the broker buffer.
    pub max_partial_bytes: u64,
    /// Memory above which publishers are blocked (RabbitMQ's
    /// `vm_memory_high_watermark`, 0.4 of the memory by default).
    pub memory_high_watermark: crate::alarm::Watermark,
    /// Free disk below which publishers are blocked, in octets (RabbitMQ's
    /// `disk_free_limit`, 50 MB by default).
    pub disk_free_limit: u64,
    /// The fraction of the memory limit above which queues page transient
    /// bodies past their 8 MiB head of ready messages out to the store
    /// (RabbitMQ's `vm_memory_high_watermark_paging_ratio`, 0.5).
    pub memory_paging_ratio: f64,
    /// How long a delivery may stay unacked before its channel is closed
    /// (RabbitMQ's `consumer_timeout`, 30 minutes); None for never.
    pub consumer_timeout: Option<Duration>,
    /// The mechanisms offered in connection.start, in order (RabbitMQ's
    /// `auth_mechanisms`): `PLAIN` and `AMQPLAIN` by default. `EXTERNAL`
    /// must be listed to be offered, and is offered only on a TLS
    /// connection whose client certificate was verified.
    pub auth_mechanisms: Vec<String>,
}

impl Config {
    /// The defaults of RabbitMQ 3.x, with the data directory given.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            store_cache_bytes: 16 * 1024 * 1024,
            allow_remote_guest: false,
            max_message_size: 128 * 1024 * 1024,
            max_connections: None,
            max_partial_bytes: 256 * 1024 * 1024,
            memory_high_watermark: crate::alarm::Watermark::Relative(0.4),
            disk_free_limit: 50_000_000,
            memory_paging_ratio: 0.5,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            auth_mechanisms: vec!["PLAIN".to_owned(), "AMQPLAIN".to_owned()],
        }
    }
}
