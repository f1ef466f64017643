//! [`Store`]: the sled database, the group-commit primitive, and recovery.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sled::{Batch, Db, Tree};
use warren_codec::Message;

use crate::definitions::{BindingDef, DestinationKind, ExchangeDef, QueueDef};
use crate::messages::{self, chunk_key, IndexEntry};
use crate::StoreError;

const QUEUE_TREE_PREFIX: &str = "queue:";

/// Everything durable, as found at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues with their messages, in queue order.
    pub queues: Vec<RecoveredQueue>,
    /// Bindings whose both ends were recovered.
    pub bindings: Vec<BindingDef>,
    /// Damaged or orphaned records removed (half-written messages, index
    /// entries without a message, bindings to things that are gone).
    pub cleaned: usize,
}

/// A durable queue and its index.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// The queue.
    pub def: QueueDef,
    /// Its messages, in order.
    pub entries: Vec<IndexEntry>,
}

/// The durable store of one broker.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: Db,
    exchanges: Tree,
    queues: Tree,
    bindings: Tree,
    messages: Tree,
    /// How many queue indexes hold each stored message, for the messages held
    /// by more than one (a message missing here is held by exactly one, so a
    /// backlog on a single queue costs no memory here). Kept in memory and
    /// rebuilt from the indexes at recovery, so that a crash can never leave a
    /// count that disagrees with the indexes.
    refs: Mutex<HashMap<u64, u32>>,
    /// Whether the previous run ended with [`Store::close`]: then nothing
    /// was left half-written and recovery need not look for it.
    clean_start: bool,
    /// Blob files already made durable (see [`Store::sync`]).
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    /// Set by the first failed sync: after a failed fsync the kernel may have
    /// dropped the dirty pages, so no later sync can vouch for earlier writes.
    poisoned: std::sync::atomic::AtomicBool,
}

/// The key, in sled's default tree, of the clean-shutdown mark.
const CLEAN_SHUTDOWN: &[u8] = b"clean-shutdown";

/// How long opening waits for the data directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, waiting a while if the directory is locked. A store just
/// dropped in this process keeps its lock until sled's background threads
/// let go of it, a few milliseconds later (a test restarting its broker
/// failed on that); another process that holds the directory still gets
/// the lock error once the wait is over.
fn open_db(path: &Path, cache_bytes: u64) -> sled::Result<Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).cache_capacity(cache_bytes).open() {
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

/// A queue's index, kept open by the queue that owns it.
#[derive(Clone, Debug)]
pub struct QueueIndex {
    tree: Tree,
}

impl Store {
    /// Opens (or creates) the store in `path`, with sled's page cache set to
    /// `cache_bytes`. A damaged database is an error naming the directory.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sled {
            path: path.to_owned(),
            source,
        };
        let db = open_db(path, cache_bytes).map_err(err)?;
        let tree = |name: &str| db.open_tree(name).map_err(err);
        // Taken at start, and made durable, so that a crash in this run is
        // never mistaken for a clean shutdown at the next start.
        let clean_start = db.remove(CLEAN_SHUTDOWN).map_err(err)?.is_some();
        if clean_start {
            db.flush().map_err(err)?;
        }
        let store = Store {
            exchanges: tree("exchanges")?,
            queues: tree("queues")?,
            bindings: tree("bindings")?,
            messages: tree("messages")?,
            refs: Mutex::new(HashMap::new()),
            clean_start,
            synced_blobs: Mutex::new(HashSet::new()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            path: path.to_owned(),
            db,
        };
        // The directory entry of a newly created file is durable only once the
        // directory itself is synced.
        store.sync_path(path)?;
        store.sync_path(&path.join("blobs"))?;
        Ok(store)
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, tree: &str, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            tree: tree.to_owned(),
            what: what.into(),
        }
    }

    fn sync_path(&self, path: &Path) -> Result<(), StoreError> {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })
    }

    /// Makes every write made before this call durable: sled's flush writes
    /// its buffers with `sync_file_range`, which neither persists metadata nor
    /// flushes the drive's cache (sled issue #1452); the `fdatasync` of the
    /// `db` file that follows does both. sled writes a value (or a whole leaf
    /// node of a tree, when it consolidates one) that is too large for its log
    /// to a separate blob file it never fsyncs: those created since the last
    /// sync are fsynced too, then their directory. Called by one group-commit
    /// task for every write pending at that moment. After one failure every
    /// later call fails too.
    pub fn sync(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("an earlier sync failed; restart to recover"),
            });
        }
        let result = self.sync_once();
        if result.is_err() {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        result
    }

    fn sync_once(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.sled_err(e))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let db_file = self.path.join("db");
        File::open(&db_file)
            .and_then(|f| f.sync_data())
            .map_err(io(&db_file))?;
        let blobs = self.path.join("blobs");
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_blobs = false;
        for entry in std::fs::read_dir(&blobs).map_err(io(&blobs))? {
            let entry = entry.map_err(io(&blobs))?;
            if !synced.contains(&entry.file_name()) {
                let file = entry.path();
                // sled may have collected it meanwhile: then it needs no sync.
                match File::open(&file) {
                    Ok(f) => f.sync_all().map_err(io(&file))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&file)(e)),
                }
                synced.insert(entry.file_name());
                new_blobs = true;
            }
        }
        if new_blobs {
            self.sync_path(&blobs)?;
        }
        Ok(())
    }

    /// Marks a clean shutdown, after a final sync: the next start can skip
    /// looking for what a crash leaves half-written (which reads every stored
    /// message's key, and costs memory with a large backlog).
    pub fn close(&self) -> Result<(), StoreError> {
        self.db
            .insert(CLEAN_SHUTDOWN, &[])
            .map_err(|e| self.sled_err(e))?;
        self.sync()
    }

    /// Records a durable exchange.
    pub fn put_exchange(&self, def: &ExchangeDef) -> Result<(), StoreError> {
        self.exchanges
            .insert(def.name.as_bytes(), def.encode())
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    /// Forgets a durable exchange and every durable binding from or to it.
    pub fn delete_exchange(&self, name: &str) -> Result<(), StoreError> {
        self.exchanges
            .remove(name.as_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.delete_bindings_where(|b| {
            b.source == name || (b.destination_kind == DestinationKind::Exchange && b.destination == name)
        })
    }

    /// Records a durable queue.
    pub fn put_queue(&self, def: &QueueDef) -> Result<(), StoreError> {
        self.queues
            .insert(def.name.as_bytes(), def.encode())
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    /// Forgets a durable queue, its bindings and its messages.
    pub fn delete_queue(&self, name: &str) -> Result<(), StoreError> {
        self.queues
            .remove(name.as_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.delete_bindings_where(|b| {
            b.destination_kind == DestinationKind::Queue && b.destination == name
        })?;
        let index = self.queue_index(name)?;
        for item in index.tree.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            if let Some(entry) = IndexEntry::decode(&k, &v) {
                self.release(entry.message_id)?;
            }
        }
        self.db
            .drop_tree(index_tree_name(name))
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    /// Records a binding between durable things.
    pub fn put_binding(&self, def: &BindingDef) -> Result<(), StoreError> {
        self.bindings
            .insert(def.key(), &[])
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    /// Forgets a binding.
    pub fn delete_binding(&self, def: &BindingDef) -> Result<(), StoreError> {
        self.bindings
            .remove(def.key())
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    fn delete_bindings_where(&self, matches: impl Fn(&BindingDef) -> bool) -> Result<(), StoreError> {
        for item in self.bindings.iter() {
            let (k, _) = item.map_err(|e| self.sled_err(e))?;
            if BindingDef::decode(&k).is_none_or(|b| matches(&b)) {
                self.bindings.remove(k).map_err(|e| self.sled_err(e))?;
            }
        }
        Ok(())
    }

    /// Stores a message for `refs` durable queues, once, and returns its id.
    /// Each of those queues then appends it to its index, or calls
    /// [`Store::release`] if it cannot.
    pub fn put_message(&self, message: &Message, refs: u32) -> Result<u64, StoreError> {
        let id = self.db.generate_id().map_err(|e| self.sled_err(e))?;
        let mut batch = Batch::default();
        for (i, chunk) in messages::encode(message).into_iter().enumerate() {
            batch.insert(&chunk_key(id, i as u32), chunk);
        }
        self.messages.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        if refs > 1 {
            self.refs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, refs);
        }
        Ok(id)
    }

    /// Reads a stored message back.
    pub fn get_message(&self, id: u64) -> Result<Message, StoreError> {
        let mut chunks = Vec::new();
        for item in self.messages.scan_prefix(id.to_be_bytes()) {
            chunks.push(item.map_err(|e| self.sled_err(e))?.1);
        }
        messages::decode(chunks.iter().map(|c| &c[..]))
            .ok_or_else(|| self.corrupt("messages", format!("message {id} is incomplete")))
    }

    /// One queue lets go of a message; the last one deletes it.
    pub fn release(&self, id: u64) -> Result<(), StoreError> {
        let last = {
            let mut refs = self.refs.lock().unwrap_or_else(|e| e.into_inner());
            match refs.get_mut(&id) {
                Some(n) if *n > 2 => {
                    *n -= 1;
                    false
                }
                // Down to one holder: the implicit count.
                Some(_) => {
                    refs.remove(&id);
                    false
                }
                None => true,
            }
        };
        if last {
            self.delete_message(id)?;
        }
        Ok(())
    }

    fn delete_message(&self, id: u64) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for item in self.messages.scan_prefix(id.to_be_bytes()).keys() {
            batch.remove(item.map_err(|e| self.sled_err(e))?);
        }
        self.messages.apply_batch(batch).map_err(|e| self.sled_err(e))
    }

    /// Opens the index of a durable queue.
    pub fn queue_index(&self, queue: &str) -> Result<QueueIndex, StoreError> {
        Ok(QueueIndex {
            tree: self
                .db
                .open_tree(index_tree_name(queue))
                .map_err(|e| self.sled_err(e))?,
        })
    }

    /// Appends (or rewrites, e.g. to mark it delivered) an index entry.
    pub fn put_entry(&self, index: &QueueIndex, entry: IndexEntry) -> Result<(), StoreError> {
        index
            .tree
            .insert(entry.position.to_be_bytes(), &entry.value())
            .map(drop)
            .map_err(|e| self.sled_err(e))
    }

    /// Removes an index entry (ack, reject, purge) and releases its message.
    pub fn remove_entry(&self, index: &QueueIndex, entry: IndexEntry) -> Result<(), StoreError> {
        index
            .tree
            .remove(entry.position.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.release(entry.message_id)
    }

    /// Reads everything back at start, and removes what a crash left
    /// half-done: index entries whose message is missing, messages no index
    /// holds (both checked only after an unclean shutdown), bindings whose
    /// ends are gone, and indexes of queues that are not declared.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut recovered = Recovered::default();
        for item in self.exchanges.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            let name = String::from_utf8_lossy(&k);
            let def = ExchangeDef::decode(&name, &v)
                .ok_or_else(|| self.corrupt("exchanges", format!("exchange '{name}'")))?;
            recovered.exchanges.push(def);
        }
        let mut queue_names = HashSet::new();
        for item in self.queues.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let def = QueueDef::decode(&name, &v)
                .ok_or_else(|| self.corrupt("queues", format!("queue '{name}'")))?;
            let index = self.queue_index(&name)?;
            let mut entries = Vec::new();
            for item in index.tree.iter() {
                let (k, v) = item.map_err(|e| self.sled_err(e))?;
                match IndexEntry::decode(&k, &v) {
                    Some(entry) => entries.push(entry),
                    None => {
                        index.tree.remove(k).map_err(|e| self.sled_err(e))?;
                        recovered.cleaned += 1;
                    }
                }
            }
            queue_names.insert(name);
            recovered.queues.push(RecoveredQueue { def, entries });
        }
        // Match the messages the indexes hold with the messages stored, both
        // in id order: 8 bytes per held message, no hash set of all of them.
        // A message is written in one atomic sled batch and sled recovers a
        // prefix of its log, so a message whose header chunk is there is there
        // whole, and keys alone tell which are.
        let mut held: Vec<u64> = recovered
            .queues
            .iter()
            .flat_map(|q| q.entries.iter().map(|e| e.message_id))
            .collect();
        held.sort_unstable();
        let mut held_iter = held.iter().copied().peekable();
        let mut missing = HashSet::new();
        let mut orphans = Vec::new();
        let keys = if self.clean_start {
            None
        } else {
            Some(self.messages.iter().keys())
        };
        for item in keys.into_iter().flatten() {
            let k = item.map_err(|e| self.sled_err(e))?;
            let (Some(id), Some(0)) = (key_part(&k, 0..8), key_part(&k, 8..12)) else {
                continue;
            };
            while let Some(h) = held_iter.next_if(|&h| h < id) {
                missing.insert(h);
            }
            if held_iter.next_if_eq(&id).is_some() {
                while held_iter.next_if_eq(&id).is_some() {}
            } else {
                orphans.push(id);
            }
        }
        if !self.clean_start {
            missing.extend(held_iter);
        }
        for id in orphans {
            self.delete_message(id)?;
            recovered.cleaned += 1;
        }
        if !missing.is_empty() {
            for queue in &mut recovered.queues {
                let index = self.queue_index(&queue.def.name)?;
                for entry in queue.entries.iter().filter(|e| missing.contains(&e.message_id)) {
                    index
                        .tree
                        .remove(entry.position.to_be_bytes())
                        .map_err(|e| self.sled_err(e))?;
                    recovered.cleaned += 1;
                }
                queue.entries.retain(|e| !missing.contains(&e.message_id));
            }
        }
        // Counts above one, from the sorted list of held messages.
        let mut refs = HashMap::new();
        for run in held.chunk_by(|a, b| a == b) {
            if run.len() > 1 && !missing.contains(&run[0]) {
                refs.insert(run[0], run.len() as u32);
            }
        }
        drop(held);
        *self.refs.lock().unwrap_or_else(|e| e.into_inner()) = refs;
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some(queue) = name.strip_prefix(QUEUE_TREE_PREFIX) {
                if !queue_names.contains(queue) {
                    self.db.drop_tree(name.as_bytes()).map_err(|e| self.sled_err(e))?;
                }
            }
        }
        let exchange_names: HashSet<&str> = recovered.exchanges.iter().map(|x| x.name.as_str()).collect();
        let exists = |kind, name: &str| match kind {
            DestinationKind::Queue => queue_names.contains(name),
            DestinationKind::Exchange => name.starts_with("amq.") || exchange_names.contains(name),
        };
        let mut stale = Vec::new();
        for item in self.bindings.iter() {
            let (k, _) = item.map_err(|e| self.sled_err(e))?;
            match BindingDef::decode(&k) {
                Some(b)
                    if exists(DestinationKind::Exchange, &b.source)
                        && exists(b.destination_kind, &b.destination) =>
                {
                    recovered.bindings.push(b)
                }
                _ => stale.push(k),
            }
        }
        for k in stale {
            self.bindings.remove(k).map_err(|e| self.sled_err(e))?;
            recovered.cleaned += 1;
        }
        Ok(recovered)
    }
}

/// A big-endian number from part of a key.
fn key_part(key: &[u8], range: std::ops::Range<usize>) -> Option<u64> {
    let bytes = key.get(range)?;
    let mut buf = [0u8; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    Some(u64::from_be_bytes(buf))
}

fn index_tree_name(queue: &str) -> String {
    format!("{QUEUE_TREE_PREFIX}{queue}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;
    use warren_codec::amq_protocol::types::FieldTable;
    use warren_codec::bytes::Bytes;

    fn message(body: &str) -> Message {
        Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: BasicProperties::default().with_delivery_mode(2),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn queue(name: &str) -> QueueDef {
        QueueDef {
            name: name.into(),
            auto_delete: false,
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn a_directory_held_by_an_open_store_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path(), 1 << 20).unwrap();
        let started = std::time::Instant::now();
        let Err(refused) = Store::open(dir.path(), 1 << 20) else {
            panic!("a second store opened a directory whose lock is held");
        };
        assert!(
            refused.to_string().contains("could not acquire lock"),
            "{refused}"
        );
        assert!(started.elapsed() >= LOCK_WAIT);
    }

    #[test]
    fn write_reopen_recover() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            store.put_queue(&queue("q1")).unwrap();
            store.put_queue(&queue("q2")).unwrap();
            store
                .put_exchange(&ExchangeDef {
                    name: "x".into(),
                    kind: "fanout".into(),
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::default(),
                })
                .unwrap();
            for q in ["q1", "q2"] {
                store
                    .put_binding(&BindingDef {
                        source: "x".into(),
                        destination_kind: DestinationKind::Queue,
                        destination: q.into(),
                        routing_key: "".into(),
                        arguments: FieldTable::default(),
                    })
                    .unwrap();
            }
            let (i1, i2) = (store.queue_index("q1").unwrap(), store.queue_index("q2").unwrap());
            for (pos, body) in ["a", "b", "c"].iter().enumerate() {
                let id = store.put_message(&message(body), 2).unwrap();
                for index in [&i1, &i2] {
                    let entry = IndexEntry {
                        position: pos as u64,
                        message_id: id,
                        delivered: false,
                    };
                    store.put_entry(index, entry).unwrap();
                }
            }
            // q1 acks "a"; q2 was handed "b".
            let first = IndexEntry::decode(
                &0u64.to_be_bytes(),
                &i1.tree.get(0u64.to_be_bytes()).unwrap().unwrap(),
            )
            .unwrap();
            store.remove_entry(&i1, first).unwrap();
            let second = IndexEntry::decode(
                &1u64.to_be_bytes(),
                &i2.tree.get(1u64.to_be_bytes()).unwrap().unwrap(),
            )
            .unwrap();
            store
                .put_entry(
                    &i2,
                    IndexEntry {
                        delivered: true,
                        ..second
                    },
                )
                .unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let r = store.recover().unwrap();
        assert_eq!(r.exchanges.len(), 1);
        assert_eq!(r.bindings.len(), 2);
        assert_eq!(r.cleaned, 0);
        let bodies = |q: &RecoveredQueue| -> Vec<(String, bool)> {
            q.entries
                .iter()
                .map(|e| {
                    let m = store.get_message(e.message_id).unwrap();
                    (String::from_utf8(m.body.to_vec()).unwrap(), e.delivered)
                })
                .collect()
        };
        let q1 = r.queues.iter().find(|q| q.def.name == "q1").unwrap();
        let q2 = r.queues.iter().find(|q| q.def.name == "q2").unwrap();
        assert_eq!(bodies(q1), [("b".into(), false), ("c".into(), false)]);
        assert_eq!(
            bodies(q2),
            [("a".into(), false), ("b".into(), true), ("c".into(), false)]
        );
        // Deleting q2 releases the last reference to "a".
        let a = q2.entries[0].message_id;
        store.delete_queue("q2").unwrap();
        assert!(store.get_message(a).is_err());
        assert!(store.get_message(q1.entries[0].message_id).is_ok());
    }

    #[test]
    fn recovery_cleans_up_what_a_crash_left_half_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            store.put_queue(&queue("q")).unwrap();
            // A body whose index entry was never written.
            store.put_message(&message("orphan"), 1).unwrap();
            // An index entry whose body is missing.
            let index = store.queue_index("q").unwrap();
            let entry = IndexEntry {
                position: 0,
                message_id: 999_999,
                delivered: false,
            };
            store.put_entry(&index, entry).unwrap();
            // An index of a queue that was never declared, and a stale binding.
            let ghost = store.queue_index("ghost").unwrap();
            store
                .put_entry(&ghost, IndexEntry { position: 0, ..entry })
                .unwrap();
            store
                .put_binding(&BindingDef {
                    source: "gone".into(),
                    destination_kind: DestinationKind::Queue,
                    destination: "q".into(),
                    routing_key: "".into(),
                    arguments: FieldTable::default(),
                })
                .unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let r = store.recover().unwrap();
        assert_eq!(r.queues.len(), 1);
        assert!(r.queues[0].entries.is_empty());
        assert!(r.bindings.is_empty());
        assert_eq!(r.cleaned, 3);
        assert_eq!(store.messages.len(), 0);
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"queue:ghost"));
    }

    #[test]
    fn a_damaged_database_is_an_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            store.put_queue(&queue("q")).unwrap();
            store.sync().unwrap();
        }
        std::fs::write(dir.path().join("conf"), b"segment_size: banana\n").unwrap();
        let err = Store::open(dir.path(), 8 << 20).unwrap_err();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}
