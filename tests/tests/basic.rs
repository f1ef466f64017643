//! The basic class: publish, consume, cancel, get, ack/nack/reject, qos,
//! recover, and dispatch (round-robin, prefetch, requeue on close).

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Consumer};
use warren_tests::*;

async fn consume(ch: &lapin::Channel, q: &str, options: BasicConsumeOptions) -> Consumer {
    ch.basic_consume(q.into(), "".into(), options, FieldTable::default())
        .await
        .unwrap()
}

async fn next_body(consumer: &mut Consumer) -> (String, lapin::message::Delivery) {
    let d = consumer.next().await.unwrap().unwrap();
    (String::from_utf8(d.data.clone()).unwrap(), d)
}

/// Nothing more arrives within a short window. Only used to check that the
/// broker holds something back (prefetch), never to wait for progress.
async fn nothing_more(consumer: &mut Consumer) {
    let more = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    assert!(more.is_err(), "unexpected delivery: {more:?}");
}

#[tokio::test]
async fn publish_consume_ack_preserves_body_and_properties() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "props").await;
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("r".into())
            .with_priority(3)
            .with_delivery_mode(1);
        let body = vec![7u8; 300_000]; // larger than frame_max: several body frames
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props.clone(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"",
            props.clone(),
        )
        .await
        .unwrap();
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let d = c.next().await.unwrap().unwrap();
        assert_eq!(d.data, body);
        assert_eq!(d.properties, props);
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str(), d.redelivered),
            ("", q.as_str(), false)
        );
        d.ack(BasicAckOptions::default()).await.unwrap();
        let d = c.next().await.unwrap().unwrap();
        assert!(d.data.is_empty());
        d.ack(BasicAckOptions::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_with_312() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                "amq.direct".into(),
                unique("nobody").as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"lost",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        let returned = confirm.take_message().expect("a basic.return");
        assert_eq!(returned.reply_code, 312);
        assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(returned.delivery.data, b"lost");
    })
    .await;
}

#[tokio::test]
async fn immediate_is_540_and_closes_the_connection() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "imm").await;
        let publish = ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        );
        assert_eq!(closed_code(&ch, publish).await, 540);
        assert!(!conn.status().connected());
    })
    .await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let nox = unique("nox");
        let publish = ch.basic_publish(
            nox.as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        );
        assert_eq!(closed_code(&ch, publish).await, 404);
    })
    .await;
}

#[tokio::test]
async fn consumer_tags_exclusive_consumers_and_tag_reuse() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "tags").await;
        let c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
        // An exclusive consumer is refused while another consumer exists.
        let ch2 = conn.create_channel().await.unwrap();
        let err = ch2
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        // Reusing a tag on the channel is a connection error, 530.
        let err = ch
            .basic_consume(
                q.as_str().into(),
                c.tag(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 530);
    })
    .await;
}

#[tokio::test]
async fn consuming_from_a_missing_queue_is_404() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let err = ch
            .basic_consume(
                unique("noq").as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
    })
    .await;
}

#[tokio::test]
async fn cancel_stops_deliveries_and_keeps_messages() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "cancel").await;
        let c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        ch.basic_cancel(c.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        publish(&ch, "", &q, b"kept").await;
        assert_eq!(drain(&ch, &q).await, ["kept"]);
    })
    .await;
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "cancelled").await;
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let other = broker.connect().await.create_channel().await.unwrap();
        let _ = other; // the owner deletes it: the queue is exclusive
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        // lapin announces consumer_cancel_notify: the stream ends.
        assert!(c.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn get_reports_remaining_count_and_get_empty() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "get").await;
        assert!(get(&ch, &q).await.is_none());
        for body in ["a", "b", "c"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        let m = get(&ch, &q).await.unwrap();
        assert_eq!((m.delivery.data.as_slice(), m.message_count), (&b"a"[..], 2));
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        let m = get(&ch, &q).await.unwrap();
        assert_eq!((m.delivery.data.as_slice(), m.message_count), (&b"b"[..], 1));
    })
    .await;
}

#[tokio::test]
async fn unknown_and_double_acks_are_406() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        assert_eq!(
            closed_code(&ch, ch.basic_ack(99, BasicAckOptions::default())).await,
            406
        );

        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "double").await;
        publish(&ch, "", &q, b"x").await;
        let m = get(&ch, &q).await.unwrap();
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        let again = ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default());
        assert_eq!(closed_code(&ch, again).await, 406);

        let ch = conn.create_channel().await.unwrap();
        assert_eq!(
            closed_code(&ch, ch.basic_reject(7, BasicRejectOptions::default())).await,
            406
        );
    })
    .await;
}

#[tokio::test]
async fn ack_multiple_and_nack_multiple() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "multi").await;
        for i in 1..=6 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut tags = Vec::new();
        for _ in 0..6 {
            tags.push(get(&ch, &q).await.unwrap().delivery.delivery_tag);
        }
        // ack 1..=3, nack(requeue) 4..=5, reject(requeue=false) 6
        ch.basic_ack(tags[2], BasicAckOptions { multiple: true })
            .await
            .unwrap();
        ch.basic_nack(
            tags[4],
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await
        .unwrap();
        ch.basic_reject(tags[5], BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        let m = get(&ch, &q).await.unwrap();
        assert_eq!(
            (
                m.delivery.data.as_slice(),
                m.delivery.redelivered,
                m.message_count
            ),
            (&b"m4"[..], true, 1)
        );
        let m = get(&ch, &q).await.unwrap();
        assert_eq!((m.delivery.data.as_slice(), m.message_count), (&b"m5"[..], 0));
        assert!(get(&ch, &q).await.is_none());
        // tag 0 with multiple acks everything outstanding
        ch.basic_ack(0, BasicAckOptions { multiple: true }).await.unwrap();
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        assert_eq!(
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
                .await
                .unwrap()
                .message_count(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn requeued_messages_return_to_their_original_position() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "order").await;
        for body in ["1", "2", "3", "4"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        let first = get(&ch, &q).await.unwrap();
        let second = get(&ch, &q).await.unwrap();
        second
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        first
            .delivery
            .reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(m) = get(&ch, &q).await {
            seen.push((
                String::from_utf8(m.delivery.data.clone()).unwrap(),
                m.delivery.redelivered,
            ));
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        assert_eq!(
            seen,
            [
                ("1".into(), true),
                ("2".into(), true),
                ("3".into(), false),
                ("4".into(), false)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn round_robin_across_consumers() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "rr").await;
        let mut a = consume(
            &ch,
            &q,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
        let mut b = consume(
            &ch,
            &q,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
        for i in 0..10 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        for _ in 0..5 {
            got_a.push(next_body(&mut a).await.0);
            got_b.push(next_body(&mut b).await.0);
        }
        assert_eq!(got_a, ["0", "2", "4", "6", "8"]);
        assert_eq!(got_b, ["1", "3", "5", "7", "9"]);
    })
    .await;
}

#[tokio::test]
async fn prefetch_per_consumer_limits_unacked_deliveries() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "prefetch").await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let (b0, d0) = next_body(&mut c).await;
        let (b1, _d1) = next_body(&mut c).await;
        assert_eq!((b0.as_str(), b1.as_str()), ("0", "1"));
        nothing_more(&mut c).await;
        d0.ack(BasicAckOptions::default()).await.unwrap();
        assert_eq!(next_body(&mut c).await.0, "2");
        nothing_more(&mut c).await;
    })
    .await;
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channel() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q1 = exclusive_queue(&ch, "g1").await;
        let q2 = exclusive_queue(&ch, "g2").await;
        for i in 0..3 {
            publish(&ch, "", &q1, format!("a{i}").as_bytes()).await;
            publish(&ch, "", &q2, format!("b{i}").as_bytes()).await;
        }
        ch.basic_qos(3, BasicQosOptions { global: true }).await.unwrap();
        let mut c1 = consume(&ch, &q1, BasicConsumeOptions::default()).await;
        let mut c2 = consume(&ch, &q2, BasicConsumeOptions::default()).await;
        // q1's consumer starts first and takes all three slots of the channel.
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(next_body(&mut c1).await);
        }
        nothing_more(&mut c2).await;
        first
            .pop()
            .unwrap()
            .1
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        assert_eq!(next_body(&mut c2).await.0, "b0");
    })
    .await;
}

#[tokio::test]
async fn closing_a_channel_requeues_its_unacked_messages_to_other_consumers() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "requeue").await;
        for body in ["a", "b"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        let greedy = conn.create_channel().await.unwrap();
        let mut g = consume(&greedy, &q, BasicConsumeOptions::default()).await;
        next_body(&mut g).await;
        next_body(&mut g).await;
        let mut other = consume(&ch, &q, BasicConsumeOptions::default()).await;
        greedy.close(200, "bye".into()).await.unwrap();
        let (a, da) = next_body(&mut other).await;
        let (b, db) = next_body(&mut other).await;
        assert_eq!(
            (a.as_str(), da.redelivered, b.as_str(), db.redelivered),
            ("a", true, "b", true)
        );
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_requeues_its_unacked_messages() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "dropped").await;
        publish(&ch, "", &q, b"survivor").await;
        // A raw client takes the message and vanishes without closing.
        {
            use warren_codec::amq_protocol::protocol::{basic, AMQPClass};
            use warren_codec::Frame;
            let mut raw = warren_tests::raw::RawClient::open(broker.addr).await;
            raw.open_channel(1).await;
            raw.send(Frame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                    queue: q.as_str().into(),
                    no_ack: false,
                })),
            ))
            .await;
            match raw.recv().await {
                Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::GetOk(_)))) => {}
                other => panic!("expected get-ok, got {other:?}"),
            }
        }
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let (body, d) = next_body(&mut c).await;
        assert_eq!((body.as_str(), d.redelivered), ("survivor", true));
        d.ack(BasicAckOptions::default()).await.unwrap();
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn recover_redelivers_unacked_messages() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "recover").await;
        publish(&ch, "", &q, b"again").await;
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let (_, d) = next_body(&mut c).await;
        assert!(!d.redelivered);
        ch.basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .unwrap();
        let (body, d) = next_body(&mut c).await;
        assert_eq!((body.as_str(), d.redelivered), ("again", true));
    })
    .await;
}

/// An ack sent just before the connection drops, in the same write, still
/// counts: only the unacked message comes back. (Warren holds acks for the
/// rest of a socket read before telling the queue; this is the case where
/// that read ends the connection.)
#[tokio::test]
async fn an_ack_sent_right_before_the_socket_drops_is_kept() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "ack-then-drop").await;
        for body in ["acked", "unacked"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        {
            use warren_codec::amq_protocol::protocol::{basic, AMQPClass};
            use warren_codec::Frame;
            let mut raw = warren_tests::raw::RawClient::open(broker.addr).await;
            raw.open_channel(1).await;
            for _ in 0..2 {
                raw.send(Frame::Method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                        queue: q.as_str().into(),
                        no_ack: false,
                    })),
                ))
                .await;
                raw.recv_until(1, |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))))
                    .await;
            }
            raw.send(Frame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 1,
                    multiple: false,
                })),
            ))
            .await;
        }
        let mut c = consume(&ch, &q, BasicConsumeOptions::default()).await;
        let (body, d) = next_body(&mut c).await;
        assert_eq!((body.as_str(), d.redelivered), ("unacked", true));
        nothing_more(&mut c).await;
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}
