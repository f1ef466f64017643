//! A consumer: one connection, one channel, any number of queues, a minimal
//! parser for deliveries, acks written once per socket read.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_codec::bytes::Buf;

use crate::client::{Result, Session};
use crate::stats::Shared;
use crate::wire;

/// How a consumer acknowledges.
#[derive(Clone, Copy, Debug)]
pub enum Acks {
    /// Consumed with no-ack.
    Auto,
    /// One basic.ack per `every` deliveries (`multiple` when more than one).
    Every(u64),
}

/// Where the parser is in a delivery's frames.
enum State {
    Idle,
    Header {
        tag: u64,
    },
    Body {
        tag: u64,
        remaining: u64,
        stamp: Option<u64>,
    },
}

/// Reads deliveries until the run aborts it. With `check_order`, each
/// message's sequence number must be the next one of its producer
/// ([`wire::body_seq`]); any other counts in `out_of_order`.
pub async fn run(session: Session, acks: Acks, check_order: bool, shared: Arc<Shared>) -> Result<()> {
    let (mut stream, mut buf) = session.into_raw();
    buf.reserve(256 * 1024);
    let mut out = Vec::with_capacity(4096);
    let mut latencies = Vec::with_capacity(4096);
    let mut state = State::Idle;
    let mut unacked = 0u64;
    // The next sequence number expected of each producer.
    let mut expected: Vec<u64> = Vec::new();
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("the broker closed a consumer's socket".into());
        }
        let now = wire::now_nanos();
        let mut consumed = 0u64;
        while let Some((frame, used)) = wire::next_frame(&buf)? {
            let complete = match frame.kind {
                wire::METHOD => match frame.method() {
                    Some(wire::BASIC_DELIVER) => {
                        let tag = wire::deliver_tag(frame.payload).ok_or("malformed basic.deliver")?;
                        state = State::Header { tag };
                        None
                    }
                    Some(wire::CONNECTION_CLOSE | wire::CHANNEL_CLOSE) => {
                        return Err(format!("consumer closed: {}", wire::close_reason(frame.payload)).into());
                    }
                    Some(wire::BASIC_CANCEL) => return Err("the broker cancelled a consumer".into()),
                    _ => None,
                },
                wire::HEADER => {
                    let State::Header { tag } = state else {
                        let state = match state {
                            State::Idle => "idle".to_owned(),
                            State::Body { tag, remaining, .. } => {
                                format!("body of {tag}, {remaining} octets to come")
                            }
                            State::Header { .. } => unreachable!(),
                        };
                        return Err(format!("a content header outside a delivery ({state})").into());
                    };
                    match wire::header_body_size(frame.payload).ok_or("malformed content header")? {
                        0 => Some((tag, None)),
                        size => {
                            state = State::Body {
                                tag,
                                remaining: size,
                                stamp: None,
                            };
                            None
                        }
                    }
                }
                wire::BODY => {
                    let State::Body {
                        tag,
                        remaining,
                        stamp,
                    } = &mut state
                    else {
                        return Err("a body frame outside a delivery".into());
                    };
                    if stamp.is_none() {
                        *stamp = wire::body_stamp(frame.payload);
                        if let (true, Some(seq)) = (check_order, wire::body_seq(frame.payload)) {
                            let (producer, n) = ((seq >> 48) as usize, seq & ((1 << 48) - 1));
                            if expected.len() <= producer {
                                expected.resize(producer + 1, 0);
                            }
                            if n != expected[producer] {
                                shared.counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            expected[producer] = n + 1;
                        }
                    }
                    *remaining = remaining.saturating_sub(frame.payload.len() as u64);
                    (*remaining == 0).then_some((*tag, *stamp))
                }
                _ => None,
            };
            if let Some((tag, stamp)) = complete {
                state = State::Idle;
                consumed += 1;
                if let Some(stamp) = stamp {
                    latencies.push(now.saturating_sub(stamp));
                }
                if let Acks::Every(every) = acks {
                    unacked += 1;
                    if unacked >= every {
                        wire::put_ack(&mut out, 1, tag, every > 1);
                        unacked = 0;
                    }
                }
            }
            buf.advance(used);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        shared.counters.consumed.fetch_add(consumed, Ordering::Relaxed);
        shared.counters.record_latencies(&mut latencies);
    }
}
