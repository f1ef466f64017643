//! A frame-level AMQP client, for sending what well-behaved clients never
//! send: bad headers, oversized frames, frames on unopened channels, garbage.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use warren_codec::amq_protocol::protocol::{channel, connection, AMQPClass};
use warren_codec::amq_protocol::types::FieldTable;
use warren_codec::{Frame, FrameCodec, PROTOCOL_HEADER};

/// A raw connection after a complete handshake.
pub struct RawClient {
    framed: Framed<TcpStream, FrameCodec>,
    /// frame_max the server offered.
    pub frame_max: u32,
}

fn conn(m: connection::AMQPMethod) -> Frame {
    Frame::Method(0, AMQPClass::Connection(m))
}

impl RawClient {
    /// Connects and completes the handshake as guest/guest on `/`.
    pub async fn open(addr: SocketAddr) -> RawClient {
        Self::open_with_channel_max(addr, None).await
    }

    /// Like [`RawClient::open`], asking for a lower channel_max.
    pub async fn open_with_channel_max(addr: SocketAddr, channel_max: Option<u16>) -> RawClient {
        Self::open_with(addr, channel_max, 0).await
    }

    /// Like [`RawClient::open`], with heartbeats every `heartbeat` seconds
    /// (which this client never sends unless the test does).
    pub async fn open_with_heartbeat(addr: SocketAddr, heartbeat: u16) -> RawClient {
        Self::open_with(addr, None, heartbeat).await
    }

    async fn open_with(addr: SocketAddr, channel_max: Option<u16>, heartbeat: u16) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(PROTOCOL_HEADER).await.unwrap();
        let mut framed = Framed::new(stream, FrameCodec::client(131_072));
        let Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_))))) =
            framed.next().await
        else {
            panic!("expected connection.start")
        };
        framed
            .send(conn(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })))
            .await
            .unwrap();
        let Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))))) =
            framed.next().await
        else {
            panic!("expected connection.tune")
        };
        framed
            .send(conn(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: channel_max.unwrap_or(tune.channel_max),
                frame_max: tune.frame_max,
                heartbeat,
            })))
            .await
            .unwrap();
        framed
            .send(conn(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })))
            .await
            .unwrap();
        let Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))))) =
            framed.next().await
        else {
            panic!("expected connection.open-ok")
        };
        RawClient {
            framed,
            frame_max: tune.frame_max,
        }
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: Frame) {
        self.framed.send(frame).await.unwrap();
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.unwrap();
    }

    /// Opens a channel.
    pub async fn open_channel(&mut self, id: u16) {
        self.send(Frame::Method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        match self.framed.next().await {
            Some(Ok(Frame::Method(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))))) if c == id => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Reads frames until connection.close; returns its code, answers
    /// close-ok, and checks that the server then closes the socket.
    pub async fn expect_connection_close(mut self) -> u16 {
        loop {
            match self.framed.next().await {
                Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close))))) => {
                    self.send(conn(connection::AMQPMethod::CloseOk(connection::CloseOk {})))
                        .await;
                    let mut rest = Vec::new();
                    let _ = self.framed.get_mut().read_to_end(&mut rest).await;
                    return close.reply_code;
                }
                Some(Ok(_)) => continue,
                other => panic!("expected connection.close, got {other:?}"),
            }
        }
    }

    /// Reads frames until channel.close on `id`; returns its code.
    pub async fn expect_channel_close(&mut self, id: u16) -> u16 {
        loop {
            match self.framed.next().await {
                Some(Ok(Frame::Method(c, AMQPClass::Channel(channel::AMQPMethod::Close(close)))))
                    if c == id =>
                {
                    return close.reply_code
                }
                Some(Ok(_)) => continue,
                other => panic!("expected channel.close, got {other:?}"),
            }
        }
    }

    /// Reads the next frame.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.framed.next().await.map(|f| f.unwrap())
    }

    /// Reads frames until one on channel `id` matches, skipping others.
    pub async fn recv_until(&mut self, id: u16, mut wanted: impl FnMut(&AMQPClass) -> bool) -> AMQPClass {
        loop {
            match self.framed.next().await {
                Some(Ok(Frame::Method(c, method))) if c == id && wanted(&method) => return method,
                Some(Ok(_)) => continue,
                other => panic!("connection ended while waiting on channel {id}: {other:?}"),
            }
        }
    }

    /// The socket, for writing bytes at a pace of the test's choosing.
    pub fn socket(&mut self) -> &mut TcpStream {
        self.framed.get_mut()
    }

    /// Reads until the server closes the socket; returns the reply code of
    /// the connection.close it sent first, if any.
    pub async fn until_closed(mut self) -> Option<u16> {
        let mut code = None;
        while let Some(Ok(frame)) = self.framed.next().await {
            if let Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) = frame {
                code = Some(close.reply_code);
            }
        }
        code
    }
}
