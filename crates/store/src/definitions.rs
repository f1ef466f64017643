//! Durable definitions and their byte encodings. Field tables are encoded
//! with amq-protocol's own generator and parser, as on the wire.

use warren_codec::amq_protocol::frame::WriteContext;
use warren_codec::amq_protocol::types::generation::gen_field_table;
use warren_codec::amq_protocol::types::parsing::parse_field_table;
use warren_codec::amq_protocol::types::FieldTable;

/// A durable exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDef {
    /// Its virtual host.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Its type (`direct`, `fanout`, `topic`, `headers`).
    pub kind: String,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDef {
    /// Its virtual host.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Its number in the message log, where every message names the queues
    /// that hold it. Given once and never reused, so that a message left in
    /// the log by a deleted queue is never taken for a new queue's.
    pub id: u64,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A user, as RabbitMQ's definitions describe one: the password hash is
/// RabbitMQ's `rabbit_password_hashing_sha256` form, base64 of a 4-octet
/// salt followed by SHA-256(salt ++ password), so that users exported from
/// RabbitMQ can be imported as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDef {
    /// Its name.
    pub name: String,
    /// base64(salt ++ SHA-256(salt ++ password)).
    pub password_hash: String,
    /// Its tags: `administrator`, `monitoring`, `management`, or others.
    pub tags: Vec<String>,
}

/// A user's permissions in a virtual host, as RabbitMQ's definitions give
/// them: three regular expressions matched against the names of the
/// resources the user configures, writes to and reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionDef {
    /// The user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// Declare and delete.
    pub configure: String,
    /// Publish to, bind to.
    pub write: String,
    /// Consume, get, purge, bind from.
    pub read: String,
}

/// A user's topic permissions on one topic exchange of a virtual host:
/// regular expressions matched against routing keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPermissionDef {
    /// The user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// The topic exchange.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Binding keys the user may bind queues with.
    pub read: String,
}

/// What a durable binding points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationKind {
    /// queue.bind
    Queue,
    /// exchange.bind
    Exchange,
}

/// A binding between durable things.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingDef {
    /// The virtual host of both ends.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Queue or exchange.
    pub destination_kind: DestinationKind,
    /// Destination name.
    pub destination: String,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// The virtual host every store had before there were several.
pub const DEFAULT_VHOST: &str = "/";

/// The key under which `rest` (a name, or a binding's key) is kept for
/// `vhost`. For `/` it is `rest` itself, as in a store written before
/// virtual hosts; for another, 0xFF (never the first octet of a UTF-8 name,
/// nor of a binding key, which starts with a length below 2^24), the
/// vhost's name with its length, then `rest`.
pub(crate) fn scoped(vhost: &str, rest: &[u8]) -> Vec<u8> {
    if vhost == DEFAULT_VHOST {
        return rest.to_vec();
    }
    let mut key = vec![0xFF];
    put_str(vhost, &mut key);
    key.extend_from_slice(rest);
    key
}

/// The virtual host of a key and the rest of it ([`scoped`]'s inverse).
pub(crate) fn unscoped(key: &[u8]) -> Option<(String, &[u8])> {
    match key.split_first() {
        Some((0xFF, rest)) => take_str(rest),
        _ => Some((DEFAULT_VHOST.to_owned(), key)),
    }
}

pub(crate) fn encode_table(table: &FieldTable, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    let (buf, _) = gen_field_table(table)(WriteContext::from(buf))
        .expect("writing to a Vec cannot fail")
        .into_inner();
    *out = buf;
}

pub(crate) fn decode_table(bytes: &[u8]) -> Option<(FieldTable, &[u8])> {
    parse_field_table(bytes).ok().map(|(rest, t)| (t, rest))
}

pub(crate) fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?.to_owned();
    Some((s, &bytes[4 + len..]))
}

impl UserDef {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&self.password_hash, &mut out);
        out.extend_from_slice(&(self.tags.len() as u32).to_be_bytes());
        for tag in &self.tags {
            put_str(tag, &mut out);
        }
        out
    }

    pub(crate) fn decode(name: &str, bytes: &[u8]) -> Option<Self> {
        let (password_hash, rest) = take_str(bytes)?;
        let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let mut rest = &rest[4..];
        let mut tags = Vec::new();
        for _ in 0..count {
            let (tag, after) = take_str(rest)?;
            tags.push(tag);
            rest = after;
        }
        Some(Self {
            name: name.to_owned(),
            password_hash,
            tags,
        })
    }
}

/// The key of a user's permissions in a virtual host.
pub(crate) fn permission_key(user: &str, vhost: &str) -> Vec<u8> {
    let mut key = Vec::new();
    put_str(user, &mut key);
    put_str(vhost, &mut key);
    key
}

impl PermissionDef {
    pub(crate) fn key(&self) -> Vec<u8> {
        permission_key(&self.user, &self.vhost)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for pattern in [&self.configure, &self.write, &self.read] {
            put_str(pattern, &mut out);
        }
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Option<Self> {
        let (user, rest) = take_str(key)?;
        let (vhost, _) = take_str(rest)?;
        let (configure, rest) = take_str(bytes)?;
        let (write, rest) = take_str(rest)?;
        let (read, _) = take_str(rest)?;
        Some(Self {
            user,
            vhost,
            configure,
            write,
            read,
        })
    }
}

impl TopicPermissionDef {
    pub(crate) fn key(&self) -> Vec<u8> {
        let mut key = permission_key(&self.user, &self.vhost);
        put_str(&self.exchange, &mut key);
        key
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&self.write, &mut out);
        put_str(&self.read, &mut out);
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Option<Self> {
        let (user, rest) = take_str(key)?;
        let (vhost, rest) = take_str(rest)?;
        let (exchange, _) = take_str(rest)?;
        let (write, rest) = take_str(bytes)?;
        let (read, _) = take_str(rest)?;
        Some(Self {
            user,
            vhost,
            exchange,
            write,
            read,
        })
    }
}

impl ExchangeDef {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&self.kind, &mut out);
        out.push(u8::from(self.auto_delete) | u8::from(self.internal) << 1);
        encode_table(&self.arguments, &mut out);
        out
    }

    pub(crate) fn key(&self) -> Vec<u8> {
        scoped(&self.vhost, self.name.as_bytes())
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Option<Self> {
        let (vhost, name) = unscoped(key)?;
        let name = String::from_utf8_lossy(name);
        let (kind, rest) = take_str(bytes)?;
        let (&flags, rest) = rest.split_first()?;
        let (arguments, _) = decode_table(rest)?;
        Some(Self {
            vhost,
            name: name.into_owned(),
            kind,
            auto_delete: flags & 1 != 0,
            internal: flags & 2 != 0,
            arguments,
        })
    }
}

impl QueueDef {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.id.to_be_bytes().to_vec();
        out.push(u8::from(self.auto_delete));
        encode_table(&self.arguments, &mut out);
        out
    }

    pub(crate) fn key(&self) -> Vec<u8> {
        scoped(&self.vhost, self.name.as_bytes())
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Option<Self> {
        let (vhost, name) = unscoped(key)?;
        let name = String::from_utf8_lossy(name);
        let id = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let (&flags, rest) = bytes[8..].split_first()?;
        let (arguments, _) = decode_table(rest)?;
        Some(Self {
            vhost,
            name: name.into_owned(),
            id,
            auto_delete: flags & 1 != 0,
            arguments,
        })
    }
}

impl BindingDef {
    /// The whole binding is the key: two bindings differing in any field are
    /// two bindings.
    pub(crate) fn key(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&self.source, &mut out);
        out.push(match self.destination_kind {
            DestinationKind::Queue => b'q',
            DestinationKind::Exchange => b'x',
        });
        put_str(&self.destination, &mut out);
        put_str(&self.routing_key, &mut out);
        encode_table(&self.arguments, &mut out);
        scoped(&self.vhost, &out)
    }

    pub(crate) fn decode(key: &[u8]) -> Option<Self> {
        let (vhost, bytes) = unscoped(key)?;
        let (source, rest) = take_str(bytes)?;
        let (&kind, rest) = rest.split_first()?;
        let destination_kind = match kind {
            b'q' => DestinationKind::Queue,
            b'x' => DestinationKind::Exchange,
            _ => return None,
        };
        let (destination, rest) = take_str(rest)?;
        let (routing_key, rest) = take_str(rest)?;
        let (arguments, _) = decode_table(rest)?;
        Some(Self {
            vhost,
            source,
            destination_kind,
            destination,
            routing_key,
            arguments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::amq_protocol::types::AMQPValue;

    #[test]
    fn definitions_round_trip_in_every_vhost() {
        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), AMQPValue::LongString("ae".into()));
        for vhost in [DEFAULT_VHOST, "orders", ""] {
            let x = ExchangeDef {
                vhost: vhost.into(),
                name: "x".into(),
                kind: "topic".into(),
                auto_delete: false,
                internal: true,
                arguments: args.clone(),
            };
            assert_eq!(ExchangeDef::decode(&x.key(), &x.encode()), Some(x));
            let q = QueueDef {
                vhost: vhost.into(),
                name: "q".into(),
                id: 7,
                auto_delete: true,
                arguments: args.clone(),
            };
            assert_eq!(QueueDef::decode(&q.key(), &q.encode()), Some(q));
            let b = BindingDef {
                vhost: vhost.into(),
                source: "x".into(),
                destination_kind: DestinationKind::Queue,
                destination: "q".into(),
                routing_key: "a.#".into(),
                arguments: args.clone(),
            };
            assert_eq!(BindingDef::decode(&b.key()), Some(b));
            assert_eq!(ExchangeDef::decode(b"x", &[1, 2]), None);
        }
        for vhost in [DEFAULT_VHOST, "orders"] {
            let p = PermissionDef {
                user: "u".into(),
                vhost: vhost.into(),
                configure: "^a".into(),
                write: "".into(),
                read: ".*".into(),
            };
            assert_eq!(PermissionDef::decode(&p.key(), &p.encode()), Some(p));
            let t = TopicPermissionDef {
                user: "u".into(),
                vhost: vhost.into(),
                exchange: "amq.topic".into(),
                write: "^{username}".into(),
                read: "".into(),
            };
            assert_eq!(TopicPermissionDef::decode(&t.key(), &t.encode()), Some(t));
        }
        // A key of a store from before virtual hosts is `/`'s.
        assert_eq!(unscoped(b"q"), Some((DEFAULT_VHOST.to_owned(), &b"q"[..])));
        assert_ne!(scoped("orders", b"q"), scoped(DEFAULT_VHOST, b"q"));
    }
}
