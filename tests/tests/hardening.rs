//! What a hostile, broken or stuck client can cost: its own connection, and
//! nothing else. Each probe runs beside a bystander connection that must keep
//! working (`with_bystander`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, Framed};
use warren_codec::amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use warren_codec::{Frame, FrameCodec, PROTOCOL_HEADER};
use warren_tests::raw::RawClient;
use warren_tests::*;

/// A field table nested `depth` levels deep, as bytes: tables (`F`) or
/// arrays (`A`) inside one outer table. Built as bytes because building it
/// as a value would recurse as deeply as a parser does.
fn nested(depth: usize, kind: u8) -> Vec<u8> {
    let mut inner = vec![0, 0, 0, 0];
    for _ in 1..depth.saturating_sub(1) {
        let entry: &[u8] = if kind == b'F' { b"\x01kF" } else { b"A" };
        let mut outer = ((inner.len() + entry.len()) as u32).to_be_bytes().to_vec();
        outer.extend_from_slice(entry);
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut top = ((inner.len() + 3) as u32).to_be_bytes().to_vec();
    top.extend_from_slice(&[1, b'k', kind]);
    top.extend_from_slice(&inner);
    top
}

fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&channel.to_be_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes.push(0xce);
    bytes
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut buf = tokio_util::bytes::BytesMut::new();
    FrameCodec::client(1 << 20).encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

fn publish_frame(channel: u16, routing_key: &str) -> Vec<u8> {
    encode(Frame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    ))
}

/// A content header for class 60 with `size` octets of body and no properties.
fn header_frame(channel: u16, size: u64) -> Vec<u8> {
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&size.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    raw_frame(2, channel, &payload)
}

/// A method that is answered, to show the connection is still alive.
fn qos(channel: u16) -> Vec<u8> {
    encode(Frame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    ))
}

async fn expect_qos_ok(raw: &mut RawClient, channel: u16) {
    raw.recv_until(channel, |m| {
        matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_)))
    })
    .await;
}

#[tokio::test]
async fn deeply_nested_tables_after_login_cost_only_that_connection() {
    // RabbitMQ accepts 20,000 levels; Warren refuses more than 100 with 501
    // (docs/security.md). Neither may crash: the bystander proves it. Before
    // the bound, 10,000 levels overflowed the stack and aborted the broker.
    within(with_bystander(start_broker().await, |broker| async move {
        // queue.declare arguments, tables in tables (8 octets a level).
        let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 4];
        declare.extend_from_slice(&nested(15_000, b'F'));
        // Message headers, arrays in arrays (5 octets a level).
        let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
        header.extend_from_slice(&nested(20_000, b'A'));
        let probes = [
            raw_frame(1, 1, &declare),
            [publish_frame(1, "nowhere"), raw_frame(2, 1, &header)].concat(),
        ];
        for probe in probes {
            let mut raw = RawClient::open(broker.addr).await;
            raw.open_channel(1).await;
            raw.send_bytes(&[probe, qos(1)].concat()).await;
            if is_warren() {
                assert_eq!(raw.expect_connection_close().await, 501);
            } else {
                expect_qos_ok(&mut raw, 1).await;
            }
        }
        broker
    }))
    .await;
}

#[tokio::test]
async fn nested_headers_within_the_bound_round_trip() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "nested").await;
        let mut value = AMQPValue::LongString("leaf".into());
        for level in 0..48 {
            value = if level % 2 == 0 {
                let mut t = FieldTable::default();
                t.insert("k".into(), value);
                AMQPValue::FieldTable(t)
            } else {
                AMQPValue::FieldArray(vec![value].into())
            };
        }
        let mut headers = FieldTable::default();
        headers.insert("deep".into(), value);
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            lapin::BasicProperties::default().with_headers(headers.clone()),
        )
        .await
        .unwrap();
        let got = get(&ch, &q).await.expect("the message");
        assert_eq!(got.delivery.properties.headers().as_ref(), Some(&headers));
    })
    .await;
}

/// Connects and reads connection.start.
async fn until_start(broker: &TestBroker) -> Framed<TcpStream, FrameCodec> {
    let mut stream = TcpStream::connect(broker.addr).await.unwrap();
    stream.write_all(PROTOCOL_HEADER).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::client(1 << 20));
    match framed.next().await {
        Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_))))) => framed,
        other => panic!("expected connection.start, got {other:?}"),
    }
}

/// A start-ok for guest/guest (or `response`) whose client properties are
/// `properties`, announcing authentication_failure_close.
fn start_ok(properties: &[u8], response: &[u8]) -> Vec<u8> {
    let mut capabilities = b"\x1cauthentication_failure_closet\x01".to_vec();
    capabilities.splice(0..0, (capabilities.len() as u32).to_be_bytes());
    let mut table = b"\x0ccapabilitiesF".to_vec();
    table.extend_from_slice(&capabilities);
    table.extend_from_slice(properties);
    let mut payload = vec![0, 10, 0, 11];
    payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
    payload.extend_from_slice(&table);
    payload.extend_from_slice(b"\x05PLAIN");
    payload.extend_from_slice(&(response.len() as u32).to_be_bytes());
    payload.extend_from_slice(response);
    payload.extend_from_slice(b"\x05en_US");
    raw_frame(1, 0, &payload)
}

/// Reads what the server answers a start-ok with: whether connection.tune
/// came, and the code of a connection.close if one came before the socket
/// closed.
async fn answer_to(framed: &mut Framed<TcpStream, FrameCodec>, bytes: &[u8]) -> (bool, Option<u16>) {
    framed.get_mut().write_all(bytes).await.unwrap();
    match framed.next().await {
        Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_))))) => (true, None),
        Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))))) => {
            (false, Some(c.reply_code))
        }
        // Closed or reset (RabbitMQ resets after its close, which may then be lost).
        None | Some(Err(_)) => (false, None),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn before_login_frame_payloads_over_4096_octets_are_refused() {
    within(with_bystander(start_broker().await, |broker| async move {
        // Padding in the client properties makes the frame exactly `total`.
        let padded = |total: usize| {
            let base = start_ok(b"\x03padS\0\0\0\0", b"\0guest\0guest").len();
            let pad = total - base;
            let mut entry = b"\x03padS".to_vec();
            entry.extend_from_slice(&(pad as u32).to_be_bytes());
            entry.extend(std::iter::repeat_n(b'x', pad));
            start_ok(&entry, b"\0guest\0guest")
        };
        // RabbitMQ compares the payload, without the 8 octets of framing,
        // with 4096: a 4104-octet frame is the largest it takes.
        assert_eq!(padded(4104).len(), 4104);
        let mut framed = until_start(&broker).await;
        assert_eq!(answer_to(&mut framed, &padded(4104)).await, (true, None));
        for total in [4105, 9000, 131_072] {
            let mut framed = until_start(&broker).await;
            let (tuned, code) = answer_to(&mut framed, &padded(total)).await;
            assert!(!tuned, "a {total}-octet frame before login must be refused");
            if is_warren() {
                assert_eq!(code, Some(501));
            }
        }
        // Nested client properties that fit in 4096 octets: Warren refuses
        // them (deeper than 100), RabbitMQ accepts them.
        let mut framed = until_start(&broker).await;
        let deep = start_ok(&nested(450, b'F')[4..], b"\0guest\0guest");
        assert!(deep.len() <= 4096);
        let answer = answer_to(&mut framed, &deep).await;
        assert_eq!(
            answer,
            if is_warren() {
                (false, Some(501))
            } else {
                (true, None)
            }
        );
        broker
    }))
    .await;
}

#[tokio::test]
async fn plain_is_parsed_as_strictly_as_rabbitmq() {
    within(with_bystander(start_broker().await, |broker| async move {
        for response in [
            &b"admin\0guest\0guest"[..],
            b"\0guest\0guest\0junk",
            b"guest\0guest",
            b"\0guest",
        ] {
            let mut framed = until_start(&broker).await;
            let (tuned, code) = answer_to(&mut framed, &start_ok(b"", response)).await;
            assert!(!tuned, "{response:?} must be refused");
            if is_warren() {
                assert_eq!(code, Some(403), "{response:?}");
            }
        }
        let mut framed = until_start(&broker).await;
        assert_eq!(
            answer_to(&mut framed, &start_ok(b"", b"\0guest\0guest")).await,
            (true, None)
        );
        broker
    }))
    .await;
}

/// Fills a queue with `n` messages of `size` octets, numbered in their body.
async fn fill(ch: &lapin::Channel, q: &str, n: usize, size: usize) {
    for i in 0..n {
        let mut body = format!("{i:08}").into_bytes();
        body.resize(size, b'.');
        publish(ch, "", q, &body).await;
    }
}

/// Consumes until `n` distinct messages arrived; returns how many of them
/// were marked redelivered.
async fn consume_all(ch: &lapin::Channel, q: &str, n: usize) -> usize {
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut redelivered = 0;
    while seen.len() < n {
        let delivery = consumer.next().await.unwrap().unwrap();
        redelivered += usize::from(delivery.redelivered);
        seen.insert(delivery.data[..8].to_vec());
    }
    redelivered
}

fn consume_method(queue: &str, tag: &str) -> Frame {
    Frame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_dropped_and_its_messages_requeued() {
    within(with_bystander(start_broker().await, |broker| async move {
        let (_conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "stalled").await;
        // 12 MB: more than the socket buffers between broker and client hold.
        fill(&ch, &q, 120, 100_000).await;
        let mut stalled = RawClient::open_with_heartbeat(broker.addr, 1).await;
        stalled.open_channel(1).await;
        stalled.send(consume_method(&q, "stalled")).await;
        // From here the client neither reads nor sends: after two heartbeat
        // intervals the broker must drop it although it is blocked writing
        // to it, and hand every delivery it holds to the next consumer.
        let started = Instant::now();
        assert_eq!(consume_all(&ch, &q, 120).await.min(1), 1, "some were redelivered");
        assert!(started.elapsed() < Duration::from_secs(15));
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        drop(stalled);
        broker
    }))
    .await;
}

#[tokio::test]
async fn a_slow_uploader_is_alive_while_bytes_arrive() {
    within(with_bystander(start_broker().await, |broker| async move {
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "slow").await;
        let mut slow = RawClient::open_with_heartbeat(broker.addr, 1).await;
        slow.open_channel(1).await;
        let body = raw_frame(3, 1, b"trickled");
        slow.send_bytes(&[publish_frame(1, &q), header_frame(1, 8)].concat())
            .await;
        // One octet every 300 ms: 5 s for the body frame, more than two
        // heartbeat intervals, and no heartbeat from the client meanwhile.
        for byte in body {
            tokio::time::sleep(Duration::from_millis(300)).await;
            slow.socket().write_all(&[byte]).await.unwrap();
        }
        slow.send_bytes(&qos(1)).await;
        expect_qos_ok(&mut slow, 1).await;
        assert_eq!(drain(&ch, &q).await, ["trickled"]);
        broker
    }))
    .await;
}

#[tokio::test]
async fn shutdown_completes_within_5_s_with_a_stalled_reader() {
    if !is_warren() {
        return; // Warren-only: stops the broker under test.
    }
    within(async {
        // Large messages fill the socket; many small ones also fill the
        // writer's queue, so that the connection task itself is blocked.
        for (n, size) in [(120, 100_000), (5_000, 10_000)] {
            let broker = start_broker().await;
            let (conn, ch) = broker.channel().await;
            let q = shared_queue(&ch, "stalled").await;
            fill(&ch, &q, n, size).await;
            drop(conn);
            // No heartbeats: nothing would ever time this client out.
            let mut stalled = RawClient::open(broker.addr).await;
            stalled.open_channel(1).await;
            stalled.send(consume_method(&q, "stalled")).await;
            // A client that reads still gets its 320.
            let reading = RawClient::open(broker.addr).await;
            let code = tokio::spawn(reading.expect_connection_close());
            // Let the broker fill the stalled client's socket.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            broker.stop().await;
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "{n} × {size} octets: took {took:?}"
            );
            assert_eq!(code.await.unwrap(), 320);
            drop(stalled);
        }
    })
    .await;
}

#[tokio::test]
async fn uncommitted_acks_are_void_when_the_channel_closes() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "tx-acks").await;
        publish(&ch, "", &q, b"keep me").await;
        let tx_ch = conn.create_channel().await.unwrap();
        tx_ch.tx_select().await.unwrap();
        let got = get(&tx_ch, &q).await.expect("the message");
        tx_ch
            .basic_ack(got.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        tx_ch.close(200, "bye".into()).await.unwrap();
        // The ack was never committed: the message is back, redelivered.
        let again = get(&ch, &q).await.expect("the message is back");
        assert_eq!(again.delivery.data, b"keep me");
        assert!(again.delivery.redelivered);
    })
    .await;
}

#[tokio::test]
async fn a_delivery_to_a_cancelled_consumer_frees_its_global_prefetch_slot() {
    if !is_warren() {
        // RabbitMQ 3.10.8 fails this sequence itself: basic.consume and
        // basic.cancel in one write crash its channel (541, `badkey` in
        // rabbit_channel:consumer_monitor/2, seen in its log).
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let (a, b) = (shared_queue(&ch, "cancelled").await, shared_queue(&ch, "other").await);
        publish(&ch, "", &a, b"to a").await;
        let mut raw = RawClient::open(broker.addr).await;
        raw.open_channel(1).await;
        raw.send(Frame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 1,
                global: true,
            })),
        ))
        .await;
        // Consume and cancel in one write: the delivery for "a" reaches the
        // connection after the consumer is gone, and goes back to its queue.
        let cancel = Frame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: "a".into(),
                nowait: false,
            })),
        );
        raw.send_bytes(&[encode(consume_method(&a, "a")), encode(cancel)].concat()).await;
        let mut delivered_to_a = None;
        loop {
            match raw.recv().await {
                Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d)))) => {
                    delivered_to_a = Some(d.delivery_tag)
                }
                Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::CancelOk(_)))) => break,
                Some(_) => {}
                None => panic!("connection closed"),
            }
        }
        // Had the delivery gone out before the cancel, it would hold the
        // slot until acked, so ack it.
        if let Some(delivery_tag) = delivered_to_a {
            raw.send(Frame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag,
                    multiple: false,
                })),
            ))
            .await;
        }
        raw.send(consume_method(&b, "b")).await;
        publish(&ch, "", &b, b"to b").await;
        // The channel's one slot is free: "b" gets its message.
        raw.recv_until(1, |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) if d.consumer_tag.as_str() == "b"))
            .await;
        for q in [a, b] {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        }
    })
    .await;
}

// --- Warren's limits: set low to reach them (Warren-only) ----------------

#[tokio::test]
async fn connections_beyond_max_connections_are_530() {
    if !is_warren() {
        return; // Warren-only: needs a broker configured with a limit.
    }
    within(async {
        let broker = start_warren_with(|c| c.max_connections = Some(2)).await;
        let first = broker.connect().await;
        let _second = broker.connect().await;
        let third = lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default()).await;
        assert_eq!(reply_code(&third.unwrap_err()), 530);
        first.close(200, "bye".into()).await.unwrap();
        // The slot is free again (the server side of the close may lag).
        let mut reconnected = None;
        for _ in 0..50 {
            if let Ok(c) =
                lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default()).await
            {
                reconnected = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reconnected.is_some(), "a closed connection gives its slot back");
    })
    .await;
}

#[tokio::test]
async fn messages_over_max_message_size_are_406() {
    if !is_warren() {
        return; // Warren-only: RabbitMQ's default limit is 128 MiB.
    }
    within(with_bystander(
        start_warren_with(|c| c.max_message_size = 1000).await,
        |broker| async move {
            let (_conn, ch) = broker.channel().await;
            let q = exclusive_queue(&ch, "size").await;
            publish(&ch, "", &q, &[b'x'; 1000]).await;
            assert_eq!(drain(&ch, &q).await.len(), 1);
            let code = closed_code(
                &ch,
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &[b'x'; 1001],
                    lapin::BasicProperties::default(),
                ),
            )
            .await;
            assert_eq!(code, 406);
            broker
        },
    ))
    .await;
}

#[tokio::test]
async fn channel_max_is_offered_and_enforced() {
    if !is_warren() {
        return; // Warren-only: needs a broker configured with a limit.
    }
    within(async {
        let broker = start_warren_with(|c| c.channel_max = 3).await;
        let mut raw = RawClient::open(broker.addr).await;
        for id in 1..=3 {
            raw.open_channel(id).await;
        }
        raw.send(Frame::Method(
            4,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        assert_eq!(raw.expect_connection_close().await, 530);
    })
    .await;
}

#[tokio::test]
async fn unfinished_bodies_are_bounded_per_connection() {
    if !is_warren() {
        return; // Warren-only: RabbitMQ has no such limit.
    }
    within(with_bystander(
        start_warren_with(|c| c.max_partial_bytes = 10_000).await,
        |broker| async move {
            let (_conn, ch) = broker.channel().await;
            let q = exclusive_queue(&ch, "partial").await;
            let mut raw = RawClient::open(broker.addr).await;
            raw.open_channel(1).await;
            raw.open_channel(2).await;
            // 6,000 announced on channel 1 fits; 6,000 more on channel 2 does not.
            raw.send_bytes(&[publish_frame(1, &q), header_frame(1, 6000)].concat())
                .await;
            raw.send_bytes(&[publish_frame(2, &q), header_frame(2, 6000)].concat())
                .await;
            assert_eq!(raw.expect_channel_close(2).await, 406);
            // Channel 1 completes its message, which is routed.
            raw.send_bytes(&raw_frame(3, 1, &[b'y'; 6000])).await;
            raw.send_bytes(&qos(1)).await;
            expect_qos_ok(&mut raw, 1).await;
            assert_eq!(drain(&ch, &q).await.len(), 1);
            broker
        },
    ))
    .await;
}

/// A local address that is not loopback, if the machine has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    probe.connect("10.255.255.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn guest_is_refused_from_a_non_loopback_address() {
    if !is_warren() {
        return; // Warren-only: the reference broker is configured with loopback_users = none.
    }
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback address on this machine: skipped (the unit test covers the check)");
        return;
    };
    within(async {
        for allow in [false, true] {
            let broker = start_warren_on("0.0.0.0:0", tempfile::tempdir().unwrap(), |c| {
                c.allow_remote_guest = allow
            })
            .await;
            let remote = format!("amqp://guest:guest@{ip}:{}/%2f", broker.addr.port());
            let result = lapin::Connection::connect(&remote, lapin::ConnectionProperties::default()).await;
            match (allow, result) {
                (false, Err(e)) => assert_eq!(reply_code(&e), 403),
                (true, Ok(_)) => {}
                (allow, other) => panic!("allow_remote_guest={allow}: {other:?}"),
            }
            // From loopback, guest is always welcome.
            let local = format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.addr.port());
            lapin::Connection::connect(&local, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_long_chain_of_exchange_bindings_routes_without_crashing() {
    // Before routing was iterative, 10,000 exchanges bound in a chain
    // overflowed a worker's stack on the first publish and aborted the broker.
    within(with_bystander(start_broker().await, |broker| async move {
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "chain-end").await;
        let prefix = unique("chain");
        let name = |i: usize| format!("{prefix}-{i}");
        const LENGTH: usize = 10_000;
        let nowait = ExchangeDeclareOptions {
            nowait: true,
            ..Default::default()
        };
        for i in 0..LENGTH {
            ch.exchange_declare(
                name(i).as_str().into(),
                lapin::ExchangeKind::Fanout,
                nowait,
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let bind = ExchangeBindOptions { nowait: true };
        for i in 1..LENGTH {
            ch.exchange_bind(
                name(i).as_str().into(),
                name(i - 1).as_str().into(),
                "".into(),
                bind,
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        ch.queue_bind(
            q.as_str().into(),
            name(LENGTH - 1).as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, &name(0), "", b"through 10,000 exchanges").await;
        assert_eq!(drain(&ch, &q).await, ["through 10,000 exchanges"]);
        // Delete the chain, last first, so that each deletion has one
        // binding to remove (a shared reference broker stays quick).
        let delete = ExchangeDeleteOptions {
            nowait: true,
            ..Default::default()
        };
        for i in (0..LENGTH).rev() {
            ch.exchange_delete(name(i).as_str().into(), delete).await.unwrap();
        }
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let gone = ch
            .exchange_declare(
                name(0).as_str().into(),
                lapin::ExchangeKind::Fanout,
                passive,
                FieldTable::default(),
            )
            .await;
        assert_eq!(reply_code(&gone.unwrap_err()), 404);
        broker
    }))
    .await;
}
