//! The `x-delayed-message` exchange type (the community plugin's interface,
//! also LavinMQ's): a message with a positive `x-delay` header is held that
//! many milliseconds, then routed as the exchange's `x-delayed-type` routes.
//!
//! Warren-only: the reference RabbitMQ has no delayed-message plugin (it
//! answers the type with "invalid exchange type"). The texts and the
//! negated `x-delay` are the plugin's, read from its source
//! (`rabbit_exchange_type_delayed_message.erl`, `rabbit_delayed_message_utils.erl`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};
use warren_tests::*;

fn delayed_args(inner: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString(LongString::from(inner)),
    );
    t
}

fn delay(ms: i64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongLongInt(ms));
    BasicProperties::default().with_headers(headers)
}

async fn declare_delayed(ch: &lapin::Channel, name: &str, inner: &str, durable: bool) {
    let options = ExchangeDeclareOptions {
        durable,
        ..Default::default()
    };
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        options,
        delayed_args(inner),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_are_held_for_their_delay_and_delivered_in_due_order() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let x = unique("delayed");
        declare_delayed(&ch, &x, "direct", false).await;
        let q = exclusive_queue(&ch, "delayed").await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut consumer = consume(&ch, &q, true, FieldTable::default()).await;
        let start = Instant::now();
        publish_confirmed(&ch, &x, "k", "late", delay(900)).await;
        publish_confirmed(&ch, &x, "k", "early", delay(300)).await;
        publish_confirmed(&ch, &x, "k", "now", BasicProperties::default()).await;
        // Not for this key: held, then routed nowhere.
        publish_confirmed(&ch, &x, "other", "unroutable", delay(100)).await;

        let mut got = Vec::new();
        for _ in 0..3 {
            let d = consumer.next().await.unwrap().unwrap();
            got.push((
                String::from_utf8(d.data.clone()).unwrap(),
                start.elapsed(),
                d.properties.headers().clone(),
            ));
        }
        let bodies: Vec<&str> = got.iter().map(|(b, ..)| b.as_str()).collect();
        assert_eq!(bodies, ["now", "early", "late"]);
        assert!(
            got[1].1 >= Duration::from_millis(300),
            "early after {:?}",
            got[1].1
        );
        assert!(
            got[2].1 >= Duration::from_millis(900),
            "late after {:?}",
            got[2].1
        );
        // As the plugin: x-delay negated (a signed 32-bit int), nothing else added.
        let headers = got[1].2.clone().unwrap();
        assert_eq!(headers.inner().get("x-delay"), Some(&AMQPValue::LongInt(-300)));
        assert_eq!(headers.inner().len(), 1, "{headers:?}");
        assert_eq!(got[0].2, None);
    })
    .await;
}

#[tokio::test]
async fn a_delayed_exchange_routes_as_its_delayed_type() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let x = unique("delayed-topic");
        declare_delayed(&ch, &x, "topic", false).await;
        let (eu, all) = (
            exclusive_queue(&ch, "eu").await,
            exclusive_queue(&ch, "all").await,
        );
        for (q, pattern) in [(&eu, "orders.eu.*"), (&all, "orders.#")] {
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let mut from_all = consume(&ch, &all, true, FieldTable::default()).await;
        publish_confirmed(&ch, &x, "orders.us.ny", "us", delay(50)).await;
        publish_confirmed(&ch, &x, "orders.eu.fr", "eu", delay(100)).await;
        for expected in ["us", "eu"] {
            let d = from_all.next().await.unwrap().unwrap();
            assert_eq!(d.data, expected.as_bytes());
        }
        assert_eq!(drain(&ch, &eu).await, ["eu"]);
    })
    .await;
}

#[tokio::test]
async fn a_delayed_exchange_needs_an_existing_delayed_type() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let x = unique("delayed-bad");
        let cases = [
            (FieldTable::default(), "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type".to_owned()),
            (delayed_args("x-delayed-message"), "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".to_owned()),
            (delayed_args("nonsense"), "PRECONDITION_FAILED - invalid exchange type 'nonsense'".to_owned()),
        ];
        for (args, expected) in cases {
            let ch = conn.create_channel().await.unwrap();
            let err = ch
                .exchange_declare(x.as_str().into(), ExchangeKind::Custom("x-delayed-message".into()), ExchangeDeclareOptions::default(), args)
                .await
                .unwrap_err();
            assert_eq!((reply_code(&err), reply_text(&err)), (406, expected));
        }
        // A redeclare with another delayed type is taken, as the plugin
        // compares no argument but alternate-exchange; as its inner type
        // it is not the same exchange.
        let ch = conn.create_channel().await.unwrap();
        declare_delayed(&ch, &x, "direct", false).await;
        declare_delayed(&ch, &x, "fanout", false).await;
        let err = ch
            .exchange_declare(x.as_str().into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(
            reply_text(&err),
            format!("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'direct' but current is 'x-delayed-message'")
        );
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn held_messages_of_a_durable_exchange_survive_a_restart_in_due_order() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let q = unique("delayed-durable");
        let x = unique("delayed-durable");
        {
            let (_conn, ch) = broker.channel().await;
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            declare_delayed(&ch, &x, "direct", true).await;
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(q.as_str().into(), durable, FieldTable::default())
                .await
                .unwrap();
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            // Transient or persistent, a held message is kept (as the plugin
            // keeps every one on disk); once routed, a transient one is not.
            publish_confirmed(&ch, &x, "k", "second", delay(1500).with_delivery_mode(2)).await;
            publish_confirmed(&ch, &x, "k", "first", delay(1200).with_delivery_mode(1)).await;
            publish_confirmed(&ch, &x, "k", "third", delay(1800).with_delivery_mode(2)).await;
            // Its own expiration runs out while it is held and the broker is
            // down: it applies only where the message goes when due.
            let expiring = delay(1650).with_delivery_mode(2).with_expiration("1000".into());
            publish_confirmed(&ch, &x, "k", "expiring", expiring).await;
        }
        let broker = broker.shut_down_for(Duration::from_millis(1100)).await;
        let (_conn, ch) = broker.channel().await;
        let mut consumer = consume(&ch, &q, true, FieldTable::default()).await;
        for expected in ["first", "second", "expiring", "third"] {
            let d = consumer.next().await.unwrap().unwrap();
            assert_eq!(std::str::from_utf8(&d.data).unwrap(), expected);
        }
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn deleting_a_delayed_exchange_drops_what_it_held() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let x = unique("delayed-gone");
        declare_delayed(&ch, &x, "fanout", false).await;
        let q = exclusive_queue(&ch, "delayed-gone").await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish_confirmed(&ch, &x, "", "dropped", delay(200)).await;
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        // The same name again, and a message due after the dropped one
        // would have been: it arrives alone.
        declare_delayed(&ch, &x, "fanout", false).await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish_confirmed(&ch, &x, "", "kept", delay(400)).await;
        let mut consumer = consume(&ch, &q, true, FieldTable::default()).await;
        let d = consumer.next().await.unwrap().unwrap();
        // "dropped" was due first: had it been kept, it would come first.
        assert_eq!(d.data, b"kept");
    })
    .await;
}
