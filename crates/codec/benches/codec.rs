//! The codec's share of every message: decoding a publish (method, header,
//! body) and assembling it, and encoding a delivery.
//!
//! `cargo bench -p warren-codec`

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::{Decoder, Encoder};
use warren_codec::{ContentAssembler, Frame, FrameCodec, Message, Outbound};

/// `count` publishes of `size`-octet bodies, as a client writes them.
fn publishes(count: usize, size: usize) -> BytesMut {
    let mut codec = FrameCodec::client(131_072);
    let mut buf = BytesMut::new();
    for _ in 0..count {
        let publish = basic::Publish {
            exchange: "".into(),
            routing_key: "warren-perf-0".into(),
            mandatory: false,
            immediate: false,
        };
        let message = Arc::new(Message {
            exchange: "".into(),
            routing_key: "warren-perf-0".into(),
            properties: BasicProperties::default().into(),
            body: Bytes::from(vec![b'w'; size]),
        });
        let item = Outbound::Content {
            channel: 1,
            method: AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
            message,
        };
        codec.encode(item, &mut buf).unwrap();
    }
    buf
}

fn decode(c: &mut Criterion) {
    const COUNT: usize = 1000;
    let mut group = c.benchmark_group("decode publish");
    group.throughput(Throughput::Elements(COUNT as u64));
    for size in [16, 1024] {
        let wire = publishes(COUNT, size);
        group.bench_function(format!("{size} B, decode + assemble"), |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| {
                    let mut codec = FrameCodec::client(131_072);
                    let mut assembler = ContentAssembler::default();
                    let mut done = 0;
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        let published = match frame {
                            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(m))) => {
                                assembler.start(m).unwrap();
                                None
                            }
                            Frame::Header(_, header) => assembler.header(header).unwrap(),
                            Frame::Body(_, body) => assembler.body(body).unwrap(),
                            other => panic!("unexpected {other:?}"),
                        };
                        done += usize::from(published.is_some());
                    }
                    assert_eq!(done, COUNT);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    const COUNT: usize = 1000;
    let mut group = c.benchmark_group("encode deliver");
    group.throughput(Throughput::Elements(COUNT as u64));
    for size in [16, 1024] {
        let message = Arc::new(Message {
            exchange: "".into(),
            routing_key: "warren-perf-0".into(),
            properties: BasicProperties::default().into(),
            body: Bytes::from(vec![b'w'; size]),
        });
        let consumer_tag: Arc<str> = Arc::from("amq.ctag-0123456789012345678901");
        group.bench_function(format!("{size} B"), |b| {
            let mut codec = FrameCodec::new(131_072);
            let mut buf = BytesMut::with_capacity(COUNT * (size + 128));
            b.iter(|| {
                buf.clear();
                for tag in 1..=COUNT as u64 {
                    // What the server writes for every delivery.
                    let item = Outbound::Deliver {
                        channel: 1,
                        consumer_tag: consumer_tag.clone(),
                        delivery_tag: tag,
                        redelivered: false,
                        message: message.clone(),
                    };
                    codec.encode(item, &mut buf).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
