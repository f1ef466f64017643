//! `warren-null-broker`: the cheapest peer `warren-perf` can have, to
//! measure the generator's own ceiling.
//!
//! It does the handshake, answers every synchronous method with its -ok,
//! discards publishes (confirming them, one `multiple` ack per read, when
//! the channel is in confirm mode), and once a consumer is registered it
//! streams pre-encoded deliveries of `--size` octets as fast as the socket
//! takes them, stamped with the current time, ignoring prefetch and acks.
//! Whatever rate `warren-perf` reaches against it is the most it can
//! measure on a broker.

use std::collections::HashMap;

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, parse_class, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, Framed};
use warren_codec::amq_protocol;
use warren_codec::bytes::{Buf, BytesMut};
use warren_codec::{Frame, FrameCodec};
use warren_perf::wire;

/// A null AMQP broker: discards publishes, streams deliveries.
#[derive(Parser)]
#[command(name = "warren-null-broker", version)]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5690")]
    bind: String,
    /// Body size of the deliveries it streams.
    #[arg(long, default_value_t = 16)]
    size: usize,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

const FRAME_MAX: u32 = 131_072;

/// What the reader asks the writer to do.
enum Out {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Start streaming deliveries to this consumer.
    Stream { channel: u16, tag: String },
}

fn main() -> Result<(), Error> {
    let opts = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(&opts.bind).await?;
            eprintln!("warren-null-broker on {}", listener.local_addr()?);
            loop {
                let (socket, _) = listener.accept().await?;
                let size = opts.size;
                tokio::spawn(async move {
                    if let Err(e) = serve(socket, size).await {
                        eprintln!("connection: {e}");
                    }
                });
            }
        })
}

fn conn(m: connection::AMQPMethod) -> Frame {
    Frame::Method(0, AMQPClass::Connection(m))
}

async fn serve(socket: TcpStream, size: usize) -> Result<(), Error> {
    socket.set_nodelay(true)?;
    let mut framed = Framed::new(socket, FrameCodec::new(FRAME_MAX));
    let Some(Ok(Frame::ProtocolHeader)) = framed.next().await else {
        return Err("no protocol header".into());
    };
    framed
        .send(conn(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        })))
        .await?;
    framed.next().await.ok_or("no start-ok")??;
    framed
        .send(conn(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 0,
        })))
        .await?;
    framed.next().await.ok_or("no tune-ok")??;
    framed.next().await.ok_or("no open")??;
    framed
        .send(conn(connection::AMQPMethod::OpenOk(connection::OpenOk {})))
        .await?;
    let parts = framed.into_parts();
    let (mut reader, writer) = parts.io.into_split();
    let mut buf = parts.read_buf;
    let (out, inbox) = mpsc::channel(1024);
    let writing = tokio::spawn(write_loop(writer, inbox, size));
    let mut codec = FrameCodec::new(FRAME_MAX);
    // Channels in confirm mode, with the number of publishes seen.
    let mut confirming: HashMap<u16, u64> = HashMap::new();
    loop {
        let mut replies = BytesMut::new();
        let mut published: HashMap<u16, u64> = HashMap::new();
        while let Some((frame, used)) = wire::next_frame(&buf)? {
            if frame.method() == Some(wire::BASIC_PUBLISH) {
                *published.entry(frame.channel).or_default() += 1;
            } else if frame.kind == wire::METHOD && frame.method() != Some(wire::BASIC_ACK) {
                let (_, method) = parse_class(frame.payload).map_err(|e| format!("bad method: {e:?}"))?;
                match answer(frame.channel, method) {
                    Answer::Reply(reply) => {
                        codec.encode(Frame::Method(frame.channel, reply), &mut replies)?;
                    }
                    Answer::Confirming(reply) => {
                        confirming.insert(frame.channel, 0);
                        codec.encode(Frame::Method(frame.channel, reply), &mut replies)?;
                    }
                    Answer::Consume(tag, reply) => {
                        codec.encode(Frame::Method(frame.channel, reply), &mut replies)?;
                        out.send(Out::Bytes(replies.split().to_vec())).await?;
                        out.send(Out::Stream {
                            channel: frame.channel,
                            tag,
                        })
                        .await?;
                    }
                    Answer::None => {}
                    Answer::Close(reply) => {
                        codec.encode(Frame::Method(frame.channel, reply), &mut replies)?;
                        out.send(Out::Bytes(replies.to_vec())).await?;
                        drop(out);
                        return writing.await?;
                    }
                }
            }
            buf.advance(used);
        }
        let mut confirms = Vec::new();
        for (channel, count) in published {
            if let Some(seen) = confirming.get_mut(&channel) {
                *seen += count;
                wire::put_ack(&mut confirms, channel, *seen, true);
            }
        }
        confirms.extend_from_slice(&replies);
        if !confirms.is_empty() {
            out.send(Out::Bytes(confirms)).await?;
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

enum Answer {
    Reply(AMQPClass),
    Confirming(AMQPClass),
    Consume(String, AMQPClass),
    Close(AMQPClass),
    None,
}

/// The -ok for each synchronous method a load generator sends.
fn answer(channel_id: u16, method: AMQPClass) -> Answer {
    use AMQPClass as C;
    let reply = match method {
        C::Channel(channel::AMQPMethod::Open(_)) => {
            C::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {}))
        }
        C::Channel(channel::AMQPMethod::Close(_)) => {
            C::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))
        }
        C::Connection(connection::AMQPMethod::Close(_)) if channel_id == 0 => {
            return Answer::Close(C::Connection(connection::AMQPMethod::CloseOk(
                connection::CloseOk {},
            )))
        }
        C::Confirm(confirm::AMQPMethod::Select(_)) => {
            return Answer::Confirming(C::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})))
        }
        C::Basic(basic::AMQPMethod::Qos(_)) => C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        C::Basic(basic::AMQPMethod::Consume(c)) => {
            let tag = c.consumer_tag.to_string();
            return Answer::Consume(
                tag.clone(),
                C::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.into(),
                })),
            );
        }
        C::Queue(queue::AMQPMethod::Declare(d)) => C::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: d.queue,
            message_count: 0,
            consumer_count: 0,
        })),
        C::Queue(queue::AMQPMethod::Bind(b)) if !b.nowait => {
            C::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}))
        }
        C::Queue(queue::AMQPMethod::Purge(_)) => {
            C::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count: 0 }))
        }
        C::Queue(queue::AMQPMethod::Delete(_)) => {
            C::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count: 0 }))
        }
        C::Exchange(exchange::AMQPMethod::Declare(_)) => {
            C::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}))
        }
        C::Exchange(exchange::AMQPMethod::Delete(_)) => {
            C::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}))
        }
        _ => return Answer::None,
    };
    Answer::Reply(reply)
}

/// One delivery, encoded once; the tag and the stamp are patched per send.
struct DeliveryTemplate {
    bytes: Vec<u8>,
    tag_at: usize,
    stamp_at: Option<usize>,
}

impl DeliveryTemplate {
    fn new(channel: u16, consumer_tag: &str, size: usize) -> Self {
        let mut bytes = Vec::new();
        wire::put_frame(
            &mut bytes,
            wire::METHOD,
            channel,
            &wire::deliver_payload(consumer_tag, 0, "", "q"),
        );
        // Frame header (7), class and method (4), tag length and tag.
        let tag_at = 7 + 4 + 1 + consumer_tag.len();
        wire::put_frame(
            &mut bytes,
            wire::HEADER,
            channel,
            &wire::header_payload(size as u64, None),
        );
        let stamp_at = (size >= 8).then_some(bytes.len() + 7);
        wire::put_body(&mut bytes, channel, &vec![b'n'; size], FRAME_MAX as usize);
        Self {
            bytes,
            tag_at,
            stamp_at,
        }
    }

    fn write_to(&self, buf: &mut Vec<u8>, tag: u64, stamp: u64) {
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        buf[start + self.tag_at..start + self.tag_at + 8].copy_from_slice(&tag.to_be_bytes());
        if let Some(at) = self.stamp_at {
            buf[start + at..start + at + 8].copy_from_slice(&stamp.to_be_bytes());
        }
    }
}

async fn write_loop(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut inbox: mpsc::Receiver<Out>,
    size: usize,
) -> Result<(), Error> {
    let mut streams: Vec<DeliveryTemplate> = Vec::new();
    let mut tag = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let next = match streams.is_empty() {
            true => inbox.recv().await,
            false => match inbox.try_recv() {
                Ok(out) => Some(out),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let stamp = wire::now_nanos();
                    while batch.len() < 64 * 1024 {
                        for template in &streams {
                            tag += 1;
                            template.write_to(&mut batch, tag, stamp);
                        }
                    }
                    writer.write_all(&batch).await?;
                    batch.clear();
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            },
        };
        match next {
            None => return Ok(()),
            Some(Out::Bytes(bytes)) => writer.write_all(&bytes).await?,
            Some(Out::Stream { channel, tag }) => streams.push(DeliveryTemplate::new(channel, &tag, size)),
        }
    }
}
