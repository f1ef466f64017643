//! queue.declare/bind/unbind/purge/delete, exclusivity and auto-delete.

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren_tests::*;

#[tokio::test]
async fn server_named_queues() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let opts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("".into(), opts, FieldTable::default())
            .await
            .unwrap();
        assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
        let q2 = ch
            .queue_declare("".into(), opts, FieldTable::default())
            .await
            .unwrap();
        assert_ne!(q.name(), q2.name());
    })
    .await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_404() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let name = unique("missing");
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .queue_declare(name.as_str().into(), opts, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        assert_eq!(
            reply_text(&err),
            format!("NOT_FOUND - no queue '{name}' in vhost '/'")
        );
    })
    .await;
}

#[tokio::test]
async fn declare_ok_counts_ready_messages_and_consumers() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "counts").await;
        for body in ["1", "2", "3", "4"] {
            publish(&ch, "", &q, body.as_bytes()).await;
        }
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _first = consumer.next().await.unwrap().unwrap();
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let info = ch
            .queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
            .unwrap();
        assert_eq!((info.message_count(), info.consumer_count()), (3, 1));
    })
    .await;
}

#[tokio::test]
async fn redeclare_with_different_properties_is_406() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "equiv").await;
        // Exclusive queues are never durable, so asking for durable is no mismatch.
        let durable = QueueDeclareOptions {
            exclusive: true,
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap();
        let shared = unique("equiv-shared");
        ch.queue_declare(
            shared.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let err = ch
            .queue_declare(shared.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        ch.queue_delete(shared.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        let opts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let err = ch.queue_declare(q.as_str().into(), opts, args).await.unwrap_err();
        assert_eq!(reply_code(&err), 406);
    })
    .await;
}

#[tokio::test]
async fn exclusive_queues_are_locked_to_their_connection_and_go_with_it() {
    within(async {
        let broker = start_broker().await;
        let (owner, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "excl").await;
        let other = broker.connect().await;
        let attempts: Vec<Box<dyn Fn(lapin::Channel) -> futures::future::BoxFuture<'static, lapin::Error>>> = vec![
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.queue_declare(q.as_str().into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.unwrap_err()
                }})
            }),
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.queue_declare(q.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.unwrap_err()
                }})
            }),
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap_err()
                }})
            }),
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await.unwrap_err()
                }})
            }),
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.queue_bind(q.as_str().into(), "amq.fanout".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.unwrap_err()
                }})
            }),
            Box::new({
                let q = q.clone();
                move |ch| Box::pin({ let q = q.clone(); async move {
                    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap_err()
                }})
            }),
        ];
        for attempt in attempts {
            let ch = other.create_channel().await.unwrap();
            assert_eq!(reply_code(&attempt(ch).await), 405);
        }
        owner.close(200, "bye".into()).await.unwrap();
        // Gone with its connection: the other connection can now declare it.
        let ch = other.create_channel().await.unwrap();
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let err = ch.queue_declare(q.as_str().into(), passive, FieldTable::default()).await.unwrap_err();
        assert_eq!(reply_code(&err), 404);
    })
    .await;
}

#[tokio::test]
async fn auto_delete_queue_goes_when_its_last_consumer_is_cancelled() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = unique("auto");
        let opts = QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
            .unwrap();
        let c1 = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let c2 = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap();
        ch.basic_cancel(c2.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        // Deletion follows the cancel asynchronously: poll with passive declares.
        let ch2 = conn.create_channel().await.unwrap();
        loop {
            match ch2
                .queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(reply_code(&e), 404);
                    break;
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bind_and_unbind_need_an_existing_queue_and_exchange() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "bind").await;
        let err = ch
            .queue_bind(
                q.as_str().into(),
                unique("nox").as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .queue_bind(
                unique("noq").as_str().into(),
                "amq.direct".into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        let ch = conn.create_channel().await.unwrap();
        ch.queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            q.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.direct", &q, b"bound").await;
        ch.queue_unbind(
            q.as_str().into(),
            "amq.direct".into(),
            q.as_str().into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.direct", &q, b"unbound").await;
        assert_eq!(drain(&ch, &q).await, ["bound"]);
    })
    .await;
}

#[tokio::test]
async fn purge_returns_the_count_and_empties_the_queue() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "purge").await;
        for _ in 0..5 {
            publish(&ch, "", &q, b"x").await;
        }
        assert_eq!(
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap(),
            5
        );
        assert!(drain(&ch, &q).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn delete_if_unused_and_if_empty_refuse_with_406() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "del").await;
        publish(&ch, "", &q, b"x").await;
        let err = ch
            .queue_delete(
                q.as_str().into(),
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        let _c = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ch2 = conn.create_channel().await.unwrap();
        let err = ch2
            .queue_delete(
                q.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch3 = conn.create_channel().await.unwrap();
        assert_eq!(
            ch3.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn an_empty_queue_name_means_the_last_declared_queue() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .queue_bind(
                "".into(),
                "amq.direct".into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        assert_eq!(reply_text(&err), "NOT_FOUND - no previously declared queue");
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "last").await;
        // queue '' and routing key '' bind the last queue under its own name.
        ch.queue_bind(
            "".into(),
            "amq.direct".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.direct", &q, b"via shortcut").await;
        let m = get(&ch, "").await.unwrap();
        assert_eq!(m.delivery.data, b"via shortcut");
    })
    .await;
}

#[tokio::test]
async fn unbinding_what_is_not_bound_succeeds() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "unbound").await;
        ch.queue_unbind(
            q.as_str().into(),
            "amq.topic".into(),
            "never.bound".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_unbind(
            unique("noq").as_str().into(),
            "amq.topic".into(),
            "x".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_unbind(
            q.as_str().into(),
            unique("nox").as_str().into(),
            "x".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // And deleting a missing queue answers delete-ok with 0.
        let gone = unique("gone");
        assert_eq!(
            ch.queue_delete(gone.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn redeclaring_with_other_exclusivity_is_405_even_for_the_owner() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "owner").await;
        let err = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 405);
    })
    .await;
}

#[tokio::test]
async fn a_transient_backlog_beyond_memory_is_delivered_whole_and_in_order() {
    // Past the 8 MiB head a queue keeps in memory (by body size and 128
    // octets a message), Warren pages bodies out to its transient log and
    // reads them back before they are due: here 40,000 × 384 octets, the
    // last 6.6 MB paged.
    within(async {
        // Warren pages only under memory pressure; a paging ratio of 0 makes
        // it page at once.
        let broker = if is_warren() {
            start_warren_with(|c| c.memory_paging_ratio = 0.0).await
        } else {
            start_broker().await
        };
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "paged").await;
        const N: u32 = 40_000;
        for i in 0..N {
            let body = i.to_be_bytes().repeat(64);
            publish(&ch, "", &q, &body).await;
        }
        let mut c = ch
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
        for expected in 0..N {
            let d = c.next().await.unwrap().unwrap();
            assert_eq!(d.data.len(), 256);
            assert_eq!(u32::from_be_bytes(d.data[..4].try_into().unwrap()), expected);
        }
    })
    .await;
}
