//! Prometheus histograms over fixed buckets, observed by the store's thread
//! (fsync latency, group-commit size) and by the broker's queues (delivery
//! latency), which is why they live in the lowest crate that both use.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of a [`Histogram`]'s buckets, in microseconds (the last
/// bucket, `+Inf`, is implicit): 50 µs to 10 s, roughly ×2.5 a step.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// Upper bounds of the group-commit size histogram, in messages.
pub const BATCH_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// The broker's histograms, for its Prometheus endpoint. Kept with the
/// store, which every queue has a handle of, so that the queues reach it
/// without another handle of their own.
#[derive(Debug)]
pub struct Metrics {
    /// How long each fdatasync of the message log took (a group commit's,
    /// or a full segment's as it closes), in microseconds.
    pub fsync_us: Histogram,
    /// How many messages each of those fdatasyncs covered.
    pub commit_messages: Histogram,
    /// How long messages waited in their queues, from arrival to delivery
    /// or get, in microseconds (observed at millisecond precision).
    pub delivery_us: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            fsync_us: Histogram::new(&LATENCY_BOUNDS_US),
            commit_messages: Histogram::new(&BATCH_BOUNDS),
            delivery_us: Histogram::new(&LATENCY_BOUNDS_US),
        }
    }
}

/// A Prometheus histogram over fixed buckets, shared by the tasks that
/// observe it. Written here rather than taken from `prometheus-client`,
/// whose histogram takes a lock per observation: the queues observe every
/// delivery, so each keeps a [`LocalHistogram`] and adds it here once a
/// step, and the store's thread observes once a round.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, and the last for `+Inf`; not cumulative.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    /// Empty, with these bucket bounds.
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one value.
    pub fn observe(&self, value: u64) {
        let at = self.bounds.partition_point(|&b| b < value);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Adds what a task counted, and empties it.
    pub fn absorb(&self, local: &mut LocalHistogram) {
        if local.count == 0 {
            return;
        }
        for (bucket, n) in self.buckets.iter().zip(local.buckets.iter_mut()) {
            if *n > 0 {
                bucket.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.sum
            .fetch_add(std::mem::take(&mut local.sum), Ordering::Relaxed);
        local.count = 0;
    }

    /// The bounds with their cumulative counts (Prometheus's `le` buckets,
    /// `None` for `+Inf`), and the sum of the values.
    pub fn snapshot(&self) -> (Vec<(Option<u64>, u64)>, u64) {
        let mut total = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n.load(Ordering::Relaxed);
                (self.bounds.get(i).copied(), total)
            })
            .collect();
        (buckets, self.sum.load(Ordering::Relaxed))
    }
}

/// A task's own counts for a [`Histogram`], added to it in batches.
#[derive(Debug)]
pub struct LocalHistogram {
    bounds: &'static [u64],
    buckets: Vec<u64>,
    sum: u64,
    count: u64,
}

impl LocalHistogram {
    /// Empty, with the bounds of the histogram it will be added to.
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Counts one value.
    pub fn observe(&mut self, value: u64) {
        let at = self.bounds.partition_point(|&b| b < value);
        self.buckets[at] += 1;
        self.sum += value;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive_of_their_bound() {
        let h = Histogram::new(&[10, 100]);
        h.observe(10);
        h.observe(11);
        let mut local = LocalHistogram::new(&[10, 100]);
        local.observe(5);
        local.observe(1_000);
        h.absorb(&mut local);
        h.absorb(&mut local);
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets, vec![(Some(10), 2), (Some(100), 3), (None, 4)]);
        assert_eq!(sum, 1_026);
    }
}
