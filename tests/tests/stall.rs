//! A large durable queue deleted or purged while another client works: the
//! broker must answer at once and keep serving everyone else. Before the
//! store had a thread of its own, deleting 100,000 persistent messages froze
//! every client for 20 s. Runs against any broker (RabbitMQ 3.10 deletes
//! 100,000 in 0.7 s).
//!
//! `WARREN_STALL_MESSAGES` sets the backlog (default 20,000; the figures in
//! docs/durability.md use 1,000,000 against a release build via AMQP_URL).

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::{mpsc, oneshot};
use warren_tests::*;

/// How long the other client keeps measuring after the reply.
const AFTER: Duration = Duration::from_secs(1);
/// What a round trip may take while the broker deletes or purges.
const BOUND: Duration = Duration::from_secs(1);

fn messages() -> u32 {
    std::env::var("WARREN_STALL_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes `n` persistent 1 KiB messages, 1,000 confirms in flight.
async fn fill(ch: &lapin::Channel, queue: &str, n: u32) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let body = vec![b'x'; 1024];
    let mut sent = 0;
    while sent < n {
        let mut confirms = Vec::new();
        for _ in 0..1000.min(n - sent) {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
            sent += 1;
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
}

/// The slowest round trips another client saw.
#[derive(Debug, Default)]
struct Seen {
    /// A persistent publish to a durable queue until its confirm.
    publish: Duration,
    /// A new connection until it is open (connection.start included).
    connect: Duration,
    rounds: u32,
}

/// Publishes with confirms and opens connections in a loop until `stop`;
/// says on `warm` once it has a baseline.
async fn other_client(url: String, warm: oneshot::Sender<()>, mut stop: mpsc::Receiver<()>) -> Seen {
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let q = unique("stall-probe");
    ch.queue_declare(q.as_str().into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let mut seen = Seen::default();
    let mut warm = Some(warm);
    while stop.try_recv().is_err() {
        let t = Instant::now();
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"probe",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        seen.publish = seen.publish.max(t.elapsed());
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the probe message is there");
        if seen.rounds % 20 == 0 {
            let t = Instant::now();
            let other = Connection::connect(&url, ConnectionProperties::default())
                .await
                .unwrap();
            seen.connect = seen.connect.max(t.elapsed());
            other.close(200, "bye".into()).await.unwrap();
        }
        seen.rounds += 1;
        if seen.rounds == 50 {
            if let Some(warm) = warm.take() {
                let _ = warm.send(());
            }
        }
    }
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    seen
}

/// Fills a durable queue, then runs `act` on it while another client
/// measures; returns how long `act` took and what the other client saw.
async fn while_measuring<F, Fut>(prefix: &str, act: F) -> (Duration, Seen)
where
    F: FnOnce(lapin::Channel, String) -> Fut,
    Fut: std::future::Future<Output = u32>,
{
    let broker = start_broker().await;
    let (_conn, ch) = broker.channel().await;
    let q = unique(prefix);
    ch.queue_declare(q.as_str().into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let n = messages();
    fill(&ch, &q, n).await;
    let (warm_tx, warm) = oneshot::channel();
    let (stop_tx, stop) = mpsc::channel(1);
    let other = tokio::spawn(other_client(broker.url.clone(), warm_tx, stop));
    warm.await.unwrap();
    let t = Instant::now();
    let count = act(ch.clone(), q.clone()).await;
    let took = t.elapsed();
    assert_eq!(count, n);
    tokio::time::sleep(AFTER).await;
    stop_tx.send(()).await.unwrap();
    let seen = other.await.unwrap();
    let _ = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    eprintln!("{prefix}: {n} messages, answered in {took:?}; the other client saw {seen:?}");
    (took, seen)
}

fn check(took: Duration, seen: &Seen) {
    assert!(took < Duration::from_secs(5), "the reply took {took:?}");
    assert!(
        seen.publish < BOUND,
        "a publish waited {:?} for its confirm",
        seen.publish
    );
    assert!(
        seen.connect < BOUND,
        "a connection took {:?} to open",
        seen.connect
    );
}

#[tokio::test]
async fn deleting_a_large_durable_queue_stalls_no_one() {
    let limit = Duration::from_secs(120);
    let body = while_measuring("stall-delete", |ch, q| async move {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap()
    });
    let (took, seen) = tokio::time::timeout(limit, body).await.expect("test timed out");
    check(took, &seen);
}

#[tokio::test]
async fn purging_a_large_durable_queue_stalls_no_one() {
    let limit = Duration::from_secs(120);
    let body = while_measuring("stall-purge", |ch, q| async move {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap()
    });
    let (took, seen) = tokio::time::timeout(limit, body).await.expect("test timed out");
    check(took, &seen);
}
