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
/// numbers doubles. Anything else than an object is refused.
pub fn json_to_table(json: &Value) -> Result<FieldTable, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
