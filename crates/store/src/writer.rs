//! The store's thread: the one owner of the disk. Every sled call, every
//! file write, read and sync of a running broker happens here; the broker's
//! tasks only send `Op`s and never wait on I/O.
//!
//! The thread works in rounds. A round takes every op already waiting (up
//! to `ROUND_OPS`), applies them in memory, then commits:
//! 1. definition changes go to sled, which is flushed and its file synced,
//!    and the new definitions generation is noted in the log;
//! 2. the round's messages are appended to the active segment, except those
//!    every queue settled before the commit began: those are never written
//!    (write once, as RabbitMQ's message store does);
//! 3. the round's ack and delivered records are appended to their segments'
//!    ack files;
//! 4. if the round carries any confirm, the segment is synced (fdatasync),
//!    and only then are the confirms released;
//! 5. reads are answered, and segments no queue holds anything in are
//!    deleted.
//!
//! Acks are not synced: after a power loss an ack may be forgotten and its
//! message delivered again, which at-least-once delivery allows (RabbitMQ's
//! queue index flushes acks lazily too). A crash of the process loses
//! nothing written, since written data is in the kernel's page cache.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tracing::error;
use warren_codec::Message;

use crate::definitions::{
    permission_key, scoped, take_str, BindingDef, DestinationKind, ExchangeDef, PermissionDef, QueueDef,
    TopicPermissionDef, UserDef,
};
use crate::histogram::Metrics;
use crate::io::io_error;
use crate::locations::Locations;
use crate::record::{self, AckKind, AckRecord, Kind};
use crate::segments::{self, Active, Location, Segment, Summary, RECLAIM_BYTES, SEGMENT_BYTES};
use crate::transient::TransientLog;
use crate::trees::Trees;
use crate::StoreError;

/// Ops taken into one round at most, so that a flood of publishes cannot
/// hold back the confirms of those already taken.
const ROUND_OPS: usize = 16_384;

/// Open read handles kept for segments; beyond this the cache starts over.
const READ_FILES: usize = 64;

/// Settlements applied per round; a purge or delete of more is spread over
/// rounds, so that other clients' confirms never wait for all of it.
const SETTLE_CHUNK: usize = 32_768;

/// Segments deleted per round. Unlinking a 16 MiB file whose pages are
/// cached takes milliseconds; a drained 1 GB backlog is 64 of them, and one
/// round doing them all held other clients' confirms for 0.7 s.
const RECLAIM_PER_ROUND: usize = 1;

/// Told when what it waits for is durable (`true`), or can never be.
pub trait Durable: Send + Sync + std::fmt::Debug {
    /// Called once, from the store's thread.
    fn done(&self, ok: bool);
}

/// Receives messages read back, in the order asked, on the store's thread.
pub type ReadReply = Box<dyn FnOnce(Vec<Result<Message, StoreError>>) + Send>;

/// What the broker asks of the store.
pub(crate) enum Op {
    /// Store a persistent message for these durable queues.
    Publish {
        id: u64,
        message: Arc<Message>,
        queues: Vec<u64>,
        confirm: Option<Arc<dyn Durable>>,
        /// To the transient log: a body paged out of memory, not kept
        /// across a restart.
        transient: bool,
    },
    /// The queue let go of these messages (ack, reject, purge).
    Settle { queue: u64, ids: Vec<u64> },
    /// A deleted queue's messages: nothing is written, since its definition
    /// is gone, which makes them dead at recovery.
    Forget { queue: u64, ids: Vec<u64> },
    /// The queue delivered these messages for the first time.
    Delivered { queue: u64, ids: Vec<u64> },
    /// Read messages back (a queue's paged-out backlog).
    Read { ids: Vec<u64>, reply: ReadReply },
    /// Wait until everything sent before it is durable, and the work it
    /// left (settlements, segment deletions) is done.
    Barrier(Arc<dyn Durable>),
    /// Change a definition (boxed: definitions are the largest operations,
    /// and rare).
    Define(Box<Definition>),
    /// Commit, close the active segment and sync everything, then stop.
    Close(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
}

/// A definition change.
pub(crate) enum Definition {
    PutVhost(String),
    PutUser(UserDef),
    DeleteUser(String),
    DeleteVhost(String),
    PutPermission(PermissionDef),
    DeletePermission { user: String, vhost: String },
    PutTopicPermission(TopicPermissionDef),
    DeleteTopicPermission(TopicPermissionDef),
    PutExchange(ExchangeDef),
    DeleteExchange { vhost: String, name: String },
    PutQueue(QueueDef),
    DeleteQueue { vhost: String, name: String },
    PutBinding(BindingDef),
    DeleteBinding(BindingDef),
}

/// A message taken in this round and not written yet.
struct Pending {
    message: Arc<Message>,
    /// Queues that still hold it; empty when all settled it before the
    /// commit, and then it is never written.
    queues: Vec<u64>,
    /// Queues that delivered it already.
    delivered: Vec<u64>,
    /// For the transient log.
    transient: bool,
}

pub(crate) struct Writer {
    pub data: PathBuf,
    pub dir: PathBuf,
    pub db: sled::Db,
    pub trees: Trees,
    pub generation: u64,
    pub next_message: Arc<AtomicU64>,
    pub segments: std::collections::BTreeMap<u64, Segment>,
    pub locations: Locations,
    pub active: Active,
    pub transient: TransientLog,
    pub synced_blobs: std::collections::HashSet<std::ffi::OsString>,
    /// Octets of bodies sent and not yet written ([`crate::Store::unwritten`]).
    pub unwritten: Arc<AtomicU64>,
    /// fsync latency and group-commit size ([`crate::Store::metrics`]).
    pub metrics: Arc<Metrics>,
    /// Messages written since the last sync: the next group commit's size.
    round_messages: u64,
    /// Octets of bodies taken in this round: `unwritten` drops by this once
    /// the round is committed.
    round_octets: u64,
    pending: HashMap<u64, Pending>,
    order: Vec<u64>,
    confirms: Vec<Arc<dyn Durable>>,
    barriers: Vec<Arc<dyn Durable>>,
    reads: Vec<(Vec<u64>, ReadReply)>,
    defs_changed: bool,
    dirty_acks: BTreeSet<u64>,
    unsynced_acks: BTreeSet<u64>,
    emptied: BTreeSet<u64>,
    /// Settlements beyond a round's chunk: (queue, ids, write ack records).
    deferred: std::collections::VecDeque<(u64, Vec<u64>, bool)>,
    /// Read handles by (transient, segment).
    read_files: HashMap<(bool, u64), File>,
    /// The active segment has writes no sync covered yet.
    unsynced: bool,
    /// Set by the first failed write or sync: the kernel may have dropped
    /// the data, so no later sync can vouch for it, and nothing is
    /// confirmed any more.
    poisoned: Option<String>,
    buf: Vec<u8>,
}

/// Answers an op the store will never carry out.
fn fail(op: Op) {
    match op {
        Op::Publish {
            confirm: Some(confirm),
            ..
        } => confirm.done(false),
        Op::Barrier(durable) => durable.done(false),
        Op::Read { ids, reply } => reply(ids.iter().map(|_| Err(StoreError::Closed)).collect()),
        Op::Close(reply) => {
            let _ = reply.send(Err(StoreError::Closed));
        }
        _ => {}
    }
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        data: PathBuf,
        db: sled::Db,
        trees: Trees,
        generation: u64,
        next_message: Arc<AtomicU64>,
        segments: std::collections::BTreeMap<u64, Segment>,
        locations: Locations,
        active: Active,
        transient: TransientLog,
    ) -> Self {
        Self {
            dir: segments::dir(&data),
            data,
            db,
            trees,
            generation,
            next_message,
            segments,
            locations,
            active,
            transient,
            synced_blobs: Default::default(),
            pending: HashMap::new(),
            unwritten: Arc::new(AtomicU64::new(0)),
            metrics: Arc::default(),
            round_messages: 0,
            round_octets: 0,
            order: Vec::new(),
            confirms: Vec::new(),
            barriers: Vec::new(),
            reads: Vec::new(),
            defs_changed: false,
            dirty_acks: BTreeSet::new(),
            unsynced_acks: BTreeSet::new(),
            emptied: BTreeSet::new(),
            deferred: Default::default(),
            read_files: HashMap::new(),
            unsynced: false,
            poisoned: None,
            buf: Vec::new(),
        }
    }

    /// The thread's body: rounds until closed, or until every handle is
    /// dropped.
    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        loop {
            // With work left over from a purge or delete, take what is
            // waiting without blocking; otherwise wait for work.
            let first = if self.has_leftovers() {
                match rx.try_recv() {
                    Ok(op) => Some(op),
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(op) => Some(op),
                    Err(_) => break,
                }
            };
            let mut close = None;
            let mut op = first;
            let mut taken = 0;
            while let Some(next) = op.take() {
                match next {
                    Op::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                    next => self.apply(next),
                }
                taken += 1;
                if taken < ROUND_OPS {
                    op = rx.try_recv().ok();
                }
            }
            self.settle_leftovers();
            let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit()));
            if committed.is_err() {
                self.poison("the store's thread panicked".into());
                for confirm in self.confirms.drain(..).chain(self.barriers.drain(..)) {
                    confirm.done(false);
                }
                for (ids, reply) in self.reads.drain(..) {
                    reply(ids.iter().map(|_| Err(StoreError::Closed)).collect());
                }
            }
            if let Some(reply) = close {
                let closed = self.close();
                // What was sent after the close is answered, not dropped:
                // a confirm never told would leave its publisher waiting.
                for op in rx.try_iter() {
                    fail(op);
                }
                let _ = reply.send(closed);
                return;
            }
        }
    }

    fn poison(&mut self, why: String) {
        if self.poisoned.is_none() {
            error!(error = %why, "the store failed: nothing more will be confirmed; restart the broker");
            self.poisoned = Some(why);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish {
                id,
                message,
                queues,
                confirm,
                transient,
            } => {
                self.round_octets += message.body.len() as u64;
                self.pending.insert(
                    id,
                    Pending {
                        message,
                        queues,
                        delivered: Vec::new(),
                        transient,
                    },
                );
                self.order.push(id);
                self.confirms.extend(confirm);
            }
            Op::Settle { queue, ids } => self.deferred.push_back((queue, ids, true)),
            Op::Forget { queue, ids } => self.deferred.push_back((queue, ids, false)),
            Op::Delivered { queue, ids } => {
                for id in ids {
                    if let Some(pending) = self.pending.get_mut(&id) {
                        pending.delivered.push(queue);
                    } else if let Some(location) = self.locations.get(id).filter(|l| !l.transient) {
                        let segment = location.segment;
                        self.ack_record(segment, id, queue, AckKind::Delivered);
                    }
                }
            }
            Op::Read { ids, reply } => self.reads.push((ids, reply)),
            Op::Barrier(durable) => self.barriers.push(durable),
            Op::Define(definition) => {
                if let Err(e) = self.define(*definition) {
                    self.poison(e.to_string());
                }
                self.defs_changed = true;
            }
            Op::Close(_) => unreachable!("handled by run"),
        }
    }

    fn has_leftovers(&self) -> bool {
        // A failed store does no more work: nothing would ever drain.
        if self.poisoned.is_some() {
            return false;
        }
        !self.deferred.is_empty()
            || self.emptied.iter().any(|&n| n != self.active.n)
            || self.transient.has_leftovers()
    }

    /// Applies settlements, up to [`SETTLE_CHUNK`] per round, in order.
    fn settle_leftovers(&mut self) {
        let mut budget = SETTLE_CHUNK;
        while budget > 0 {
            let Some((queue, mut ids, record)) = self.deferred.pop_front() else {
                break;
            };
            if ids.len() > budget {
                let rest = ids.split_off(budget);
                self.deferred.push_front((queue, rest, record));
            }
            budget -= ids.len();
            self.settle(queue, &ids, record);
        }
    }

    /// A queue lets go of messages: a message not written yet loses that
    /// queue (and is never written once none is left); a written one gets
    /// an ack record (unless `record` is false) and its segment one live
    /// reference less.
    fn settle(&mut self, queue: u64, ids: &[u64], record: bool) {
        for &id in ids {
            if let Some(pending) = self.pending.get_mut(&id) {
                if let Some(i) = pending.queues.iter().position(|&q| q == queue) {
                    pending.queues.swap_remove(i);
                }
                continue;
            }
            let Some(location) = self.locations.get_mut(id) else {
                continue;
            };
            let segment = location.segment;
            let transient = location.transient;
            location.refs = location.refs.saturating_sub(1);
            if location.refs == 0 {
                self.locations.remove(id);
            }
            if transient {
                self.transient.settle(segment);
                continue;
            }
            if record {
                self.ack_record(segment, id, queue, AckKind::Settled);
            }
            if let Some(s) = self.segments.get_mut(&segment) {
                s.live = s.live.saturating_sub(1);
                if s.live == 0 {
                    self.emptied.insert(segment);
                }
            }
        }
    }

    fn ack_record(&mut self, segment: u64, message: u64, queue: u64, kind: AckKind) {
        if let Some(s) = self.segments.get_mut(&segment) {
            AckRecord { message, queue, kind }.put(&mut s.acks);
            self.dirty_acks.insert(segment);
        }
    }

    fn sled_err(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        |source| StoreError::Sled {
            path: self.data.clone(),
            source,
        }
    }

    fn define(&mut self, definition: Definition) -> Result<(), StoreError> {
        let err = self.sled_err();
        let t = &self.trees;
        match definition {
            Definition::PutVhost(name) => {
                t.vhosts.insert(name.as_bytes(), &[]).map_err(&err)?;
            }
            Definition::PutUser(def) => {
                t.users.insert(def.name.as_bytes(), def.encode()).map_err(&err)?;
            }
            Definition::DeleteUser(name) => {
                t.users.remove(name.as_bytes()).map_err(&err)?;
                let mut prefix = Vec::new();
                crate::definitions::put_str(&name, &mut prefix);
                for tree in [&t.permissions, &t.topic_permissions] {
                    for item in tree.scan_prefix(&prefix) {
                        tree.remove(item.map_err(&err)?.0).map_err(&err)?;
                    }
                }
            }
            Definition::DeleteVhost(name) => {
                t.vhosts.remove(name.as_bytes()).map_err(&err)?;
                // Permission keys are user then vhost: every key is read.
                let in_vhost = |key: &[u8]| {
                    take_str(key)
                        .and_then(|(_, rest)| take_str(rest))
                        .is_some_and(|(vhost, _)| vhost == name)
                };
                for tree in [&t.permissions, &t.topic_permissions] {
                    for item in tree.iter() {
                        let (key, _) = item.map_err(&err)?;
                        if in_vhost(&key) {
                            tree.remove(key).map_err(&err)?;
                        }
                    }
                }
                // What its deleted queues and exchanges left (bindings
                // between predeclared exchanges, say): `/`'s keys have no
                // prefix, so bindings are read one by one.
                if name != crate::DEFAULT_VHOST {
                    let prefix = scoped(&name, &[]);
                    for tree in [&t.exchanges, &t.queues] {
                        for item in tree.scan_prefix(&prefix) {
                            tree.remove(item.map_err(&err)?.0).map_err(&err)?;
                        }
                    }
                }
                self.delete_bindings_where(|b| b.vhost == name)?;
            }
            Definition::PutPermission(def) => {
                t.permissions.insert(def.key(), def.encode()).map_err(&err)?;
            }
            Definition::DeletePermission { user, vhost } => {
                t.permissions
                    .remove(permission_key(&user, &vhost))
                    .map_err(&err)?;
            }
            Definition::PutTopicPermission(def) => {
                t.topic_permissions
                    .insert(def.key(), def.encode())
                    .map_err(&err)?;
            }
            Definition::DeleteTopicPermission(def) => {
                t.topic_permissions.remove(def.key()).map_err(&err)?;
            }
            Definition::PutExchange(def) => {
                t.exchanges.insert(def.key(), def.encode()).map_err(&err)?;
            }
            Definition::DeleteExchange { vhost, name } => {
                t.exchanges
                    .remove(scoped(&vhost, name.as_bytes()))
                    .map_err(&err)?;
                self.delete_bindings_where(|b| {
                    b.vhost == vhost
                        && (b.source == name
                            || (b.destination_kind == DestinationKind::Exchange && b.destination == name))
                })?;
            }
            Definition::PutQueue(def) => {
                t.queues.insert(def.key(), def.encode()).map_err(&err)?;
                // The highest id given so far, whatever order declares
                // arrive in: an id is never given twice.
                let stored = t.meta.get(crate::trees::NEXT_QUEUE).map_err(&err)?;
                let stored = stored.and_then(|v| record::u64_at(&v, 0)).unwrap_or(0);
                let next = stored.max(def.id.saturating_add(1)).to_be_bytes();
                t.meta.insert(crate::trees::NEXT_QUEUE, &next).map_err(&err)?;
            }
            Definition::DeleteQueue { vhost, name } => {
                t.queues.remove(scoped(&vhost, name.as_bytes())).map_err(&err)?;
                self.delete_bindings_where(|b| {
                    b.vhost == vhost && b.destination_kind == DestinationKind::Queue && b.destination == name
                })?;
            }
            Definition::PutBinding(def) => {
                t.bindings.insert(def.key(), &[]).map_err(&err)?;
            }
            Definition::DeleteBinding(def) => {
                t.bindings.remove(def.key()).map_err(&err)?;
            }
        }
        Ok(())
    }

    fn delete_bindings_where(&self, matches: impl Fn(&BindingDef) -> bool) -> Result<(), StoreError> {
        let err = self.sled_err();
        for item in self.trees.bindings.iter() {
            let (k, _) = item.map_err(&err)?;
            if BindingDef::decode(&k).is_none_or(|b| matches(&b)) {
                self.trees.bindings.remove(k).map_err(&err)?;
            }
        }
        Ok(())
    }

    fn commit(&mut self) {
        if self.poisoned.is_none() {
            if let Err(e) = self.write() {
                self.poison(e.to_string());
            }
        } else {
            self.pending.clear();
            self.order.clear();
        }
        self.unwritten
            .fetch_sub(std::mem::take(&mut self.round_octets), Ordering::Relaxed);
        let ok = self.poisoned.is_none();
        for confirm in self.confirms.drain(..) {
            confirm.done(ok);
        }
        let reads = std::mem::take(&mut self.reads);
        for (ids, reply) in reads {
            let messages = ids.iter().map(|&id| self.read(id)).collect();
            reply(messages);
        }
        if self.poisoned.is_none() {
            if let Err(e) = self.reclaim() {
                self.poison(e.to_string());
            }
        }
        if !self.has_leftovers() || self.poisoned.is_some() {
            let ok = self.poisoned.is_none();
            for barrier in self.barriers.drain(..) {
                barrier.done(ok);
            }
        }
    }

    fn write(&mut self) -> Result<(), StoreError> {
        let mut wrote = false;
        if std::mem::take(&mut self.defs_changed) {
            self.generation += 1;
            self.trees
                .meta
                .insert(crate::trees::GENERATION, &self.generation.to_be_bytes())
                .map_err(self.sled_err())?;
            crate::io::sync_sled(&self.data, &self.db, &mut self.synced_blobs)?;
            let generation = self.generation;
            record::put(&mut self.buf, Kind::Generation, |o| {
                o.extend_from_slice(&generation.to_be_bytes())
            });
        }
        // One time for the round: what a message's TTL counts from after a
        // restart.
        let now = crate::now_ms();
        for id in std::mem::take(&mut self.order) {
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            if pending.queues.is_empty() {
                continue;
            }
            if pending.transient {
                let location = self.transient.append(id, &pending.queues, &pending.message)?;
                self.locations.insert(id, location);
                continue;
            }
            if self.active.len + self.buf.len() as u64 >= SEGMENT_BYTES {
                self.flush_buf()?;
                self.rotate()?;
            }
            // Counted until the sync that covers it.
            self.round_messages += 1;
            let offset = self.active.len + self.buf.len() as u64;
            let before = self.buf.len();
            record::put_message(&mut self.buf, id, now, &pending.queues, &pending.message);
            let segment = self.segments.entry(self.active.n).or_default();
            segment.live += pending.queues.len() as u64;
            for &q in &pending.queues {
                *segment.counts.entry(q).or_default() += 1;
            }
            self.locations.insert(
                id,
                Location {
                    segment: self.active.n,
                    offset: offset as u32,
                    len: (self.buf.len() - before) as u32,
                    refs: pending.queues.len() as u32,
                    transient: false,
                },
            );
            for q in pending.delivered {
                self.ack_record(self.active.n, id, q, AckKind::Delivered);
            }
        }
        if !self.buf.is_empty() {
            wrote = true;
            self.flush_buf()?;
        }
        self.transient.flush()?;
        for n in std::mem::take(&mut self.dirty_acks) {
            let Some(segment) = self.segments.get_mut(&n) else {
                continue;
            };
            let path = segments::ack_path(&self.dir, n);
            let acks = std::mem::take(&mut segment.acks);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&acks))
                .map_err(io_error(&path))?;
            self.unsynced_acks.insert(n);
        }
        self.unsynced |= wrote;
        if self.unsynced && !(self.confirms.is_empty() && self.barriers.is_empty()) {
            self.unsynced = false;
            self.sync_active()?;
        }
        Ok(())
    }

    /// fdatasyncs the active segment, timed, and counts the messages the
    /// sync covers (the histograms of [`Metrics`]).
    fn sync_active(&mut self) -> Result<(), StoreError> {
        let path = segments::seg_path(&self.dir, self.active.n);
        let started = std::time::Instant::now();
        self.active.file.sync_data().map_err(io_error(&path))?;
        let took = started.elapsed().as_micros() as u64;
        self.metrics.fsync_us.observe(took);
        self.metrics
            .commit_messages
            .observe(std::mem::take(&mut self.round_messages));
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), StoreError> {
        let path = segments::seg_path(&self.dir, self.active.n);
        self.active.file.write_all(&self.buf).map_err(io_error(&path))?;
        self.active.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Closes the active segment (synced, its summary in sled) and starts
    /// the next.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let old = self.active.n;
        self.sync_active()?;
        self.close_summary(old)?;
        let first = self.next_message.load(Ordering::SeqCst);
        self.active = Active::create(&self.dir, old + 1, first, self.generation)?;
        self.segments.insert(old + 1, Segment::default());
        self.trees
            .segments
            .insert((old + 1).to_be_bytes(), Summary::Active.encode())
            .map_err(self.sled_err())?;
        if self.segments.get(&old).is_some_and(|s| s.live == 0) {
            self.emptied.insert(old);
        }
        Ok(())
    }

    fn close_summary(&mut self, n: u64) -> Result<(), StoreError> {
        let counts = self
            .segments
            .get_mut(&n)
            .map(|s| std::mem::take(&mut s.counts).into_iter().collect())
            .unwrap_or_default();
        self.trees
            .segments
            .insert(n.to_be_bytes(), Summary::Closed(counts).encode())
            .map(drop)
            .map_err(self.sled_err())
    }

    /// Deletes the closed segments no queue holds anything in; closes the
    /// active one early if it is large and empty, so its space comes back.
    fn reclaim(&mut self) -> Result<(), StoreError> {
        if let Some(n) = self.transient.reclaim_one()? {
            // Its handle would keep the deleted file's space.
            self.read_files.remove(&(true, n));
        }
        let active = self.active.n;
        if self.emptied.contains(&active) && self.active.len >= RECLAIM_BYTES {
            self.rotate()?;
        }
        let mut deleted = 0;
        while deleted < RECLAIM_PER_ROUND {
            let Some(n) = self.emptied.iter().copied().find(|&n| n != self.active.n) else {
                break;
            };
            self.emptied.remove(&n);
            if self.segments.get(&n).is_none_or(|s| s.live > 0) {
                continue;
            }
            deleted += 1;
            self.segments.remove(&n);
            self.read_files.remove(&(false, n));
            self.unsynced_acks.remove(&n);
            // sled forgets the segment durably before its files go: a crash
            // between the two must not find a closed summary without files,
            // which recovery reports as every message of it lost.
            self.trees.acks.remove(n.to_be_bytes()).map_err(self.sled_err())?;
            self.trees
                .segments
                .remove(n.to_be_bytes())
                .map_err(self.sled_err())?;
            crate::io::sync_sled(&self.data, &self.db, &mut self.synced_blobs)?;
            for path in [segments::seg_path(&self.dir, n), segments::ack_path(&self.dir, n)] {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&path)(e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, id: u64) -> Result<Message, StoreError> {
        let Some(location) = self.locations.get(id).copied() else {
            return Err(StoreError::Corrupt {
                path: self.dir.clone(),
                what: format!("message {id} is not in the store"),
            });
        };
        let dir = if location.transient {
            &self.transient.dir
        } else {
            &self.dir
        };
        let path = segments::seg_path(dir, location.segment);
        let key = (location.transient, location.segment);
        if !self.read_files.contains_key(&key) {
            if self.read_files.len() >= READ_FILES {
                self.read_files.clear();
            }
            let file = File::open(&path).map_err(io_error(&path))?;
            self.read_files.insert(key, file);
        }
        segments::read(&self.read_files[&key], &path, &location)
    }

    /// The last round at shutdown: closes the active segment and syncs
    /// sled, the segment and every ack file written since the start.
    fn close(mut self) -> Result<(), StoreError> {
        if let Some(why) = &self.poisoned {
            return Err(StoreError::Refused {
                path: self.data.clone(),
                what: format!("not closed cleanly: {why}"),
            });
        }
        // What a purge or delete left for later rounds is done now, so that
        // nothing it settled comes back at the next start.
        self.commit();
        while self.has_leftovers() {
            self.settle_leftovers();
            self.commit();
            if let Some(why) = &self.poisoned {
                return Err(StoreError::Refused {
                    path: self.data.clone(),
                    what: format!("not closed cleanly: {why}"),
                });
            }
        }
        let n = self.active.n;
        self.close_summary(n)?;
        let path = segments::seg_path(&self.dir, n);
        self.active.file.sync_data().map_err(io_error(&path))?;
        for n in std::mem::take(&mut self.unsynced_acks) {
            let path = segments::ack_path(&self.dir, n);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path)(e)),
            };
            file.sync_data().map_err(io_error(&path))?;
            let len = file.metadata().map_err(io_error(&path))?.len();
            self.trees
                .acks
                .insert(n.to_be_bytes(), &len.to_be_bytes())
                .map_err(self.sled_err())?;
        }
        crate::io::sync_dir(&self.dir)?;
        // Last, so that the lengths it records are of synced files.
        crate::io::sync_sled(&self.data, &self.db, &mut self.synced_blobs)
    }
}
