//! Message TTL: `x-message-ttl` and the `expiration` property (RabbitMQ's
//! per-queue and per-message TTL). Every test passes against RabbitMQ
//! 3.10.8 too (`AMQP_URL`). The waits here are the TTLs being tested, not
//! synchronisation: a message must outlive, or not, a span of time.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use warren_tests::*;

fn ttl_args(ms: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ms));
    args
}

async fn publish_expiring(ch: &lapin::Channel, queue: &str, body: &[u8], expiration: &str) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_expiration(ShortString::from(expiration)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_queue_ttl_removes_messages_nobody_reads() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue_with(&ch, "ttl", ttl_args(1000)).await;
        for body in [b"a", b"b", b"c"] {
            publish(&ch, "", &q, body).await;
        }
        // Held for their TTL (not dropped at once; a loaded machine may
        // take a while to ask, so only "some are still there")...
        assert!(message_count(&ch, &q).await > 0);
        // Gone without anyone reading: the queue's own timer expires them.
        while message_count(&ch, &q).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn an_expired_message_is_never_delivered_and_the_lower_ttl_wins() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue_with(&ch, "ttl", ttl_args(60_000)).await;
        publish_expiring(&ch, &q, b"short", "50").await;
        publish(&ch, "", &q, b"queue ttl").await;
        publish_expiring(&ch, &q, b"long", "60000000").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(drain(&ch, &q).await, ["queue ttl", "long"]);
        // The queue's TTL wins over a longer expiration.
        let q = exclusive_queue_with(&ch, "ttl", ttl_args(50)).await;
        publish_expiring(&ch, &q, b"long", "60000").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn a_ttl_of_zero_reaches_a_waiting_consumer_only() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue_with(&ch, "ttl0", FieldTable::default()).await;
        publish_expiring(&ch, &q, b"nobody", "0").await;
        // Published after the first: once it is in, the first was handled.
        publish(&ch, "", &q, b"marker").await;
        assert_eq!(drain(&ch, &q).await, ["marker"]);
        let mut consumer = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        publish_expiring(&ch, &q, b"waiting", "0").await;
        let d = consumer.next().await.unwrap().unwrap();
        assert_eq!(d.data, b"waiting");
    })
    .await;
}

#[tokio::test]
async fn a_requeued_message_keeps_its_expiry() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue_with(&ch, "ttl", ttl_args(1000)).await;
        publish(&ch, "", &q, b"held").await;
        let got = get(&ch, &q).await.expect("the message");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        got.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn an_invalid_expiration_is_406_as_in_rabbitmq() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        // RabbitMQ 3.10.8's texts.
        for (expiration, why) in [
            ("abc", "no_integer"),
            ("-1", "{value_negative,-1}"),
            ("1.5", "{leftover_string,\".5\"}"),
            // More than ten years (rabbit_misc:check_expiry), and Erlang's
            // line break for a long number.
            ("315360000001", "{value_too_large,315360000001}"),
            (
                "3153600000000000000",
                "{value_too_large,\n                                           3153600000000000000}",
            ),
        ] {
            let ch = conn.create_channel().await.unwrap();
            let q = exclusive_queue_with(&ch, "exp", FieldTable::default()).await;
            let publishing = ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default().with_expiration(ShortString::from(expiration)),
            );
            let (code, text) = closed_reply(&ch, publishing).await;
            assert_eq!(code, 406);
            assert_eq!(
                text,
                format!("PRECONDITION_FAILED - invalid expiration '{expiration}': {why}")
            );
        }
    })
    .await;
}

fn expires_args(ms: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(ms));
    args
}

/// Declares a queue another connection may see (x-expires queues are not
/// exclusive in practice).
async fn shared_queue_with(ch: &lapin::Channel, prefix: &str, args: FieldTable) -> String {
    let name = unique(prefix);
    ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn a_queue_unused_past_x_expires_is_deleted_and_one_in_use_is_not() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let unused = shared_queue_with(&ch, "expires", expires_args(1000)).await;
        publish(&ch, "", &unused, b"publishing does not count as use").await;
        let consumed = shared_queue_with(&ch, "expires-used", expires_args(1000)).await;
        let consumer = ch
            .basic_consume(
                consumed.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        // The span the queue must stay unused for (a passive declare would
        // count as a use, so nothing looks at it meanwhile).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let probe = conn.create_channel().await.unwrap();
        let err = probe
            .queue_declare(unused.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        // The consumed one is still there.
        assert_eq!(message_count(&ch, &consumed).await, 0);
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        ch.queue_delete(consumed.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}
