//! Message deduplication, as LavinMQ offers it (and, with the same names,
//! the `rabbitmq-message-deduplication` plugin): a queue or an exchange
//! declared with `x-message-deduplication: true` remembers the value of each
//! message's deduplication header, and drops a later message that carries a
//! value it remembers. A publisher that sends again after a lost confirm
//! (its connection dropped before the ack arrived) gets no second copy.
//!
//! Arguments, on the queue or the exchange:
//! - `x-deduplication-header`: the header that carries the key
//!   (`x-deduplication-header` itself by default);
//! - `x-cache-size`: how many keys are remembered (128 by default); past it,
//!   the oldest is forgotten first;
//! - `x-cache-ttl`: how long a key is remembered, in milliseconds (until
//!   pushed out, by default). A message's own `x-cache-ttl` header
//!   overrides it.
//!
//! A message without the header is never a duplicate. A duplicate is
//! dropped as if delivered: a confirming publisher gets basic.ack, and a
//! mandatory one no basic.return, since the message did arrive once. The
//! cache is in memory: a restart forgets it (as LavinMQ's), so a publisher
//! that sends again after the broker itself restarted can cause a
//! duplicate.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use warren_codec::Message;

use crate::arguments::{as_integer, Arguments};

/// The default header, and the default number of keys kept (LavinMQ's).
const DEFAULT_HEADER: &str = "x-deduplication-header";
const DEFAULT_SIZE: u64 = 128;

/// What a `x-message-deduplication` queue or exchange was declared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupArgs {
    /// The header that carries the key.
    pub header: String,
    /// Keys kept at most.
    pub size: u64,
    /// How long a key is kept, in milliseconds; None until pushed out.
    pub ttl: Option<u64>,
}

impl DedupArgs {
    /// Reads `args`: None unless `x-message-deduplication` is true.
    pub(crate) fn parse<F>(args: &Arguments<'_, F>) -> Result<Option<Self>, crate::AmqpError>
    where
        F: Fn(&str, String) -> crate::AmqpError,
    {
        let size = args.non_negative("x-cache-size")?;
        let ttl = args.non_negative("x-cache-ttl")?;
        let header = args.string("x-deduplication-header")?;
        Ok(args
            .boolean("x-message-deduplication")?
            .filter(|&on| on)
            .map(|_| Self {
                header: header.unwrap_or_else(|| DEFAULT_HEADER.to_owned()),
                size: size.unwrap_or(DEFAULT_SIZE),
                ttl,
            }))
    }
}

/// The keys seen, each until it expires or is pushed out.
#[derive(Debug)]
pub struct Deduplicator {
    args: DedupArgs,
    /// Key → when it is forgotten (None: when pushed out), and the
    /// generation it was remembered in.
    seen: HashMap<String, (Option<Instant>, u64)>,
    /// Keys in the order they were remembered, oldest first, with their
    /// generation: an entry whose key was remembered again since is stale,
    /// and skipped.
    order: VecDeque<(String, u64)>,
    generation: u64,
}

impl Deduplicator {
    pub fn new(args: DedupArgs) -> Self {
        Self {
            args,
            seen: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
        }
    }

    /// The message's key: the value of its deduplication header, with its
    /// type (1 and "1" are different keys). A message without one is never
    /// a duplicate.
    pub fn key(&self, message: &Message) -> Option<String> {
        let headers = message.properties.headers().as_ref()?;
        let value = headers.inner().get(self.args.header.as_str())?;
        Some(format!("{value:?}"))
    }

    /// Whether `key` was remembered and not yet forgotten.
    pub fn is_duplicate(&self, key: &str) -> bool {
        self.seen
            .get(key)
            .is_some_and(|(until, _)| until.is_none_or(|until| until > Instant::now()))
    }

    /// Whether `message` is a duplicate; if not, its key is remembered (for
    /// a message taken as it is checked, as by an exchange).
    pub fn admit(&mut self, message: &Message) -> bool {
        let Some(key) = self.key(message) else {
            return false;
        };
        let duplicate = self.is_duplicate(&key);
        if !duplicate {
            self.remember(key, message);
        }
        duplicate
    }

    /// Remembers `key`, `message`'s: called once the message is taken (not
    /// for one a full queue refused, whose publisher will send it again).
    pub fn remember(&mut self, key: String, message: &Message) {
        if self.args.size == 0 {
            return;
        }
        let now = Instant::now();
        self.forget_expired(now);
        let ttl = message
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-cache-ttl"))
            .and_then(as_integer)
            .and_then(|n| u64::try_from(n).ok())
            .or(self.args.ttl);
        self.generation += 1;
        // A TTL past the clock's range is forever.
        let until = ttl.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
        self.seen.insert(key.clone(), (until, self.generation));
        self.order.push_back((key, self.generation));
        while self.seen.len() as u64 > self.args.size {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&oldest).is_some_and(|&(_, g)| g == generation) {
                self.seen.remove(&oldest);
            }
        }
        // Stale entries behind a live one at the front: dropped once they
        // outnumber the live keys, so the order stays within twice the keys.
        if self.order.len() > 2 * self.seen.len() + 64 {
            let seen = &self.seen;
            self.order
                .retain(|(key, generation)| seen.get(key).is_some_and(|&(_, g)| g == *generation));
        }
    }

    /// Forgets the expired keys at the front of the order, so that keys with
    /// a TTL do not stay in memory until pushed out.
    fn forget_expired(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.front() {
            match self.seen.get(key) {
                Some(&(Some(until), g)) if g == *generation && until <= now => {
                    self.seen.remove(key);
                }
                Some(&(_, g)) if g == *generation => break,
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use std::sync::Arc;

    fn message(key: AMQPValue, ttl: Option<i64>) -> Message {
        let mut headers = FieldTable::default();
        headers.insert("x-deduplication-header".into(), key);
        if let Some(ttl) = ttl {
            headers.insert("x-cache-ttl".into(), AMQPValue::LongLongInt(ttl));
        }
        Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Arc::new(BasicProperties::default().with_headers(headers)),
            body: Default::default(),
        }
    }

    fn dedup(size: u64, ttl: Option<u64>) -> Deduplicator {
        Deduplicator::new(DedupArgs {
            header: DEFAULT_HEADER.into(),
            size,
            ttl,
        })
    }

    #[test]
    fn a_key_seen_is_a_duplicate_until_pushed_out() {
        let mut d = dedup(2, None);
        let key = |s: &str| AMQPValue::LongString(s.into());
        assert!(!d.admit(&message(key("a"), None)));
        assert!(d.admit(&message(key("a"), None)));
        // 1 and "1" differ.
        assert!(!d.admit(&message(AMQPValue::LongInt(1), None)));
        assert!(!d.admit(&message(key("1"), None)));
        // Three keys in a cache of two: "a", the oldest, is gone.
        assert!(!d.admit(&message(key("a"), None)));
        assert_eq!(d.seen.len(), 2);
        // Not remembered (a full queue refused it): not a duplicate.
        assert!(!d.is_duplicate(&d.key(&message(key("b"), None)).unwrap()));
        assert!(!d.admit(&message(key("b"), None)));
    }

    #[test]
    fn a_ttl_past_the_clocks_range_means_forever() {
        let mut d = dedup(10, Some(u64::MAX));
        let key = AMQPValue::LongString("k".into());
        assert!(!d.admit(&message(key.clone(), Some(i64::MAX))));
        assert!(d.admit(&message(key, None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_forgotten_after_its_ttl_and_its_memory_freed() {
        let mut d = dedup(1_000_000, Some(1000));
        let key = AMQPValue::LongString("k".into());
        assert!(!d.admit(&message(key.clone(), None)));
        assert!(!d.admit(&message(AMQPValue::LongString("short".into()), Some(10))));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(d.admit(&message(key.clone(), None)));
        assert!(!d.admit(&message(AMQPValue::LongString("short".into()), None)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!d.admit(&message(key, None)));
        // Keys that expire leave memory as new ones come, however large
        // the cache may grow.
        for i in 0..10_000 {
            d.admit(&message(AMQPValue::LongString(format!("{i}").into()), Some(1)));
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        assert!(d.seen.len() < 10, "{} keys kept", d.seen.len());
        assert!(d.order.len() < 200, "{} entries in the order", d.order.len());
    }
}
