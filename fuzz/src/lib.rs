//! Fuzz targets for Warren. Each takes arbitrary bytes and must neither
//! panic, hang nor grow without bound, whatever they are.
//!
//! cargo-fuzz runs them from `fuzz/libfuzzer` (one thin binary per target);
//! `tests/corpus.rs` replays the corpus kept in `fuzz/corpus/<target>/` on
//! every CI run, so a fixed finding stays fixed.
//!
//! # Layout
//!
//! - [`frame_decoding`]: the frame codec, at the pre-login and the
//!   negotiated frame size, and the re-encoding of what it decodes.
//! - [`content_assembly`]: the per-channel publish/header/body state machine.
//! - [`field_table`]: the nesting bound, then amq-protocol's parser and
//!   generator on what the bound lets through.
//! - [`fast_decoding`]: the codec's hand-written decoders against
//!   amq-protocol's parsers, wherever the former answer.
//! - [`connection`]: a whole connection, handshake and channels, served by
//!   the real connection task over an in-memory socket.
//! - [`store_recovery`]: a real store whose segment or ack file holds the
//!   input, opened, read back and closed.

use std::time::Duration;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, channel, connection as conn, AMQPClass, BasicProperties};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};
use warren_codec::nesting::{check_table, MAX_NESTING};
use warren_codec::{ContentAssembler, Frame, FrameCodec, PROTOCOL_HEADER};

/// Decodes `data` as a client's byte stream, with and without the protocol
/// header, at 4104 and 131072 octets of frame_max; re-encodes every frame.
pub fn frame_decoding(data: &[u8]) {
    for (frame_max, header) in [(4104, true), (131_072, false)] {
        let mut codec = if header {
            FrameCodec::new(frame_max)
        } else {
            FrameCodec::client(frame_max)
        };
        let mut buf = BytesMut::from(data);
        let mut out = BytesMut::new();
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            // What the server parsed, it can write back.
            if !matches!(frame, Frame::ProtocolHeader) {
                codec.encode(frame, &mut out).expect("a decoded frame re-encodes");
            }
        }
    }
}

/// Wherever the codec's hand-written decoders recognise a payload,
/// amq-protocol's parsers must accept it and give the same value: the fast
/// path may only be faster, never different.
pub fn fast_decoding(data: &[u8]) {
    if let Some(ours) = warren_codec::fast::method(data) {
        match amq_protocol::protocol::parse_class(data) {
            Ok(([], theirs)) => assert_eq!(ours, theirs),
            other => panic!("fast decoder accepted {data:?}, amq-protocol gave {other:?}"),
        }
    }
    if let Some(ours) = warren_codec::fast::content_header(data) {
        match amq_protocol::frame::parsing::parse_content_header(data) {
            Ok(([], theirs)) => assert_eq!(ours, theirs),
            other => panic!("fast decoder accepted {data:?}, amq-protocol gave {other:?}"),
        }
    }
}

/// Drives a [`ContentAssembler`] with operations read from `data`: each byte
/// picks start, header (size from the next two bytes), body (length from the
/// next byte) or a method. A completed message has exactly its announced size.
pub fn content_assembly(data: &[u8]) {
    let mut assembler = ContentAssembler::default();
    let mut announced = None;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let result = match op % 4 {
            0 => assembler.start(publish()).map(|_| None),
            1 => {
                let size = u64::from(u16::from_be_bytes([
                    bytes.next().unwrap_or(0),
                    bytes.next().unwrap_or(0),
                ]));
                announced = Some(size);
                let header = Box::new(AMQPContentHeader {
                    class_id: if op & 0x80 == 0 { 60 } else { 50 },
                    body_size: size,
                    properties: BasicProperties::default(),
                });
                assembler.header(header)
            }
            2 => {
                let len = usize::from(bytes.next().unwrap_or(0));
                assembler.body(Bytes::from(vec![b'x'; len]))
            }
            _ => assembler.expect_idle().map(|_| None),
        };
        match result {
            Ok(Some(published)) => {
                assert_eq!(Some(published.message.body.len() as u64), announced);
                assert!(assembler.is_idle());
            }
            Ok(None) => {}
            // A connection error: the server closes; start afresh.
            Err(_) => assembler = ContentAssembler::default(),
        }
    }
}

fn publish() -> basic::Publish {
    basic::Publish {
        exchange: "".into(),
        routing_key: "q".into(),
        mandatory: false,
        immediate: false,
    }
}

/// Checks `data` as a field table: what passes the nesting bound goes to
/// amq-protocol's recursive parser, and what parses is re-encoded.
pub fn field_table(data: &[u8]) {
    if check_table(data, MAX_NESTING).is_err() {
        return;
    }
    if let Ok((_, table)) = parse_field_table(data) {
        let _ = amq_protocol::types::generation::gen_field_table(&table)(Vec::new().into());
    }
}

/// What a well-behaved client sends up to an open channel 1, so that most
/// inputs exercise the channel state machine rather than the handshake.
fn handshake_prefix() -> Vec<u8> {
    let mut codec = FrameCodec::client(131_072);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(PROTOCOL_HEADER);
    let frames = [
        AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
        AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        })),
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "/".into(),
        })),
    ];
    for method in frames {
        codec.encode(Frame::Method(0, method), &mut buf).expect("encodes");
    }
    let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
    codec.encode(Frame::Method(1, open), &mut buf).expect("encodes");
    buf.to_vec()
}

/// Serves one connection whose client sends `data` (after a valid handshake
/// unless the first byte is 0) and then closes its side, while reading
/// everything the server writes. A fresh broker each time, on a store in a
/// temporary directory, so that runs do not depend on each other. The
/// connection must end within 10 s.
pub fn connection(data: &[u8]) {
    let (raw, rest) = match data.split_first() {
        Some((0, rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => return,
    };
    let mut input = if raw { Vec::new() } else { handshake_prefix() };
    input.extend_from_slice(rest);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    runtime.block_on(async {
        let mut config = warren_server::Config::new(dir.path());
        config.store_cache_bytes = 1 << 20;
        let broker = warren_server::broker::Broker::open(config)
            .await
            .expect("the store opens");
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let (shutdown, shutdown_rx) = tokio::sync::broadcast::channel(1);
        let peer = "127.0.0.1:40000".parse().expect("an address");
        let served = tokio::spawn(warren_server::connection::serve(
            broker,
            1,
            Box::new(server_read),
            Box::new(server_write),
            peer,
            None,
            shutdown_rx,
        ));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let write = async move {
            let _ = client_write.write_all(&input).await;
            let _ = client_write.shutdown().await;
        };
        let read = async move {
            let mut scratch = vec![0u8; 64 * 1024];
            while let Ok(1..) = client_read.read(&mut scratch).await {}
        };
        let everything = async {
            tokio::join!(write, read);
            served.await.expect("the connection task does not panic");
        };
        tokio::time::timeout(Duration::from_secs(10), everything)
            .await
            .expect("the connection ends once the client has gone");
        drop(shutdown);
    });
}

/// The queue id of the template store's one durable queue.
const TEMPLATE_QUEUE: u64 = 1;

/// A store with one durable queue and 20 persistent messages, 5 of them
/// acked and 5 delivered, closed cleanly; built once per process.
fn template_store() -> &'static std::path::Path {
    use std::sync::{mpsc, Arc, OnceLock};
    static TEMPLATE: OnceLock<tempfile::TempDir> = OnceLock::new();

    #[derive(Debug)]
    struct Done(mpsc::SyncSender<bool>);
    impl warren_store::Durable for Done {
        fn done(&self, ok: bool) {
            let _ = self.0.send(ok);
        }
    }

    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let (store, _) = warren_store::Store::open(dir.path(), 1 << 20).expect("a new store opens");
            let queue = store.new_queue_id();
            assert_eq!(queue, TEMPLATE_QUEUE);
            store.put_queue(warren_store::QueueDef {
                vhost: warren_store::DEFAULT_VHOST.into(),
                name: "q".into(),
                id: queue,
                auto_delete: false,
                arguments: FieldTable::default(),
            });
            let ids: Vec<u64> = (0..20u8)
                .map(|i| {
                    let message = warren_codec::Message {
                        exchange: "".into(),
                        routing_key: "q".into(),
                        properties: BasicProperties::default().with_delivery_mode(2).into(),
                        body: Bytes::from(vec![i; 100]),
                    };
                    store.publish(Arc::new(message), vec![queue], None)
                })
                .collect();
            let (tx, rx) = mpsc::sync_channel(1);
            store.barrier(Arc::new(Done(tx)));
            assert!(rx.recv().expect("the store answers"));
            store.settle(queue, ids[..5].to_vec());
            store.delivered(queue, ids[5..10].to_vec());
            store.close().expect("the store closes");
            dir
        })
        .path()
}

/// The first byte picks a file of a copy of the template store (its closed
/// segment, that segment's ack file, or a segment sled never heard of); the
/// rest becomes that file's content. Opening must refuse or recover, never
/// panic; everything it recovers must read back (as a message or an error)
/// and the store must close.
pub fn store_recovery(data: &[u8]) {
    use std::sync::mpsc;
    let Some((&which, content)) = data.split_first() else {
        return;
    };
    let template = template_store();
    let dir = tempfile::tempdir().expect("a temporary directory");
    copy_dir(template, dir.path());
    let segments = dir.path().join("segments");
    let file = match which % 3 {
        0 => "00000000000000000000.seg",
        1 => "00000000000000000000.ack",
        _ => "00000000000000000005.seg",
    };
    std::fs::write(segments.join(file), content).expect("writing the damaged file");
    let (store, recovered) = match warren_store::Store::open(dir.path(), 1 << 20) {
        Ok(opened) => opened,
        Err(e) => {
            assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
            return;
        }
    };
    for queue in &recovered.queues {
        let ids: Vec<u64> = queue.entries.iter().map(|e| e.message).collect();
        let (tx, rx) = mpsc::sync_channel(1);
        store.read(
            ids.clone(),
            Box::new(move |read| {
                let _ = tx.send(read.len());
            }),
        );
        let read = rx.recv_timeout(Duration::from_secs(10)).expect("the store reads");
        assert_eq!(read, ids.len());
    }
    store.close().expect("a recovered store closes");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("the template") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "lock" {
            std::fs::copy(entry.path(), target).expect("a copy");
        }
    }
}
