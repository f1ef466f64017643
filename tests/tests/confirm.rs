//! Publisher confirms.

use lapin::options::*;
use lapin::BasicProperties;
use warren_codec::amq_protocol::frame::AMQPContentHeader;
use warren_codec::amq_protocol::protocol::{basic, confirm, AMQPClass};
use warren_codec::Frame;
use warren_tests::raw::RawClient;
use warren_tests::*;

#[tokio::test]
async fn every_publish_is_acked() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = exclusive_queue(&ch, "confirm").await;
        let mut pending = Vec::new();
        for i in 0..500 {
            let c = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            pending.push(c);
        }
        for c in pending {
            assert!(c.await.unwrap().is_ack());
        }
        assert_eq!(drain(&ch, &q).await.len(), 500);
    })
    .await;
}

#[tokio::test]
async fn confirms_cover_several_publishes_with_multiple_and_follow_returns() {
    within(async {
        let broker = start_broker().await;
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
        ))
        .await;
        assert!(matches!(
            raw.recv().await,
            Some(Frame::Method(
                1,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))
            ))
        ));
        // Three mandatory publishes to nowhere, in one write.
        for _ in 0..3 {
            raw.send(Frame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key: unique("nowhere").as_str().into(),
                    mandatory: true,
                    immediate: false,
                })),
            ))
            .await;
            raw.send(Frame::Header(
                1,
                Box::new(AMQPContentHeader {
                    class_id: 60,
                    body_size: 0,
                    properties: Default::default(),
                }),
            ))
            .await;
        }
        let mut returns = 0;
        let mut acked_up_to = 0;
        while acked_up_to < 3 {
            match raw.recv().await {
                Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Return(r)))) => {
                    assert_eq!(r.reply_code, 312);
                    returns += 1;
                }
                Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)))) => {
                    // spec: an unroutable mandatory message is confirmed after its return.
                    assert!(
                        returns as u64 >= ack.delivery_tag,
                        "ack {} before its return",
                        ack.delivery_tag
                    );
                    assert!(ack.delivery_tag > acked_up_to);
                    assert!(ack.multiple || ack.delivery_tag == acked_up_to + 1);
                    acked_up_to = ack.delivery_tag;
                }
                Some(Frame::Header(..)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(returns, 3);
    })
    .await;
}

#[tokio::test]
async fn a_persistent_publish_is_confirmed_even_if_its_queue_is_deleted_next() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let q = unique("deleted-next");
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), durable, lapin::types::FieldTable::default())
            .await
            .unwrap();
        // Many publishes in flight, so that some reach the queue in the same
        // batch of commands as its deletion.
        let mut confirms = Vec::new();
        for _ in 0..500 {
            let props = BasicProperties::default().with_delivery_mode(2);
            let confirm = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    b"x",
                    props,
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        ch.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default())
            .await
            .unwrap();
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    })
    .await;
}
