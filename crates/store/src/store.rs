//! [`Store`]: opening and recovering the data directory, and the handle the
//! broker uses to send the store's thread its work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use sled::Db;
use tracing::warn;
use warren_codec::Message;

use crate::definitions::{
    BindingDef, DestinationKind, ExchangeDef, PermissionDef, QueueDef, TopicPermissionDef, UserDef,
};
use crate::histogram::Metrics;
use crate::io::{io_error, sync_sled};
use crate::recovery::{self, Recovered, RecoveredQueue};
use crate::segments::{self, Active, Summary};
use crate::trees::{Trees, GENERATION, NEXT_QUEUE};
use crate::writer::{Definition, Durable, Op, ReadReply, Writer};
use crate::StoreError;

/// sled's segment size.
const SLED_SEGMENT: usize = 64 * 1024;

/// How long opening waits for the data directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The handle to a data directory's store thread. Cheap to clone; every
/// method only sends work, and never blocks on I/O (except [`Store::close`]).
#[derive(Clone, Debug)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// To the store's thread; sends fail once it has stopped.
    tx: Sender<Op>,
    path: PathBuf,
    next_message: Arc<AtomicU64>,
    next_queue: AtomicU64,
    /// Octets of message bodies handed to the thread and not yet written
    /// (or found not to need writing): see [`Store::unwritten`].
    unwritten: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

/// Opens sled, waiting a while if the directory is locked. A store just
/// closed in this process keeps its lock until sled's background threads
/// let go of it, a few milliseconds later (a test restarting its broker
/// failed on that); another process that holds the directory still gets
/// the lock error once the wait is over.
fn open_db(path: &Path, cache_bytes: u64) -> sled::Result<Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // sled holds only definitions and segment summaries: 64 KiB segments
        // (its default is 512 KiB) keep its file, the floor of a drained
        // store's size, small.
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .segment_size(SLED_SEGMENT);
        match config.open() {
            // sled 0.34 says only this (config.rs, `try_lock`) when the lock is held.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `path`, with sled's page cache set to
    /// `cache_bytes`, reads back everything it holds, and starts the
    /// store's thread. A store that cannot be read as it is, is refused
    /// with an error naming the file; damage that recovery can read past is
    /// reported in [`Recovered::damage`]. Never panics on what it reads:
    /// a panic inside sled becomes a refusal.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<(Store, Recovered), StoreError> {
        let opened = std::panic::catch_unwind(|| open(path, cache_bytes));
        match opened {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(StoreError::Refused {
                    path: path.join("db"),
                    what: format!(
                        "sled failed reading it ({what}): the database is damaged; restore the data \
                         directory from a backup, or move it away to start empty"
                    ),
                })
            }
        }
    }

    fn send(&self, op: Op) -> Result<(), Op> {
        self.shared.tx.send(op).map_err(|e| e.0)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Stores a persistent message for the durable queues `queues` (their
    /// ids), once, and returns its id. `confirm` is told once it is durable
    /// (or was settled by every queue before it was written).
    pub fn publish(&self, message: Arc<Message>, queues: Vec<u64>, confirm: Option<Arc<dyn Durable>>) -> u64 {
        self.store_message(message, queues, confirm, false)
    }

    /// Pages a message out of a queue's memory into the transient log (a
    /// transient message, or any message of a transient queue); the queue
    /// reads it back with [`Store::read`] and settles it like a stored one.
    /// Gone at the next start.
    pub fn page_out(&self, message: Arc<Message>, queue: u64) -> u64 {
        self.store_message(message, vec![queue], None, true)
    }

    fn store_message(
        &self,
        message: Arc<Message>,
        queues: Vec<u64>,
        confirm: Option<Arc<dyn Durable>>,
        transient: bool,
    ) -> u64 {
        let id = self.shared.next_message.fetch_add(1, Ordering::SeqCst);
        let octets = message.body.len() as u64;
        self.shared.unwritten.fetch_add(octets, Ordering::Relaxed);
        let op = Op::Publish {
            id,
            message,
            queues,
            confirm,
            transient,
        };
        if let Err(Op::Publish { confirm, .. }) = self.send(op) {
            self.shared.unwritten.fetch_sub(octets, Ordering::Relaxed);
            if let Some(confirm) = confirm {
                confirm.done(false);
            }
        }
        id
    }

    /// Octets of message bodies sent to the store's thread that it has not
    /// written yet. A publisher that finds this high waits for a
    /// [`Store::barrier`] before sending more, so that a publisher faster
    /// than the disk is slowed to it rather than filling memory (RabbitMQ's
    /// message store is credit-flowed too).
    pub fn unwritten(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Relaxed)
    }

    /// The broker's histograms: the store's fsync latency and group-commit
    /// size, and the queues' delivery latency.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Queue `queue` lets go of messages (ack, reject, purge, or a publish
    /// it never took).
    pub fn settle(&self, queue: u64, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.send(Op::Settle { queue, ids });
        }
    }

    /// Queue `queue` is deleted: its messages go without a record each.
    /// Send after [`Store::delete_queue`], so that its definition is gone
    /// first.
    pub fn forget(&self, queue: u64, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.send(Op::Forget { queue, ids });
        }
    }

    /// Queue `queue` delivered messages for the first time.
    pub fn delivered(&self, queue: u64, ids: Vec<u64>) {
        if !ids.is_empty() {
            let _ = self.send(Op::Delivered { queue, ids });
        }
    }

    /// Reads messages back; `reply` gets them in the order asked.
    pub fn read(&self, ids: Vec<u64>, reply: ReadReply) {
        if let Err(Op::Read { ids, reply }) = self.send(Op::Read { ids, reply }) {
            reply(ids.iter().map(|_| Err(StoreError::Closed)).collect());
        }
    }

    /// Tells `durable` once everything sent before is durable.
    pub fn barrier(&self, durable: Arc<dyn Durable>) {
        if let Err(Op::Barrier(durable)) = self.send(Op::Barrier(durable)) {
            durable.done(false);
        }
    }

    /// A new queue's id, never given before.
    pub fn new_queue_id(&self) -> u64 {
        self.shared.next_queue.fetch_add(1, Ordering::SeqCst)
    }

    fn define(&self, definition: Definition) {
        let _ = self.send(Op::Define(Box::new(definition)));
    }

    /// Records a virtual host.
    pub fn put_vhost(&self, name: &str) {
        self.define(Definition::PutVhost(name.to_owned()));
    }

    /// Records a user (new, or changed).
    pub fn put_user(&self, def: UserDef) {
        self.define(Definition::PutUser(def));
    }

    /// Forgets a user and their permissions.
    pub fn delete_user(&self, name: &str) {
        self.define(Definition::DeleteUser(name.to_owned()));
    }

    /// Forgets a virtual host: its definitions and every permission in it.
    /// Its queues are deleted first, by the broker, so that their messages
    /// are settled.
    pub fn delete_vhost(&self, name: &str) {
        self.define(Definition::DeleteVhost(name.to_owned()));
    }

    /// Records a user's permissions in a virtual host (new, or changed).
    pub fn put_permission(&self, def: PermissionDef) {
        self.define(Definition::PutPermission(def));
    }

    /// Forgets a user's permissions in a virtual host.
    pub fn delete_permission(&self, user: &str, vhost: &str) {
        self.define(Definition::DeletePermission {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
        });
    }

    /// Records a user's topic permissions on an exchange.
    pub fn put_topic_permission(&self, def: TopicPermissionDef) {
        self.define(Definition::PutTopicPermission(def));
    }

    /// Forgets a user's topic permissions on an exchange.
    pub fn delete_topic_permission(&self, def: TopicPermissionDef) {
        self.define(Definition::DeleteTopicPermission(def));
    }

    /// Records a durable exchange.
    pub fn put_exchange(&self, def: ExchangeDef) {
        self.define(Definition::PutExchange(def));
    }

    /// Forgets a durable exchange and every durable binding from or to it.
    pub fn delete_exchange(&self, vhost: &str, name: &str) {
        self.define(Definition::DeleteExchange {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Records a durable queue.
    pub fn put_queue(&self, def: QueueDef) {
        self.define(Definition::PutQueue(def));
    }

    /// Forgets a durable queue and its bindings. Its messages die with it;
    /// the queue sends their ids with [`Store::forget`].
    pub fn delete_queue(&self, vhost: &str, name: &str) {
        self.define(Definition::DeleteQueue {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
        });
    }

    /// Records a binding between durable things.
    pub fn put_binding(&self, def: BindingDef) {
        self.define(Definition::PutBinding(def));
    }

    /// Forgets a binding.
    pub fn delete_binding(&self, def: BindingDef) {
        self.define(Definition::DeleteBinding(def));
    }

    /// Commits what is pending, syncs everything and stops the thread.
    /// Blocks: call it from a blocking context.
    pub fn close(&self) -> Result<(), StoreError> {
        let (reply, done) = mpsc::sync_channel(1);
        if self.send(Op::Close(reply)).is_err() {
            return Err(StoreError::Closed);
        }
        done.recv().unwrap_or(Err(StoreError::Closed))
    }
}

fn refused(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Refused {
        path: path.to_owned(),
        what: what.into(),
    }
}

fn open(path: &Path, cache_bytes: u64) -> Result<(Store, Recovered), StoreError> {
    let db_path = path.join("db");
    let sled_err = |source| StoreError::Sled {
        path: path.to_owned(),
        source,
    };
    let db = open_db(path, cache_bytes).map_err(sled_err)?;
    if db.tree_names().iter().any(|n| n.as_ref() == b"messages") {
        return Err(refused(
            &db_path,
            "written by an earlier Warren that kept messages in sled; this one keeps them in a \
             message log and cannot read that format",
        ));
    }
    let before_permissions = !db.tree_names().iter().any(|n| n.as_ref() == b"permissions")
        && db.tree_names().iter().any(|n| n.as_ref() == b"users");
    let tree = |name: &str| db.open_tree(name).map_err(sled_err);
    let trees = Trees {
        exchanges: tree("exchanges")?,
        users: tree("users")?,
        vhosts: tree("vhosts")?,
        permissions: tree("permissions")?,
        topic_permissions: tree("topic_permissions")?,
        queues: tree("queues")?,
        bindings: tree("bindings")?,
        segments: tree("segments")?,
        acks: tree("acks")?,
        meta: tree("meta")?,
    };
    let meta_u64 = |key: &[u8]| -> Result<u64, StoreError> {
        match trees.meta.get(key).map_err(sled_err)? {
            None => Ok(0),
            Some(v) => crate::record::u64_at(&v, 0).ok_or_else(|| {
                refused(
                    &db_path,
                    format!("its {} is damaged", String::from_utf8_lossy(key)),
                )
            }),
        }
    };
    let generation = meta_u64(GENERATION)?;
    let mut next_queue = meta_u64(NEXT_QUEUE)?.max(1);
    let mut recovered = Recovered::default();
    for item in trees.exchanges.iter() {
        let (k, v) = item.map_err(sled_err)?;
        let def = ExchangeDef::decode(&k, &v).ok_or_else(|| {
            refused(
                &db_path,
                format!(
                    "the definition of exchange '{}' is damaged",
                    String::from_utf8_lossy(&k)
                ),
            )
        })?;
        recovered.exchanges.push(def);
    }
    for item in trees.vhosts.iter() {
        let (k, _) = item.map_err(sled_err)?;
        recovered.vhosts.push(String::from_utf8_lossy(&k).into_owned());
    }
    for item in trees.users.iter() {
        let (k, v) = item.map_err(sled_err)?;
        let name = String::from_utf8_lossy(&k);
        let def = UserDef::decode(&name, &v)
            .ok_or_else(|| refused(&db_path, format!("the definition of user '{name}' is damaged")))?;
        recovered.users.push(def);
    }
    for item in trees.permissions.iter() {
        let (k, v) = item.map_err(sled_err)?;
        let def = PermissionDef::decode(&k, &v)
            .ok_or_else(|| refused(&db_path, "a user's permissions are damaged"))?;
        recovered.permissions.push(def);
    }
    for item in trees.topic_permissions.iter() {
        let (k, v) = item.map_err(sled_err)?;
        let def = TopicPermissionDef::decode(&k, &v)
            .ok_or_else(|| refused(&db_path, "a user's topic permissions are damaged"))?;
        recovered.topic_permissions.push(def);
    }
    // A store from before permissions: its users had every right in every
    // vhost, and keep them. Written here, before anything else runs, and
    // flushed, so that a crash cannot leave the permissions tree made and
    // empty (which would lock every user out).
    if before_permissions {
        let vhosts = match recovered.vhosts.is_empty() {
            true => vec![crate::DEFAULT_VHOST.to_owned()],
            false => recovered.vhosts.clone(),
        };
        for user in &recovered.users {
            for vhost in &vhosts {
                let def = PermissionDef {
                    user: user.name.clone(),
                    vhost: vhost.clone(),
                    configure: ".*".to_owned(),
                    write: ".*".to_owned(),
                    read: ".*".to_owned(),
                };
                tracing::info!(user = %def.user, vhost = %def.vhost, "giving every permission, as before permissions existed");
                trees
                    .permissions
                    .insert(def.key(), def.encode())
                    .map_err(sled_err)?;
                recovered.permissions.push(def);
            }
        }
        db.flush().map_err(sled_err)?;
    }
    let mut queues = HashMap::new();
    let mut defs = Vec::new();
    for item in trees.queues.iter() {
        let (k, v) = item.map_err(sled_err)?;
        let def = QueueDef::decode(&k, &v).ok_or_else(|| {
            refused(
                &db_path,
                format!(
                    "the definition of queue '{}' is damaged",
                    String::from_utf8_lossy(&k)
                ),
            )
        })?;
        next_queue = next_queue.max(def.id + 1);
        queues.insert(def.id, (def.name.clone(), Vec::new()));
        defs.push(def);
    }
    let mut summaries = BTreeMap::new();
    for item in trees.segments.iter() {
        let (k, v) = item.map_err(sled_err)?;
        match (crate::record::u64_at(&k, 0), Summary::decode(&v)) {
            (Some(n), Some(summary)) => {
                summaries.insert(n, summary);
            }
            _ => warn!(db = %db_path.display(), "ignoring a damaged segment summary"),
        }
    }
    let mut ack_lengths = HashMap::new();
    for item in trees.acks.iter() {
        let (k, v) = item.map_err(sled_err)?;
        if let (Some(n), Some(len)) = (crate::record::u64_at(&k, 0), crate::record::u64_at(&v, 0)) {
            ack_lengths.insert(n, len);
        }
    }
    let dir = segments::dir(path);
    let log = recovery::scan(&dir, &summaries, &ack_lengths, &mut queues, &mut recovered.damage)?;
    if log.generation > generation {
        return Err(refused(
            &db_path,
            format!(
                "the definitions are older than the message log (generation {generation}, the log \
                 names {}): sled lost writes it had synced; restore the data directory from a \
                 backup, or move it away to start empty",
                log.generation
            ),
        ));
    }
    let sled_err = |source| StoreError::Sled {
        path: path.to_owned(),
        source,
    };
    for (n, summary) in &log.close {
        trees
            .segments
            .insert(n.to_be_bytes(), summary.encode())
            .map_err(sled_err)?;
    }
    for n in &log.forget {
        trees.segments.remove(n.to_be_bytes()).map_err(sled_err)?;
        trees.acks.remove(n.to_be_bytes()).map_err(sled_err)?;
    }
    let mut segment_table = log.segments;
    // Segments nothing is held in any more go: sled forgets them here, and
    // their files go once that is synced, below (see `Writer::reclaim`).
    let mut drained = Vec::new();
    segment_table.retain(|&n, segment| {
        if segment.live > 0 {
            return true;
        }
        let _ = trees.segments.remove(n.to_be_bytes());
        let _ = trees.acks.remove(n.to_be_bytes());
        drained.push(n);
        false
    });
    recovered.segments = summaries.len().max(segment_table.len());
    recovered.torn = log.torn;
    let next_message = Arc::new(AtomicU64::new(log.next_message));
    let n = log.last_segment.map_or(0, |last| last + 1);
    let active = Active::create(&dir, n, log.next_message, generation)?;
    segment_table.insert(n, Default::default());
    trees
        .segments
        .insert(n.to_be_bytes(), Summary::Active.encode())
        .map_err(sled_err)?;
    let mut synced_blobs = HashSet::new();
    sync_sled(path, &db, &mut synced_blobs)?;
    for n in drained {
        let _ = std::fs::remove_file(segments::seg_path(&dir, n));
        let _ = std::fs::remove_file(segments::ack_path(&dir, n));
    }
    for def in defs {
        let (_, entries) = queues.remove(&def.id).unwrap_or_default();
        recovered.queues.push(RecoveredQueue { def, entries });
    }
    recover_bindings(&trees, &mut recovered).map_err(sled_err)?;
    let transient = crate::transient::TransientLog::open(path)?;
    let mut writer = Writer::new(
        path.to_owned(),
        db,
        trees,
        generation,
        next_message.clone(),
        segment_table,
        log.locations,
        active,
        transient,
    );
    writer.synced_blobs = synced_blobs;
    let unwritten = writer.unwritten.clone();
    let metrics = writer.metrics.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("warren-store".into())
        .spawn(move || writer.run(rx))
        .map_err(io_error(path))?;
    let store = Store {
        shared: Arc::new(Shared {
            tx,
            path: path.to_owned(),
            next_message,
            next_queue: AtomicU64::new(next_queue),
            unwritten,
            metrics,
        }),
    };
    Ok((store, recovered))
}

/// Keeps the bindings whose both ends were recovered; removes the others.
fn recover_bindings(trees: &Trees, recovered: &mut Recovered) -> sled::Result<()> {
    let exchange_names: HashSet<(&str, &str)> = recovered
        .exchanges
        .iter()
        .map(|x| (x.vhost.as_str(), x.name.as_str()))
        .collect();
    let queue_names: HashSet<(&str, &str)> = recovered
        .queues
        .iter()
        .map(|q| (q.def.vhost.as_str(), q.def.name.as_str()))
        .collect();
    let exists = |vhost: &str, kind, name: &str| match kind {
        DestinationKind::Queue => queue_names.contains(&(vhost, name)),
        DestinationKind::Exchange => name.starts_with("amq.") || exchange_names.contains(&(vhost, name)),
    };
    let mut stale = Vec::new();
    let mut bindings = Vec::new();
    for item in trees.bindings.iter() {
        let (k, _) = item?;
        match BindingDef::decode(&k) {
            Some(b)
                if exists(&b.vhost, DestinationKind::Exchange, &b.source)
                    && exists(&b.vhost, b.destination_kind, &b.destination) =>
            {
                bindings.push(b)
            }
            _ => stale.push(k),
        }
    }
    for k in stale {
        trees.bindings.remove(k)?;
        recovered.cleaned += 1;
    }
    recovered.bindings = bindings;
    Ok(())
}
