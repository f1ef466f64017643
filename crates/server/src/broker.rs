//! [`Broker`]: what every connection shares (settings, the virtual host,
//! the connection count), opened from the store at start.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info};
use warren_store::{Store, StoreError};

use crate::alarm::{Alarms, Status};
use crate::users::Users;
use crate::vhost::VHost;
use crate::Config;

/// What every connection shares.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: Config,
    /// The one virtual host, `/`.
    pub vhost: Arc<VHost>,
    /// Who may log in.
    pub users: Users,
    /// Memory and disk alarms.
    pub alarms: Arc<Alarms>,
    /// Source of connection ids, which tag logs and own exclusive queues.
    next_connection_id: AtomicU64,
    /// Open connections, for `max_connections`.
    open_connections: Arc<AtomicUsize>,
}

/// A connection's place under the connection limit, given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Broker {
    /// Opens the store in the data directory, recovers what it holds (on a
    /// blocking thread: it reads every segment), logs any damage found at
    /// ERROR, and makes the virtual host. Must run inside the runtime.
    pub async fn open(config: Config) -> Result<Arc<Self>, StoreError> {
        let started = Instant::now();
        let (path, cache) = (config.data_dir.clone(), config.store_cache_bytes);
        let (store, mut recovered) = tokio::task::spawn_blocking(move || Store::open(&path, cache))
            .await
            .map_err(|e| StoreError::Refused {
                path: config.data_dir.clone(),
                what: format!("opening the store failed: {e}"),
            })??;
        for damage in &recovered.damage {
            error!(file = %damage.file.display(), problem = %damage.what, "the store is damaged");
            for (queue, lost) in &damage.lost {
                error!(file = %damage.file.display(), %queue, lost, "messages lost to damage");
            }
            if !damage.counted {
                error!(
                    file = %damage.file.display(),
                    "messages lost to damage in the segment being written at the crash: how many is not known"
                );
            }
        }
        let (cleaned, torn, segments) = (recovered.cleaned, recovered.torn, recovered.segments);
        let alarms = Alarms::start(
            config.memory_high_watermark,
            config.disk_free_limit,
            config.memory_paging_ratio,
            config.data_dir.clone(),
        );
        let users = Users::open(
            store.clone(),
            std::mem::take(&mut recovered.users),
            &config.default_user,
            &config.default_pass,
        );
        let (vhost, stats) = VHost::open("/", store, recovered, alarms.memory_pressure());
        info!(
            exchanges = stats.exchanges,
            queues = stats.queues,
            messages = stats.messages,
            bindings = stats.bindings,
            delayed = stats.delayed,
            segments,
            stale_bindings = cleaned,
            torn_octets = torn,
            elapsed_ms = started.elapsed().as_millis() as u64,
            data_dir = %config.data_dir.display(),
            "recovered durable state"
        );
        Ok(Arc::new(Self {
            config,
            vhost,
            users,
            alarms,
            next_connection_id: AtomicU64::new(1),
            open_connections: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Memory, disk and alarm state, for operators (the management API
    /// will read it).
    pub fn status(&self) -> Status {
        self.alarms.status()
    }

    /// Takes a place for a newly opened connection, unless the limit is reached.
    pub(crate) fn admit(&self) -> Option<ConnectionSlot> {
        let limit = self.config.max_connections.unwrap_or(usize::MAX);
        self.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(self.open_connections.clone()))
    }

    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
