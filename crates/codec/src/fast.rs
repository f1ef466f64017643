//! Hand-written decoders for the frames that make up almost all traffic:
//! basic.publish, basic.ack, and content headers with no properties or
//! only delivery-mode. amq-protocol's parsers build every string octet by
//! octet through nom combinators; these read the fixed layout directly.
//!
//! Each returns `None` for anything it does not recognise, malformed input
//! included, and the caller then uses amq-protocol's parser: what is
//! accepted, and how errors are reported, stays amq-protocol's.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};

const BASIC: u16 = 60;
const PUBLISH: u16 = 40;
const ACK: u16 = 80;
/// The delivery-mode bit of the content header's property flags.
const DELIVERY_MODE: u16 = 0x1000;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A short string at `at`, and the offset after it.
fn short_string(b: &[u8], at: usize) -> Option<(String, usize)> {
    let len = usize::from(*b.get(at)?);
    let bytes = b.get(at + 1..at + 1 + len)?;
    let s = std::str::from_utf8(bytes).ok()?;
    Some((s.to_owned(), at + 1 + len))
}

/// basic.publish or basic.ack (spec 1.8.3.7 and 1.8.3.13), from a method
/// frame's payload.
pub fn method(payload: &[u8]) -> Option<AMQPClass> {
    if u16_at(payload, 0)? != BASIC {
        return None;
    }
    match u16_at(payload, 2)? {
        PUBLISH => {
            // reserved-1 (short), exchange, routing-key, mandatory|immediate.
            let (exchange, at) = short_string(payload, 6)?;
            let (routing_key, at) = short_string(payload, at)?;
            let bits = *payload.get(at)?;
            if at + 1 != payload.len() {
                return None;
            }
            Some(AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            })))
        }
        ACK if payload.len() == 13 => Some(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: u64_at(payload, 4)?,
            multiple: payload[12] & 1 != 0,
        }))),
        _ => None,
    }
}

/// A content header whose only property, if any, is delivery-mode, from a
/// header frame's payload.
pub fn content_header(payload: &[u8]) -> Option<AMQPContentHeader> {
    let class_id = u16_at(payload, 0)?;
    let body_size = u64_at(payload, 4)?;
    let properties = match (u16_at(payload, 12)?, &payload[14..]) {
        (0, []) => BasicProperties::default(),
        (DELIVERY_MODE, [mode]) => BasicProperties::default().with_delivery_mode(*mode),
        _ => return None,
    };
    Some(AMQPContentHeader {
        class_id,
        body_size,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parsing::parse_content_header;
    use amq_protocol::protocol::parse_class;

    fn publish_payload(exchange: &[u8], key: &[u8], bits: u8) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 40, 0, 0, exchange.len() as u8];
        p.extend_from_slice(exchange);
        p.push(key.len() as u8);
        p.extend_from_slice(key);
        p.push(bits);
        p
    }

    #[test]
    fn agrees_with_amq_protocol_where_it_answers() {
        let mut payloads = vec![
            publish_payload(b"", b"q", 0),
            publish_payload(b"amq.topic", b"a.b.c", 3),
            publish_payload(b"x", &[b'k'; 255], 1),
            vec![0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 9, 1],
            vec![0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 9, 0],
        ];
        // Malformed: a short string running past the end, trailing octets,
        // invalid UTF-8, a truncated ack.
        let mut long = publish_payload(b"", b"q", 0);
        long.push(0);
        payloads.extend([
            vec![0, 60, 0, 40, 0, 0, 9, b'x'],
            long,
            publish_payload(&[0xff, 0xfe], b"q", 0),
            vec![0, 60, 0, 80, 0, 0, 0, 9],
        ]);
        for payload in payloads {
            let ours = method(&payload);
            let theirs = match parse_class(&payload[..]) {
                Ok(([], m)) => Some(m),
                _ => None,
            };
            if let Some(ours) = ours {
                assert_eq!(Some(ours), theirs, "{payload:?}");
            }
        }
        for payload in [
            vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0],
            vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0x10, 0, 2],
            vec![0, 50, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 1],
        ] {
            let ours = content_header(&payload).expect("recognised");
            let Ok(([], theirs)) = parse_content_header(&payload[..]) else {
                panic!("amq-protocol refuses {payload:?}")
            };
            assert_eq!(ours, theirs);
        }
        // Other properties, or octets left over: amq-protocol's to judge.
        assert!(content_header(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 1, b'a']).is_none());
        assert!(content_header(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 9]).is_none());
        assert!(content_header(&[0, 60, 0, 0]).is_none());
        assert!(method(&[0, 60]).is_none());
    }
}
