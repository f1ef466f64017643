//! A producer: one connection, one channel, pre-encoded publishes written in
//! large batches, with an optional confirm window and rate limit.
//!
//! The socket is split: this task writes, a reader task counts confirms and
//! returns window permits, and reports a close from the broker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Semaphore;
use warren_codec::bytes::{Buf, BytesMut};

use crate::client::{Result, Session};
use crate::stats::Shared;
use crate::wire::{self, PublishTemplate};

/// Octets gathered before each write.
const BATCH_BYTES: usize = 64 * 1024;

/// What one producer sends.
pub struct Producer {
    /// Its index, carried in each message's sequence number.
    pub id: u16,
    /// The messages it cycles through (one per routing key).
    pub templates: Vec<PublishTemplate>,
    /// Unconfirmed messages allowed in flight; 0 = no confirms.
    pub confirm_window: u32,
    /// Messages per second; 0 = as fast as the socket takes them.
    pub rate: f64,
    /// Stop after this many (fill mode).
    pub limit: Option<u64>,
}

impl Producer {
    /// Runs until `limit` is reached (or forever; the run aborts it).
    pub async fn run(self, session: Session, shared: Arc<Shared>) -> Result<()> {
        let (stream, read_buf) = session.into_raw();
        let (reader, mut writer) = stream.into_split();
        let window =
            (self.confirm_window > 0).then(|| Arc::new(Semaphore::new(self.confirm_window as usize)));
        tokio::spawn(read_confirms(reader, read_buf, window.clone(), shared.clone()));

        let per_message = self.templates[0].len();
        let max_batch = (BATCH_BYTES / per_message).max(1) as u64;
        let mut out = Vec::with_capacity(BATCH_BYTES + per_message);
        let mut sent = 0u64;
        let mut next = 0usize;
        let started = Instant::now();
        loop {
            let mut n = max_batch;
            if shared.stop.load(Ordering::Relaxed) {
                // The socket stays open for the confirms, as below.
                return futures::future::pending().await;
            }
            if let Some(limit) = self.limit {
                if sent >= limit {
                    // Done, but the socket stays open: dropping the write
                    // half would shut the connection before the confirms
                    // arrive. The run aborts this task.
                    return futures::future::pending().await;
                }
                n = n.min(limit - sent);
            }
            if self.rate > 0.0 {
                let due = (self.rate * started.elapsed().as_secs_f64()) as u64;
                if due <= sent {
                    let at = started + Duration::from_secs_f64((sent + 1) as f64 / self.rate);
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                n = n.min(due - sent);
            }
            if let Some(window) = &window {
                // Wait for one permit, then take what else is free at once.
                window.acquire().await?.forget();
                let more = (window.available_permits() as u64).min(n - 1);
                if more > 0 {
                    window.acquire_many(more as u32).await?.forget();
                }
                n = 1 + more;
            }
            let stamp = wire::now_nanos();
            for i in 0..n {
                let seq = u64::from(self.id) << 48 | (sent + i);
                self.templates[next].write_to(&mut out, stamp, seq);
                next = (next + 1) % self.templates.len();
            }
            writer.write_all(&out).await?;
            out.clear();
            sent += n;
            shared.counters.published.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Reads confirms (basic.ack / basic.nack, possibly `multiple`) and gives
/// their permits back to the window; a close from the broker ends the run.
async fn read_confirms(
    mut reader: OwnedReadHalf,
    mut buf: BytesMut,
    window: Option<Arc<Semaphore>>,
    shared: Arc<Shared>,
) {
    let mut last = 0u64;
    loop {
        loop {
            let (used, settled) = match wire::next_frame(&buf) {
                Ok(Some((frame, used))) => match frame.method() {
                    Some(id @ (wire::BASIC_ACK | wire::BASIC_NACK)) => {
                        let Some((tag, multiple)) = wire::ack_fields(frame.payload) else {
                            return shared.fail("malformed basic.ack");
                        };
                        let count = if multiple { tag.saturating_sub(last) } else { 1 };
                        last = last.max(tag);
                        let counter = match id {
                            wire::BASIC_ACK => &shared.counters.confirmed,
                            _ => &shared.counters.nacked,
                        };
                        counter.fetch_add(count, Ordering::Relaxed);
                        (used, count)
                    }
                    Some(wire::CONNECTION_CLOSE | wire::CHANNEL_CLOSE) => {
                        return shared
                            .fail(&format!("producer closed: {}", wire::close_reason(frame.payload)));
                    }
                    Some(wire::CONNECTION_BLOCKED) => {
                        eprintln!("producer: connection.blocked by the broker");
                        shared.counters.blocked.fetch_add(1, Ordering::Relaxed);
                        (used, 0)
                    }
                    Some(wire::CONNECTION_UNBLOCKED) => {
                        eprintln!("producer: connection.unblocked by the broker");
                        shared.counters.unblocked.fetch_add(1, Ordering::Relaxed);
                        (used, 0)
                    }
                    _ => (used, 0),
                },
                Ok(None) => break,
                Err(e) => return shared.fail(&e.to_string()),
            };
            buf.advance(used);
            if let Some(window) = &window {
                window.add_permits(settled as usize);
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return shared.fail("the broker closed a producer's socket"),
            Ok(_) => {}
        }
    }
}
