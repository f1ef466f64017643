//! Consumer priorities (`x-priority` on basic.consume) and single active
//! consumer (`x-single-active-consumer`). Every test passes against
//! RabbitMQ 3.10.8 too (`AMQP_URL`).

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use warren_tests::*;

#[tokio::test]
async fn a_higher_priority_consumer_is_served_first_while_it_has_room() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "prio").await;
        let high_ch = conn.create_channel().await.unwrap();
        let low_ch = conn.create_channel().await.unwrap();
        high_ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
        low_ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
        let mut low = consume(
            &low_ch,
            &q,
            false,
            table(&[("x-priority", AMQPValue::LongInt(1))]),
        )
        .await;
        let mut high = consume(
            &high_ch,
            &q,
            false,
            table(&[("x-priority", AMQPValue::LongInt(10))]),
        )
        .await;
        for i in 0..10u8 {
            publish(&ch, "", &q, &[i]).await;
        }
        // The high one takes what its prefetch allows, the first two; the
        // low one gets the rest while the high one is full.
        for expected in 2..10u8 {
            let d = low.next().await.unwrap().unwrap();
            assert_eq!(d.data, [expected]);
        }
        for expected in 0..2u8 {
            let d = high.next().await.unwrap().unwrap();
            assert_eq!(d.data, [expected]);
        }
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_single_active_consumer_gets_everything_until_it_goes() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = unique("sac");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
        )
        .await
        .unwrap();
        let first_ch = conn.create_channel().await.unwrap();
        let second_ch = conn.create_channel().await.unwrap();
        let mut first = consume(&first_ch, &q, true, FieldTable::default()).await;
        let mut second = consume(&second_ch, &q, true, FieldTable::default()).await;
        for i in 0..5u8 {
            publish(&ch, "", &q, &[i]).await;
        }
        for expected in 0..5u8 {
            assert_eq!(first.next().await.unwrap().unwrap().data, [expected]);
        }
        first_ch
            .basic_cancel(first.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        for i in 5..8u8 {
            publish(&ch, "", &q, &[i]).await;
        }
        for expected in 5..8u8 {
            assert_eq!(second.next().await.unwrap().unwrap().data, [expected]);
        }
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_non_integer_consumer_priority_is_406_as_in_rabbitmq() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "prio-bad").await;
        let err = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                table(&[("x-priority", AMQPValue::LongString(LongString::from("abc")))]),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        assert_eq!(
            reply_text(&err),
            format!("PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': \"expected integer, got longstr\"")
        );
    })
    .await;
}

async fn publish_priority(ch: &lapin::Channel, queue: &str, body: &str, priority: Option<u8>) {
    let mut properties = lapin::BasicProperties::default();
    if let Some(p) = priority {
        properties = properties.with_priority(p);
    }
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        properties,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_priority_queue_delivers_higher_priorities_first_and_fifo_within_one() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("prioq");
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(
            q.as_str().into(),
            options,
            table(&[("x-max-priority", AMQPValue::LongInt(10))]),
        )
        .await
        .unwrap();
        for (body, priority) in [
            ("none", None),
            ("5a", Some(5)),
            ("10", Some(10)),
            ("5b", Some(5)),
            ("0", Some(0)),
            // Above the maximum: counts as 10, after the other 10.
            ("200", Some(200)),
        ] {
            publish_priority(&ch, &q, body, priority).await;
        }
        // The first two, taken and given back: they return to their places.
        let a = get(&ch, &q).await.expect("the first");
        let b = get(&ch, &q).await.expect("the second");
        assert_eq!(
            (a.delivery.data.as_slice(), b.delivery.data.as_slice()),
            (&b"10"[..], &b"200"[..])
        );
        b.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        a.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(drain(&ch, &q).await, ["10", "200", "5a", "5b", "none", "0"]);
    })
    .await;
}
