//! Channel open/close/flow, channel_max, and closing-state discipline.

use lapin::options::*;
use warren_codec::amq_protocol::protocol::{channel, queue, AMQPClass};
use warren_codec::amq_protocol::types::FieldTable;
use warren_codec::Frame;
use warren_tests::raw::RawClient;
use warren_tests::*;

fn declare(name: &str, passive: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive,
        durable: false,
        exclusive: true,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

#[tokio::test]
async fn many_channels_open_and_close() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let mut channels = Vec::new();
        for _ in 0..50 {
            channels.push(conn.create_channel().await.unwrap());
        }
        for ch in channels {
            ch.close(200, "done".into()).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn flow_active_is_acknowledged() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        assert!(ch
            .channel_flow(ChannelFlowOptions { active: true })
            .await
            .unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_method_on_an_unopened_channel_is_504() {
    within(async {
        let broker = start_broker().await;
        let mut raw = RawClient::open(broker.addr).await;
        raw.send(Frame::Method(5, declare("x", false))).await;
        assert_eq!(raw.expect_connection_close().await, 504);
    })
    .await;
}

#[tokio::test]
async fn opening_an_open_channel_again_is_504() {
    within(async {
        let broker = start_broker().await;
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 504);
    })
    .await;
}

#[tokio::test]
async fn channel_max_limits_how_many_channels_are_open() {
    within(async {
        let broker = start_broker().await;
        let mut raw = RawClient::open_with_channel_max(broker.addr, Some(3)).await;
        // Channel numbers are free; the count of open channels is limited.
        for id in [7, 9, 10] {
            raw.open_channel(id).await;
        }
        raw.send(Frame::Method(
            11,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 530);
    })
    .await;
}

#[tokio::test]
async fn after_channel_close_only_close_ok_counts() {
    within(async {
        let broker = start_broker().await;
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        let missing = unique("missing");
        raw.send(Frame::Method(1, declare(&missing, true))).await;
        assert_eq!(raw.expect_channel_close(1).await, 404);
        // Ignored until close-ok: no reply, and no connection error.
        raw.send(Frame::Method(1, declare(&missing, true))).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        ))
        .await;
        // The channel number can be used again.
        raw.open_channel(1).await;
        let mine = unique("mine");
        raw.send(Frame::Method(1, declare(&mine, false))).await;
        match raw.recv().await {
            Some(Frame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))) => {
                assert_eq!(ok.queue.as_str(), mine)
            }
            other => panic!("expected declare-ok, got {other:?}"),
        }
    })
    .await;
}
