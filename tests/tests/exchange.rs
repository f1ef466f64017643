//! exchange.declare/delete/bind/unbind and routing through every exchange type.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use warren_tests::*;

fn auto_delete() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    }
}

async fn bound_queue(ch: &lapin::Channel, exchange: &str, key: &str) -> String {
    let q = exclusive_queue(ch, "xq").await;
    ch.queue_bind(
        q.as_str().into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    q
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        for (name, kind) in [
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.exchange_declare(name.into(), kind, passive, FieldTable::default())
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .exchange_declare(
                unique("nox").as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        assert!(
            reply_text(&err).starts_with("NOT_FOUND - no exchange '"),
            "{}",
            reply_text(&err)
        );
    })
    .await;
}

#[tokio::test]
async fn redeclare_with_other_type_or_durability_is_406() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let name = unique("x");
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Equivalent redeclare is fine.
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let err = ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                auto_delete(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        };
        let err = ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn amq_prefix_is_reserved() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let err = ch
            .exchange_declare(
                unique("amq.mine").as_str().into(),
                ExchangeKind::Direct,
                auto_delete(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
    })
    .await;
}

#[tokio::test]
async fn unknown_exchange_type_closes_the_channel_with_406() {
    // Warren-only: RabbitMQ 3.10 closes the whole connection with 503 here;
    // current RabbitMQ and client test suites expect the channel close.
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .exchange_declare(
                unique("x").as_str().into(),
                ExchangeKind::Custom("nope".into()),
                auto_delete(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        // The connection is still usable.
        let ch = conn.create_channel().await.unwrap();
        exclusive_queue(&ch, "still").await;
    })
    .await;
}

#[tokio::test]
async fn delete_if_unused_refuses_a_bound_exchange_and_missing_is_fine() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let x = unique("x");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        bound_queue(&ch, &x, "").await;
        let err = ch
            .exchange_delete(
                x.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn direct_fanout_and_topic_routing() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let topic = unique("topic");
        ch.exchange_declare(
            topic.as_str().into(),
            ExchangeKind::Topic,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let orange = bound_queue(&ch, &topic, "*.orange.*").await;
        let rabbit = bound_queue(&ch, &topic, "*.*.rabbit").await;
        ch.queue_bind(
            rabbit.as_str().into(),
            topic.as_str().into(),
            "lazy.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let everything = bound_queue(&ch, &topic, "#").await;
        for key in [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "quick.brown.fox",
            "orange",
            "quick.orange.male.rabbit",
            "lazy.orange.male.rabbit",
            "",
        ] {
            publish(&ch, &topic, key, key.as_bytes()).await;
        }
        assert_eq!(
            drain(&ch, &orange).await,
            ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
        );
        assert_eq!(
            drain(&ch, &rabbit).await,
            [
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "lazy.brown.fox",
                "lazy.pink.rabbit",
                "lazy.orange.male.rabbit"
            ]
        );
        assert_eq!(drain(&ch, &everything).await.len(), 10);

        let a = bound_queue(&ch, "amq.fanout", "").await;
        let b = bound_queue(&ch, "amq.fanout", "ignored").await;
        publish(&ch, "amq.fanout", "whatever", b"fan").await;
        assert_eq!(drain(&ch, &a).await, ["fan"]);
        assert_eq!(drain(&ch, &b).await, ["fan"]);

        let key = unique("key");
        let d = bound_queue(&ch, "amq.direct", &key).await;
        publish(&ch, "amq.direct", &key, b"one").await;
        publish(&ch, "amq.direct", "other", b"two").await;
        assert_eq!(drain(&ch, &d).await, ["one"]);
    })
    .await;
}

#[tokio::test]
async fn a_queue_bound_twice_gets_one_copy() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = bound_queue(&ch, "amq.topic", "a.*").await;
        ch.queue_bind(
            q.as_str().into(),
            "amq.topic".into(),
            "*.b".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.topic", "a.b", b"once").await;
        assert_eq!(drain(&ch, &q).await, ["once"]);
    })
    .await;
}

#[tokio::test]
async fn headers_exchange_matches_all_and_any() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let table = |entries: &[(&str, &str)]| {
            let mut t = FieldTable::default();
            for (k, v) in entries {
                t.insert((*k).into(), AMQPValue::LongString((*v).into()));
            }
            t
        };
        let all = exclusive_queue(&ch, "all").await;
        let any = exclusive_queue(&ch, "any").await;
        let tag = unique("t");
        ch.queue_bind(
            all.as_str().into(),
            "amq.headers".into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[("format", "pdf"), ("tag", &tag)]),
        )
        .await
        .unwrap();
        ch.queue_bind(
            any.as_str().into(),
            "amq.headers".into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[("x-match", "any"), ("format", "zip"), ("tag", &tag)]),
        )
        .await
        .unwrap();
        for (body, headers) in [
            ("pdf", table(&[("format", "pdf"), ("tag", &tag)])),
            ("zip", table(&[("format", "zip"), ("tag", "other")])),
            ("none", table(&[("format", "doc")])),
        ] {
            ch.basic_publish(
                "amq.headers".into(),
                "".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap();
        }
        assert_eq!(drain(&ch, &all).await, ["pdf"]);
        assert_eq!(drain(&ch, &any).await, ["pdf", "zip"]);
    })
    .await;
}

#[tokio::test]
async fn exchange_to_exchange_bindings_with_a_loop() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (a, b) = (unique("a"), unique("b"));
        for x in [&a, &b] {
            ch.exchange_declare(
                x.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        ch.exchange_bind(
            b.as_str().into(),
            a.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_bind(
            a.as_str().into(),
            b.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = bound_queue(&ch, &b, "").await;
        publish(&ch, &a, "", b"looped").await;
        assert_eq!(drain(&ch, &q).await, ["looped"]);
        ch.exchange_unbind(
            b.as_str().into(),
            a.as_str().into(),
            "".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, &a, "", b"cut").await;
        assert!(drain(&ch, &q).await.is_empty());
        for x in [&a, &b] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn binding_to_a_missing_exchange_is_404() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .exchange_bind(
                unique("d").as_str().into(),
                "amq.direct".into(),
                "".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
    })
    .await;
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (main, alt) = (unique("main"), unique("alt"));
        ch.exchange_declare(
            alt.as_str().into(),
            ExchangeKind::Fanout,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(alt.as_str().into()),
        );
        ch.exchange_declare(main.as_str().into(), ExchangeKind::Direct, auto_delete(), args)
            .await
            .unwrap();
        let routed = bound_queue(&ch, &main, "k").await;
        let unrouted = bound_queue(&ch, &alt, "").await;
        publish(&ch, &main, "k", b"routed").await;
        publish(&ch, &main, "nothing", b"unrouted").await;
        assert_eq!(drain(&ch, &routed).await, ["routed"]);
        assert_eq!(drain(&ch, &unrouted).await, ["unrouted"]);
    })
    .await;
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_403() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let x = unique("internal");
        let opts = ExchangeDeclareOptions {
            internal: true,
            auto_delete: true,
            ..Default::default()
        };
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            opts,
            FieldTable::default(),
        )
        .await
        .unwrap();
        let publish = ch.basic_publish(
            x.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"no",
            BasicProperties::default(),
        );
        assert_eq!(closed_code(&ch, publish).await, 403);
    })
    .await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let x = unique("auto");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = bound_queue(&ch, &x, "").await;
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Fanout,
                passive,
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
    })
    .await;
}

#[tokio::test]
async fn system_and_default_exchanges_cannot_be_deleted_or_bound() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        assert_eq!(
            reply_text(&err),
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
        );
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "dflt").await;
        let err = ch
            .queue_bind(
                q.as_str().into(),
                "".into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
    })
    .await;
}

/// A connection that keeps publishing to the same exchange and key must see
/// every change to the bindings and queues at once (Warren remembers routes
/// per connection; this is what must make it forget them).
#[tokio::test]
async fn routes_follow_binds_unbinds_and_queue_deletes_between_publishes() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let x = unique("routes");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            auto_delete(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let a = bound_queue(&ch, &x, "k.*").await;
        let b = unique("routes-b");
        let declare_b = || async {
            ch.queue_declare(
                b.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        };
        declare_b().await;
        publish(&ch, &x, "k.1", b"1").await;
        assert_eq!(drain(&ch, &a).await, ["1"]);
        ch.queue_bind(
            b.as_str().into(),
            x.as_str().into(),
            "k.1".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, &x, "k.1", b"2").await;
        assert_eq!(drain(&ch, &a).await, ["2"]);
        assert_eq!(drain(&ch, &b).await, ["2"]);
        ch.queue_unbind(
            a.as_str().into(),
            x.as_str().into(),
            "k.*".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, &x, "k.1", b"3").await;
        assert!(drain(&ch, &a).await.is_empty());
        assert_eq!(drain(&ch, &b).await, ["3"]);
        // The default exchange too: a queue deleted and declared again under
        // the same name gets what is published after.
        publish(&ch, "", &b, b"4").await;
        ch.queue_delete(b.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        declare_b().await;
        publish(&ch, "", &b, b"5").await;
        assert_eq!(drain(&ch, &b).await, ["5"]);
        ch.queue_delete(b.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}
