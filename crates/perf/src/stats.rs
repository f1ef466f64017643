//! What a run counts and how it reports it.
//!
//! Producers and consumers bump shared atomic counters; consumers record
//! end-to-end latencies (now minus the stamp in the body) into a local list
//! and move it into the shared interval histogram once per socket read, so
//! the lock is taken per batch, not per message. The reporter takes the
//! interval histogram every second for the progress line and merges it into
//! the run's total once warm-up is over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters shared by every task of a run.
#[derive(Debug)]
pub struct Counters {
    /// Messages written to a socket.
    pub published: AtomicU64,
    /// Publisher confirms (basic.ack) received.
    pub confirmed: AtomicU64,
    /// Publisher nacks received.
    pub nacked: AtomicU64,
    /// Deliveries whose body arrived complete.
    pub consumed: AtomicU64,
    /// connection.blocked received by producers.
    pub blocked: AtomicU64,
    /// connection.unblocked received by producers.
    pub unblocked: AtomicU64,
    /// Deliveries whose sequence number was not the next one of their
    /// producer (a message lost, repeated or out of order), when checked.
    pub out_of_order: AtomicU64,
    /// Latencies since the last report, in nanoseconds.
    interval: Mutex<Histogram<u64>>,
}

/// What every task of a run shares.
#[derive(Default)]
pub struct Shared {
    /// The counts and latencies.
    pub counters: Counters,
    /// The first failure a task reported; it ends the run.
    error: Mutex<Option<String>>,
    /// Set to make producers stop publishing (they keep reading confirms).
    pub stop: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Records a failure (the first one wins).
    pub fn fail(&self, message: &str) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert_with(|| message.to_owned());
    }

    /// The first failure, if any.
    pub fn check(&self) -> Result<(), String> {
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(message) => Err(message),
            None => Ok(()),
        }
    }
}

/// Latencies above this (an hour) are clamped, not dropped.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            unblocked: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            interval: Mutex::new(histogram()),
        }
    }
}

impl Counters {
    /// Adds a batch of latencies (nanoseconds).
    pub fn record_latencies(&self, batch: &mut Vec<u64>) {
        if batch.is_empty() {
            return;
        }
        let mut interval = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        for &ns in batch.iter() {
            interval.saturating_record(ns.clamp(1_000, MAX_LATENCY_NS));
        }
        batch.clear();
    }

    /// Takes the latencies recorded since the last call.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut interval = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *interval, histogram())
    }

    /// A snapshot of the counts.
    pub fn snapshot(&self) -> Counts {
        Counts {
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
        }
    }
}

/// Counts at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// See [`Counters::published`].
    pub published: u64,
    /// See [`Counters::confirmed`].
    pub confirmed: u64,
    /// See [`Counters::nacked`].
    pub nacked: u64,
    /// See [`Counters::consumed`].
    pub consumed: u64,
}

/// The total latency histogram of the measured window.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(histogram())
    }
}

impl Latency {
    /// Adds an interval's latencies.
    pub fn add(&mut self, interval: &Histogram<u64>) {
        // Same bounds on both sides: this cannot fail.
        let _ = self.0.add(interval);
    }

    /// Percentiles in milliseconds, `None` if nothing was recorded.
    pub fn summary(&self) -> Option<Percentiles> {
        percentiles(&self.0)
    }
}

/// End-to-end latency percentiles, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Messages measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Percentiles of a histogram in nanoseconds, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    Some(Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p75: ms(h.value_at_quantile(0.75)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    })
}

/// Formats a rate with thousands separators.
pub fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_reach_the_percentiles() {
        let counters = Counters::default();
        let mut batch: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        counters.record_latencies(&mut batch);
        assert!(batch.is_empty());
        let mut total = Latency::default();
        total.add(&counters.take_interval());
        let p = total.summary().unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!(counters.take_interval().is_empty());
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
    }
}
