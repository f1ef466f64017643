//! The crash test (Warren-only): a `warren` child process is killed with
//! SIGKILL at a random moment while publishers with confirms and consumers
//! with acks work on a durable queue; after a restart on the same data
//! directory, every confirmed message must be there (or have been acked
//! before the crash). Acked messages that come back are counted (at-least-once
//! delivery allows them).
//!
//! Beside them, each cycle runs one of three churns on a second durable
//! queue, so that kills land in the middle of them: publish-then-purge,
//! publish-then-delete, or transactions of 100 persistent messages. Every
//! message confirmed (or committed) after the last purge or delete was sent
//! must be there after the restart.
//!
//! `WARREN_CRASH_CYCLES` sets the number of kill/restart cycles (default 5).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use warren_tests::*;

const QUEUE: &str = "crash-test";
const SIDE: &str = "crash-test-side";

/// What the second queue goes through in a cycle.
#[derive(Clone, Copy, Debug)]
enum Churn {
    Purge,
    Delete,
    Transactions,
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Runs `churn` on [`SIDE`] until aborted, recording in `must_survive` what
/// was confirmed or committed since the last purge or delete was sent.
async fn churn(
    url: String,
    churn: Churn,
    first: u64,
    must_survive: Arc<Mutex<HashSet<u64>>>,
) -> lapin::Result<()> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    match churn {
        Churn::Transactions => ch.tx_select().await?,
        _ => ch.confirm_select(ConfirmSelectOptions::default()).await?,
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut id = first;
    loop {
        ch.queue_declare(SIDE.into(), durable, FieldTable::default())
            .await?;
        let mut batch = Vec::new();
        let mut confirms = Vec::new();
        for _ in 0..100 {
            let body = id.to_be_bytes();
            let confirm = ch
                .basic_publish(
                    "".into(),
                    SIDE.into(),
                    BasicPublishOptions::default(),
                    &body,
                    persistent(),
                )
                .await?;
            confirms.push(confirm);
            batch.push(id);
            id += 1;
        }
        match churn {
            Churn::Transactions => {
                ch.tx_commit().await?;
                must_survive.lock().unwrap().extend(batch);
            }
            Churn::Purge | Churn::Delete => {
                for (id, confirm) in batch.into_iter().zip(confirms) {
                    if confirm.await?.is_ack() {
                        must_survive.lock().unwrap().insert(id);
                    }
                }
                // Every tenth batch goes, the others stay for a while.
                if id.is_multiple_of(1000) {
                    // Cleared first: a kill after the send may or may not
                    // have let it happen.
                    must_survive.lock().unwrap().clear();
                    match churn {
                        Churn::Purge => {
                            ch.queue_purge(SIDE.into(), QueuePurgeOptions::default()).await?;
                        }
                        _ => {
                            ch.queue_delete(SIDE.into(), QueueDeleteOptions::default())
                                .await?;
                        }
                    }
                }
            }
        }
    }
}

/// Starts warren on a free port and waits for its "listening" log line.
async fn start(data_dir: &std::path::Path) -> (Child, String) {
    let port = free_port();
    let mut child = Command::new(warren_binary())
        .env("WARREN_MANAGEMENT_BIND", "127.0.0.1:0")
        .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
        .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("WARREN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("listening for AMQP") {
            // Keep draining its output (to ours, shown on failure) so it
            // never blocks on a full pipe.
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("warren: {line}");
                }
            });
            return (child, format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
        }
        log.push(line);
    }
    panic!("warren exited before listening: {log:#?}");
}

fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now()) % n
}

#[tokio::test]
async fn confirmed_messages_survive_sigkill() {
    if !is_warren() {
        return; // kills the broker
    }
    let cycles: u64 = std::env::var("WARREN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Each cycle takes about two seconds; the whole test gets its own bound.
    let limit = Duration::from_secs(30 + cycles * 15);
    tokio::time::timeout(limit, crash_cycles(cycles))
        .await
        .expect("crash test timed out");
}

async fn crash_cycles(cycles: u64) {
    let data_dir = tempfile::tempdir().unwrap();
    let confirmed: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut next_id = 0u64;
    let (mut total_confirmed, mut total_recovered, mut acked_came_back) = (0usize, 0usize, 0usize);
    let mut side_checked = 0;
    for cycle in 0..cycles {
        eprintln!("crash test: cycle {cycle}");
        let (mut child, url) = start(data_dir.path()).await;
        let setup = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = setup.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(QUEUE.into(), durable, FieldTable::default())
            .await
            .unwrap();

        let publisher = {
            let (url, confirmed) = (url.clone(), confirmed.clone());
            let first = next_id;
            tokio::spawn(async move {
                let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                let mut pending = std::collections::VecDeque::new();
                for id in first.. {
                    let props = BasicProperties::default().with_delivery_mode(2);
                    let body = id.to_be_bytes();
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            QUEUE.into(),
                            BasicPublishOptions::default(),
                            &body,
                            props,
                        )
                        .await?;
                    pending.push_back((id, confirm));
                    if pending.len() >= 50 {
                        let (id, confirm) = pending.pop_front().unwrap();
                        if confirm.await?.is_ack() {
                            confirmed.lock().unwrap().insert(id);
                        }
                    }
                }
                Ok::<(), lapin::Error>(())
            })
        };
        let side_survivors: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let mode = [Churn::Purge, Churn::Delete, Churn::Transactions][cycle as usize % 3];
        let side = tokio::spawn(churn(
            url.clone(),
            mode,
            (1 << 60) + next_id,
            side_survivors.clone(),
        ));
        let consumer = {
            let (url, acked) = (url.clone(), acked.clone());
            tokio::spawn(async move {
                let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(20, BasicQosOptions::default()).await?;
                let mut c = ch
                    .basic_consume(
                        QUEUE.into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                while let Some(delivery) = c.next().await {
                    let delivery = delivery?;
                    let id = u64::from_be_bytes(delivery.data[..8].try_into().unwrap());
                    delivery.ack(BasicAckOptions::default()).await?;
                    acked.lock().unwrap().insert(id);
                }
                Ok::<(), lapin::Error>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(200 + random_below(800))).await;
        // SIGKILL. The clients die with the broker (lapin may never resolve
        // their pending confirms): stop them; what they recorded stands.
        child.kill().await.unwrap();
        publisher.abort();
        consumer.abort();
        side.abort();
        next_id += 10_000_000;

        // Restart and take everything that is left.
        let (mut child, url) = start(data_dir.path()).await;
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut recovered = HashSet::new();
        while let Some(m) = ch
            .basic_get(QUEUE.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            recovered.insert(u64::from_be_bytes(m.delivery.data[..8].try_into().unwrap()));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let side_survivors = std::mem::take(&mut *side_survivors.lock().unwrap());
        // Declared (not passively): a delete just before the kill leaves it
        // gone, and then nothing must have survived it.
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(SIDE.into(), durable, FieldTable::default())
            .await
            .unwrap();
        let mut side_found = HashSet::new();
        while let Some(m) = ch
            .basic_get(SIDE.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            side_found.insert(u64::from_be_bytes(m.delivery.data[..8].try_into().unwrap()));
        }
        let side_lost = side_survivors.difference(&side_found).count();
        assert_eq!(
            side_lost, 0,
            "cycle {cycle} ({mode:?}): {side_lost} confirmed or committed messages lost"
        );
        side_checked += side_survivors.len();
        conn.close(200, "done".into()).await.unwrap();
        // Killed and reaped, so the next start finds the store unlocked.
        child.kill().await.unwrap();

        let confirmed = std::mem::take(&mut *confirmed.lock().unwrap());
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        let lost: Vec<_> = confirmed
            .iter()
            .filter(|id| !recovered.contains(id) && !acked.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} confirmed messages lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        total_confirmed += confirmed.len();
        total_recovered += recovered.len();
        acked_came_back += recovered.intersection(&acked).count();
    }
    println!(
        "crash test: {cycles} cycles, {total_confirmed} confirmed, 0 lost, {total_recovered} recovered, \
         {acked_came_back} acked messages came back; {side_checked} messages of the side queue \
         confirmed or committed after its last purge or delete, 0 lost"
    );
}
