//! `loadgen`: Warren's load generator. Publishers and consumers on their own
//! lapin connections work one queue for a fixed time; it prints the rates.
//! Run it against Warren and against RabbitMQ in the same session and compare
//! (docs/performance.md).
//!
//! ```text
//! cargo run --release -p warren-tests --bin loadgen -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[derive(Debug, Parser)]
#[command(about = "Publish and consume through one queue for a while; print the rates")]
struct Args {
    /// Broker URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// How long publishers publish, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Publisher confirms, with this many unconfirmed messages per publisher at most (0 = off).
    #[arg(long, default_value_t = 0)]
    confirm_window: usize,
    /// Consumer prefetch (manual acks); 0 = no-ack consumers.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Persistent messages (delivery_mode 2) to a durable queue.
    #[arg(long)]
    persistent: bool,
    /// Stop each publisher after this many messages instead of after --seconds.
    #[arg(long)]
    messages: Option<u64>,
    /// Queue name (default: loadgen-<pid>, deleted at the end).
    #[arg(long)]
    queue: Option<String>,
    /// Keep the queue and its messages at the end (for recovery benchmarks).
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| format!("loadgen-{}", std::process::id()));
    let setup = Connection::connect(&args.url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = setup.create_channel().await.unwrap();
    let declare = QueueDeclareOptions {
        durable: args.persistent,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), declare, FieldTable::default())
        .await
        .unwrap();

    let published = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let (url, queue, consumed, prefetch) =
            (args.url.clone(), queue.clone(), consumed.clone(), args.prefetch);
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let no_ack = prefetch == 0;
        if !no_ack {
            ch.basic_qos(prefetch, BasicQosOptions::default()).await.unwrap();
        }
        let opts = BasicConsumeOptions {
            no_ack,
            ..Default::default()
        };
        let mut stream = ch
            .basic_consume(queue.as_str().into(), "".into(), opts, FieldTable::default())
            .await
            .unwrap();
        consumers.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = stream.next().await {
                if !no_ack {
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                }
                consumed.fetch_add(1, Ordering::Relaxed);
            }
            drop(conn);
        }));
    }

    let body = vec![b'x'; args.size];
    let props = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let start = Instant::now();
    let mut publishers = Vec::new();
    for _ in 0..args.publishers {
        let (url, queue, published, stop) =
            (args.url.clone(), queue.clone(), published.clone(), stop.clone());
        let (body, props, window, limit) = (body.clone(), props.clone(), args.confirm_window, args.messages);
        publishers.push(tokio::spawn(async move {
            let conn = Connection::connect(&url, ConnectionProperties::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            if window > 0 {
                ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            }
            let mut pending = std::collections::VecDeque::new();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && limit.is_none_or(|limit| sent < limit) {
                sent += 1;
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await
                    .unwrap();
                if window > 0 {
                    pending.push_back(confirm);
                    if pending.len() >= window {
                        assert!(pending.pop_front().unwrap().await.unwrap().is_ack());
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
            for confirm in pending {
                assert!(confirm.await.unwrap().is_ack());
                published.fetch_add(1, Ordering::Relaxed);
            }
            conn.close(200, "done".into()).await.ok();
        }));
    }
    if args.messages.is_none() {
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    for p in publishers {
        p.await.unwrap();
    }
    let publish_elapsed = start.elapsed().as_secs_f64();
    let total = published.load(Ordering::Relaxed);
    // Wait for the consumers to catch up, at most 60 s.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while args.consumers > 0 && consumed.load(Ordering::Relaxed) < total && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_elapsed = start.elapsed().as_secs_f64();
    let got = consumed.load(Ordering::Relaxed);
    println!(
        "publishers={} consumers={} size={} confirm_window={} prefetch={} persistent={} \
         published={} publish_rate={:.0}/s consumed={} end_to_end_rate={:.0}/s",
        args.publishers,
        args.consumers,
        args.size,
        args.confirm_window,
        args.prefetch,
        args.persistent,
        total,
        total as f64 / publish_elapsed,
        got,
        got as f64 / all_elapsed
    );
    if !args.keep {
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .ok();
    }
    for c in consumers {
        c.abort();
    }
}
