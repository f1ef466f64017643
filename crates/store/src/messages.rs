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

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::protocol::BasicProperties;

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
