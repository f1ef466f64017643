//! Arguments tables as JSON, as RabbitMQ's management API writes and reads
//! them: strings, numbers, booleans, lists and nested tables.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use serde_json::{Map, Number, Value};

/// A field table as a JSON object.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(value: &AMQPValue) -> Value {
    use AMQPValue as V;
    match value {
        V::Boolean(b) => Value::Bool(*b),
        V::ShortShortInt(n) => Value::from(*n),
        V::ShortShortUInt(n) => Value::from(*n),
        V::ShortInt(n) => Value::from(*n),
        V::ShortUInt(n) => Value::from(*n),
        V::LongInt(n) => Value::from(*n),
        V::LongUInt(n) => Value::from(*n),
        V::LongLongInt(n) => Value::from(*n),
        V::Timestamp(n) => Value::from(*n),
        V::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        V::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        V::DecimalValue(d) => Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        V::ShortString(s) => Value::String(s.to_string()),
        V::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        V::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        V::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        V::FieldTable(t) => table_to_json(t),
        V::Void => Value::Null,
    }
}

/// A JSON object as a field table: strings become long strings, integers
/// long-long integers (as RabbitMQ's management API makes them), other
/// numbers doubles. Anything else than an object is refused, and so is a
/// table nested deeper than the codec takes over AMQP
/// ([`warren_codec::nesting::MAX_NESTING`]), so that the API cannot store
/// or deliver what Warren refuses from a client.
pub fn json_to_table(json: &Value) -> Result<FieldTable, String> {
    // serde_json stops parsing at 128 levels, which bounds this recursion.
    fn depth(json: &Value) -> usize {
        match json {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let max = warren_codec::nesting::MAX_NESTING;
    if depth(json) > max {
        return Err(format!("field table or array nested deeper than {max} levels"));
    }
    match json {
        Value::Null => Ok(FieldTable::default()),
        Value::Object(map) => Ok(object_to_table(map)),
        other => Err(format!("arguments must be an object, not {other}")),
    }
}

fn object_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(k.as_str().into(), json_to_value(v));
    }
    table
}

fn json_to_value(json: &Value) -> AMQPValue {
    match json {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => {
            let mut array = FieldArray::default();
            for item in items {
                array.push(json_to_value(item));
            }
            AMQPValue::FieldArray(array)
        }
        Value::Object(map) => AMQPValue::FieldTable(object_to_table(map)),
    }
}

/// Message properties as RabbitMQ's API writes them (only those set).
pub fn properties_to_json(p: &amq_protocol::protocol::BasicProperties) -> Value {
    let mut map = Map::new();
    let mut text = |key: &str, v: &Option<amq_protocol::types::ShortString>| {
        if let Some(v) = v {
            map.insert(key.to_owned(), Value::String(v.to_string()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    if let Some(h) = p.headers() {
        map.insert("headers".into(), table_to_json(h));
    }
    if let Some(m) = p.delivery_mode() {
        map.insert("delivery_mode".into(), Value::from(*m));
    }
    if let Some(pr) = p.priority() {
        map.insert("priority".into(), Value::from(*pr));
    }
    if let Some(t) = p.timestamp() {
        map.insert("timestamp".into(), Value::from(*t));
    }
    Value::Object(map)
}

/// Message properties from RabbitMQ's API JSON; an unknown property or a
/// value of the wrong type is refused, never dropped.
pub fn json_to_properties(json: &Value) -> Result<amq_protocol::protocol::BasicProperties, String> {
    let mut p = amq_protocol::protocol::BasicProperties::default();
    let Some(map) = json.as_object() else {
        return match json {
            Value::Null => Ok(p),
            other => Err(format!("properties must be an object, not {other}")),
        };
    };
    for (key, value) in map {
        let text = || {
            value
                .as_str()
                .map(|s| amq_protocol::types::ShortString::from(s.to_owned()))
                .ok_or_else(|| format!("property '{key}' must be a string"))
        };
        let number = |max: u64| {
            value
                .as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("property '{key}' must be a number up to {max}"))
        };
        p = match key.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "headers" => p.with_headers(json_to_table(value)?),
            "delivery_mode" => p.with_delivery_mode(number(2)? as u8),
            "priority" => p.with_priority(number(255)? as u8),
            "timestamp" => p.with_timestamp(number(u64::MAX)?),
            other => return Err(format!("unknown property '{other}'")),
        };
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_nested_deeper_than_amqp_takes_are_refused() {
        let nest = |levels: usize| {
            (0..levels).fold(serde_json::json!(1), |inner, _| serde_json::json!({ "k": inner }))
        };
        assert!(json_to_table(&nest(100)).is_ok());
        let refused = json_to_table(&nest(101)).unwrap_err();
        assert_eq!(refused, "field table or array nested deeper than 100 levels");
    }

    #[test]
    fn arguments_round_trip() {
        let json = serde_json::json!({
            "x-max-length": 10,
            "x-dead-letter-exchange": "dlx",
            "x-single-active-consumer": true,
            "ratio": 0.5,
            "list": ["a", 1],
            "nested": {"k": "v"}
        });
        let table = json_to_table(&json).unwrap();
        assert_eq!(
            table.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(table_to_json(&table), json);
        assert!(json_to_table(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn properties_round_trip_and_unknown_ones_are_refused() {
        let json = serde_json::json!({
            "delivery_mode": 2, "priority": 5, "headers": {"n": 1}, "correlation_id": "c",
            "type": "t", "timestamp": 7, "content_type": "text/plain"
        });
        assert_eq!(properties_to_json(&json_to_properties(&json).unwrap()), json);
        assert!(json_to_properties(&serde_json::json!({"colour": "red"})).is_err());
        assert!(json_to_properties(&serde_json::json!({"delivery_mode": 3})).is_err());
        assert!(json_to_properties(&serde_json::json!({"priority": "high"})).is_err());
    }
}
