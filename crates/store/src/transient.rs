//! The transient log, `segments-transient/`: bodies of messages that are not
//! to survive a restart (transient messages, and any message of a transient
//! queue), paged out of the memory of a queue grown long. Nothing here is
//! synced or acked on disk: the directory is emptied at every start, and a
//! segment is deleted once every message in it is settled.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use warren_codec::Message;

use crate::io::io_error;
use crate::record;
use crate::segments::{seg_path, Location, RECLAIM_BYTES, SEGMENT_BYTES};
use crate::StoreError;

/// The transient log's directory, inside the data directory.
pub(crate) fn dir(data: &Path) -> PathBuf {
    data.join("segments-transient")
}

#[derive(Debug)]
pub(crate) struct TransientLog {
    pub dir: PathBuf,
    active: u64,
    file: File,
    len: u64,
    /// Segment → messages in it not yet settled (by every queue).
    live: BTreeMap<u64, u64>,
    emptied: BTreeSet<u64>,
    buf: Vec<u8>,
}

impl TransientLog {
    /// Empties the directory (what it held died with the previous run) and
    /// starts segment 0.
    pub(crate) fn open(data: &Path) -> Result<Self, StoreError> {
        let dir = dir(data);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&dir)(e)),
            _ => {}
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let file = create(&dir, 0)?;
        Ok(Self {
            dir,
            active: 0,
            file,
            len: 0,
            live: BTreeMap::from([(0, 0)]),
            emptied: BTreeSet::new(),
            buf: Vec::new(),
        })
    }

    /// Appends a message (written at the next [`TransientLog::flush`]).
    pub(crate) fn append(
        &mut self,
        id: u64,
        queues: &[u64],
        message: &Message,
    ) -> Result<Location, StoreError> {
        if self.len + self.buf.len() as u64 >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let offset = self.len + self.buf.len() as u64;
        let before = self.buf.len();
        // Never recovered: no time is needed.
        record::put_message(&mut self.buf, id, 0, queues, message);
        *self.live.entry(self.active).or_default() += queues.len() as u64;
        Ok(Location {
            segment: self.active,
            offset: offset as u32,
            len: (self.buf.len() - before) as u32,
            refs: queues.len() as u32,
            transient: true,
        })
    }

    /// Writes what was appended (no sync: nothing here outlives the process).
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            let path = seg_path(&self.dir, self.active);
            self.file.write_all(&self.buf).map_err(io_error(&path))?;
            self.len += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let old = self.active;
        self.active += 1;
        self.file = create(&self.dir, self.active)?;
        self.len = 0;
        self.live.insert(self.active, 0);
        if self.live.get(&old) == Some(&0) {
            self.emptied.insert(old);
        }
        Ok(())
    }

    /// One message reference in `segment` is settled.
    pub(crate) fn settle(&mut self, segment: u64) {
        if let Some(live) = self.live.get_mut(&segment) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.emptied.insert(segment);
            }
        }
    }

    pub(crate) fn has_leftovers(&self) -> bool {
        self.emptied.iter().any(|&n| n != self.active)
    }

    /// Deletes one emptied segment (see `writer::RECLAIM_PER_ROUND`), and
    /// closes the active one early if it is emptied and large.
    /// Returns the deleted segment's number.
    pub(crate) fn reclaim_one(&mut self) -> Result<Option<u64>, StoreError> {
        if self.emptied.contains(&self.active) && self.len >= RECLAIM_BYTES {
            self.rotate()?;
        }
        while let Some(n) = self.emptied.iter().copied().find(|&n| n != self.active) {
            self.emptied.remove(&n);
            if self.live.get(&n).is_some_and(|&live| live > 0) {
                continue;
            }
            self.live.remove(&n);
            let path = seg_path(&self.dir, n);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            return Ok(Some(n));
        }
        Ok(None)
    }
}

fn create(dir: &Path, n: u64) -> Result<File, StoreError> {
    let path = seg_path(dir, n);
    std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))
}
