//! Message records and queue-index entries.
//!
//! A persistent message routed to several durable queues is stored once,
//! under a message id, and each queue's index holds `position → id`. The
//! store counts references in memory (rebuilt from the indexes at recovery)
//! and deletes a body when its last queue lets go of it.

use warren_codec::amq_protocol::frame::WriteContext;
use warren_codec::amq_protocol::protocol::basic::{gen_properties, parse_properties};
use warren_codec::bytes::{Bytes, BytesMut};
use warren_codec::Message;

use crate::definitions::{put_str, take_str};

/// Largest chunk of a body stored under one key; sled writes values above a
/// quarter of its 512 KiB segment to blob files it never fsyncs.
pub const CHUNK: usize = 64 * 1024;

/// One entry of a queue's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The message's position in the queue (its order).
    pub position: u64,
    /// The stored message.
    pub message_id: u64,
    /// Whether it was handed to a consumer (it comes back redelivered).
    pub delivered: bool,
}

impl IndexEntry {
    pub(crate) fn value(&self) -> [u8; 9] {
        let mut v = [0u8; 9];
        v[..8].copy_from_slice(&self.message_id.to_be_bytes());
        v[8] = u8::from(self.delivered);
        v
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Option<Self> {
        Some(Self {
            position: u64::from_be_bytes(key.try_into().ok()?),
            message_id: u64::from_be_bytes(value.get(..8)?.try_into().ok()?),
            delivered: *value.get(8)? != 0,
        })
    }
}

/// The key of chunk `chunk` of message `id`: all of a message's chunks sort
/// together, header first.
pub(crate) fn chunk_key(id: u64, chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Chunk 0 (exchange, routing key, properties, body length) and the body chunks.
pub(crate) fn encode(message: &Message) -> Vec<Vec<u8>> {
    let mut header = Vec::new();
    put_str(message.exchange.as_str(), &mut header);
    put_str(message.routing_key.as_str(), &mut header);
    let (props, _) = gen_properties(&message.properties)(WriteContext::from(Vec::new()))
        .expect("writing to a Vec cannot fail")
        .into_inner();
    header.extend_from_slice(&(props.len() as u32).to_be_bytes());
    header.extend_from_slice(&props);
    header.extend_from_slice(&(message.body.len() as u64).to_be_bytes());
    let mut chunks = vec![header];
    chunks.extend(message.body.chunks(CHUNK).map(<[u8]>::to_vec));
    chunks
}

/// Rebuilds a message from its chunks, in key order. None if anything is
/// missing or malformed.
pub(crate) fn decode<'a>(mut chunks: impl Iterator<Item = &'a [u8]>) -> Option<Message> {
    let header = chunks.next()?;
    let (exchange, rest) = take_str(header)?;
    let (routing_key, rest) = take_str(rest)?;
    let props_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let (_, properties) = parse_properties(rest.get(4..4 + props_len)?).ok()?;
    let rest = &rest[4 + props_len..];
    let body_len = usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let mut body = BytesMut::with_capacity(body_len.min(16 * 1024 * 1024));
    for chunk in chunks {
        body.extend_from_slice(chunk);
    }
    if body.len() != body_len {
        return None;
    }
    Some(Message {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        properties,
        body: Bytes::from(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;

    #[test]
    fn messages_round_trip_through_chunks() {
        for len in [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let message = Message {
                exchange: "x".into(),
                routing_key: "k".into(),
                properties: BasicProperties::default().with_delivery_mode(2).with_priority(4),
                body: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
            };
            let chunks = encode(&message);
            assert_eq!(chunks.len(), 1 + len.div_ceil(CHUNK));
            assert_eq!(decode(chunks.iter().map(Vec::as_slice)), Some(message));
        }
    }

    #[test]
    fn a_missing_chunk_is_detected() {
        let message = Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: BasicProperties::default(),
            body: Bytes::from(vec![1u8; 2 * CHUNK]),
        };
        let chunks = encode(&message);
        assert_eq!(decode(chunks.iter().take(2).map(Vec::as_slice)), None);
    }
}
