//! [`Broker`]: what every connection shares (settings, the virtual hosts,
//! the users, the connection count), opened from the store at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tracing::{error, info, warn};
use warren_store::{Recovered, Store, StoreError, DEFAULT_VHOST};

use tokio::sync::mpsc;

use crate::alarm::{Alarms, Status};
use crate::events::ConnEvent;
use crate::stats::{Flows, MessageCounters};
use crate::users::Users;
use crate::vhost::VHost;
use crate::Config;

/// What every connection shares.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: Config,
    /// The store every virtual host keeps its durable state in.
    pub store: Store,
    /// The virtual hosts, by name.
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// Who may log in.
    pub users: Arc<Users>,
    /// Memory and disk alarms.
    pub alarms: Arc<Alarms>,
    /// Source of connection ids, which tag logs and own exclusive queues.
    next_connection_id: AtomicU64,
    /// Open connections, listed for administrators ([`crate::admin`]).
    pub(crate) connections: Connections,
    /// How many connections are open, for `max_connections`.
    open_connections: Arc<AtomicUsize>,
    /// What closed connections counted ([`crate::stats`]), and the steps
    /// their publishes took, by vhost.
    retired: Mutex<(MessageCounters, HashMap<String, Flows>)>,
    /// The broker's totals as last reported: never reported lower.
    reported: Mutex<MessageCounters>,
}

/// An open connection, as listed.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Its name, unique among open connections: the peer's address.
    pub name: String,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The user it logged in as.
    pub user: String,
    /// Its virtual host.
    pub vhost: String,
    /// When it opened, in milliseconds since the Unix epoch.
    pub connected_at: u64,
    /// Its inbox, to close it.
    pub(crate) inbox: mpsc::UnboundedSender<ConnEvent>,
}

/// The open connections, by id.
#[derive(Debug, Default)]
pub(crate) struct Connections(Mutex<HashMap<u64, ConnectionInfo>>);

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConnectionInfo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's place in the list, given back on drop.
#[derive(Debug)]
pub(crate) struct Listed {
    broker: Arc<Broker>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.broker.connections.lock().remove(&self.id);
    }
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
        // Each virtual host takes its own definitions. A store with none
        // recorded is new, or from before virtual hosts: its host is `/`,
        // made on the first start as RabbitMQ makes it.
        let mut names = std::mem::take(&mut recovered.vhosts);
        if names.is_empty() {
            store.put_vhost(DEFAULT_VHOST);
            names.push(DEFAULT_VHOST.to_owned());
        }
        let users = Arc::new(Users::open(
            store.clone(),
            &mut recovered,
            &config.default_user,
            &config.default_pass,
        ));
        let mut parts: HashMap<String, Recovered> =
            names.iter().map(|n| (n.clone(), Recovered::default())).collect();
        for x in recovered.exchanges {
            match parts.get_mut(&x.vhost) {
                Some(part) => part.exchanges.push(x),
                None => {
                    warn!(vhost = %x.vhost, exchange = %x.name, "kept for a virtual host that does not exist")
                }
            }
        }
        for q in recovered.queues {
            match parts.get_mut(&q.def.vhost) {
                Some(part) => part.queues.push(q),
                None => {
                    warn!(vhost = %q.def.vhost, queue = %q.def.name, "kept for a virtual host that does not exist")
                }
            }
        }
        for b in recovered.bindings {
            if let Some(part) = parts.get_mut(&b.vhost) {
                part.bindings.push(b);
            }
        }
        let mut vhosts = HashMap::new();
        let mut stats = crate::vhost::RecoveryStats::default();
        for (name, part) in parts {
            let (vhost, part_stats) = VHost::open(&name, store.clone(), part, alarms.memory_pressure());
            stats.add(&part_stats);
            vhosts.insert(name, vhost);
        }
        info!(
            vhosts = vhosts.len(),
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
            store,
            vhosts: RwLock::new(vhosts),
            users,
            alarms,
            next_connection_id: AtomicU64::new(1),
            connections: Default::default(),
            open_connections: Arc::new(AtomicUsize::new(0)),
            retired: Mutex::default(),
            reported: Mutex::default(),
        }))
    }

    /// Keeps what a closing connection counted.
    pub(crate) fn retire(&self, counters: MessageCounters, vhost: &str, flows: Flows) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.0 += counters;
        let kept = retired.1.entry(vhost.to_owned()).or_default();
        for (flow, n) in flows {
            *kept.entry(flow).or_default() += n;
        }
    }

    /// What closed connections counted, and the steps their publishes
    /// took, by vhost. Steps between exchanges or queues that no longer
    /// exist are forgotten here, so that the map does not grow with every
    /// binding ever made.
    pub(crate) fn retired(&self) -> (MessageCounters, HashMap<String, Flows>) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.1.retain(|vhost, flows| match self.vhost(vhost) {
            Some(vhost) => {
                vhost.retain_steps(flows);
                true
            }
            None => false,
        });
        retired.clone()
    }

    /// `totals`, or more where an earlier report said more: a connection
    /// too busy to answer a listing, or one that closed while it was made,
    /// must not make a counter go down (Prometheus would read a reset).
    pub(crate) fn report(&self, totals: MessageCounters) -> MessageCounters {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        *reported = reported.max(totals);
        *reported
    }

    /// The virtual host called `name`, if there is one.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every virtual host.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Makes a virtual host, empty, and records it; false if it exists.
    pub fn add_vhost(&self, name: &str) -> bool {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
        if vhosts.contains_key(name) {
            return false;
        }
        self.store.put_vhost(name);
        let memory_pressure = self.alarms.memory_pressure();
        let (vhost, _) = VHost::open(name, self.store.clone(), Recovered::default(), memory_pressure);
        vhosts.insert(name.to_owned(), vhost);
        info!(vhost = name, "virtual host added");
        true
    }

    /// Takes a virtual host out of the table ([`Broker::delete_vhost`]).
    pub(crate) fn remove_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Memory, disk and alarm state, for operators (the management API
    /// will read it).
    pub fn status(&self) -> Status {
        self.alarms.status()
    }

    /// Lists a connection that has opened; it leaves the list when the
    /// returned value is dropped, as the connection ends.
    pub(crate) fn list_connection(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        user: &str,
        vhost: &str,
        inbox: mpsc::UnboundedSender<ConnEvent>,
    ) -> Listed {
        let info = ConnectionInfo {
            // Canonical, so that `peer_host:peer_port` names it too on a
            // dual-stack listener (no `::ffff:` prefix).
            name: SocketAddr::new(peer.ip().to_canonical(), peer.port()).to_string(),
            peer,
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            connected_at: crate::clock::wall_ms(),
            inbox,
        };
        self.connections.lock().insert(id, info);
        Listed {
            broker: self.clone(),
            id,
        }
    }

    /// The open connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut all: Vec<ConnectionInfo> = self.connections.lock().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
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
