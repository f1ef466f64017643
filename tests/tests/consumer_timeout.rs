//! The consumer acknowledgement timeout: a delivery left unacked too long
//! closes its channel with 406, and its messages go back to the queue.
//!
//! Warren-only: the reference's timeout is RabbitMQ's default of 30 minutes,
//! and RabbitMQ 3.10 ignores `x-consumer-timeout` (3.12 added it). The
//! behaviour and the text were probed on RabbitMQ 3.10.8 with pika, its
//! `consumer_timeout` set to 2000 ms (`rabbitmqctl eval
//! 'application:set_env(rabbit, consumer_timeout, 2000)'`): the channel was
//! closed with "PRECONDITION_FAILED - delivery acknowledgement on channel 1
//! timed out. Timeout value used: 2000 ms. This timeout value can be
//! configured, see consumers doc guide to learn more", the connection stayed
//! open, and a basic.get on another channel found the unacked message first,
//! redelivered, then the next one, not redelivered.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren_tests::*;

fn timeout_text(channel: u16, ms: u64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. \
         Timeout value used: {ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
    )
}

fn timeout_arg(ms: i64) -> FieldTable {
    table(&[("x-consumer-timeout", AMQPValue::LongLongInt(ms))])
}

#[tokio::test]
async fn an_unacked_delivery_past_the_timeout_closes_its_channel_and_is_redelivered() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_warren_with(|c| c.consumer_timeout = Some(Duration::from_millis(1000))).await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let other = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "ct").await;
        publish(&ch, "", &q, b"one").await;
        publish(&ch, "", &q, b"two").await;
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = consume(&ch, &q, false, FieldTable::default()).await;
        let first = consumer.next().await.unwrap().unwrap();
        assert_eq!(&first.data[..], b"one");
        let delivered = Instant::now();

        let err = consumer.next().await.unwrap().unwrap_err();
        assert!(delivered.elapsed() >= Duration::from_millis(900));
        assert_eq!(reply_code(&err), 406);
        assert_eq!(reply_text(&err), timeout_text(ch.id(), 1000));

        // The connection and its other channel go on; the message is back
        // at the head, redelivered.
        let again = get(&other, &q).await.expect("the unacked message is back");
        assert_eq!(
            (&again.delivery.data[..], again.delivery.redelivered),
            (&b"one"[..], true)
        );
        let next = get(&other, &q).await.expect("the second message");
        assert_eq!(
            (&next.delivery.data[..], next.delivery.redelivered),
            (&b"two"[..], false)
        );
    })
    .await;
}

#[tokio::test]
async fn the_queue_argument_sets_the_timeout_for_consumers_and_basic_get() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let setup = conn.create_channel().await.unwrap();
        let q = unique("ct-queue");
        setup
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                timeout_arg(300),
            )
            .await
            .unwrap();
        publish(&setup, "", &q, b"a").await;
        publish(&setup, "", &q, b"b").await;

        // A consumer of the queue.
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = consume(&ch, &q, false, FieldTable::default()).await;
        consumer.next().await.unwrap().unwrap();
        let err = consumer.next().await.unwrap().unwrap_err();
        assert_eq!(reply_text(&err), timeout_text(ch.id(), 300));

        // basic.get: a consumer of an empty queue on the same channel
        // hears of the close.
        let ch = conn.create_channel().await.unwrap();
        let got = get(&ch, &q).await.expect("a message");
        assert!(got.delivery.redelivered);
        let watch = exclusive_queue(&ch, "ct-watch").await;
        let mut watcher = consume(&ch, &watch, false, FieldTable::default()).await;
        let err = watcher.next().await.unwrap().unwrap_err();
        assert_eq!(reply_text(&err), timeout_text(ch.id(), 300));

        assert_eq!(drain(&setup, &q).await, ["a", "b"]);
        setup
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_consumer_argument_overrides_the_queue_and_acked_deliveries_never_time_out() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("ct-consumer");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            timeout_arg(60_000),
        )
        .await
        .unwrap();
        let mut consumer = consume(&ch, &q, false, timeout_arg(400)).await;
        // The first delivery is acked at once: its deadline passes while
        // the second is out, and must not count.
        publish(&ch, "", &q, b"acked").await;
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&ch, "", &q, b"held").await;
        let held = consumer.next().await.unwrap().unwrap();
        assert_eq!(&held.data[..], b"held");
        let delivered = Instant::now();
        let err = consumer.next().await.unwrap().unwrap_err();
        assert!(
            delivered.elapsed() >= Duration::from_millis(350),
            "closed {:?} after the delivery",
            delivered.elapsed()
        );
        assert_eq!(reply_text(&err), timeout_text(ch.id(), 400));
    })
    .await;
}

#[tokio::test]
async fn negative_timeouts_are_refused() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let q = unique("ct-bad");
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), timeout_arg(-1))
            .await
            .unwrap_err();
        assert_eq!(
            reply_text(&err),
            format!("PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue '{q}' in vhost '/': {{value_negative,-1}}")
        );
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "ct-bad").await;
        let err = ch
            .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), timeout_arg(-5))
            .await
            .unwrap_err();
        assert_eq!(
            reply_text(&err),
            format!("PRECONDITION_FAILED - invalid arg 'x-consumer-timeout' for queue '{q}' in vhost '/': {{value_negative,-5}}")
        );
    })
    .await;
}

#[tokio::test]
async fn a_timeout_past_the_clocks_range_never_fires_and_crashes_nothing() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "ct-huge").await;
        publish(&ch, "", &q, b"held").await;
        let mut consumer = consume(&ch, &q, false, timeout_arg(i64::MAX)).await;
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        // The connection still serves.
        publish(&ch, "", &q, b"next").await;
        assert_eq!(&consumer.next().await.unwrap().unwrap().data[..], b"next");
    })
    .await;
}
