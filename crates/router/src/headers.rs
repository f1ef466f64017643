//! Headers-exchange matching, as RabbitMQ does it.
//!
//! The binding's `x-match` argument chooses the rule: `all` (the default) needs
//! every binding argument to be present in the message headers with an equal
//! value, `any` needs one. Binding arguments whose names start with `x-` take
//! no part unless the rule is `all-with-x` or `any-with-x`. A binding argument
//! of type void matches on the header's presence alone.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::RouterError;

/// The `x-match` rule of a headers binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XMatch {
    /// Every argument must match.
    All,
    /// At least one argument must match.
    Any,
    /// Like `All`, counting `x-` arguments too.
    AllWithX,
    /// Like `Any`, counting `x-` arguments too.
    AnyWithX,
}

/// Reads and validates the `x-match` argument of a headers binding.
pub fn x_match(arguments: &FieldTable) -> Result<XMatch, RouterError> {
    let value = match arguments.inner().get("x-match") {
        None => return Ok(XMatch::All),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(other) => {
            return Err(RouterError::InvalidArgument(format!(
                "Invalid x-match field type {:?}; expected longstr",
                other.get_type()
            )))
        }
    };
    match value.as_str() {
        "all" => Ok(XMatch::All),
        "any" => Ok(XMatch::Any),
        "all-with-x" => Ok(XMatch::AllWithX),
        "any-with-x" => Ok(XMatch::AnyWithX),
        other => Err(RouterError::InvalidArgument(format!(
            "Invalid x-match field value <<\"{other}\">>; expected all, any, all-with-x, or any-with-x"
        ))),
    }
}

/// Whether a message with `headers` matches a binding with `arguments`.
pub fn matches(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    // Invalid x-match values are refused at bind time, so this never falls back.
    let rule = x_match(arguments).unwrap_or(XMatch::All);
    let with_x = matches!(rule, XMatch::AllWithX | XMatch::AnyWithX);
    let mut rules = arguments
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let hit = |(key, want): (&amq_protocol::types::ShortString, &AMQPValue)| match headers
        .and_then(|h| h.inner().get(key.as_str()))
    {
        None => false,
        Some(_) if matches!(want, AMQPValue::Void) => true,
        Some(got) => values_equal(want, got),
    };
    match rule {
        XMatch::All | XMatch::AllWithX => rules.all(hit),
        XMatch::Any | XMatch::AnyWithX => rules.any(hit),
    }
}

/// RabbitMQ compares header values, not their wire types: a 16-bit 1 equals a
/// 64-bit 1, and a short string equals a long string with the same bytes.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => return x == y,
        (Some(_), None) | (None, Some(_)) => return false,
        (None, None) => {}
    }
    match (bytes(a), bytes(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn integer(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i.into(),
        AMQPValue::ShortShortUInt(i) => i.into(),
        AMQPValue::ShortInt(i) => i.into(),
        AMQPValue::ShortUInt(i) => i.into(),
        AMQPValue::LongInt(i) => i.into(),
        AMQPValue::LongUInt(i) => i.into(),
        AMQPValue::LongLongInt(i) => i.into(),
        AMQPValue::Timestamp(i) => i.into(),
        _ => return None,
    })
}

fn bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn table_driven() {
        let msg = table(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("n", AMQPValue::LongInt(3)),
        ]);
        let cases: Vec<(FieldTable, bool)> = vec![
            (table(&[("format", s("pdf"))]), true),
            (table(&[("format", s("pdf")), ("type", s("log"))]), false),
            (
                table(&[("x-match", s("any")), ("format", s("zip")), ("type", s("report"))]),
                true,
            ),
            (table(&[("x-match", s("any")), ("format", s("zip"))]), false),
            (table(&[("n", AMQPValue::ShortShortUInt(3))]), true),
            (table(&[("n", s("3"))]), false),
            (table(&[("format", AMQPValue::Void)]), true),
            (table(&[("missing", AMQPValue::Void)]), false),
            (table(&[]), true),
            (table(&[("x-match", s("any"))]), false),
            (table(&[("x-custom", s("1")), ("format", s("pdf"))]), true),
            (
                table(&[("x-match", s("all-with-x")), ("x-custom", s("1"))]),
                false,
            ),
            (
                table(&[
                    ("x-match", s("any-with-x")),
                    ("x-custom", s("1")),
                    ("type", s("report")),
                ]),
                true,
            ),
            (table(&[("format", AMQPValue::ShortString("pdf".into()))]), true),
        ];
        for (args, want) in cases {
            assert_eq!(matches(&args, Some(&msg)), want, "{args:?}");
        }
        assert!(!matches(&table(&[("format", s("pdf"))]), None));
    }

    #[test]
    fn x_match_is_validated() {
        assert!(x_match(&table(&[("x-match", s("some"))])).is_err());
        assert!(x_match(&table(&[("x-match", AMQPValue::LongInt(1))])).is_err());
        assert_eq!(x_match(&table(&[])).unwrap(), XMatch::All);
    }
}
