//! The command line.

use clap::{Parser, ValueEnum};

/// The exchange the producers publish to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    /// The default exchange (or `--exchange`, declared direct): each queue
    /// gets the messages sent with its own name as routing key.
    Direct,
    /// Every queue gets every message.
    Fanout,
    /// `--topic-bindings` patterns spread over the queues; keys from a pool.
    Topic,
}

impl ExchangeType {
    /// The AMQP name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }
}

/// An AMQP 0-9-1 load generator on raw sockets, in the spirit of RabbitMQ's
/// PerfTest: pre-encoded publishes, batched writes, a minimal delivery
/// parser, and end-to-end latency from a send timestamp in each body.
///
/// Progress goes to stderr every second; the summary (or `--json`) to stdout.
#[derive(Clone, Debug, Parser)]
#[command(name = "warren-perf", version)]
pub struct Options {
    /// Broker to load.
    #[arg(
        long,
        env = "WARREN_PERF_URI",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub uri: String,
    /// Producer connections.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer connections.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: u32,
    /// Queues, named `<queue-prefix>-<n>`. Producer p publishes to queue
    /// p mod queues (direct); consumer c consumes every queue q with
    /// q mod consumers = c (or queue c mod queues when there are more
    /// consumers than queues).
    #[arg(short = 'u', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub queues: u32,
    /// Prefix of the queue names.
    #[arg(long, default_value = "warren-perf")]
    pub queue_prefix: String,
    /// Body size in octets (the first 8 carry the send timestamp; smaller
    /// bodies have no latency figures).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Persistent messages (delivery-mode 2) to durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms with this many messages in flight per producer;
    /// 0 = no confirms.
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub confirm_window: u32,
    /// Per-consumer prefetch (basic.qos); 0 = unlimited.
    #[arg(short = 'q', long, default_value_t = 0)]
    pub prefetch: u16,
    /// Consume with no-ack.
    #[arg(short = 'a', long)]
    pub auto_ack: bool,
    /// With manual acks, one basic.ack (multiple) per this many deliveries.
    #[arg(short = 'A', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub multi_ack_every: u64,
    /// Exchange type.
    #[arg(short = 't', long, value_enum, default_value_t = ExchangeType::Direct)]
    pub exchange_type: ExchangeType,
    /// Exchange name; by default the default exchange for direct, and
    /// `warren-perf.<type>` otherwise.
    #[arg(short = 'e', long)]
    pub exchange: Option<String>,
    /// Topic: how many binding patterns, spread over the queues.
    #[arg(long, default_value_t = 1000)]
    pub topic_bindings: usize,
    /// Topic: how many routing keys the producers cycle through.
    #[arg(long, default_value_t = 1000)]
    pub topic_keys: usize,
    /// Seed for the topic patterns and keys.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Messages per second per producer; 0 = unlimited.
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    /// Idle connections held open during the run (memory per connection is
    /// reported with --broker-pid).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: u32,
    /// Measured seconds, after the warm-up.
    #[arg(short = 'z', long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Fill-then-drain: publish this many messages with no consumer, then
    /// consume them all; reports fill time, drain time and broker RSS. With
    /// `--consumers 0` it only fills (and keeps the queues); with
    /// `--producers 0` it only drains a backlog left by an earlier fill.
    #[arg(long, conflicts_with = "flood")]
    pub fill: Option<u64>,
    /// Flood: the producers publish with no consumer for this many seconds
    /// (with confirms), then stop; once every publish is confirmed or
    /// nacked, the consumers drain the queues, and each producer's messages
    /// must arrive whole and in order. Reports the broker's RSS peak and the
    /// connection.blocked / unblocked the producers saw.
    #[arg(long)]
    pub flood: Option<u64>,
    /// The broker's PID, for its CPU and RSS.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Runtime worker threads of this generator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Leave the queues and exchange in place afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl Options {
    /// The name of queue `n`.
    pub fn queue(&self, n: u32) -> String {
        format!("{}-{n}", self.queue_prefix)
    }

    /// The exchange published to ("" = the default exchange).
    pub fn exchange_name(&self) -> String {
        match (&self.exchange, self.exchange_type) {
            (Some(name), _) => name.clone(),
            (None, ExchangeType::Direct) => String::new(),
            (None, kind) => format!("warren-perf.{}", kind.as_str()),
        }
    }

    /// The queues consumer `c` consumes.
    pub fn consumer_queues(&self, c: u32) -> Vec<String> {
        if self.consumers > self.queues {
            return vec![self.queue(c % self.queues)];
        }
        (0..self.queues)
            .filter(|q| q % self.consumers == c)
            .map(|q| self.queue(q))
            .collect()
    }
}
