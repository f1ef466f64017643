//! Connection negotiation, authentication, heartbeats, close.

use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_codec::amq_protocol::protocol::{connection, AMQPClass};
use warren_codec::amq_protocol::types::{AMQPValue, FieldTable};
use warren_codec::{Frame, FrameCodec, PROTOCOL_HEADER};
use warren_tests::raw::RawClient;
use warren_tests::*;

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

async fn start_frame(broker: &TestBroker) -> (Framed<TcpStream, FrameCodec>, connection::Start) {
    let mut stream = TcpStream::connect(broker.addr).await.unwrap();
    stream.write_all(PROTOCOL_HEADER).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::client(131_072));
    match framed.next().await {
        Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(start))))) => {
            (framed, start)
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[tokio::test]
async fn start_announces_server_properties_and_capabilities() {
    within(async {
        let broker = start_broker().await;
        let (_, start) = start_frame(&broker).await;
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        let props = start.server_properties.inner();
        for key in ["product", "version", "platform", "copyright", "information"] {
            assert!(props.contains_key(key), "missing {key}");
        }
        let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else {
            panic!("no capabilities table")
        };
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "per_consumer_qos",
            "authentication_failure_close",
            "connection.blocked",
            "consumer_priorities",
            "direct_reply_to",
        ] {
            assert_eq!(caps.inner().get(cap), Some(&AMQPValue::Boolean(true)), "{cap}");
        }
        let mechanisms = String::from_utf8(start.mechanisms.as_bytes().to_vec()).unwrap();
        assert!(mechanisms.split(' ').any(|m| m == "PLAIN"));
        assert!(mechanisms.split(' ').any(|m| m == "AMQPLAIN"));
    })
    .await;
}

#[tokio::test]
async fn tune_offers_rabbitmq_defaults() {
    within(async {
        let broker = start_broker().await;
        let (mut framed, _) = start_frame(&broker).await;
        framed
            .send(Frame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: FieldTable::default(),
                    mechanism: "PLAIN".into(),
                    response: "\0guest\0guest".into(),
                    locale: "en_US".into(),
                })),
            ))
            .await
            .unwrap();
        match framed.next().await {
            Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))))) => {
                assert_eq!((t.channel_max, t.frame_max, t.heartbeat), (2047, 131_072, 60));
            }
            other => panic!("expected tune, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_are_refused_with_403() {
    within(async {
        let broker = start_broker().await;
        let url = broker.url.replace("guest:guest", "guest:wrong");
        let err = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        assert!(
            reply_text(&err).starts_with("ACCESS_REFUSED - Login was refused"),
            "{}",
            reply_text(&err)
        );
        // The broker keeps serving everyone else.
        let (_conn, ch) = broker.channel().await;
        exclusive_queue(&ch, "after-refusal").await;
    })
    .await;
}

#[tokio::test]
async fn unknown_vhost_is_530() {
    within(async {
        let broker = start_broker().await;
        let url = format!("{}nope", broker.url.trim_end_matches("%2f"));
        let err = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 530);
    })
    .await;
}

#[tokio::test]
async fn client_close_is_answered() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        conn.close(200, "bye".into()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_client_silent_for_two_heartbeats_is_dropped() {
    within(async {
        let broker = start_broker().await;
        let (mut framed, _) = start_frame(&broker).await;
        let send = |m| Frame::Method(0, AMQPClass::Connection(m));
        framed
            .send(send(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })))
            .await
            .unwrap();
        let _tune = framed.next().await;
        framed
            .send(send(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 1,
            })))
            .await
            .unwrap();
        framed
            .send(send(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })))
            .await
            .unwrap();
        // We never send anything again: the server sends heartbeats, then
        // closes the socket after two silent intervals.
        let mut heartbeats = 0;
        while let Some(Ok(frame)) = framed.next().await {
            if frame == Frame::Heartbeat(0) {
                heartbeats += 1;
            }
        }
        assert!(heartbeats >= 1, "the server sent no heartbeat");
    })
    .await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_handshake_timeout() {
    within(async {
        let broker = start_broker().await;
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        let mut buf = Vec::new();
        // Returns once the server closes the socket (10 s handshake timeout).
        let _ = stream.read_to_end(&mut buf).await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_320() {
    if !is_warren() {
        return; // Warren-only: stops the broker under test.
    }
    within(async {
        let broker = start_broker().await;
        let raw = RawClient::open(broker.addr).await;
        let code = tokio::spawn(raw.expect_connection_close());
        broker.stop().await;
        assert_eq!(code.await.unwrap(), 320);
    })
    .await;
}

#[tokio::test]
async fn update_secret_is_answered_and_the_connection_goes_on() {
    // RabbitMQ 3.10.8 (probed with pika) answers update-secret-ok for its
    // internal users, whatever the new secret: their state never expires.
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        for secret in ["guest", "a refreshed token"] {
            conn.update_secret(secret.into(), "token refresh".into())
                .await
                .unwrap();
        }
        let q = exclusive_queue(&ch, "after-update-secret").await;
        publish(&ch, "", &q, b"still here").await;
        assert_eq!(drain(&ch, &q).await, ["still here"]);
        let ch2 = conn.create_channel().await.unwrap();
        ch2.close(200, "bye".into()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn after_close_ok_the_socket_is_left_to_the_client_and_exclusive_queues_are_gone() {
    // RabbitMQ 3.10.8 (probed with a raw socket): close-ok, then nothing,
    // the socket open until the client closes it (for up to 30 s); the
    // connection's exclusive queues deleted before close-ok.
    within(async {
        let broker = start_broker().await;
        let q = unique("gone-before-close-ok");
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        let options = warren_codec::amq_protocol::protocol::queue::Declare {
            queue: q.as_str().into(),
            exclusive: true,
            ..Default::default()
        };
        raw.send(Frame::Method(
            1,
            AMQPClass::Queue(warren_codec::amq_protocol::protocol::queue::AMQPMethod::Declare(
                options,
            )),
        ))
        .await;
        raw.recv_until(1, |m| matches!(m, AMQPClass::Queue(_))).await;
        raw.send(Frame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ))
        .await;
        raw.recv_until(0, |m| {
            matches!(m, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
        })
        .await;
        // Gone already: another connection may take the name at once.
        let (_conn, ch) = broker.channel().await;
        let exclusive = lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), exclusive, FieldTable::default())
            .await
            .unwrap();
        // Nothing more comes, and the socket stays open for the client to
        // close (a 300 ms look).
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            raw.socket().read(&mut byte),
        )
        .await;
        assert!(
            read.is_err(),
            "the server closed or wrote after close-ok: {read:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_broker_on_the_ipv6_wildcard_serves_ipv4_and_ipv6_clients() {
    if !is_warren() {
        return; // Warren-only: it chooses the broker's listener.
    }
    within(async {
        let broker = start_warren_on("[::]:0", tempfile::tempdir().unwrap(), |_| {}).await;
        let port = broker.addr.port();
        // Node's amqplib resolves localhost to ::1 first; Python's pika to 127.0.0.1.
        for host in ["127.0.0.1", "[::1]"] {
            let url = format!("amqp://guest:guest@{host}:{port}/%2f");
            let conn = Connection::connect(&url, ConnectionProperties::default())
                .await
                .unwrap_or_else(|e| panic!("{host}: {e}"));
            let ch = conn.create_channel().await.unwrap();
            let q = exclusive_queue(&ch, "dual-stack").await;
            publish(&ch, "", &q, host.as_bytes()).await;
            assert_eq!(drain(&ch, &q).await, [host]);
        }
    })
    .await;
}
