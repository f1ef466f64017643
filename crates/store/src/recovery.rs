//! Reading the message log back at start.
//!
//! Every segment is read whole and every record's checksum checked. What a
//! crash can leave (a record cut short at the end of the newest segment) is
//! cut off with a warning: its publisher was never confirmed. Anything else
//! that does not read back is damage, and becomes a [`Damage`] that names the
//! file and, from the segment's summary in sled, how many messages each
//! queue lost. Recovery never stops at damage: it reads on past it, so that
//! one bad byte costs one message, not the rest of the file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::definitions::{BindingDef, ExchangeDef, PermissionDef, QueueDef, TopicPermissionDef, UserDef};
use crate::io::io_error;
use crate::locations::Locations;
use crate::messages;
use crate::record::{self, AckKind, AckRecord, At, Kind, ACK_RECORD};
use crate::segments::{self, Location, Segment, Summary};
use crate::StoreError;

/// Everything durable, as found at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The virtual hosts recorded; none in a new store, or one from before
    /// virtual hosts (whose definitions are all `/`'s).
    pub vhosts: Vec<String>,
    /// Users.
    pub users: Vec<UserDef>,
    /// Users' permissions in virtual hosts.
    pub permissions: Vec<PermissionDef>,
    /// Users' topic permissions.
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues with their messages, in queue order.
    pub queues: Vec<RecoveredQueue>,
    /// Bindings whose both ends were recovered.
    pub bindings: Vec<BindingDef>,
    /// Bindings removed because an end is gone.
    pub cleaned: usize,
    /// What was found damaged; the broker logs each at ERROR.
    pub damage: Vec<Damage>,
    /// Octets of a write a crash left unfinished, cut off.
    pub torn: u64,
    /// Segment files read.
    pub segments: usize,
}

/// A durable queue and the messages it holds.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// The queue.
    pub def: QueueDef,
    /// Its messages, in order.
    pub entries: Vec<RecoveredEntry>,
}

/// One message a recovered queue holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredEntry {
    /// Its id in the store.
    pub message: u64,
    /// How often it was delivered before, as recorded (it comes back
    /// redelivered if at all). Queues record a message's first delivery;
    /// quorum queues record every one, for their delivery count.
    pub deliveries: u32,
    /// When it was written, in milliseconds since the Unix epoch (for a
    /// record written before Warren kept the time: when it was recovered).
    pub written: u64,
    /// When its own `expiration` property makes it expire, in milliseconds
    /// since the Unix epoch; `u64::MAX` if it has none.
    pub expires: u64,
    /// Its `priority` property (0 if it has none).
    pub priority: u8,
}

/// Something recovery found damaged. The broker logs each at ERROR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged (or missing) file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub what: String,
    /// Messages lost, per queue name, when the segment's summary tells.
    pub lost: Vec<(String, u64)>,
    /// Whether `lost` is exact; false when the damaged segment was the one
    /// being written, whose counts were not summarised yet.
    pub counted: bool,
}

/// The log as found, for the store's thread to carry on from.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub segments: BTreeMap<u64, Segment>,
    pub locations: Locations,
    pub next_message: u64,
    /// The highest definitions generation the log mentions.
    pub generation: u64,
    /// The highest segment number seen (files or summaries).
    pub last_segment: Option<u64>,
    /// Summaries to write: segments found without one.
    pub close: Vec<(u64, Summary)>,
    /// Summaries of segments whose files are gone, to forget.
    pub forget: Vec<u64>,
    /// Octets of a torn last write cut off.
    pub torn: u64,
}

/// Reads every segment in `dir`. `queues` maps the ids of the durable
/// queues to their names and the entry lists to fill.
pub(crate) fn scan(
    dir: &Path,
    summaries: &BTreeMap<u64, Summary>,
    ack_lengths: &HashMap<u64, u64>,
    queues: &mut HashMap<u64, (String, Vec<RecoveredEntry>)>,
    damage: &mut Vec<Damage>,
) -> Result<Log, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut seg_files = BTreeSet::new();
    let mut ack_files = BTreeSet::new();
    let mut bytes_total = 0u64;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        match segments::parse_name(&name.to_string_lossy()) {
            Some((n, false)) => {
                bytes_total += entry.metadata().map_err(io_error(&entry.path()))?.len();
                seg_files.insert(n);
            }
            Some((n, true)) => {
                ack_files.insert(n);
            }
            None => {
                warn!(file = %entry.path().display(), "ignoring a file that is not part of the message log")
            }
        }
    }
    let all: BTreeSet<u64> = seg_files
        .iter()
        .chain(&ack_files)
        .chain(summaries.keys())
        .copied()
        .collect();
    let newest = seg_files.last().copied();
    let mut log = Log {
        last_segment: all.last().copied(),
        ..Log::default()
    };
    let started = Instant::now();
    let recovered_at = crate::now_ms();
    let mut last_report = started;
    let mut bytes_read = 0u64;
    let mut buf = Vec::new();
    for &n in &all {
        let summary = summaries.get(&n);
        let ack_path = segments::ack_path(dir, n);
        let acks = if ack_files.contains(&n) {
            read_acks(&ack_path, damage)?
        } else {
            Acks::default()
        };
        let known = ack_lengths.get(&n).copied().unwrap_or(0);
        if acks.len < known {
            damage.push(Damage {
                file: ack_path.clone(),
                what: format!(
                    "{} ack record(s) are missing (the file is shorter than at the last clean \
                     shutdown): the messages they settled may be delivered again",
                    (known - acks.len) / ACK_RECORD as u64
                ),
                lost: Vec::new(),
                counted: true,
            });
        }
        let seg_path = segments::seg_path(dir, n);
        if !seg_files.contains(&n) {
            let (lost, counted) = lost(summary, &HashMap::new(), &HashSet::new(), &acks, queues);
            damage.push(Damage {
                file: seg_path,
                what: "the segment file is missing".into(),
                lost,
                counted,
            });
            // Reported once: what is left of it goes.
            remove_if_present(&ack_path)?;
            log.forget.push(n);
            continue;
        }
        buf.clear();
        let mut file = std::fs::File::open(&seg_path).map_err(io_error(&seg_path))?;
        std::io::Read::read_to_end(&mut file, &mut buf).map_err(io_error(&seg_path))?;
        bytes_read += buf.len() as u64;
        let mut segment = Segment::default();
        let mut found: HashMap<u64, u64> = HashMap::new();
        let mut ids = HashSet::new();
        let mut bad_bytes = 0u64;
        let mut regions = 0u64;
        let mut pos = 0;
        while pos < buf.len() {
            match record::at(&buf, pos) {
                At::Record { kind, payload, next } => match read_record(kind, payload) {
                    Read::Start { first, generation } => {
                        log.next_message = log.next_message.max(first);
                        log.generation = log.generation.max(generation);
                        pos = next;
                    }
                    Read::Generation(generation) => {
                        log.generation = log.generation.max(generation);
                        pos = next;
                    }
                    Read::Message(head) => {
                        ids.insert(head.id);
                        log.next_message = log.next_message.max(head.id + 1);
                        let mut refs = 0;
                        // Read only for a message some queue still holds.
                        let mut scheduling = None;
                        for &q in &head.queues {
                            *found.entry(q).or_default() += 1;
                            if acks.settled.contains(&(head.id, q)) {
                                continue;
                            }
                            if let Some((_, entries)) = queues.get_mut(&q) {
                                let written = head.at.unwrap_or(recovered_at);
                                let (priority, expiration) = *scheduling.get_or_insert_with(|| {
                                    messages::scheduling(head.message).unwrap_or_default()
                                });
                                entries.push(RecoveredEntry {
                                    message: head.id,
                                    deliveries: acks.delivered.get(&(head.id, q)).copied().unwrap_or(0),
                                    written,
                                    expires: expiration.map_or(u64::MAX, |ms| written.saturating_add(ms)),
                                    priority: priority.unwrap_or(0),
                                });
                                refs += 1;
                            }
                        }
                        if refs > 0 {
                            segment.live += u64::from(refs);
                            let location = Location {
                                segment: n,
                                offset: pos as u32,
                                len: (next - pos) as u32,
                                refs,
                                transient: false,
                            };
                            log.locations.insert(head.id, location);
                        }
                        pos = next;
                    }
                    Read::Bad => {
                        let skip = record::resync(&buf, pos + 1).unwrap_or(buf.len());
                        bad_bytes += (skip - pos) as u64;
                        regions += 1;
                        pos = skip;
                    }
                },
                // The last write before a crash, cut short: it was never
                // synced, so nothing in it was confirmed. Only if it can be
                // nothing else: a closed segment was synced whole, and a
                // whole record after it means a damaged length, not a cut.
                At::Torn
                    if Some(n) == newest
                        && !matches!(summary, Some(Summary::Closed(_)))
                        && record::resync(&buf, pos + 1).is_none() =>
                {
                    let cut = (buf.len() - pos) as u64;
                    warn!(file = %seg_path.display(), octets = cut, "cutting off a write a crash left unfinished");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&seg_path)
                        .and_then(|f| f.set_len(pos as u64))
                        .map_err(io_error(&seg_path))?;
                    log.torn += cut;
                    break;
                }
                At::Torn | At::Bad => {
                    let skip = record::resync(&buf, pos + 1).unwrap_or(buf.len());
                    bad_bytes += (skip - pos) as u64;
                    regions += 1;
                    pos = skip;
                }
            }
        }
        // A closed segment's summary tells whether records are missing even
        // where nothing looks damaged (a file cut at a record's end).
        let (lost, counted) = lost(summary, &found, &ids, &acks, queues);
        if bad_bytes > 0 || !lost.is_empty() {
            let what = if bad_bytes > 0 {
                format!("{bad_bytes} octets in {regions} place(s) do not read back as records")
            } else {
                "records are missing: the file is shorter than when it was closed".to_owned()
            };
            damage.push(Damage {
                file: seg_path.clone(),
                what,
                lost,
                counted,
            });
        }
        if !matches!(summary, Some(Summary::Closed(_))) {
            log.close.push((n, Summary::Closed(found.into_iter().collect())));
        }
        log.segments.insert(n, segment);
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            info!(
                segment = n,
                read_mb = bytes_read >> 20,
                total_mb = bytes_total >> 20,
                "recovering the message log"
            );
        }
    }
    Ok(log)
}

/// A whole record's contents.
enum Read<'a> {
    Start {
        first: u64,
        generation: u64,
    },
    Generation(u64),
    Message(record::MessageHead<'a>),
    /// Its checksum holds but its contents do not parse (a bug, or damage
    /// the checksum could not see).
    Bad,
}

fn read_record(kind: Kind, payload: &[u8]) -> Read<'_> {
    let read = match kind {
        Kind::Start => record::u64_at(payload, 0)
            .zip(record::u64_at(payload, 8))
            .map(|(first, generation)| Read::Start { first, generation }),
        Kind::Generation => record::u64_at(payload, 0).map(Read::Generation),
        Kind::Message | Kind::TimedMessage => record::message_head(kind, payload).map(Read::Message),
    };
    read.unwrap_or(Read::Bad)
}

#[derive(Debug, Default)]
struct Acks {
    /// The file's length.
    len: u64,
    settled: HashSet<(u64, u64)>,
    /// Deliveries recorded, per message and queue.
    delivered: HashMap<(u64, u64), u32>,
}

fn read_acks(path: &Path, damage: &mut Vec<Damage>) -> Result<Acks, StoreError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let mut acks = Acks {
        len: bytes.len() as u64,
        ..Acks::default()
    };
    let mut bad = 0;
    let mut chunks = bytes.chunks_exact(ACK_RECORD);
    for chunk in &mut chunks {
        match AckRecord::parse(chunk.try_into().expect("exact chunks")) {
            Some(r) if r.kind == AckKind::Settled => {
                acks.settled.insert((r.message, r.queue));
            }
            Some(r) => {
                *acks.delivered.entry((r.message, r.queue)).or_default() += 1;
            }
            None => bad += 1,
        }
    }
    if bad > 0 {
        damage.push(Damage {
            file: path.to_owned(),
            what: format!(
                "{bad} ack record(s) do not read back: the messages they settled may be delivered again"
            ),
            lost: Vec::new(),
            counted: true,
        });
    }
    if !chunks.remainder().is_empty() {
        // A torn last append: the acks in it are simply not recorded.
        let keep = (bytes.len() - chunks.remainder().len()) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(keep))
            .map_err(io_error(path))?;
    }
    Ok(acks)
}

/// Messages lost in a damaged (or, with nothing found, missing) segment:
/// per queue, the records its summary counted that were not found, less
/// those whose settlement its ack file holds.
fn lost(
    summary: Option<&Summary>,
    found: &HashMap<u64, u64>,
    ids: &HashSet<u64>,
    acks: &Acks,
    queues: &HashMap<u64, (String, Vec<RecoveredEntry>)>,
) -> (Vec<(String, u64)>, bool) {
    let Some(Summary::Closed(counts)) = summary else {
        return (Vec::new(), false);
    };
    let mut settled_missing: HashMap<u64, u64> = HashMap::new();
    for (id, q) in &acks.settled {
        if !ids.contains(id) {
            *settled_missing.entry(*q).or_default() += 1;
        }
    }
    let lost = counts
        .iter()
        .filter_map(|(q, n)| {
            let (name, _) = queues.get(q)?;
            let missing = n.saturating_sub(found.get(q).copied().unwrap_or(0));
            let lost = missing.saturating_sub(settled_missing.get(q).copied().unwrap_or(0));
            (lost > 0).then(|| (name.clone(), lost))
        })
        .collect();
    (lost, true)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}
