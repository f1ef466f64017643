//! Message rates, as RabbitMQ's management plugin gives them beside each
//! count (`"publish": 10, "publish_details": {"rate": 2.0}`).
//!
//! The broker only counts ([`warren_server::stats`]); a task here samples
//! the counts of the whole broker, of every queue and of every channel once
//! per `collect_statistics_interval` (RabbitMQ's setting, 5 s by default),
//! and a rate is the change between the last two samples per second. A
//! counter that went down (a queue deleted and declared again) gives 0; a
//! gauge (messages in a queue) that went down gives a negative rate, as in
//! RabbitMQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use warren_router::Destination;
use warren_server::broker::Broker;
use warren_server::stats::{Flow, MessageCounters};

/// The rates of the last sample, by what they are of.
#[derive(Debug, Default)]
pub struct Rates(Mutex<Samples>);

#[derive(Debug, Default)]
struct Samples {
    /// The whole broker's `message_stats`.
    overview: Series,
    /// Ready, unacked and total messages of every queue together.
    queue_totals: Series,
    /// Each queue's `message_stats`, then its ready, unacked and total
    /// messages, by vhost and name.
    queues: HashMap<(String, String), Series>,
    /// Each channel's `message_stats`, by connection name and number.
    channels: HashMap<(String, u16), Series>,
    /// Publishes that took each step between exchanges and queues, by
    /// vhost and step.
    flows: HashMap<(String, Flow), Series>,
    /// Messages each queue with a dead-letter exchange dead-lettered, by
    /// vhost and queue, with that exchange.
    dead_letters: HashMap<(String, String), (String, Series)>,
}

/// A sampled set of counts and the rates its last two samples give.
#[derive(Debug, Default)]
struct Series {
    last: Option<(Instant, Vec<u64>)>,
    rates: Vec<f64>,
}

impl Series {
    /// Records a sample: counters first, then from `gauges` on, gauges.
    fn record(&mut self, now: Instant, values: Vec<u64>, gauges: usize) {
        if let Some((then, before)) = &self.last {
            let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
            self.rates = values
                .iter()
                .zip(before)
                .enumerate()
                .map(|(at, (&v, &b))| match at < gauges {
                    true => v.saturating_sub(b) as f64 / seconds,
                    false => (v as f64 - b as f64) / seconds,
                })
                .collect();
        }
        self.last = Some((now, values));
    }

    fn rate(&self, at: usize) -> f64 {
        self.rates.get(at).copied().unwrap_or(0.0)
    }
}

/// The counts of a `message_stats`, in the order of
/// [`MessageCounters::named`], then `deliver_get`.
fn counts(c: &MessageCounters) -> Vec<u64> {
    let mut all: Vec<u64> = c.named().iter().map(|(_, n)| *n).collect();
    all.push(c.deliver_get());
    all
}

fn queue_counts(ready: u32, unacked: u32, counters: &MessageCounters) -> Vec<u64> {
    let mut all = counts(counters);
    all.extend([
        u64::from(ready),
        u64::from(unacked),
        u64::from(ready) + u64::from(unacked),
    ]);
    all
}

/// The fields of the queue counts that have rates, after the
/// `message_stats` ones in a queue's series.
const QUEUE_COUNTS: [&str; 3] = ["messages_ready", "messages_unacknowledged", "messages"];

impl Rates {
    fn samples(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a sample of the whole broker.
    pub async fn sample(&self, broker: &Broker) {
        let activity = broker.channels().await;
        let (channels, totals) = (activity.channels, activity.totals);
        let queues = broker.queues(None).await.unwrap_or_default();
        let now = Instant::now();
        let samples = &mut *self.samples();
        samples.overview.record(now, counts(&totals), usize::MAX);
        let (ready, unacked) = queues.iter().fold((0, 0), |(r, u), q| {
            (r + u64::from(q.ready), u + u64::from(q.unacked))
        });
        samples
            .queue_totals
            .record(now, vec![ready, unacked, ready + unacked], 0);
        let mut seen = HashMap::new();
        for (vhost, flows) in activity.flows {
            for (flow, n) in flows {
                let key = (vhost.clone(), flow);
                let mut series = samples.flows.remove(&key).unwrap_or_default();
                series.record(now, vec![n], usize::MAX);
                seen.insert(key, series);
            }
        }
        samples.flows = seen;
        let mut seen = HashMap::new();
        for q in &queues {
            let Some(exchange) = text_argument(&q.arguments, "x-dead-letter-exchange") else {
                continue;
            };
            let key = (q.vhost.clone(), q.name.clone());
            let (_, mut series) = samples.dead_letters.remove(&key).unwrap_or_default();
            series.record(now, vec![q.dead_lettered], usize::MAX);
            seen.insert(key, (exchange, series));
        }
        samples.dead_letters = seen;
        let mut seen = HashMap::new();
        for q in queues {
            let key = (q.vhost, q.name);
            let mut series = samples.queues.remove(&key).unwrap_or_default();
            let gauges = counts(&q.counters).len();
            series.record(now, queue_counts(q.ready, q.unacked, &q.counters), gauges);
            seen.insert(key, series);
        }
        samples.queues = seen;
        let mut seen = HashMap::new();
        for c in channels {
            let key = (c.connection.name, c.channel.number);
            let mut series = samples.channels.remove(&key).unwrap_or_default();
            series.record(now, counts(&c.channel.counters), usize::MAX);
            seen.insert(key, series);
        }
        samples.channels = seen;
    }

    /// The rate of each step messages take in `vhost`: through bindings
    /// (one step per source and destination), to alternate exchanges, and
    /// from queues to their dead-letter exchanges. For the topology graph.
    pub fn flows(&self, vhost: &str) -> Vec<Value> {
        let samples = self.samples();
        let steps = samples
            .flows
            .iter()
            .filter(|((v, _), _)| v == vhost)
            .map(|((_, flow), series)| {
                let (destination, kind) = match &flow.destination {
                    _ if flow.alternate => (flow.destination.name(), "alternate-exchange"),
                    Destination::Queue(q) => (q.as_str(), "queue"),
                    Destination::Exchange(x) => (x.as_str(), "exchange"),
                };
                json!({"vhost": vhost, "source": flow.source.as_str(), "destination": destination,
                   "destination_type": kind, "rate": series.rate(0)})
            });
        let dead = samples.dead_letters.iter().filter(|((v, _), _)| v == vhost).map(
            |((_, queue), (exchange, series))| {
                json!({"vhost": vhost, "source": queue, "destination": exchange,
                       "destination_type": "dead-letter-exchange", "rate": series.rate(0)})
            },
        );
        steps.chain(dead).collect()
    }

    /// The broker's `message_stats`, with rates.
    pub fn overview(&self, totals: &MessageCounters) -> Value {
        message_stats(totals, &self.samples().overview)
    }

    /// The overview's `queue_totals`, with rates.
    pub fn queue_totals(&self, ready: u64, unacked: u64) -> Value {
        let samples = self.samples();
        let mut totals = Map::new();
        for (at, (field, n)) in QUEUE_COUNTS
            .iter()
            .zip([ready, unacked, ready + unacked])
            .enumerate()
        {
            totals.insert((*field).to_owned(), json!(n));
            totals.insert(
                format!("{field}_details"),
                json!({"rate": samples.queue_totals.rate(at)}),
            );
        }
        Value::Object(totals)
    }

    /// A queue's `message_stats`, and the rates of its counts to add to
    /// its object.
    pub fn queue(&self, vhost: &str, name: &str, counters: &MessageCounters) -> (Value, Map<String, Value>) {
        let samples = self.samples();
        let empty = Series::default();
        let series = samples
            .queues
            .get(&(vhost.to_owned(), name.to_owned()))
            .unwrap_or(&empty);
        let first = counts(counters).len();
        let details = QUEUE_COUNTS
            .iter()
            .enumerate()
            .map(|(at, field)| {
                (
                    format!("{field}_details"),
                    json!({"rate": series.rate(first + at)}),
                )
            })
            .collect();
        (message_stats(counters, series), details)
    }

    /// A channel's `message_stats`.
    pub fn channel(&self, connection: &str, number: u16, counters: &MessageCounters) -> Value {
        let samples = self.samples();
        let key = (connection.to_owned(), number);
        match samples.channels.get(&key) {
            Some(series) => message_stats(counters, series),
            None => message_stats(counters, &Series::default()),
        }
    }
}

/// A string argument (long or short string).
fn text_argument(arguments: &amq_protocol::types::FieldTable, key: &str) -> Option<String> {
    match arguments.inner().get(key) {
        Some(amq_protocol::types::AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(amq_protocol::types::AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// Counts and their `_details` rates, in RabbitMQ's names.
fn message_stats(c: &MessageCounters, series: &Series) -> Value {
    let mut stats = Map::new();
    let named = c.named();
    let all = named
        .iter()
        .copied()
        .chain(std::iter::once(("deliver_get", c.deliver_get())));
    for (at, (name, n)) in all.enumerate() {
        stats.insert(name.to_owned(), json!(n));
        stats.insert(format!("{name}_details"), json!({"rate": series.rate(at)}));
    }
    Value::Object(stats)
}

/// Samples the broker every `interval`, for ever.
pub async fn sample_every(broker: Arc<Broker>, rates: Arc<Rates>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        rates.sample(&broker).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_change_per_second_and_only_a_gauge_goes_negative() {
        let mut series = Series::default();
        let start = Instant::now();
        series.record(start, vec![10, 50, 50], 2);
        assert_eq!(series.rate(0), 0.0);
        series.record(start + Duration::from_secs(2), vec![30, 20, 20], 2);
        assert_eq!(series.rate(0), 10.0);
        assert_eq!(series.rate(1), 0.0, "a counter that went down: recreated");
        assert_eq!(series.rate(2), -15.0, "a gauge that went down: draining");
    }
}
