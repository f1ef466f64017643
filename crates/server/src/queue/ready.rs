//! The ready messages: one lane per priority (`x-max-priority`; a queue
//! without it has one), each ordered by id, new ones appended and requeued
//! ones put back where their id places them. Delivery takes the front of
//! the highest non-empty lane: higher priorities first, FIFO within one,
//! as RabbitMQ's priority queues deliver.
//!
//! It also keeps what the messages weigh ([`crate::events::weight`]): all of
//! them, which paces publishers; those whose body is in memory, which the
//! head bounds; and their bodies' octets, for `x-max-length-bytes`. Every
//! change goes through a method here, which keeps the sums.

use std::collections::VecDeque;
use std::sync::Arc;

use warren_codec::Message;

use super::Entry;
use crate::events::weight;

/// Where an entry sits: its lane, and its index in the lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pos {
    lane: usize,
    at: usize,
}

#[derive(Debug)]
pub(super) struct Ready {
    /// Index = priority.
    lanes: Vec<VecDeque<Entry>>,
    len: usize,
    weight: usize,
    in_memory: usize,
    body: u64,
}

impl Ready {
    /// Empty, with lanes for priorities 0 to `max_priority`.
    pub fn new(max_priority: u8) -> Self {
        Self {
            lanes: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
            weight: 0,
            in_memory: 0,
            body: 0,
        }
    }

    /// The lane a message of `priority` goes to: priorities above the
    /// queue's maximum count as the maximum, as in RabbitMQ.
    pub fn lane_of(&self, priority: Option<u8>) -> u8 {
        priority.unwrap_or(0).min((self.lanes.len() - 1) as u8)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What every ready message weighs.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The body octets of every ready message.
    pub fn body_bytes(&self) -> u64 {
        self.body
    }

    /// What the ready messages held in memory weigh.
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    fn count(&mut self, entry: &Entry) {
        self.len += 1;
        self.body += u64::from(entry.body);
        self.weight += entry.weight as usize;
        if entry.message.is_some() {
            self.in_memory += entry.weight as usize;
        }
    }

    fn uncount(&mut self, entry: &Entry) {
        self.len -= 1;
        self.body -= u64::from(entry.body);
        self.weight -= entry.weight as usize;
        if entry.message.is_some() {
            self.in_memory -= entry.weight as usize;
        }
    }

    /// The highest lane with a message.
    fn top(&self) -> Option<usize> {
        self.lanes.iter().rposition(|lane| !lane.is_empty())
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Entry> {
        self.lanes[self.top()?].front()
    }

    pub fn pop_front(&mut self) -> Option<Entry> {
        let top = self.top()?;
        let entry = self.lanes[top].pop_front()?;
        self.uncount(&entry);
        Some(entry)
    }

    /// The front of every non-empty lane (expiry looks at each).
    pub fn lane_fronts(&self) -> impl Iterator<Item = &Entry> {
        self.lanes.iter().filter_map(VecDeque::front)
    }

    /// Removes the front of the lane of `priority`.
    pub fn pop_lane(&mut self, priority: u8) -> Option<Entry> {
        let entry = self.lanes[usize::from(priority)].pop_front()?;
        self.uncount(&entry);
        Some(entry)
    }

    pub fn push_back(&mut self, entry: Entry) {
        self.count(&entry);
        self.lanes[usize::from(entry.priority)].push_back(entry);
    }

    /// Inserts an entry where its id places it in its lane.
    pub fn insert_in_order(&mut self, entry: Entry) {
        let lane = &self.lanes[usize::from(entry.priority)];
        let at = lane
            .binary_search_by_key(&entry.id, |e| e.id)
            .unwrap_or_else(|at| at);
        self.count(&entry);
        self.lanes[usize::from(entry.priority)].insert(at, entry);
    }

    /// Every entry in delivery order, with its place.
    pub fn iter(&self) -> impl Iterator<Item = (Pos, &Entry)> {
        self.lanes.iter().enumerate().rev().flat_map(|(lane, entries)| {
            entries
                .iter()
                .enumerate()
                .map(move |(at, e)| (Pos { lane, at }, e))
        })
    }

    /// The entry with this id in the lane of `priority`.
    pub fn find(&self, priority: u8, id: u64) -> Option<Pos> {
        let lane = usize::from(priority);
        let at = self.lanes.get(lane)?.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(Pos { lane, at })
    }

    pub fn get(&self, pos: Pos) -> &Entry {
        &self.lanes[pos.lane][pos.at]
    }

    pub fn remove(&mut self, pos: Pos) -> Option<Entry> {
        let entry = self.lanes[pos.lane].remove(pos.at)?;
        self.uncount(&entry);
        Some(entry)
    }

    /// Gives a paged-out entry its body back, and its true weight (an
    /// entry recovered at start is only estimated).
    pub fn set_message(&mut self, pos: Pos, message: Arc<Message>) {
        let entry = &mut self.lanes[pos.lane][pos.at];
        let old = entry.weight as usize;
        self.body = self.body - u64::from(entry.body) + message.body.len() as u64;
        entry.body = message.body.len() as u32;
        entry.weight = weight_u32(&message);
        let new = entry.weight as usize;
        self.weight = self.weight - old + new;
        if entry.message.is_some() {
            self.in_memory -= old;
        }
        self.in_memory += new;
        entry.message = Some(message);
    }

    /// Drops an entry's body, now kept by the store as `stored`.
    pub fn page_out(&mut self, pos: Pos, stored: u64) {
        let entry = &mut self.lanes[pos.lane][pos.at];
        if entry.message.take().is_some() {
            self.in_memory -= entry.weight as usize;
        }
        entry.stored = Some(stored);
    }

    /// Empties it (purge).
    pub fn take_all(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.body = 0;
        self.weight = 0;
        self.in_memory = 0;
        self.lanes.iter_mut().flat_map(std::mem::take).collect()
    }

    /// A drained backlog leaves its capacity behind (56 octets a message):
    /// give it back once mostly empty.
    pub fn shrink(&mut self) {
        for lane in &mut self.lanes {
            if lane.capacity() > 4 * lane.len() + 4096 {
                lane.shrink_to(2 * lane.len());
            }
        }
    }
}

/// A message's weight as an entry keeps it (a message is at most
/// [`crate::config::MAX_MESSAGE_SIZE`], so this saturates only for a broker
/// misconfigured through the library).
pub(crate) fn weight_u32(message: &Message) -> u32 {
    u32::try_from(weight(message)).unwrap_or(u32::MAX)
}
