//! The byte formats of the message log: segment records and ack records.
//!
//! A segment is a sequence of records, each framed and checksummed so that
//! recovery can tell a whole record from a torn or damaged one, and find the
//! next whole record after damage:
//!
//! | field | size | |
//! |---|---|---|
//! | magic | 4 | [`MAGIC`], where a record starts |
//! | length | 4 | of kind + payload |
//! | crc32 | 4 | of kind + payload |
//! | kind | 1 | [`Kind`] |
//! | payload | length − 1 | |
//!
//! An ack file holds fixed-size `AckRecord`s for its segment's messages.

use warren_codec::Message;

use crate::messages;

/// Marks the start of a record ("WRN1").
pub const MAGIC: u32 = 0x5752_4e31;
/// magic, length, crc.
pub const FRAME: usize = 12;
/// The largest record recovery believes: a message of the largest body
/// Warren accepts (128 MiB by default; the limit is configurable, and 1 GiB
/// is far above any sane setting) plus its header. A larger length is damage.
pub const MAX_RECORD: usize = 1 << 30;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The first record of every segment: the first message id it may hold
    /// and the definitions' generation when it was opened.
    Start = 1,
    /// A persistent message and the durable queues that hold it.
    Message = 2,
    /// The definitions' generation after a change was synced to sled.
    Generation = 3,
    /// A [`Kind::Message`] with the time it was written, so that its TTL
    /// counts from then across a restart. Written since issue 10; both
    /// kinds are read.
    TimedMessage = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Start),
            2 => Some(Self::Message),
            3 => Some(Self::Generation),
            4 => Some(Self::TimedMessage),
            _ => None,
        }
    }
}

/// Appends one framed record.
pub(crate) fn put(out: &mut Vec<u8>, kind: Kind, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out.push(kind as u8);
    payload(out);
    let body = &out[start + FRAME..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_be_bytes());
}

/// A message record: id, when it was written (milliseconds since the Unix
/// epoch), queues, then the message.
pub(crate) fn put_message(out: &mut Vec<u8>, id: u64, at: u64, queues: &[u64], message: &Message) {
    put(out, Kind::TimedMessage, |out| {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(&(queues.len() as u32).to_be_bytes());
        for q in queues {
            out.extend_from_slice(&q.to_be_bytes());
        }
        messages::encode_into(message, out);
    });
}

/// A message record's id, when it was written (if the record says) and
/// queues, and where its message starts.
pub(crate) struct MessageHead<'a> {
    pub id: u64,
    pub at: Option<u64>,
    pub queues: Vec<u64>,
    pub message: &'a [u8],
}

/// Reads the head of a message record of either kind; None for another
/// kind, or a payload too short for its head.
pub(crate) fn message_head(kind: Kind, payload: &[u8]) -> Option<MessageHead<'_>> {
    let id = u64_at(payload, 0)?;
    let (at, rest) = match kind {
        Kind::Message => (None, payload.get(8..)?),
        Kind::TimedMessage => (Some(u64_at(payload, 8)?), payload.get(16..)?),
        Kind::Start | Kind::Generation => return None,
    };
    // u32: a message may go to more than 65,535 durable queues (a fanout).
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let ids = rest.get(4..4usize.checked_add(n.checked_mul(8)?)?)?;
    Some(MessageHead {
        id,
        at,
        queues: ids
            .chunks_exact(8)
            .map(|c| u64_at(c, 0).expect("8 bytes"))
            .collect(),
        message: &rest[4 + 8 * n..],
    })
}

/// A big-endian u64 at `at`.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// What is at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum At<'a> {
    /// A whole record, and where the next one starts.
    Record {
        kind: Kind,
        payload: &'a [u8],
        next: usize,
    },
    /// The file ends inside a record that looks right so far: a write cut
    /// short (by a crash, it is the last thing in the active segment).
    Torn,
    /// Not a record: damage.
    Bad,
}

/// Parses the record at `pos`.
pub(crate) fn at(buf: &[u8], pos: usize) -> At<'_> {
    let rest = &buf[pos..];
    if rest.len() < FRAME + 1 {
        // A short tail of zeros or a prefix of a frame is a torn write;
        // anything else there is damage.
        let magic = MAGIC.to_be_bytes();
        let prefix = rest.len().min(4);
        return if rest[..prefix] == magic[..prefix] {
            At::Torn
        } else {
            At::Bad
        };
    }
    if rest[..4] != MAGIC.to_be_bytes() {
        return At::Bad;
    }
    let len = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_RECORD {
        return At::Bad;
    }
    let Some(body) = rest.get(FRAME..FRAME + len) else {
        return At::Torn;
    };
    let crc = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return At::Bad;
    }
    match Kind::from_u8(body[0]) {
        Some(kind) => At::Record {
            kind,
            payload: &body[1..],
            next: pos + FRAME + len,
        },
        None => At::Bad,
    }
}

/// The next position after `from` where a whole record starts, for reading
/// on past damage.
pub(crate) fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_be_bytes();
    let mut pos = from;
    while pos + 4 <= buf.len() {
        let found = buf[pos..].windows(4).position(|w| w == magic)?;
        pos += found;
        if let At::Record { .. } = at(buf, pos) {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// What an ack-file record says about a message in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckKind {
    /// The queue let go of it (ack, reject, purge, delete, expiry).
    Settled = 1,
    /// The queue handed it to a consumer: it comes back redelivered.
    Delivered = 2,
}

/// One ack-file record: 24 bytes, checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckRecord {
    pub message: u64,
    pub queue: u64,
    pub kind: AckKind,
}

/// The size of an [`AckRecord`].
pub(crate) const ACK_RECORD: usize = 24;

impl AckRecord {
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.message.to_be_bytes());
        out.extend_from_slice(&self.queue.to_be_bytes());
        out.extend_from_slice(&[self.kind as u8, 0, 0, 0]);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// None if the record is damaged.
    pub(crate) fn parse(bytes: &[u8; ACK_RECORD]) -> Option<Self> {
        let crc = u32::from_be_bytes(bytes[20..].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..20]) != crc {
            return None;
        }
        let kind = match bytes[16] {
            1 => AckKind::Settled,
            2 => AckKind::Delivered,
            _ => return None,
        };
        Some(Self {
            message: u64_at(bytes, 0)?,
            queue: u64_at(bytes, 8)?,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;
    use warren_codec::bytes::Bytes;

    fn message() -> Message {
        Message {
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: BasicProperties::default().with_delivery_mode(2).into(),
            body: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn records_parse_back_and_damage_is_told_from_a_torn_tail() {
        let mut buf = Vec::new();
        put_message(&mut buf, 7, 1234, &[1, 2], &message());
        let first = buf.len();
        put(&mut buf, Kind::Generation, |o| {
            o.extend_from_slice(&9u64.to_be_bytes())
        });
        let At::Record { kind, payload, next } = at(&buf, 0) else {
            panic!("a whole record");
        };
        assert_eq!((kind, next), (Kind::TimedMessage, first));
        let head = message_head(kind, payload).unwrap();
        assert_eq!(
            (head.id, head.at, head.queues.as_slice()),
            (7, Some(1234), &[1u64, 2][..])
        );
        assert_eq!(messages::decode(head.message), Some(message()));
        // Every cut of the last record is torn, never a record.
        for cut in first + 1..buf.len() {
            assert_eq!(at(&buf[..cut], first), At::Torn, "{cut}");
        }
        // A flipped byte anywhere in the first record is damage, and reading
        // resumes at the second.
        for i in 0..first {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            assert!(!matches!(at(&damaged, 0), At::Record { .. }), "byte {i}");
            assert_eq!(resync(&damaged, 1), Some(first), "byte {i}");
        }
    }

    #[test]
    fn ack_records_check_their_sum() {
        let record = AckRecord {
            message: 5,
            queue: 3,
            kind: AckKind::Delivered,
        };
        let mut buf = Vec::new();
        record.put(&mut buf);
        let bytes: [u8; ACK_RECORD] = buf.clone().try_into().unwrap();
        assert_eq!(AckRecord::parse(&bytes), Some(record));
        for i in 0..ACK_RECORD {
            let mut damaged = bytes;
            damaged[i] ^= 1;
            assert_eq!(AckRecord::parse(&damaged), None, "byte {i}");
        }
    }
}
