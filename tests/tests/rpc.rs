//! Direct reply-to (`amq.rabbitmq.reply-to`), RPC without a reply queue.
//! The texts are RabbitMQ 3.10.8's, and every test passes against it too.

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_tests::*;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn consume_replies(ch: &lapin::Channel, no_ack: bool) -> lapin::Result<lapin::Consumer> {
    ch.basic_consume(
        REPLY_TO.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

#[tokio::test]
async fn a_reply_to_the_rewritten_address_reaches_the_requesting_consumer() {
    within(async {
        let broker = start_broker().await;
        let (_client, ch) = broker.channel().await;
        let requests = exclusive_queue(&ch, "rpc").await;
        // The pseudo-queue answers a passive declare, as in RabbitMQ.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(REPLY_TO.into(), passive, FieldTable::default())
            .await
            .unwrap();
        let mut replies = consume_replies(&ch, true).await.unwrap();
        ch.basic_publish(
            "".into(),
            requests.as_str().into(),
            BasicPublishOptions::default(),
            b"2+2",
            BasicProperties::default()
                .with_reply_to(REPLY_TO.into())
                .with_correlation_id("c-7".into()),
        )
        .await
        .unwrap();
        // The server side, on another connection.
        let (_server, sch) = broker.channel().await;
        let request = get(&ch, &requests).await.expect("the request");
        let address = request
            .delivery
            .properties
            .reply_to()
            .clone()
            .expect("a reply address")
            .to_string();
        assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
        sch.basic_publish(
            "".into(),
            address.as_str().into(),
            BasicPublishOptions::default(),
            b"4",
            BasicProperties::default().with_correlation_id("c-7".into()),
        )
        .await
        .unwrap();
        let reply = replies.next().await.unwrap().unwrap();
        assert_eq!(reply.data, b"4");
        assert_eq!(reply.routing_key.as_str(), address);
        assert_eq!(
            reply.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some("c-7")
        );
    })
    .await;
}

#[tokio::test]
async fn direct_reply_to_misuse_gets_rabbitmqs_406() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = consume_replies(&ch, false).await.unwrap_err();
        assert_eq!(
            (reply_code(&err), reply_text(&err)),
            (
                406,
                "PRECONDITION_FAILED - reply consumer cannot acknowledge".into()
            )
        );
        let ch = conn.create_channel().await.unwrap();
        consume_replies(&ch, true).await.unwrap();
        let err = consume_replies(&ch, true).await.unwrap_err();
        assert_eq!(
            (reply_code(&err), reply_text(&err)),
            (406, "PRECONDITION_FAILED - reply consumer already set".into())
        );
        let ch = conn.create_channel().await.unwrap();
        let publishing = ch.basic_publish(
            "".into(),
            "anywhere".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        );
        assert_eq!(
            closed_reply(&ch, publishing).await,
            (
                406,
                "PRECONDITION_FAILED - fast reply consumer does not exist".into()
            )
        );
    })
    .await;
}
