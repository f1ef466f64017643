//! Reading the typed values of an arguments table (queue.declare's,
//! basic.consume's, exchange.declare's), refusing a value of the wrong type
//! with RabbitMQ's texts: the one reader every argument parser uses
//! (`queue::args`, `dedup`).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::AmqpError;

/// An arguments table, and how a refusal is worded for its owner
/// (RabbitMQ's `invalid arg 'K' for queue 'Q' in vhost 'V': …`, say).
pub(crate) struct Arguments<'a, F> {
    table: &'a FieldTable,
    invalid: F,
}

impl<'a, F: Fn(&str, String) -> AmqpError> Arguments<'a, F> {
    pub fn new(table: &'a FieldTable, invalid: F) -> Self {
        Self { table, invalid }
    }

    /// The refusal of `key`'s value, for `why`.
    pub fn invalid(&self, key: &str, why: String) -> AmqpError {
        (self.invalid)(key, why)
    }

    pub fn get(&self, key: &str) -> Option<&'a AMQPValue> {
        self.table.inner().get(key)
    }

    /// An integer of any width.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, AmqpError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        as_integer(value)
            .map(Some)
            .ok_or_else(|| self.invalid(key, format!("\"expected integer, got {}\"", type_name(value))))
    }

    /// An integer of any width, 0 or more.
    pub fn non_negative(&self, key: &str) -> Result<Option<u64>, AmqpError> {
        match self.integer(key)? {
            Some(n) if n < 0 => Err(self.invalid(key, format!("{{value_negative,{n}}}"))),
            n => Ok(n.map(|n| n as u64)),
        }
    }

    /// A long or short string.
    pub fn string(&self, key: &str) -> Result<Option<String>, AmqpError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        as_string(value)
            .map(Some)
            .ok_or_else(|| self.invalid(key, format!("{{unacceptable_type,{}}}", type_name(value))))
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, AmqpError> {
        match self.get(key) {
            None => Ok(None),
            Some(AMQPValue::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.invalid(key, format!("{{unacceptable_type,{}}}", type_name(other)))),
        }
    }
}

/// An integer field value of any width, as RabbitMQ takes them.
pub(crate) fn as_integer(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(i) => i.into(),
        AMQPValue::ShortShortUInt(i) => i.into(),
        AMQPValue::ShortInt(i) => i.into(),
        AMQPValue::ShortUInt(i) => i.into(),
        AMQPValue::LongInt(i) => i.into(),
        AMQPValue::LongUInt(i) => i.into(),
        AMQPValue::LongLongInt(i) => i,
        _ => return None,
    })
}

/// A long or short string field value.
pub(crate) fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A field value's type, in RabbitMQ's words.
pub(crate) fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => "byte",
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => "short",
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) => "signedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        _ => "unknown",
    }
}
