//! Broker settings. The binary fills them from the command line and `WARREN_*`
//! environment variables; tests build them directly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// What a broker needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Users and their passwords; by default only guest/guest, as RabbitMQ.
    pub users: HashMap<String, String>,
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
}

impl Config {
    /// The defaults of RabbitMQ 3.x, with the data directory given.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            users: HashMap::from([("guest".to_owned(), "guest".to_owned())]),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            store_cache_bytes: 16 * 1024 * 1024,
        }
    }
}
