//! Message deduplication as LavinMQ offers it: `x-message-deduplication`
//! on a queue or an exchange, keyed by a header.
//!
//! Warren-only: RabbitMQ 3.10 has no deduplication (it takes these
//! arguments and ignores them); the names and defaults are LavinMQ's
//! (`src/lavinmq/deduplication.cr`).

use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use warren_tests::*;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = table(&[("x-message-deduplication", AMQPValue::Boolean(true))]);
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn keyed(header: &str, key: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(header.into(), AMQPValue::LongString(LongString::from(key)));
    BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2)
}

fn key(k: &str) -> BasicProperties {
    keyed("x-deduplication-header", k)
}

#[tokio::test]
async fn a_deduplicating_queue_keeps_one_copy_per_key() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = exclusive_queue_with(&ch, "dedup", args(&[])).await;
        publish_confirmed(&ch, "", &q, "a", key("a")).await;
        publish_confirmed(&ch, "", &q, "b", key("b")).await;
        publish_confirmed(&ch, "", &q, "a again", key("a")).await;
        // No key: never a duplicate.
        publish_confirmed(&ch, "", &q, "plain", BasicProperties::default()).await;
        publish_confirmed(&ch, "", &q, "plain", BasicProperties::default()).await;
        assert_eq!(drain(&ch, &q).await, ["a", "b", "plain", "plain"]);
        // Consumed is not forgotten: the key is still in the cache.
        publish_confirmed(&ch, "", &q, "a once more", key("a")).await;
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn the_header_the_cache_size_and_the_ttl_can_be_set() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = exclusive_queue_with(
            &ch,
            "dedup-size",
            args(&[
                ("x-deduplication-header", AMQPValue::LongString("order-id".into())),
                ("x-cache-size", AMQPValue::LongInt(2)),
            ]),
        )
        .await;
        for k in ["1", "2", "2", "3", "1"] {
            publish_confirmed(&ch, "", &q, k, keyed("order-id", k)).await;
        }
        // "1" was pushed out by "3", the third key in a cache of two.
        assert_eq!(drain(&ch, &q).await, ["1", "2", "3", "1"]);

        let q = exclusive_queue_with(
            &ch,
            "dedup-ttl",
            args(&[("x-cache-ttl", AMQPValue::LongInt(300))]),
        )
        .await;
        publish_confirmed(&ch, "", &q, "first", key("k")).await;
        publish_confirmed(&ch, "", &q, "within the ttl", key("k")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        publish_confirmed(&ch, "", &q, "after the ttl", key("k")).await;
        assert_eq!(drain(&ch, &q).await, ["first", "after the ttl"]);
    })
    .await;
}

#[tokio::test]
async fn a_message_a_full_queue_refused_is_not_remembered() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = exclusive_queue_with(
            &ch,
            "dedup-full",
            args(&[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ]),
        )
        .await;
        publish_confirmed(&ch, "", &q, "a", key("a")).await;
        let refused = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"b",
                key("b"),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(refused.is_nack());
        assert_eq!(drain(&ch, &q).await, ["a"]);
        // The publisher sends it again: it was never taken, so it is no
        // duplicate.
        publish_confirmed(&ch, "", &q, "b", key("b")).await;
        assert_eq!(drain(&ch, &q).await, ["b"]);
    })
    .await;
}

#[tokio::test]
async fn a_deduplicating_exchange_routes_a_key_once() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let x = unique("dedup-x");
        ch.exchange_declare(
            x.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            args(&[]),
        )
        .await
        .unwrap();
        let (q1, q2) = (
            exclusive_queue(&ch, "dedup-x1").await,
            exclusive_queue(&ch, "dedup-x2").await,
        );
        for q in [&q1, &q2] {
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        publish_confirmed(&ch, &x, "", "a", key("a")).await;
        // Mandatory, and routed nowhere, yet acked and not returned.
        publish_confirmed(&ch, &x, "", "a again", key("a")).await;
        publish_confirmed(&ch, &x, "", "b", key("b")).await;
        assert_eq!(drain(&ch, &q1).await, ["a", "b"]);
        assert_eq!(drain(&ch, &q2).await, ["a", "b"]);
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_publisher_that_sends_again_after_losing_its_connection_makes_no_duplicate() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let q = unique("dedup-retry");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        {
            // The confirm never reaches the publisher: its connection is
            // gone before it reads it.
            let (conn, ch) = broker.channel().await;
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            ch.queue_declare(q.as_str().into(), durable, args(&[]))
                .await
                .unwrap();
            let _unread = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    b"order",
                    key("order-7"),
                )
                .await
                .unwrap();
            conn.close(200, "gone".into()).await.unwrap();
        }
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish_confirmed(&ch, "", &q, "order", key("order-7")).await;
        assert_eq!(drain(&ch, &q).await, ["order"]);
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn bad_deduplication_arguments_are_refused() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let q = unique("dedup-bad");
        let cases = [
            (
                args(&[("x-cache-size", AMQPValue::LongInt(-1))]),
                format!("invalid arg 'x-cache-size' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
            ),
            (
                args(&[("x-cache-ttl", AMQPValue::LongString("long".into()))]),
                format!("invalid arg 'x-cache-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
            ),
            (
                args(&[("x-message-deduplication", AMQPValue::LongString("yes".into()))]),
                format!("invalid arg 'x-message-deduplication' for queue '{q}' in vhost '/': {{unacceptable_type,longstr}}"),
            ),
        ];
        for (arguments, expected) in cases {
            let ch = conn.create_channel().await.unwrap();
            let err = ch
                .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), arguments)
                .await
                .unwrap_err();
            assert_eq!((reply_code(&err), reply_text(&err)), (406, format!("PRECONDITION_FAILED - {expected}")));
        }
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .exchange_declare(
                q.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                args(&[("x-deduplication-header", AMQPValue::LongInt(5))]),
            )
            .await
            .unwrap_err();
        assert_eq!(
            reply_text(&err),
            format!("PRECONDITION_FAILED - invalid arg 'x-deduplication-header' for exchange '{q}' in vhost '/': {{unacceptable_type,signedint}}")
        );
    })
    .await;
}
