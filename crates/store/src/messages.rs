//! A message's bytes in the log: exchange, routing key, properties (as on
//! the wire), body length, body.

use warren_codec::amq_protocol::frame::WriteContext;
use warren_codec::amq_protocol::protocol::basic::{gen_properties, parse_properties};
use warren_codec::bytes::Bytes;
use warren_codec::Message;

use crate::definitions::{put_str, take_str};

/// Appends a message's encoding.
pub(crate) fn encode_into(message: &Message, out: &mut Vec<u8>) {
    put_str(message.exchange.as_str(), out);
    put_str(message.routing_key.as_str(), out);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let buf = std::mem::take(out);
    let (mut buf, _) = gen_properties(&message.properties)(WriteContext::from(buf))
        .expect("writing to a Vec cannot fail")
        .into_inner();
    let props_len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&props_len.to_be_bytes());
    *out = buf;
    out.extend_from_slice(&(message.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&message.body);
}

/// Rebuilds a message; None if anything is missing or malformed.
pub(crate) fn decode(bytes: &[u8]) -> Option<Message> {
    let (exchange, rest) = take_str(bytes)?;
    let (routing_key, rest) = take_str(rest)?;
    let props_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let (_, properties) = parse_properties(rest.get(4..4 + props_len)?).ok()?;
    let rest = &rest[4 + props_len..];
    let body_len = usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let body = rest.get(8..)?;
    if body.len() != body_len {
        return None;
    }
    Some(Message {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        properties: warren_codec::shared_properties(properties),
        body: Bytes::copy_from_slice(body),
    })
}

/// What a queue orders and expires a recovered message by: its `priority`
/// and `expiration` properties, read from the encoded message without
/// decoding it. Written by hand because `parse_properties` builds every
/// property (headers included) and recovery reads millions of messages for
/// these two. The property list is AMQP's (class basic): each present
/// property's bit is set in the flags, from bit 15 down.
pub(crate) fn scheduling(bytes: &[u8]) -> Option<(Option<u8>, Option<u64>)> {
    let (_, rest) = take_str(bytes)?;
    let (_, rest) = take_str(rest)?;
    let props_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let props = rest.get(4..4 + props_len)?;
    let flags = u16::from_be_bytes(props.get(..2)?.try_into().ok()?);
    let has = |bit: u16| flags & (1 << bit) != 0;
    let mut at = 2;
    let short_string = |at: &mut usize| -> Option<&[u8]> {
        let len = usize::from(*props.get(*at)?);
        let s = props.get(*at + 1..*at + 1 + len)?;
        *at += 1 + len;
        Some(s)
    };
    // content-type, content-encoding
    for bit in [15, 14] {
        if has(bit) {
            short_string(&mut at)?;
        }
    }
    // headers: a table, its length first.
    if has(13) {
        let len = u32::from_be_bytes(props.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4 + len;
    }
    // delivery-mode
    if has(12) {
        at += 1;
    }
    let priority = if has(11) {
        let p = *props.get(at)?;
        at += 1;
        Some(p)
    } else {
        None
    };
    // correlation-id, reply-to
    for bit in [10, 9] {
        if has(bit) {
            short_string(&mut at)?;
        }
    }
    let expiration = if has(8) {
        // One refused at publish never got here; damage reads as none.
        std::str::from_utf8(short_string(&mut at)?)
            .ok()
            .and_then(|text| warren_codec::expiration::parse(text).ok())
    } else {
        None
    };
    Some((priority, expiration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;

    #[test]
    fn the_scheduling_properties_are_read_without_decoding() {
        use warren_codec::amq_protocol::types::{AMQPValue, FieldTable};
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".into()));
        let full = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into());
        let cases = [
            (BasicProperties::default(), (None, None)),
            (BasicProperties::default().with_priority(3), (Some(3), None)),
            (
                BasicProperties::default()
                    .with_reply_to("r".into())
                    .with_expiration("5".into()),
                (None, Some(5)),
            ),
            (full, (Some(7), Some(60000))),
        ];
        for (properties, expected) in cases {
            let message = Message {
                exchange: "x".into(),
                routing_key: "k".into(),
                properties: properties.into(),
                body: Bytes::from_static(b"body"),
            };
            let mut out = Vec::new();
            encode_into(&message, &mut out);
            assert_eq!(scheduling(&out), Some(expected));
        }
    }

    #[test]
    fn messages_round_trip_and_a_short_one_is_refused() {
        for len in [0, 1, 1000, 200_000] {
            let message = Message {
                exchange: "x".into(),
                routing_key: "k".into(),
                properties: BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_priority(4)
                    .into(),
                body: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
            };
            let mut out = vec![9];
            encode_into(&message, &mut out);
            assert_eq!(decode(&out[1..]), Some(message));
            assert_eq!(decode(&out[1..out.len() - 1]), None);
        }
    }
}
