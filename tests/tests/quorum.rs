//! Quorum queues on one node (`x-queue-type: quorum`): always durable and
//! shared, `x-delivery-count` on every delivery, `x-delivery-limit`. The
//! texts and header values are RabbitMQ 3.10.8's (probed with pika), and
//! every test passes against it too.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren_tests::*;

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = table(extra);
    t.insert("x-queue-type".into(), long_string("quorum"));
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_quorum_queue_must_be_durable_and_shared_and_refuses_classic_arguments() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let q = unique("qq");
        let cases: Vec<(QueueDeclareOptions, FieldTable, String)> = vec![
            (QueueDeclareOptions::default(), quorum(&[]), format!("invalid property 'non-durable' for queue '{q}' in vhost '/'")),
            (
                QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() },
                quorum(&[]),
                format!("invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
            ),
            (
                QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() },
                quorum(&[]),
                format!("invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
            ),
            (
                durable(),
                quorum(&[("x-max-priority", AMQPValue::LongInt(5))]),
                format!("invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
            ),
            (
                durable(),
                quorum(&[("x-queue-mode", AMQPValue::LongString("lazy".into()))]),
                format!("invalid arg 'x-queue-mode' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
            ),
            (
                durable(),
                quorum(&[("x-queue-version", AMQPValue::LongInt(2))]),
                format!("invalid arg 'x-queue-version' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
            ),
        ];
        for (options, args, expected) in cases {
            let ch = conn.create_channel().await.unwrap();
            let err = ch.queue_declare(q.as_str().into(), options, args).await.unwrap_err();
            assert_eq!(reply_code(&err), 406);
            assert_eq!(reply_text(&err), format!("PRECONDITION_FAILED - {expected}"));
        }
    })
    .await;
}

#[tokio::test]
async fn deliveries_are_counted_and_past_the_limit_a_message_is_dead_lettered() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (q, dlq) = (unique("qq"), unique("qq-dlq"));
        ch.queue_declare(dlq.as_str().into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare(
            q.as_str().into(),
            durable(),
            quorum(&[
                ("x-delivery-limit", AMQPValue::LongInt(2)),
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString(dlq.as_str().into()),
                ),
            ]),
        )
        .await
        .unwrap();
        publish(&ch, "", &q, b"poison").await;
        // Delivered three times (counts 0, 1, 2), returned each time; the
        // third return is past the limit of 2.
        for expected in 0..3i64 {
            let got = loop {
                if let Some(got) = get(&ch, &q).await {
                    break got;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            };
            let count = got
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-delivery-count").cloned());
            assert_eq!(count, Some(AMQPValue::LongLongInt(expected)));
            assert_eq!(got.delivery.redelivered, expected > 0);
            got.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let dead = loop {
            if let Some(got) = get(&ch, &dlq).await {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(dead.delivery.data, b"poison");
        let reason = dead
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-first-death-reason").cloned());
        assert_eq!(reason, Some(AMQPValue::LongString("delivery_limit".into())));
        assert!(get(&ch, &q).await.is_none());
        for name in [&q, &dlq] {
            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
}
