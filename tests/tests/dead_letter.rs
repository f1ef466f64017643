//! Dead-lettering (`x-dead-letter-exchange`, `x-dead-letter-routing-key`).
//! The headers checked here are the ones RabbitMQ 3.10.8 wrote for the same
//! sequence (probed with pika), and every test passes against it too.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use warren_tests::*;

fn dlx_args(exchange: &str, routing_key: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    if let Some(key) = routing_key {
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(key.into()),
        );
    }
    args
}

async fn next(consumer: &mut lapin::Consumer) -> Delivery {
    consumer.next().await.expect("a delivery").expect("no error")
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(key)
}

fn text(value: Option<&AMQPValue>) -> String {
    match value {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

/// The `x-death` tables, most recent first.
fn deaths(d: &Delivery) -> Vec<FieldTable> {
    match header(d, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death holds {other:?}"),
            })
            .collect(),
        other => panic!("expected x-death, got {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    t.inner().get(key)
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_with_rabbitmqs_headers() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (src, dlq) = (unique("src"), unique("dlq"));
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        declare_exclusive(&ch, &src, dlx_args("", Some(&dlq))).await;
        let mut headers = FieldTable::default();
        headers.insert("h".into(), AMQPValue::LongInt(1));
        let properties = BasicProperties::default()
            .with_expiration(ShortString::from("60000"))
            .with_headers(headers)
            .with_correlation_id("c-1".into());
        ch.basic_publish(
            "".into(),
            src.as_str().into(),
            BasicPublishOptions::default(),
            b"m1",
            properties,
        )
        .await
        .unwrap();
        let mut dead = consume(&ch, &dlq, true, FieldTable::default()).await;
        let got = get(&ch, &src).await.expect("the message");
        got.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        let d = next(&mut dead).await;
        assert_eq!(d.data, b"m1");
        assert_eq!(d.routing_key.as_str(), dlq);
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(
            *d.properties.expiration(),
            None,
            "the expiration moves to x-death"
        );
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some("c-1")
        );
        assert_eq!(header(&d, "h"), Some(&AMQPValue::LongInt(1)));
        let deaths = deaths(&d);
        assert_eq!(deaths.len(), 1);
        let death = &deaths[0];
        assert_eq!(field(death, "count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(text(field(death, "reason")), "rejected");
        assert_eq!(text(field(death, "queue")), src);
        assert_eq!(text(field(death, "exchange")), "");
        assert_eq!(text(field(death, "original-expiration")), "60000");
        assert!(matches!(field(death, "time"), Some(AMQPValue::Timestamp(_))));
        assert_eq!(
            field(death, "routing-keys"),
            Some(&AMQPValue::FieldArray(
                vec![AMQPValue::LongString(LongString::from(src.as_str()))].into()
            ))
        );
        assert_eq!(text(header(&d, "x-first-death-reason")), "rejected");
        assert_eq!(text(header(&d, "x-first-death-queue")), src);
        assert_eq!(text(header(&d, "x-first-death-exchange")), "");
        // RabbitMQ 3.13's; 3.10, the reference, does not write them.
        if is_warren() {
            assert_eq!(text(header(&d, "x-last-death-reason")), "rejected");
            assert_eq!(text(header(&d, "x-last-death-queue")), src);
            assert_eq!(text(header(&d, "x-last-death-exchange")), "");
        }
    })
    .await;
}

#[tokio::test]
async fn an_expired_message_is_dead_lettered_under_its_own_routing_key() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (dlx, src, dlq) = (unique("dlx"), unique("src"), unique("dlq"));
        ch.exchange_declare(
            dlx.as_str().into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        // Bound with the source queue's name: no dead-letter routing key, so
        // the message keeps the key it was published with.
        ch.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            src.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = dlx_args(&dlx, None);
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(20));
        declare_exclusive(&ch, &src, args).await;
        let mut dead = consume(&ch, &dlq, true, FieldTable::default()).await;
        publish(&ch, "", &src, b"late").await;
        let d = next(&mut dead).await;
        assert_eq!(d.data, b"late");
        assert_eq!(d.routing_key.as_str(), src);
        assert_eq!(d.exchange.as_str(), dlx);
        let deaths = deaths(&d);
        assert_eq!(text(field(&deaths[0], "reason")), "expired");
        assert_eq!(field(&deaths[0], "original-expiration"), None);
        assert_eq!(text(header(&d, "x-first-death-reason")), "expired");
        ch.exchange_delete(dlx.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

/// basic.get until the message arrives: a dead-lettered message reaches its
/// new queue a moment after the reject that sent it is answered.
async fn get_eventually(ch: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    loop {
        if let Some(m) = get(ch, queue).await {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_second_death_in_the_same_queue_counts_up_and_comes_first() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (a, b) = (unique("a"), unique("b"));
        // a and b dead-letter into each other; a client rejects each time,
        // so this is no cycle to cut.
        declare_exclusive(&ch, &a, dlx_args("", Some(&b))).await;
        declare_exclusive(&ch, &b, dlx_args("", Some(&a))).await;
        publish(&ch, "", &a, b"ping").await;
        for queue in [&a, &b, &a] {
            let got = get_eventually(&ch, queue).await;
            got.delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
        }
        let got = get_eventually(&ch, &b).await;
        let d = &got.delivery;
        let summary: Vec<(String, AMQPValue)> = deaths(d)
            .iter()
            .map(|t| (text(field(t, "queue")), field(t, "count").cloned().unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (a.clone(), AMQPValue::LongLongInt(2)),
                (b.clone(), AMQPValue::LongLongInt(1))
            ]
        );
        assert_eq!(text(header(d, "x-first-death-queue")), a);
        // The most recent death was in a (the first x-death table).
        if is_warren() {
            assert_eq!(text(header(d, "x-last-death-queue")), a);
        }
    })
    .await;
}

#[tokio::test]
async fn an_automatic_cycle_is_cut_and_the_message_dropped() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("cycle");
        // Expired messages go back to the same queue: RabbitMQ drops them
        // rather than cycle for ever, since no client rejected them.
        let mut args = dlx_args("", Some(&q));
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(10));
        declare_exclusive(&ch, &q, args).await;
        publish(&ch, "", &q, b"round").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn a_republished_death_count_of_any_integer_type_counts_up() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (src, dlq) = (unique("src"), unique("dlq"));
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        declare_exclusive(&ch, &src, dlx_args("", Some(&dlq))).await;
        // As a client republishes a dead-lettered message: pika writes a
        // small count as a 32-bit integer.
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongInt(2));
        death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        death.insert("queue".into(), AMQPValue::LongString(src.as_str().into()));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        ch.basic_publish(
            "".into(),
            src.as_str().into(),
            BasicPublishOptions::default(),
            b"again",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
        let got = get(&ch, &src).await.expect("the message");
        got.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        let got = get_eventually(&ch, &dlq).await;
        let deaths = deaths(&got.delivery);
        assert_eq!(field(&deaths[0], "count"), Some(&AMQPValue::LongLongInt(3)));
    })
    .await;
}

#[tokio::test]
async fn a_message_rejected_just_before_its_auto_delete_queue_goes_is_dead_lettered() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (src, dlq) = (unique("src"), unique("dlq"));
        declare_exclusive(&ch, &dlq, FieldTable::default()).await;
        ch.queue_declare(
            src.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            dlx_args("", Some(&dlq)),
        )
        .await
        .unwrap();
        publish(&ch, "", &src, b"last").await;
        let consumer_ch = broker.connect().await.create_channel().await.unwrap();
        let mut consumer = consumer_ch
            .basic_consume(
                src.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        // The reject and the cancel that deletes the queue, back to back.
        d.reject(BasicRejectOptions { requeue: false }).await.unwrap();
        consumer_ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        let got = get_eventually(&ch, &dlq).await;
        assert_eq!(got.delivery.data, b"last");
    })
    .await;
}
