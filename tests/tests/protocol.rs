//! Protocol violations over raw sockets. Each gets the reply RabbitMQ gives,
//! and a connection opened alongside keeps working.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_codec::amq_protocol::frame::AMQPContentHeader;
use warren_codec::amq_protocol::protocol::{basic, queue, AMQPClass};
use warren_codec::amq_protocol::types::FieldTable;
use warren_codec::{Frame, PROTOCOL_HEADER};
use warren_tests::raw::RawClient;
use warren_tests::*;

fn method_frame(channel: u16, method: AMQPClass) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let mut buf = tokio_util::bytes::BytesMut::new();
    warren_codec::FrameCodec::client(131_072)
        .encode(Frame::Method(channel, method), &mut buf)
        .unwrap();
    buf.to_vec()
}

fn qos() -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
        prefetch_count: 1,
        global: false,
    }))
}

#[tokio::test]
async fn a_wrong_protocol_header_gets_ours_and_a_close() {
    within(with_bystander(start_broker().await, |broker| async move {
        for header in [&b"AMQP\x00\x00\x09\x00"[..], b"HTTP/1.1", b"AMQP\x00\x00\x08\x00"] {
            let mut stream = TcpStream::connect(broker.addr).await.unwrap();
            stream.write_all(header).await.unwrap();
            let mut reply = Vec::new();
            // read_to_end returns once the server closes (a reset counts too).
            let _ = stream.read_to_end(&mut reply).await;
            assert_eq!(reply, PROTOCOL_HEADER, "after {header:?}");
        }
        broker
    }))
    .await;
}

#[tokio::test]
async fn an_oversized_frame_is_501() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        let mut frame = vec![1u8, 0, 1];
        frame.extend_from_slice(&(raw.frame_max + 1).to_be_bytes());
        raw.send_bytes(&frame).await;
        assert_eq!(raw.expect_connection_close().await, 501);
        broker
    }))
    .await;
}

#[tokio::test]
async fn a_bad_frame_end_is_501() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        let mut frame = method_frame(1, qos());
        *frame.last_mut().unwrap() = 0;
        raw.send_bytes(&frame).await;
        assert_eq!(raw.expect_connection_close().await, 501);
        broker
    }))
    .await;
}

#[tokio::test]
async fn garbage_after_the_handshake_is_501() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.send_bytes(b"hello world!!!!!").await;
        assert_eq!(raw.expect_connection_close().await, 501);
        broker
    }))
    .await;
}

#[tokio::test]
async fn truncated_method_arguments_are_501() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        // queue.declare whose arguments stop short.
        raw.send_bytes(&[1, 0, 1, 0, 0, 0, 9, 0, 50, 0, 10, 0, 0, 16, b'a', b'b', 0xce])
            .await;
        assert_eq!(raw.expect_connection_close().await, 501);
        broker
    }))
    .await;
}

#[tokio::test]
async fn a_frame_on_an_unopened_channel_is_504() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.send(Frame::Method(
            5,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "x".into(),
                passive: false,
                durable: false,
                exclusive: true,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 504);
        broker
    }))
    .await;
}

#[tokio::test]
async fn a_heartbeat_on_a_channel_is_505() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Heartbeat(1)).await;
        assert_eq!(raw.expect_connection_close().await, 505);
        broker
    }))
    .await;
}

#[tokio::test]
async fn content_out_of_order_is_505() {
    within(with_bystander(start_broker().await, |broker| async move {
        // A content header with no publish before it.
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Header(
            1,
            Box::new(AMQPContentHeader {
                class_id: 60,
                body_size: 1,
                properties: Default::default(),
            }),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 505);
        // A method where the content header should be.
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "q".into(),
                mandatory: false,
                immediate: false,
            })),
        ))
        .await;
        raw.send(Frame::Method(1, qos())).await;
        assert_eq!(raw.expect_connection_close().await, 505);
        broker
    }))
    .await;
}

#[tokio::test]
async fn a_method_only_servers_send_is_503() {
    within(with_bystander(start_broker().await, |broker| async move {
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 503);
        broker
    }))
    .await;
}
