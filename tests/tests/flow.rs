//! Flow control and paging: publishers are slowed or held rather than the
//! broker growing, and what they published arrives whole and in order.
//! The first two tests pass against RabbitMQ 3.10.8 too (`AMQP_URL`).

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_server::alarm::{Alarm, Watermark};
use warren_tests::*;

const KIB: usize = 1024;

fn numbered(i: u32) -> Vec<u8> {
    let mut body = vec![b'w'; KIB];
    body[..4].copy_from_slice(&i.to_be_bytes());
    body
}

fn number(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().unwrap())
}

#[tokio::test]
async fn a_connection_that_publishes_to_its_own_busy_queue_and_consumes_it_keeps_going() {
    // The queue's backlog passes its head while it has a consumer, so
    // Warren paces the publisher; the acks that would let the queue move
    // arrive on the same connection, behind the publishes. Pacing holds a
    // publish for a bounded time, so this cannot deadlock.
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let publisher = conn.create_channel().await.unwrap();
        let consumer = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&publisher, "own").await;
        consumer.basic_qos(100, BasicQosOptions::default()).await.unwrap();
        let mut deliveries = consume(&consumer, &q, false, FieldTable::default()).await;
        const N: u32 = 20_000;
        let publishing = tokio::spawn({
            let q = q.clone();
            async move {
                for i in 0..N {
                    publish(&publisher, "", &q, &numbered(i)).await;
                }
            }
        });
        for expected in 0..N {
            let d = deliveries.next().await.unwrap().unwrap();
            assert_eq!(number(&d.data), expected);
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        publishing.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_flooding_publisher_does_not_hold_up_another_connections_queue() {
    within(async {
        let broker = start_broker().await;
        let (flooder, fch) = broker.channel().await;
        fch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let flooded = shared_queue(&fch, "flooded").await;
        const N: u32 = 30_000;
        let flood = tokio::spawn({
            let (fch, flooded) = (fch.clone(), flooded.clone());
            async move {
                let mut last = None;
                for i in 0..N {
                    let confirm = fch
                        .basic_publish(
                            "".into(),
                            flooded.as_str().into(),
                            BasicPublishOptions::default(),
                            &numbered(i),
                            BasicProperties::default(),
                        )
                        .await
                        .unwrap();
                    last = Some(confirm);
                }
                assert!(last.unwrap().await.unwrap().is_ack());
            }
        });
        // Meanwhile another connection's messages go through one by one.
        let (_other, och) = broker.channel().await;
        let q = exclusive_queue(&och, "moving").await;
        let mut deliveries = consume(&och, &q, true, FieldTable::default()).await;
        for i in 0..200 {
            publish(&och, "", &q, &numbered(i)).await;
            let d = tokio::time::timeout(std::time::Duration::from_secs(2), deliveries.next())
                .await
                .expect("the other queue keeps moving")
                .unwrap()
                .unwrap();
            assert_eq!(number(&d.data), i);
        }
        flood.await.unwrap();
        // Every confirmed message is there, in order.
        let mut flooded_deliveries = consume(&och, &flooded, true, FieldTable::default()).await;
        for expected in 0..N {
            let d = flooded_deliveries.next().await.unwrap().unwrap();
            assert_eq!(number(&d.data), expected);
        }
        och.queue_delete(flooded.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        drop(flooder);
    })
    .await;
}

/// Octets in the transient log's segments.
fn transient_log_bytes(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join("segments-transient"))
        .map(|dir| dir.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn under_memory_pressure_a_queue_pages_out_what_it_held_and_delivers_it_in_order() {
    // Warren-only: the queue's messages arrive while memory is plentiful and
    // stay in memory; then memory runs short (the watermark set to one
    // byte, as `rabbitmqctl set_vm_memory_high_watermark` would), and the
    // queue moves every body past its 8 MiB head to the transient log.
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let warren = broker.warren.clone().expect("in process");
        let data_dir = broker.data_dir().expect("in process").to_owned();
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "paged").await;
        const N: u32 = 16_000;
        for i in 0..N {
            publish(&ch, "", &q, &numbered(i)).await;
        }
        let declare = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let count = ch
            .queue_declare(q.as_str().into(), declare, FieldTable::default())
            .await
            .unwrap()
            .message_count();
        assert_eq!(count, N);
        assert_eq!(transient_log_bytes(&data_dir), 0, "nothing paged yet");

        let mut state = warren.alarms.watch();
        warren.alarms.set_memory_high_watermark(Watermark::Absolute(1));
        state.wait_for(|s| *s == Some(Alarm::Memory)).await.unwrap();
        // Past the head: 16,000 × (1 KiB + 128) less 8 MiB, some 10 MB.
        // Each command the queue handles moves up to 4,096 more; the store
        // writes them on its own thread.
        while transient_log_bytes(&data_dir) < 9_000_000 {
            ch.queue_declare(q.as_str().into(), declare, FieldTable::default())
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        // Consumers are served during the alarm; the paged bodies come back
        // in their places.
        let mut deliveries = consume(&ch, &q, true, FieldTable::default()).await;
        for expected in 0..N {
            let d = deliveries.next().await.unwrap().unwrap();
            assert_eq!(d.data.len(), KIB);
            assert_eq!(number(&d.data), expected);
        }
        warren.alarms.set_memory_high_watermark(Watermark::Relative(0.4));
    })
    .await;
}
