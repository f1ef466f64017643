//! Durability across a restart on the same data directory (Warren-only: the
//! tests restart the broker they talk to).

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use warren_tests::*;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare_quorum(ch: &lapin::Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), durable, args).await.unwrap();
}

async fn passive_queue(ch: &lapin::Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), passive, FieldTable::default())
        .await
}

#[tokio::test]
async fn durable_definitions_and_persistent_messages_survive_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        {
            let (conn, ch) = broker.channel().await;
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare("dx".into(), ExchangeKind::Topic, durable, FieldTable::default())
                .await
                .unwrap();
            ch.exchange_declare(
                "tx".into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let dq = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare("dq".into(), dq, FieldTable::default())
                .await
                .unwrap();
            ch.queue_declare("tq".into(), QueueDeclareOptions::default(), FieldTable::default())
                .await
                .unwrap();
            ch.queue_bind(
                "dq".into(),
                "dx".into(),
                "a.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_bind(
                "dq".into(),
                "tx".into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            publish_confirmed(&ch, "dx", "a.1", "p1", persistent()).await;
            publish_confirmed(&ch, "", "dq", "transient", BasicProperties::default()).await;
            publish_confirmed(&ch, "", "dq", "p2", persistent()).await;
            publish_confirmed(&ch, "", "dq", "p3", persistent()).await;
            publish_confirmed(&ch, "", "tq", "p-on-transient-queue", persistent()).await;
            // p1 is delivered but not acked, p2 is acked: p1 comes back
            // redelivered, p2 does not come back.
            let consumer_ch = conn.create_channel().await.unwrap();
            consumer_ch
                .basic_qos(2, BasicQosOptions::default())
                .await
                .unwrap();
            let mut c = consumer_ch
                .basic_consume(
                    "dq".into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let first = c.next().await.unwrap().unwrap();
            assert_eq!(first.data, b"p1");
            let second = c.next().await.unwrap().unwrap();
            assert_eq!(second.data, b"transient");
            second.ack(BasicAckOptions::default()).await.unwrap();
            let third = c.next().await.unwrap().unwrap();
            assert_eq!(third.data, b"p2");
            third.ack(BasicAckOptions::default()).await.unwrap();
            // Wait until the acks are processed: p3 is delivered after them.
            let fourth = c.next().await.unwrap().unwrap();
            assert_eq!(fourth.data, b"p3");
            ch.queue_declare(
                "dq".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        let passive_x = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare("dx".into(), ExchangeKind::Topic, passive_x, FieldTable::default())
            .await
            .unwrap();
        let err = ch
            .exchange_declare(
                "tx".into(),
                ExchangeKind::Fanout,
                passive_x,
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        let ch = broker.connect().await.create_channel().await.unwrap();
        assert_eq!(reply_code(&passive_queue(&ch, "tq").await.unwrap_err()), 404);
        let ch = broker.connect().await.create_channel().await.unwrap();
        assert_eq!(passive_queue(&ch, "dq").await.unwrap().message_count(), 2);
        let mut seen = Vec::new();
        while let Some(m) = get(&ch, "dq").await {
            seen.push((
                String::from_utf8(m.delivery.data.clone()).unwrap(),
                m.delivery.redelivered,
            ));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        assert_eq!(seen, [("p1".into(), true), ("p3".into(), true)]);
        // The durable binding came back; the one to the transient exchange did not matter.
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish_confirmed(&ch, "dx", "a.b", "routed", persistent()).await;
        assert_eq!(drain(&ch, "dq").await, ["routed"]);
        // And what was acked stays gone after another restart.
        drop(ch);
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(passive_queue(&ch, "dq").await.unwrap().message_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn deleted_durable_things_stay_deleted() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        {
            let (_conn, ch) = broker.channel().await;
            let dq = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare("gone".into(), dq, FieldTable::default())
                .await
                .unwrap();
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            publish_confirmed(&ch, "", "gone", "x", persistent()).await;
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare("gx".into(), ExchangeKind::Direct, durable, FieldTable::default())
                .await
                .unwrap();
            ch.queue_delete("gone".into(), QueueDeleteOptions::default())
                .await
                .unwrap();
            ch.exchange_delete("gx".into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(reply_code(&passive_queue(&ch, "gone").await.unwrap_err()), 404);
    })
    .await;
}

#[tokio::test]
async fn committed_persistent_messages_survive_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        {
            let (_conn, ch) = broker.channel().await;
            let dq = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare("txq".into(), dq, FieldTable::default())
                .await
                .unwrap();
            ch.tx_select().await.unwrap();
            for body in ["t1", "t2"] {
                ch.basic_publish(
                    "".into(),
                    "txq".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    persistent(),
                )
                .await
                .unwrap();
            }
            ch.basic_publish(
                "".into(),
                "txq".into(),
                BasicPublishOptions::default(),
                b"transient",
                BasicProperties::default(),
            )
            .await
            .unwrap();
            // commit-ok comes once the persistent ones are on disk.
            ch.tx_commit().await.unwrap();
        }
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(drain(&ch, "txq").await, ["t1", "t2"]);
    })
    .await;
}

/// More persistent messages than a durable queue keeps in memory (10,000):
/// the rest wait in the store and are read back, in order, when delivered.
#[tokio::test]
async fn a_backlog_beyond_memory_is_delivered_whole_and_in_order() {
    // Over ten thousand persistent messages, each written and removed by a
    // debug build's sled: more than the usual 30 s on a busy 2-core machine.
    let limit = std::time::Duration::from_secs(80);
    let body = async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("backlog");
        let dq = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), dq, FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        const N: u32 = 10_500;
        let mut confirms = Vec::new();
        for i in 0..N {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &i.to_be_bytes(),
                    persistent(),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
        ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
        let mut c = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for expected in 0..N {
            let d = c.next().await.unwrap().unwrap();
            assert_eq!(u32::from_be_bytes(d.data[..4].try_into().unwrap()), expected);
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    };
    tokio::time::timeout(limit, body).await.expect("test timed out");
}

#[tokio::test]
async fn a_persistent_message_dead_lettered_to_a_durable_queue_survives_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("dl-target".into(), durable, FieldTable::default())
            .await
            .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            lapin::types::AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            lapin::types::AMQPValue::LongString("dl-target".into()),
        );
        ch.queue_declare("dl-source".into(), durable, args).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish_confirmed(&ch, "", "dl-source", "dead", persistent()).await;
        let got = ch
            .basic_get("dl-source".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("the message");
        got.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        // The dead-lettered copy is in the target before the restart.
        while passive_queue(&ch, "dl-target").await.unwrap().message_count() == 0 {
            tokio::task::yield_now().await;
        }
        drop(conn);
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(passive_queue(&ch, "dl-source").await.unwrap().message_count(), 0);
        let got = ch
            .basic_get("dl-target".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the dead-lettered message survived");
        assert_eq!(got.delivery.data, b"dead");
        let reason = got
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-first-death-reason").cloned());
        assert_eq!(
            reason,
            Some(lapin::types::AMQPValue::LongString("rejected".into()))
        );
    })
    .await;
}

#[tokio::test]
async fn a_quorum_queue_keeps_transient_messages_across_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        declare_quorum(&ch, "qq-kept").await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        // No delivery mode: a quorum queue stores it anyway, as RabbitMQ's do.
        publish_confirmed(&ch, "", "qq-kept", "transient", BasicProperties::default()).await;
        drop(conn);
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        let got = ch
            .basic_get("qq-kept".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the message survived");
        assert_eq!(got.delivery.data, b"transient");
    })
    .await;
}

#[tokio::test]
async fn a_priority_queue_keeps_its_order_and_its_messages_their_ttl_across_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), lapin::types::AMQPValue::LongInt(5));
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("prio-kept".into(), durable, args).await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for (body, priority, expiration) in [
            ("low", 1, None),
            ("short-lived", 5, Some("300")),
            ("high", 5, None),
            ("mid", 3, Some("60000")),
        ] {
            let mut props = persistent().with_priority(priority);
            if let Some(expiration) = expiration {
                props = props.with_expiration(expiration.into());
            }
            publish_confirmed(&ch, "", "prio-kept", body, props).await;
        }
        drop(conn);
        // The short-lived message's time runs out while the broker is down.
        let broker = broker.shut_down_for(std::time::Duration::from_millis(400)).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(drain(&ch, "prio-kept").await, ["high", "mid", "low"]);
        ch.queue_delete("prio-kept".into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_quorum_queue_keeps_its_delivery_counts_across_a_restart() {
    if !is_warren() {
        return; // restarts the broker
    }
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        declare_quorum(&ch, "qq-counted").await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish_confirmed(&ch, "", "qq-counted", "job", persistent()).await;
        let count = |got: &lapin::message::BasicGetMessage| {
            got.delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-delivery-count").cloned())
        };
        // Delivered twice; the second delivery is still unacked at the stop.
        let got = get(&ch, "qq-counted").await.expect("the job");
        assert_eq!(count(&got), Some(lapin::types::AMQPValue::LongLongInt(0)));
        got.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let got = get(&ch, "qq-counted").await.expect("the job again");
        assert_eq!(count(&got), Some(lapin::types::AMQPValue::LongLongInt(1)));
        drop(conn);
        let broker = broker.restart().await;
        let (_conn, ch) = broker.channel().await;
        let got = get(&ch, "qq-counted").await.expect("the job after the restart");
        assert!(got.delivery.redelivered);
        assert_eq!(count(&got), Some(lapin::types::AMQPValue::LongLongInt(2)));
        ch.queue_delete("qq-counted".into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}
