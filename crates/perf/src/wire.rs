//! The hot path on the wire: pre-encoded publishes and a minimal frame parser.
//!
//! Everything here works on byte slices, with no allocation per message:
//! - [`PublishTemplate`]: the method, header and body frames of one message,
//!   encoded once; each send copies them and patches the send timestamp
//!   into the first 8 octets of the body;
//! - [`next_frame`]: splits complete frames off the front of a read buffer;
//! - readers for the few methods the hot path sees (deliver, ack, nack,
//!   close) and writers for the ones it sends (ack).
//!
//! Frame layout (AMQP 0-9-1 §2.3.5): type (1), channel (2), size (4),
//! payload (size), frame-end 0xCE.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Frame types.
pub const METHOD: u8 = 1;
/// A content header frame.
pub const HEADER: u8 = 2;
/// A content body frame.
pub const BODY: u8 = 3;
/// A heartbeat frame.
pub const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const OVERHEAD: usize = 8;

/// (class, method) ids of the methods the hot path reads or writes.
pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
/// basic.return
pub const BASIC_RETURN: (u16, u16) = (60, 50);
/// basic.deliver
pub const BASIC_DELIVER: (u16, u16) = (60, 60);
/// basic.ack
pub const BASIC_ACK: (u16, u16) = (60, 80);
/// basic.nack
pub const BASIC_NACK: (u16, u16) = (60, 120);
/// basic.cancel (sent by the server when a queue is deleted)
pub const BASIC_CANCEL: (u16, u16) = (60, 30);
/// connection.close
pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
/// connection.blocked
pub const CONNECTION_BLOCKED: (u16, u16) = (10, 60);
/// connection.unblocked
pub const CONNECTION_UNBLOCKED: (u16, u16) = (10, 61);
/// channel.close
pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);

/// Peer bytes that are not AMQP as this parser knows it.
#[derive(Debug)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

/// The send timestamp carried in a body: nanoseconds since the Unix epoch,
/// so that a producer and a consumer in different processes (or the null
/// broker) agree on it.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends one frame.
pub fn put_frame(buf: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    buf.push(kind);
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf.push(FRAME_END);
}

fn put_short_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends basic.ack (or, from a broker, a publisher confirm).
pub fn put_ack(buf: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool) {
    let mut payload = [0u8; 13];
    payload[0..2].copy_from_slice(&BASIC_ACK.0.to_be_bytes());
    payload[2..4].copy_from_slice(&BASIC_ACK.1.to_be_bytes());
    payload[4..12].copy_from_slice(&delivery_tag.to_be_bytes());
    payload[12] = u8::from(multiple);
    put_frame(buf, METHOD, channel, &payload);
}

/// The method payload of basic.deliver.
pub fn deliver_payload(consumer_tag: &str, delivery_tag: u64, exchange: &str, routing_key: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(32 + consumer_tag.len() + exchange.len() + routing_key.len());
    p.extend_from_slice(&BASIC_DELIVER.0.to_be_bytes());
    p.extend_from_slice(&BASIC_DELIVER.1.to_be_bytes());
    put_short_str(&mut p, consumer_tag);
    p.extend_from_slice(&delivery_tag.to_be_bytes());
    p.push(0);
    put_short_str(&mut p, exchange);
    put_short_str(&mut p, routing_key);
    p
}

/// A content header payload for a body of `size` octets, with only the
/// delivery-mode property set (2 = persistent) when `delivery_mode` is given.
pub fn header_payload(size: u64, delivery_mode: Option<u8>) -> Vec<u8> {
    let mut p = Vec::with_capacity(15);
    p.extend_from_slice(&60u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&size.to_be_bytes());
    match delivery_mode {
        // Property flags, high bit first: content-type, content-encoding,
        // headers, delivery-mode (0x1000), …
        Some(mode) => {
            p.extend_from_slice(&0x1000u16.to_be_bytes());
            p.push(mode);
        }
        None => p.extend_from_slice(&0u16.to_be_bytes()),
    }
    p
}

/// Appends the body frames of `body`, split to fit `frame_max`.
pub fn put_body(buf: &mut Vec<u8>, channel: u16, body: &[u8], frame_max: usize) {
    for chunk in body.chunks(frame_max.saturating_sub(OVERHEAD).max(1)) {
        put_frame(buf, BODY, channel, chunk);
    }
}

/// The frames of one message, encoded once and sent many times.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Where the body's first octet sits in `bytes`, if the body has room
    /// for the 8-octet timestamp.
    stamp_at: Option<usize>,
    /// Where the 8-octet sequence number goes (after the stamp), if the body
    /// has room for it too.
    seq_at: Option<usize>,
}

impl PublishTemplate {
    /// basic.publish to `exchange` with `routing_key`, a header with
    /// delivery-mode 2 if `persistent`, and `size` octets of body.
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Self {
        let mut method = Vec::with_capacity(8 + exchange.len() + routing_key.len());
        method.extend_from_slice(&BASIC_PUBLISH.0.to_be_bytes());
        method.extend_from_slice(&BASIC_PUBLISH.1.to_be_bytes());
        method.extend_from_slice(&0u16.to_be_bytes());
        put_short_str(&mut method, exchange);
        put_short_str(&mut method, routing_key);
        method.push(0); // mandatory = immediate = false
        let mut bytes = Vec::new();
        put_frame(&mut bytes, METHOD, channel, &method);
        put_frame(
            &mut bytes,
            HEADER,
            channel,
            &header_payload(size as u64, persistent.then_some(2)),
        );
        let body_start = bytes.len() + 7;
        put_body(&mut bytes, channel, &vec![b'w'; size], frame_max as usize);
        Self {
            bytes,
            stamp_at: (size >= 8).then_some(body_start),
            seq_at: (size >= 16).then_some(body_start + 8),
        }
    }

    /// Octets one message takes on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the template is empty (it never is).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends the message with `stamp` as its send time and `seq` as its
    /// sequence number (see [`body_seq`]).
    pub fn write_to(&self, buf: &mut Vec<u8>, stamp: u64, seq: u64) {
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        if let Some(at) = self.stamp_at {
            buf[start + at..start + at + 8].copy_from_slice(&stamp.to_be_bytes());
        }
        if let Some(at) = self.seq_at {
            buf[start + at..start + at + 8].copy_from_slice(&seq.to_be_bytes());
        }
    }
}

/// One frame, borrowed from the read buffer.
#[derive(Debug)]
pub struct RawFrame<'a> {
    /// Frame type.
    pub kind: u8,
    /// Channel.
    pub channel: u16,
    /// Payload, without the frame-end octet.
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    /// (class, method) of a method frame.
    pub fn method(&self) -> Option<(u16, u16)> {
        if self.kind != METHOD || self.payload.len() < 4 {
            return None;
        }
        Some((be16(self.payload, 0), be16(self.payload, 2)))
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap_or_default()))
}

/// Splits the first complete frame off `buf`: the frame and the octets it
/// took, `None` if more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size + OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(WireError(format!("frame type {} without frame-end", buf[0])));
    }
    Ok(Some((
        RawFrame {
            kind: buf[0],
            channel: be16(buf, 1),
            payload: &buf[7..total - 1],
        },
        total,
    )))
}

/// The delivery tag of a basic.deliver payload.
pub fn deliver_tag(payload: &[u8]) -> Option<u64> {
    let tag_len = *payload.get(4)? as usize;
    be64(payload, 5 + tag_len)
}

/// delivery-tag and multiple of a basic.ack or basic.nack payload.
pub fn ack_fields(payload: &[u8]) -> Option<(u64, bool)> {
    Some((be64(payload, 4)?, payload.get(12)? & 1 == 1))
}

/// The body size of a content header payload.
pub fn header_body_size(payload: &[u8]) -> Option<u64> {
    be64(payload, 4)
}

/// The timestamp in the first 8 octets of a body frame's payload.
pub fn body_stamp(payload: &[u8]) -> Option<u64> {
    be64(payload, 0)
}

/// The sequence number in the next 8 octets of a first body frame: the
/// producer's index in the top 16 bits, its count of messages sent below.
pub fn body_seq(payload: &[u8]) -> Option<u64> {
    be64(payload, 8)
}

/// "code text" of a connection.close or channel.close payload.
pub fn close_reason(payload: &[u8]) -> String {
    let code = payload.get(4..6).map(|b| be16(b, 0)).unwrap_or(0);
    let text = payload
        .get(6)
        .and_then(|&n| payload.get(7..7 + n as usize))
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("{code} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_parses_back_with_its_stamp() {
        let template = PublishTemplate::new(1, "ex", "key", 300, true, 128);
        let mut buf = Vec::new();
        template.write_to(&mut buf, 0x0102_0304_0506_0708, 0x0003_0000_0000_0009);
        let mut rest = &buf[..];
        let mut kinds = Vec::new();
        let mut stamp = None;
        let mut seq = None;
        let mut body = 0;
        while let Some((frame, used)) = next_frame(rest).unwrap() {
            kinds.push(frame.kind);
            match frame.kind {
                METHOD => assert_eq!(frame.method(), Some(BASIC_PUBLISH)),
                HEADER => assert_eq!(header_body_size(frame.payload), Some(300)),
                _ => {
                    stamp = stamp.or(body_stamp(frame.payload));
                    seq = seq.or(body_seq(frame.payload));
                    body += frame.payload.len();
                }
            }
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        // 300 octets in frames of at most 120: three body frames.
        assert_eq!(kinds, [METHOD, HEADER, BODY, BODY, BODY]);
        assert_eq!(body, 300);
        assert_eq!(stamp, Some(0x0102_0304_0506_0708));
        assert_eq!(seq, Some(0x0003_0000_0000_0009));
    }

    #[test]
    fn deliver_and_ack_fields_read_back() {
        assert_eq!(deliver_tag(&deliver_payload("ctag", 77, "", "q")), Some(77));
        let mut buf = Vec::new();
        put_ack(&mut buf, 3, 9, true);
        let (frame, used) = next_frame(&buf).unwrap().unwrap();
        assert_eq!((frame.channel, used), (3, buf.len()));
        assert_eq!(ack_fields(frame.payload), Some((9, true)));
        assert!(next_frame(&buf[..used - 1]).unwrap().is_none());
    }
}
