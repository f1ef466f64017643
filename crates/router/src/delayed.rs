//! The `x-delayed-message` exchange type, as the community plugin
//! (`rabbitmq-delayed-message-exchange`) and LavinMQ offer it: an exchange
//! that routes as its `x-delayed-type` does, but holds a message carrying a
//! positive `x-delay` header (milliseconds) until that much time has passed.
//! The router only tells which exchanges held a message ([`crate::Routing`]);
//! the server keeps it and routes it again, from the same exchange, when due.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::exchange::string_arg;
pub use crate::exchange::DELAYED_TYPE;
use crate::{ExchangeKind, RouterError};

/// The longest delay, as the plugin's: an Erlang timer's limit, 2^32 − 1 ms.
pub const MAX_DELAY: u64 = u32::MAX as u64;

/// The type an exchange.declare asks for: one of the four, or a delayed
/// exchange routing as its `x-delayed-type` argument says (true), refused
/// with the plugin's texts when that is missing or itself delayed.
pub fn parse_type(kind: &str, arguments: &FieldTable) -> Result<(ExchangeKind, bool), RouterError> {
    if kind != DELAYED_TYPE {
        return Ok((kind.parse()?, false));
    }
    match string_arg(arguments, "x-delayed-type") {
        Some(DELAYED_TYPE) => Err(RouterError::InvalidArgument(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".into(),
        )),
        Some(inner) => Ok((inner.parse()?, true)),
        None => Err(RouterError::InvalidArgument(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
        )),
    }
}

/// The delay a message asks for with its `x-delay` header, if it is one a
/// delayed exchange holds it for: more than 0 and at most [`MAX_DELAY`].
/// As the plugin reads it, an integer of any width counts, a string is read
/// as a decimal integer and a float is truncated; anything else means no
/// delay.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let delay: i64 = match headers?.inner().get("x-delay")? {
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => *i,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        AMQPValue::Float(f) => f.trunc() as i64,
        AMQPValue::Double(f) => f.trunc() as i64,
        _ => return None,
    };
    u64::try_from(delay).ok().filter(|d| (1..=MAX_DELAY).contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-delay".into(), value);
        t
    }

    #[test]
    fn the_delay_is_read_as_the_plugin_reads_it() {
        let delay = |v| delay_of(Some(&headers(v)));
        assert_eq!(delay(AMQPValue::LongInt(1500)), Some(1500));
        assert_eq!(delay(AMQPValue::ShortShortUInt(7)), Some(7));
        assert_eq!(delay(AMQPValue::LongString("250".into())), Some(250));
        assert_eq!(delay(AMQPValue::Double(99.9)), Some(99));
        assert_eq!(delay(AMQPValue::LongInt(0)), None);
        assert_eq!(delay(AMQPValue::LongInt(-5)), None);
        assert_eq!(delay(AMQPValue::LongLongInt(MAX_DELAY as i64 + 1)), None);
        assert_eq!(delay(AMQPValue::LongString("soon".into())), None);
        assert_eq!(delay(AMQPValue::Boolean(true)), None);
        assert_eq!(delay_of(None), None);
    }

    #[test]
    fn a_delayed_exchange_needs_an_existing_inner_type() {
        let args = |t: &str| {
            let mut a = FieldTable::default();
            a.insert("x-delayed-type".into(), AMQPValue::LongString(t.into()));
            a
        };
        assert_eq!(
            parse_type("topic", &FieldTable::default()),
            Ok((ExchangeKind::Topic, false))
        );
        assert_eq!(
            parse_type(DELAYED_TYPE, &args("fanout")),
            Ok((ExchangeKind::Fanout, true))
        );
        assert!(matches!(
            parse_type(DELAYED_TYPE, &FieldTable::default()),
            Err(RouterError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_type(DELAYED_TYPE, &args(DELAYED_TYPE)),
            Err(RouterError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_type(DELAYED_TYPE, &args("x-nope")),
            Err(RouterError::UnknownKind(_))
        ));
    }
}
