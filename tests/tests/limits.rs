//! Length limits: `x-max-length`, `x-max-length-bytes` and `x-overflow`.
//! Every test passes against RabbitMQ 3.10.8 too (`AMQP_URL`).

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use warren_tests::*;

/// Publishes with confirms on; whether the broker acked it.
async fn confirmed(ch: &lapin::Channel, queue: &str, body: &[u8]) -> bool {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap()
    .is_ack()
}

fn reason(d: &lapin::message::Delivery) -> String {
    match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-reason"))
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("expected a death reason, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_head_keeps_the_newest_and_dead_letters_the_oldest_as_maxlen() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (q, dlq) = (unique("maxlen"), unique("dlq"));
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        declare_exclusive(
            &ch,
            &q,
            table(&[
                ("x-max-length", AMQPValue::LongInt(2)),
                ("x-dead-letter-exchange", long_string("")),
                ("x-dead-letter-routing-key", long_string(&dlq)),
            ]),
        )
        .await;
        let mut dead = ch
            .basic_consume(
                dlq.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for body in ["1", "2", "3", "4", "5"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        for expected in ["1", "2", "3"] {
            let d = dead.next().await.unwrap().unwrap();
            assert_eq!(d.data, expected.as_bytes());
            assert_eq!(reason(&d), "maxlen");
        }
        assert_eq!(drain(&ch, &q).await, ["4", "5"]);
    })
    .await;
}

#[tokio::test]
async fn max_length_bytes_counts_message_bodies() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("maxbytes");
        declare_exclusive(&ch, &q, table(&[("x-max-length-bytes", AMQPValue::LongInt(10))])).await;
        for body in ["aaaa", "bbbb", "cccc"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        assert_eq!(drain(&ch, &q).await, ["bbbb", "cccc"]);
    })
    .await;
}

#[tokio::test]
async fn reject_publish_nacks_a_confirming_publisher_and_unacked_messages_do_not_count() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = unique("reject");
        declare_exclusive(
            &ch,
            &q,
            table(&[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", long_string("reject-publish")),
            ]),
        )
        .await;
        assert!(confirmed(&ch, &q, b"first").await);
        assert!(!confirmed(&ch, &q, b"second").await, "a full queue nacks");
        // Delivered and unacked, the first no longer counts.
        let held = get(&ch, &q).await.expect("the first");
        assert!(confirmed(&ch, &q, b"third").await);
        held.delivery.ack(BasicAckOptions::default()).await.unwrap();
        assert_eq!(drain(&ch, &q).await, ["third"]);
    })
    .await;
}

#[tokio::test]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let (q, dlq) = (unique("rejectdlx"), unique("dlq"));
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        declare_exclusive(
            &ch,
            &q,
            table(&[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", long_string("reject-publish-dlx")),
                ("x-dead-letter-exchange", long_string("")),
                ("x-dead-letter-routing-key", long_string(&dlq)),
            ]),
        )
        .await;
        assert!(confirmed(&ch, &q, b"kept").await);
        assert!(!confirmed(&ch, &q, b"refused").await);
        let mut dead = ch
            .basic_consume(
                dlq.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let d = dead.next().await.unwrap().unwrap();
        assert_eq!(d.data, b"refused");
        assert_eq!(reason(&d), "maxlen");
        assert_eq!(drain(&ch, &q).await, ["kept"]);
    })
    .await;
}

#[tokio::test]
async fn a_consumer_waiting_on_a_queue_limited_to_zero_gets_each_message() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("zero");
        declare_exclusive(&ch, &q, table(&[("x-max-length", AMQPValue::LongInt(0))])).await;
        publish(&ch, "", &q, b"nobody").await;
        publish(&ch, "", &q, b"nobody either").await;
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
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
        publish(&ch, "", &q, b"waited for").await;
        let d = consumer.next().await.unwrap().unwrap();
        assert_eq!(d.data, b"waited for");
    })
    .await;
}

#[tokio::test]
async fn reject_publish_counts_a_queue_its_consumer_keeps_empty() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = unique("reject-busy");
        declare_exclusive(
            &ch,
            &q,
            table(&[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", long_string("reject-publish")),
            ]),
        )
        .await;
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
        // Ten at once: each is taken by the consumer as it arrives, so the
        // queue never holds more than one and none is refused.
        let mut confirms = Vec::new();
        for i in 0..10u8 {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &[i],
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
        for i in 0..10u8 {
            assert_eq!(consumer.next().await.unwrap().unwrap().data, [i]);
        }
    })
    .await;
}
