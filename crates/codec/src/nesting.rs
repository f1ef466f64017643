//! A bound on how deeply field tables and arrays nest, checked before
//! amq-protocol parses a payload.
//!
//! amq-protocol's parser recurses once per nested table or array (and so do
//! the encoder, `Clone` and `Drop` of the values it builds): a payload nested a
//! few thousand levels deep overflows a thread's stack, and a stack overflow
//! aborts the whole process. This module walks the bytes with an explicit
//! stack instead, and the codec refuses any payload nested deeper than
//! [`MAX_NESTING`] before the recursive parser sees it.
//!
//! The walk follows the encoding exactly as amq-protocol reads it (the type
//! letters of `AMQPType::from_id`). Where the bytes are malformed or truncated
//! it stops and says nothing: the real parser then refuses them.

/// The deepest nesting of field tables and arrays accepted, the outermost
/// table counting as 1. RabbitMQ has no such limit; no client library nests
/// headers or arguments more than a few levels, and this depth costs a few
/// hundred KiB of stack at most in a debug build.
pub const MAX_NESTING: usize = 100;

/// The walk found a table or array nested deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

/// Octets of a scalar value of this type letter, or None for the
/// variable-length and unknown ones.
fn scalar_len(kind: u8) -> Option<usize> {
    Some(match kind {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'L' | b'l' | b'd' | b'T' => 8,
        _ => return None,
    })
}

fn read_u32(buf: &[u8], at: usize) -> Option<usize> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?) as usize)
}

/// Checks the field table that starts at `buf[0]` (its 4-octet length
/// first). Runs in time linear in `buf.len()` and constant stack.
pub fn check_table(buf: &[u8], max: usize) -> Result<(), TooDeep> {
    // Each level: where its content ends, and whether its entries are named
    // (a table) or bare values (an array).
    let mut open: Vec<(usize, bool)> = Vec::new();
    let Some(len) = read_u32(buf, 0) else {
        return Ok(());
    };
    open.push((4usize.saturating_add(len), true));
    let mut at = 4usize;
    while let Some(&(end, named)) = open.last() {
        if at >= end {
            open.pop();
            at = end;
            continue;
        }
        if named {
            let Some(&name_len) = buf.get(at) else {
                return Ok(());
            };
            at += 1 + usize::from(name_len);
        }
        let Some(&kind) = buf.get(at) else {
            return Ok(());
        };
        at += 1;
        match kind {
            b'F' | b'A' => {
                let Some(len) = read_u32(buf, at) else {
                    return Ok(());
                };
                if open.len() >= max {
                    return Err(TooDeep);
                }
                at += 4;
                open.push((at.saturating_add(len), kind == b'F'));
            }
            b'S' | b'x' => {
                let Some(len) = read_u32(buf, at) else {
                    return Ok(());
                };
                at = at.saturating_add(4).saturating_add(len);
            }
            other => match scalar_len(other) {
                Some(n) => at += n,
                None => return Ok(()),
            },
        }
        if at > buf.len() {
            return Ok(());
        }
    }
    Ok(())
}

/// The octets before the one field table of a method's arguments, as a list
/// of `o` (octet), `s` (short) and `S` (short string); None for methods
/// without a table. Covers every method amq-protocol parses with a table,
/// server-only ones included, since a client may send those too.
fn args_before_table(class_id: u16, method_id: u16) -> Option<&'static [u8]> {
    Some(match (class_id, method_id) {
        (10, 10) => b"oo",    // connection.start: version-major, version-minor
        (10, 11) => b"",      // connection.start-ok: client-properties
        (40, 10) => b"sSSo",  // exchange.declare: ticket, exchange, type, bits
        (40, 30) => b"sSSSo", // exchange.bind: ticket, destination, source, key, nowait
        (40, 40) => b"sSSSo", // exchange.unbind
        (50, 10) => b"sSo",   // queue.declare: ticket, queue, bits
        (50, 20) => b"sSSSo", // queue.bind: ticket, queue, exchange, key, nowait
        (50, 50) => b"sSSS",  // queue.unbind: ticket, queue, exchange, key
        (60, 20) => b"sSSo",  // basic.consume: ticket, queue, tag, bits
        _ => return None,
    })
}

fn skip(buf: &[u8], mut at: usize, layout: &[u8]) -> Option<usize> {
    for field in layout {
        at += match field {
            b'o' => 1,
            b's' => 2,
            _ => 1 + usize::from(*buf.get(at)?),
        };
    }
    (at <= buf.len()).then_some(at)
}

/// Checks the field table of a method frame's payload, if it has one.
pub fn check_method(payload: &[u8], max: usize) -> Result<(), TooDeep> {
    let (Some(class), Some(method)) = (payload.get(0..2), payload.get(2..4)) else {
        return Ok(());
    };
    let ids = (
        u16::from_be_bytes([class[0], class[1]]),
        u16::from_be_bytes([method[0], method[1]]),
    );
    let Some(layout) = args_before_table(ids.0, ids.1) else {
        return Ok(());
    };
    match skip(payload, 4, layout) {
        Some(at) => check_table(&payload[at..], max),
        None => Ok(()),
    }
}

/// Checks the `headers` property of a content header frame's payload.
pub fn check_content_header(payload: &[u8], max: usize) -> Result<(), TooDeep> {
    // class (2), weight (2), body size (8), property flags (2).
    let Some(flags) = payload.get(12..14) else {
        return Ok(());
    };
    let flags = u16::from_be_bytes([flags[0], flags[1]]);
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    // content-type and content-encoding, short strings, come first.
    let before: &[u8] = match (flags & (1 << 15) != 0, flags & (1 << 14) != 0) {
        (true, true) => b"SS",
        (true, false) | (false, true) => b"S",
        (false, false) => b"",
    };
    match skip(payload, 14, before) {
        Some(at) => check_table(&payload[at..], max),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    /// A table nested `depth` levels deep, alternating tables and arrays.
    fn nested(depth: usize) -> FieldTable {
        let mut value = AMQPValue::LongString("leaf".into());
        for level in 1..depth {
            value = if level % 2 == 0 {
                let mut t = FieldTable::default();
                t.insert("k".into(), value);
                AMQPValue::FieldTable(t)
            } else {
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true), value]))
            };
        }
        let mut top = FieldTable::default();
        top.insert("a".into(), AMQPValue::LongLongInt(1));
        top.insert("z".into(), value);
        top
    }

    fn encode(table: &FieldTable) -> Vec<u8> {
        let (bytes, _) = gen_field_table(table)(Vec::new().into()).unwrap().into_inner();
        bytes
    }

    #[test]
    fn measures_depth_exactly() {
        for depth in [1, 2, 3, 10, 99, 100] {
            assert_eq!(check_table(&encode(&nested(depth)), 100), Ok(()), "{depth}");
        }
        for depth in [101, 102, 150] {
            assert_eq!(check_table(&encode(&nested(depth)), 100), Err(TooDeep), "{depth}");
        }
    }

    #[test]
    fn malformed_input_is_left_to_the_parser() {
        let bytes = encode(&nested(50));
        for cut in 0..bytes.len() {
            assert_eq!(check_table(&bytes[..cut], 100), Ok(()));
        }
        assert_eq!(check_table(&[0, 0, 0, 3, 1, b'k', b'?'], 100), Ok(()));
        assert_eq!(check_table(&[0xff, 0xff, 0xff, 0xff, 0, b'F'], 100), Ok(()));
    }

    #[test]
    fn flat_tables_with_every_scalar_pass() {
        let mut t = FieldTable::default();
        for (i, v) in [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(1),
            AMQPValue::ShortInt(2),
            AMQPValue::LongUInt(3),
            AMQPValue::LongLongInt(4),
            AMQPValue::Float(1.0),
            AMQPValue::Double(2.0),
            AMQPValue::Timestamp(5),
            AMQPValue::ByteArray(vec![1u8, 2, 3].into()),
            AMQPValue::Void,
            AMQPValue::LongString("x".into()),
        ]
        .into_iter()
        .enumerate()
        {
            t.insert(format!("k{i}").into(), v);
        }
        assert_eq!(check_table(&encode(&t), 1), Ok(()));
    }
}
