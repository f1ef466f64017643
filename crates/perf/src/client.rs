//! The slow path: connecting and declaring, with the codec crate.
//!
//! A [`Session`] does the handshake and the synchronous methods a run needs
//! before and after its hot loop (declare, bind, qos, consume, purge,
//! delete) through `warren-codec`'s `FrameCodec`, then hands the socket and
//! any bytes it has already read to the hot loop ([`Session::into_raw`]).

use std::error::Error;

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use warren_codec::amq_protocol;
use warren_codec::bytes::BytesMut;
use warren_codec::{Frame, FrameCodec, PROTOCOL_HEADER};

/// Errors of this tool: a message is all a user needs.
pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The frame_max this client asks for (RabbitMQ's and Warren's default).
const FRAME_MAX: u32 = 131_072;

/// One open connection in its setup phase.
pub struct Session {
    framed: Framed<TcpStream, FrameCodec>,
    /// frame_max agreed with the broker.
    pub frame_max: u32,
}

fn method(m: AMQPClass) -> Frame {
    Frame::Method(0, m)
}

impl Session {
    /// Connects and opens the URL's vhost, with heartbeats off (a load
    /// generator that stops reading for a while must not be dropped for it).
    pub async fn connect(uri: &AMQPUri) -> Result<Session> {
        let mut stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port)).await?;
        stream.set_nodelay(true)?;
        stream.write_all(PROTOCOL_HEADER).await?;
        let mut framed = Framed::new(stream, FrameCodec::client(FRAME_MAX));
        let AMQPClass::Connection(connection::AMQPMethod::Start(_)) = next_method(&mut framed, 0).await?
        else {
            return Err("expected connection.start".into());
        };
        let user = &uri.authority.userinfo;
        framed
            .send(method(AMQPClass::Connection(connection::AMQPMethod::StartOk(
                connection::StartOk {
                    client_properties: client_properties(),
                    mechanism: "PLAIN".into(),
                    response: format!("\0{}\0{}", user.username, user.password).into(),
                    locale: "en_US".into(),
                },
            ))))
            .await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = next_method(&mut framed, 0).await?
        else {
            return Err("expected connection.tune".into());
        };
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            offered => offered.min(FRAME_MAX),
        };
        framed.codec_mut().set_frame_max(frame_max);
        framed
            .send(method(AMQPClass::Connection(connection::AMQPMethod::TuneOk(
                connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max,
                    heartbeat: 0,
                },
            ))))
            .await?;
        framed
            .send(method(AMQPClass::Connection(connection::AMQPMethod::Open(
                connection::Open {
                    virtual_host: uri.vhost.as_str().into(),
                },
            ))))
            .await?;
        let AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) = next_method(&mut framed, 0).await?
        else {
            return Err("expected connection.open-ok".into());
        };
        Ok(Session { framed, frame_max })
    }

    /// Sends a method on `channel` and waits for its reply.
    async fn call(&mut self, channel: u16, m: AMQPClass) -> Result<AMQPClass> {
        self.framed.send(Frame::Method(channel, m)).await?;
        next_method(&mut self.framed, channel).await
    }

    /// Sends a method on `channel` and waits for its reply, whatever it is.
    async fn call_ok(&mut self, channel: u16, m: AMQPClass) -> Result<()> {
        self.call(channel, m).await.map(drop)
    }

    /// Opens `channel`.
    pub async fn open_channel(&mut self, id: u16) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await
    }

    /// Puts `channel` in confirm mode.
    pub async fn confirm_select(&mut self, id: u16) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
        )
        .await
    }

    /// Declares a queue (durable if asked); returns its message count.
    pub async fn declare_queue(&mut self, id: u16, name: &str, durable: bool, passive: bool) -> Result<u32> {
        let reply = self
            .call(
                id,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: name.into(),
                    passive,
                    durable,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await?;
        match reply {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            other => Err(format!("expected queue.declare-ok, got {other:?}").into()),
        }
    }

    /// Declares an exchange of `kind`.
    pub async fn declare_exchange(&mut self, id: u16, name: &str, kind: &str, durable: bool) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: name.into(),
                kind: kind.into(),
                passive: false,
                durable,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await
    }

    /// Binds a queue, waiting for bind-ok.
    pub async fn bind(&mut self, id: u16, queue_name: &str, exchange: &str, key: &str) -> Result<()> {
        self.call_ok(id, bind_method(queue_name, exchange, key, false))
            .await
    }

    /// Binds a queue with nowait, many at a time; [`Session::sync`] waits
    /// for them all.
    pub async fn bind_nowait(&mut self, id: u16, queue_name: &str, exchange: &str, key: &str) -> Result<()> {
        self.framed
            .feed(Frame::Method(id, bind_method(queue_name, exchange, key, true)))
            .await?;
        Ok(())
    }

    /// A round trip on `id`: every method sent before it has been handled.
    pub async fn sync(&mut self, id: u16) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos::default())),
        )
        .await
    }

    /// Purges a queue.
    pub async fn purge(&mut self, id: u16, name: &str) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: name.into(),
                nowait: false,
            })),
        )
        .await
    }

    /// Deletes a queue.
    pub async fn delete_queue(&mut self, id: u16, name: &str) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                if_unused: false,
                if_empty: false,
                nowait: false,
            })),
        )
        .await
    }

    /// Deletes an exchange.
    pub async fn delete_exchange(&mut self, id: u16, name: &str) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                exchange: name.into(),
                if_unused: false,
                nowait: false,
            })),
        )
        .await
    }

    /// Sets the per-consumer prefetch.
    pub async fn qos(&mut self, id: u16, prefetch: u16) -> Result<()> {
        self.call_ok(
            id,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })),
        )
        .await
    }

    /// Starts consuming `queue` with the tag `tag`.
    pub async fn consume(&mut self, id: u16, queue_name: &str, tag: &str, no_ack: bool) -> Result<()> {
        self.call_ok(id, consume_method(queue_name, tag, no_ack, false))
            .await
    }

    /// basic.consume with nowait: for a consumer's later queues, whose
    /// consume-ok could arrive behind deliveries from the first (the
    /// consumer's loop ignores it, and reports a channel.close).
    pub async fn consume_nowait(&mut self, id: u16, queue_name: &str, tag: &str, no_ack: bool) -> Result<()> {
        self.framed
            .send(Frame::Method(id, consume_method(queue_name, tag, no_ack, true)))
            .await?;
        Ok(())
    }

    /// The socket and what has been read from it but not yet parsed.
    pub fn into_raw(self) -> (TcpStream, BytesMut) {
        let parts = self.framed.into_parts();
        (parts.io, parts.read_buf)
    }
}

/// Announces `connection.blocked`, so that a producer hears of a broker's
/// alarm (and a flood run counts them).
fn client_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    capabilities.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut properties = FieldTable::default();
    properties.insert("product".into(), AMQPValue::LongString("warren-perf".into()));
    properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    properties
}

fn consume_method(queue_name: &str, tag: &str, no_ack: bool, nowait: bool) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: queue_name.into(),
        consumer_tag: tag.into(),
        no_local: false,
        no_ack,
        exclusive: false,
        nowait,
        arguments: FieldTable::default(),
    }))
}

fn bind_method(queue_name: &str, exchange: &str, key: &str, nowait: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: queue_name.into(),
        exchange: exchange.into(),
        routing_key: key.into(),
        nowait,
        arguments: FieldTable::default(),
    }))
}

/// The next method on `channel`; a close from the broker is an error with
/// its code and text.
async fn next_method(framed: &mut Framed<TcpStream, FrameCodec>, id: u16) -> Result<AMQPClass> {
    loop {
        match framed.next().await {
            None => return Err("the broker closed the connection".into()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Frame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))))) => {
                return Err(format!("connection closed: {} {}", c.reply_code, c.reply_text).into())
            }
            Some(Ok(Frame::Method(c, AMQPClass::Channel(channel::AMQPMethod::Close(close))))) if c == id => {
                return Err(format!("channel closed: {} {}", close.reply_code, close.reply_text).into())
            }
            Some(Ok(Frame::Method(c, m))) if c == id => return Ok(m),
            Some(Ok(_)) => continue,
        }
    }
}
