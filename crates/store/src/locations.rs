//! Where each stored message is, by message id.
//!
//! Ids are handed out in sequence, so the table is split into ranges of
//! [`RANGE`] ids, each a hash map of its own. A growing backlog adds ranges
//! one at a time instead of doubling one table of millions of entries: that
//! doubling held the old table and a new one twice its size at once, and
//! took the broker's memory up by hundreds of megabytes for half a second
//! (4.5M messages: 277 MB of table, 550 MB more while it grew), past its
//! memory high watermark while every publisher was already blocked. A range
//! whose messages are all gone is dropped whole, and one that is mostly
//! empty gives back its capacity, so the table stays proportional to the
//! messages stored, however they are spread.

use std::collections::{BTreeMap, HashMap};

use crate::segments::Location;

/// Ids per range.
const RANGE: u64 = 1 << 16;

/// Message id → location.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    ranges: BTreeMap<u64, HashMap<u64, Location>>,
}

impl Locations {
    pub fn insert(&mut self, id: u64, location: Location) {
        self.ranges.entry(id / RANGE).or_default().insert(id, location);
    }

    pub fn get(&self, id: u64) -> Option<&Location> {
        self.ranges.get(&(id / RANGE))?.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Location> {
        self.ranges.get_mut(&(id / RANGE))?.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Location> {
        let key = id / RANGE;
        let range = self.ranges.get_mut(&key)?;
        let removed = range.remove(&id);
        if range.is_empty() {
            self.ranges.remove(&key);
        } else if range.capacity() > 4 * range.len() + 64 {
            range.shrink_to(2 * range.len());
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u32) -> Location {
        Location {
            segment: 1,
            offset,
            len: 10,
            refs: 1,
            transient: false,
        }
    }

    #[test]
    fn entries_come_back_and_empty_ranges_go() {
        let mut table = Locations::default();
        for id in 0..3 * RANGE {
            table.insert(id, at(id as u32));
        }
        assert_eq!(table.get(RANGE + 5).map(|l| l.offset), Some(RANGE as u32 + 5));
        table.get_mut(7).unwrap().refs = 2;
        assert_eq!(table.get(7).unwrap().refs, 2);
        for id in 0..RANGE {
            assert!(table.remove(id).is_some());
        }
        assert!(table.remove(0).is_none());
        assert!(table.get(0).is_none());
        assert_eq!(table.ranges.len(), 2);
        // A range left with one message shrinks to fit it.
        for id in RANGE..2 * RANGE - 1 {
            table.remove(id);
        }
        assert!(table.ranges[&1].capacity() < 64 * 4);
        assert!(table.get(2 * RANGE - 1).is_some());
    }
}
