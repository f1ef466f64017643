//! The message log's files: `segments/<n>.seg` holds message records in the
//! order they were written, and `segments/<n>.ack` the ack records of those
//! messages. A segment is deleted, both files at once, when every message in
//! it has been settled by every queue that held it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use warren_codec::Message;

use crate::record::{self, At, Kind};
use crate::{messages, StoreError};

/// A segment is closed and a new one started once it reaches this size. Big
/// enough that a group commit rarely spans two files, small enough that a
/// drained backlog gives its space back soon.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// An active segment all of whose messages are settled is closed early once
/// it is this large, so its space comes back without waiting to fill it.
pub(crate) const RECLAIM_BYTES: u64 = 1024 * 1024;

/// The directory of the log, inside the data directory.
pub(crate) fn dir(data: &Path) -> PathBuf {
    data.join("segments")
}

pub(crate) fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

pub(crate) fn ack_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.ack"))
}

/// A segment number from a file name, and whether it is the ack file.
pub(crate) fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 {
        return None;
    }
    let n = stem.parse().ok()?;
    match ext {
        "seg" => Some((n, false)),
        "ack" => Some((n, true)),
        _ => None,
    }
}

/// Where a stored message is, and how many queues still hold it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
    pub refs: u32,
    /// In the transient log ([`crate::transient`]) rather than this one.
    pub transient: bool,
}

/// A live segment.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// (message, queue) pairs not yet settled.
    pub live: u64,
    /// Ack records waiting for this round's write.
    pub acks: Vec<u8>,
    /// Message records per queue, kept for the summary written when the
    /// segment is closed (the active segment only).
    pub counts: HashMap<u64, u64>,
}

/// What sled keeps about a segment (tree `segments`): whether it is closed,
/// and then how many message records it holds per queue, so that recovery
/// can count what a damaged or missing file lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Summary {
    /// Being written: its counts are not known yet.
    Active,
    /// Closed, with its message records per queue.
    Closed(Vec<(u64, u64)>),
}

impl Summary {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Summary::Active => vec![0],
            Summary::Closed(counts) => {
                let mut out = vec![1];
                for (q, n) in counts {
                    out.extend_from_slice(&q.to_be_bytes());
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (0, []) => Some(Summary::Active),
            (1, rest) if rest.len() % 16 == 0 => Some(Summary::Closed(
                rest.chunks(16)
                    .map(|c| Some((record::u64_at(c, 0)?, record::u64_at(c, 8)?)))
                    .collect::<Option<_>>()?,
            )),
            _ => None,
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct Active {
    pub n: u64,
    pub file: File,
    pub len: u64,
}

impl Active {
    /// Creates segment `n`, starting with its [`Kind::Start`] record, and
    /// makes the new file's name durable.
    pub(crate) fn create(
        dir: &Path,
        n: u64,
        first_message: u64,
        generation: u64,
    ) -> Result<Self, StoreError> {
        let path = seg_path(dir, n);
        let io = crate::io::io_error(&path);
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut start = Vec::new();
        record::put(&mut start, Kind::Start, |o| {
            o.extend_from_slice(&first_message.to_be_bytes());
            o.extend_from_slice(&generation.to_be_bytes());
        });
        file.write_all(&start).map_err(crate::io::io_error(&path))?;
        file.sync_data().map_err(crate::io::io_error(&path))?;
        crate::io::sync_dir(dir)?;
        Ok(Self {
            n,
            file,
            len: start.len() as u64,
        })
    }
}

/// Reads the message at `location` back from its segment file.
pub(crate) fn read(file: &File, path: &Path, location: &Location) -> Result<Message, StoreError> {
    let mut buf = vec![0; location.len as usize];
    file.read_exact_at(&mut buf, u64::from(location.offset))
        .map_err(crate::io::io_error(path))?;
    let corrupt = |what: &str| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("{what} at offset {}", location.offset),
    };
    let At::Record { kind, payload, .. } = record::at(&buf, 0) else {
        return Err(corrupt("a damaged message record"));
    };
    record::message_head(kind, payload)
        .and_then(|head| messages::decode(head.message))
        .ok_or_else(|| corrupt("a message that does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_summaries_round_trip() {
        let dir = Path::new("/d");
        for n in [0, 7, u64::MAX] {
            let seg = seg_path(dir, n);
            let ack = ack_path(dir, n);
            let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
            assert_eq!(parse_name(&name(&seg)), Some((n, false)));
            assert_eq!(parse_name(&name(&ack)), Some((n, true)));
        }
        assert_eq!(parse_name("7.seg"), None);
        for s in [
            Summary::Active,
            Summary::Closed(vec![]),
            Summary::Closed(vec![(1, 2), (3, 4)]),
        ] {
            assert_eq!(Summary::decode(&s.encode()), Some(s));
        }
        assert_eq!(Summary::decode(&[1, 2]), None);
    }
}
