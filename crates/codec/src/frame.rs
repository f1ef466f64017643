//! Frames on the wire and the codec between them and bytes.
//!
//! Responsibilities:
//! - check the 8-octet protocol header that opens every connection;
//! - split the stream into frames, refusing any larger than the negotiated
//!   `frame_max` (amq-protocol does not check it) or without the frame-end octet;
//! - parse method and content-header payloads with amq-protocol, and keep body
//!   payloads as [`Bytes`] slices of the read buffer (no copy);
//! - write frames, splitting message bodies to fit `frame_max`.

use std::sync::Arc;

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{AMQPContentHeader, GenError, WriteContext};
use amq_protocol::protocol::{basic::gen_properties, constants, gen_class, parse_class, AMQPClass};
use amq_protocol::types::generation::{gen_id, gen_long_long_uint, gen_short_uint};
use amq_protocol::types::ChannelId;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::fast;
use crate::nesting::{self, MAX_NESTING};
use crate::{CodecError, Message};

/// The only protocol header this broker speaks: AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Octets of frame overhead: type (1), channel (2), size (4) and frame-end (1).
const FRAME_OVERHEAD: usize = 8;
const HEADER_LEN: usize = 7;

/// One frame, as read from or written to a peer.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// The protocol header `AMQP\0\0\x09\x01`, the first thing a client sends.
    ProtocolHeader,
    /// A method frame.
    Method(ChannelId, AMQPClass),
    /// A content header frame, boxed: its properties make it five times
    /// the size of any other frame, and every frame is moved several times
    /// between the socket and its handler.
    Header(ChannelId, Box<AMQPContentHeader>),
    /// A content body frame.
    Body(ChannelId, Bytes),
    /// A heartbeat frame; the spec requires channel 0, which the server checks.
    Heartbeat(ChannelId),
}

impl Frame {
    /// The channel the frame was sent on.
    pub fn channel(&self) -> ChannelId {
        match self {
            Frame::ProtocolHeader => 0,
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => *c,
        }
    }
}

/// What the server writes: a single frame, or a method with content (a
/// delivery, get-ok or return) that the encoder splits into method, header and
/// body frames.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// One frame.
    Frame(Frame),
    /// basic.deliver with its message, the hot path's one frame sequence:
    /// written straight into the output buffer, with no method value built
    /// and no string copied.
    Deliver {
        /// Channel to send it on.
        channel: ChannelId,
        /// The consumer's tag, shared by all its deliveries.
        consumer_tag: Arc<str>,
        /// The channel's tag for this delivery.
        delivery_tag: u64,
        /// Whether the message was delivered before.
        redelivered: bool,
        /// The message, shared with every other queue it was routed to.
        message: Arc<Message>,
    },
    /// A content-carrying method followed by the message's header and body.
    Content {
        /// Channel to send it on.
        channel: ChannelId,
        /// `basic.deliver`, `basic.get-ok` or `basic.return`.
        method: AMQPClass,
        /// The message, shared with every other queue it was routed to.
        message: Arc<Message>,
    },
}

impl From<Frame> for Outbound {
    fn from(frame: Frame) -> Self {
        Outbound::Frame(frame)
    }
}

/// tokio-util codec for AMQP 0-9-1 frames.
#[derive(Debug)]
pub struct FrameCodec {
    /// Largest frame accepted and written, overhead included.
    frame_max: usize,
    /// Whether the protocol header has been read; until then the decoder
    /// expects exactly those 8 octets.
    header_seen: bool,
    /// Reused buffer for serialising method and header payloads, whose length
    /// must be known before the frame header is written.
    scratch: Vec<u8>,
}

impl FrameCodec {
    /// A codec for a new connection, accepting frames up to `frame_max` octets.
    pub fn new(frame_max: u32) -> Self {
        Self {
            frame_max: frame_max as usize,
            header_seen: false,
            scratch: Vec::new(),
        }
    }

    /// A codec for the client side of a connection, which sends the protocol
    /// header but never receives one.
    pub fn client(frame_max: u32) -> Self {
        Self {
            header_seen: true,
            ..Self::new(frame_max)
        }
    }

    /// Applies the `frame_max` negotiated by connection.tune-ok.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max as usize;
    }

    fn write_payload<F>(
        &mut self,
        dst: &mut BytesMut,
        kind: u8,
        channel: ChannelId,
        gen: F,
    ) -> Result<(), CodecError>
    where
        F: FnOnce(WriteContext<Vec<u8>>) -> Result<WriteContext<Vec<u8>>, GenError>,
    {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let (buf, _) = gen(WriteContext::from(buf)).map_err(gen_error)?.into_inner();
        dst.reserve(buf.len() + FRAME_OVERHEAD);
        dst.put_u8(kind);
        dst.put_u16(channel);
        dst.put_u32(buf.len() as u32);
        dst.extend_from_slice(&buf);
        dst.put_u8(constants::FRAME_END);
        self.scratch = buf;
        Ok(())
    }

    fn write_body(&self, dst: &mut BytesMut, channel: ChannelId, body: &[u8]) {
        let chunk_max = self.frame_max - FRAME_OVERHEAD;
        dst.reserve(body.len() + FRAME_OVERHEAD * body.len().div_ceil(chunk_max.max(1)));
        for chunk in body.chunks(chunk_max) {
            dst.put_u8(constants::FRAME_BODY);
            dst.put_u16(channel);
            dst.put_u32(chunk.len() as u32);
            dst.extend_from_slice(chunk);
            dst.put_u8(constants::FRAME_END);
        }
    }

    /// The content header and body frames of a message.
    fn write_content(
        &mut self,
        dst: &mut BytesMut,
        channel: ChannelId,
        message: &Message,
    ) -> Result<(), CodecError> {
        self.write_payload(dst, constants::FRAME_HEADER, channel, |w| {
            let w = gen_id(60)(w)?;
            let w = gen_short_uint(0)(w)?;
            let w = gen_long_long_uint(message.body.len() as u64)(w)?;
            gen_properties(&message.properties)(w)
        })?;
        // spec: a zero-length body is sent as no body frames at all.
        self.write_body(dst, channel, &message.body);
        Ok(())
    }
}

/// A payload amq-protocol cannot parse (truncated arguments, unknown class or
/// method): 501 FRAME_ERROR, as RabbitMQ answers truncated arguments.
fn cannot_decode(payload: &[u8]) -> CodecError {
    let shown = &payload[..payload.len().min(32)];
    CodecError::frame_error(format!("cannot decode {shown:?} ({} octets)", payload.len()))
}

/// Refuses a method or content header whose field tables nest deeper than
/// [`MAX_NESTING`], before amq-protocol's recursive parser sees it.
fn check_nesting(kind: u8, payload: &[u8]) -> Result<(), CodecError> {
    let checked = match kind {
        constants::FRAME_METHOD => nesting::check_method(payload, MAX_NESTING),
        constants::FRAME_HEADER => nesting::check_content_header(payload, MAX_NESTING),
        _ => Ok(()),
    };
    checked.map_err(|_| {
        CodecError::frame_error(format!(
            "field table or array nested deeper than {MAX_NESTING} levels"
        ))
    })
}

fn gen_error(e: GenError) -> CodecError {
    CodecError::Io(std::io::Error::other(format!("cannot serialise frame: {e:?}")))
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if !self.header_seen {
            if src.len() < PROTOCOL_HEADER.len() {
                return Ok(None);
            }
            let header: [u8; 8] = src[..8].try_into().expect("length checked");
            src.advance(8);
            if &header != PROTOCOL_HEADER {
                return Err(CodecError::ProtocolHeader(header));
            }
            self.header_seen = true;
            return Ok(Some(Frame::ProtocolHeader));
        }
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = src[0];
        let channel = u16::from_be_bytes([src[1], src[2]]);
        let size = u32::from_be_bytes([src[3], src[4], src[5], src[6]]) as usize;
        if !matches!(
            kind,
            constants::FRAME_METHOD
                | constants::FRAME_HEADER
                | constants::FRAME_BODY
                | constants::FRAME_HEARTBEAT
        ) {
            return Err(CodecError::frame_error(format!(
                "type {kind}, first 16 octets = {:?}",
                &src[..src.len().min(16)]
            )));
        }
        if size + FRAME_OVERHEAD > self.frame_max {
            return Err(CodecError::frame_error(format!(
                "frame size {} larger than negotiated maximum {}",
                size + FRAME_OVERHEAD,
                self.frame_max
            )));
        }
        let total = size + FRAME_OVERHEAD;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        if src[total - 1] != constants::FRAME_END {
            return Err(CodecError::frame_error(format!(
                "frame end octet {:#04x} instead of 0xce",
                src[total - 1]
            )));
        }
        if kind == constants::FRAME_HEARTBEAT && size != 0 {
            return Err(CodecError::frame_error(format!(
                "type 8, {size} octets of payload: unknown_frame"
            )));
        }
        let mut frame = src.split_to(total);
        frame.advance(HEADER_LEN);
        frame.truncate(size);
        let payload = frame.freeze();
        check_nesting(kind, &payload)?;
        match kind {
            constants::FRAME_METHOD => match fast::method(&payload) {
                Some(method) => Ok(Some(Frame::Method(channel, method))),
                None => match parse_class(&payload[..]) {
                    Ok(([], method)) => Ok(Some(Frame::Method(channel, method))),
                    _ => Err(cannot_decode(&payload)),
                },
            },
            constants::FRAME_HEADER => match fast::content_header(&payload) {
                Some(header) => Ok(Some(Frame::Header(channel, Box::new(header)))),
                None => match parse_content_header(&payload[..]) {
                    Ok(([], header)) => Ok(Some(Frame::Header(channel, Box::new(header)))),
                    _ => Err(cannot_decode(&payload)),
                },
            },
            constants::FRAME_BODY => Ok(Some(Frame::Body(channel, payload))),
            _ => Ok(Some(Frame::Heartbeat(channel))),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        match frame {
            Frame::ProtocolHeader => dst.extend_from_slice(PROTOCOL_HEADER),
            Frame::Method(channel, method) => {
                self.write_payload(dst, constants::FRAME_METHOD, channel, |w| gen_class(&method)(w))?
            }
            Frame::Header(channel, header) => {
                self.write_payload(dst, constants::FRAME_HEADER, channel, |w| {
                    let w = gen_id(header.class_id)(w)?;
                    let w = gen_short_uint(0)(w)?;
                    let w = gen_long_long_uint(header.body_size)(w)?;
                    gen_properties(&header.properties)(w)
                })?
            }
            Frame::Body(channel, body) => self.write_body(dst, channel, &body),
            Frame::Heartbeat(channel) => {
                dst.put_u8(constants::FRAME_HEARTBEAT);
                dst.put_u16(channel);
                dst.put_u32(0);
                dst.put_u8(constants::FRAME_END);
            }
        }
        Ok(())
    }
}

impl Encoder<Outbound> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outbound::Frame(frame) => self.encode(frame, dst),
            Outbound::Deliver {
                channel,
                consumer_tag,
                delivery_tag,
                redelivered,
                message,
            } => {
                write_deliver(dst, channel, &consumer_tag, delivery_tag, redelivered, &message);
                self.write_content(dst, channel, &message)
            }
            Outbound::Content {
                channel,
                method,
                message,
            } => {
                self.write_payload(dst, constants::FRAME_METHOD, channel, |w| gen_class(&method)(w))?;
                self.write_content(dst, channel, &message)
            }
        }
    }
}

/// A short string's octets (at most 255).
fn short(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(255)]
}

/// The basic.deliver method frame (spec 1.8.3.9: consumer-tag, delivery-tag,
/// redelivered, exchange, routing-key), written field by field.
fn write_deliver(
    dst: &mut BytesMut,
    channel: ChannelId,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    message: &Message,
) {
    // Short strings are at most 255 octets: the consumer tag was checked
    // when it arrived in basic.consume (or generated), and the exchange and
    // routing key when they arrived in basic.publish.
    let (tag, exchange, key) = (
        short(consumer_tag),
        short(message.exchange.as_str()),
        short(message.routing_key.as_str()),
    );
    let size = 4 + 1 + tag.len() + 8 + 1 + 1 + exchange.len() + 1 + key.len();
    dst.reserve(size + FRAME_OVERHEAD);
    dst.put_u8(constants::FRAME_METHOD);
    dst.put_u16(channel);
    dst.put_u32(size as u32);
    dst.put_u16(60);
    dst.put_u16(60);
    let put_short = |dst: &mut BytesMut, s: &[u8]| {
        dst.put_u8(s.len() as u8);
        dst.extend_from_slice(s);
    };
    put_short(dst, tag);
    dst.put_u64(delivery_tag);
    dst.put_u8(u8::from(redelivered));
    put_short(dst, exchange);
    put_short(dst, key);
    dst.put_u8(constants::FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, queue, BasicProperties};
    use amq_protocol::types::FieldTable;

    fn encode(frames: Vec<Frame>) -> BytesMut {
        let mut codec = FrameCodec::new(131_072);
        let mut buf = BytesMut::new();
        for f in frames {
            codec.encode(f, &mut buf).unwrap();
        }
        buf
    }

    fn sample() -> Vec<Frame> {
        vec![
            Frame::ProtocolHeader,
            Frame::Method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "q".into(),
                    passive: false,
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            ),
            Frame::Header(
                1,
                Box::new(AMQPContentHeader {
                    class_id: 60,
                    body_size: 5,
                    properties: BasicProperties::default().with_delivery_mode(2),
                }),
            ),
            Frame::Body(1, Bytes::from_static(b"hello")),
            Frame::Heartbeat(0),
        ]
    }

    #[test]
    fn a_written_deliver_is_what_the_generic_encoder_writes() {
        let message = Arc::new(Message {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            properties: BasicProperties::default().with_delivery_mode(2).into(),
            body: Bytes::from(vec![7u8; 300]),
        });
        let mut codec = FrameCodec::new(128);
        let (mut fast, mut generic) = (BytesMut::new(), BytesMut::new());
        codec
            .encode(
                Outbound::Deliver {
                    channel: 3,
                    consumer_tag: Arc::from("ctag"),
                    delivery_tag: 9,
                    redelivered: true,
                    message: message.clone(),
                },
                &mut fast,
            )
            .unwrap();
        let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 9,
            redelivered: true,
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
        }));
        codec
            .encode(
                Outbound::Content {
                    channel: 3,
                    method,
                    message,
                },
                &mut generic,
            )
            .unwrap();
        assert_eq!(fast, generic);
    }

    #[test]
    fn round_trip() {
        let mut buf = encode(sample());
        let mut codec = FrameCodec::new(131_072);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert_eq!(out, sample());
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_when_split_at_every_byte_boundary() {
        let bytes = encode(sample()).freeze();
        for split in 0..bytes.len() {
            let mut codec = FrameCodec::new(131_072);
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut out = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            assert_eq!(out, sample(), "split at {split}");
        }
    }

    #[test]
    fn rejects_a_wrong_protocol_header() {
        let mut codec = FrameCodec::new(131_072);
        let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x00"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::ProtocolHeader(_))
        ));
    }

    fn after_header(bytes: &[u8], frame_max: u32) -> Result<Option<Frame>, CodecError> {
        let mut codec = FrameCodec::new(frame_max);
        let mut buf = BytesMut::from(&PROTOCOL_HEADER[..]);
        buf.extend_from_slice(bytes);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::ProtocolHeader));
        codec.decode(&mut buf)
    }

    #[test]
    fn rejects_an_oversized_frame_before_reading_it() {
        let mut bytes = vec![3, 0, 1];
        bytes.extend_from_slice(&5000u32.to_be_bytes());
        match after_header(&bytes, 4096) {
            Err(CodecError::Frame { code, .. }) => assert_eq!(code.get_id(), 501),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_a_bad_frame_end_and_an_unknown_type() {
        for bytes in [&[8u8, 0, 0, 0, 0, 0, 0, 0xcd][..], b"hello world!!!!!"] {
            match after_header(bytes, 4096) {
                Err(CodecError::Frame { code, .. }) => assert_eq!(code.get_id(), 501),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A field table nested `depth` levels deep, built as bytes (building it
    /// as a value would recurse as deeply as the parser does).
    fn deep_table(depth: usize) -> Vec<u8> {
        let mut table = vec![0, 0, 0, 0];
        for _ in 1..depth {
            let mut outer = Vec::with_capacity(table.len() + 11);
            outer.extend_from_slice(&((table.len() + 3) as u32).to_be_bytes());
            outer.extend_from_slice(&[1, b'k', b'F']);
            outer.extend_from_slice(&table);
            table = outer;
        }
        table
    }

    fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind, 0, 1];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes.push(0xce);
        bytes
    }

    #[test]
    fn refuses_deeply_nested_tables_without_recursing() {
        // queue.declare: ticket, queue "q", bits, arguments.
        let declare = |depth| {
            let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
            payload.extend_from_slice(&deep_table(depth));
            raw_frame(constants::FRAME_METHOD, &payload)
        };
        // Content header: class 60, weight, size 0, flags = headers only.
        let header = |depth| {
            let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
            payload.extend_from_slice(&deep_table(depth));
            raw_frame(constants::FRAME_HEADER, &payload)
        };
        for frame in [declare(MAX_NESTING), header(MAX_NESTING)] {
            assert!(matches!(after_header(&frame, 1 << 20), Ok(Some(_))));
        }
        for depth in [MAX_NESTING + 1, 20_000] {
            for frame in [declare(depth), header(depth)] {
                match after_header(&frame, 1 << 20) {
                    Err(CodecError::Frame { code, .. }) => assert_eq!(code.get_id(), 501),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn splits_bodies_to_fit_frame_max() {
        let message = Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: BasicProperties::default().into(),
            body: Bytes::from(vec![7u8; 10_000]),
        });
        let mut codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        let method = AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
        codec
            .encode(
                Outbound::Content {
                    channel: 1,
                    method,
                    message,
                },
                &mut buf,
            )
            .unwrap();
        let mut decoder = FrameCodec::new(4096);
        decoder.header_seen = true;
        let mut sizes = Vec::new();
        while let Some(f) = decoder.decode(&mut buf).unwrap() {
            if let Frame::Body(_, b) = f {
                sizes.push(b.len());
            }
        }
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }

    #[test]
    fn empty_body_has_no_body_frames() {
        let message = Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: BasicProperties::default().into(),
            body: Bytes::new(),
        });
        let mut codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        let method = AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
        codec
            .encode(
                Outbound::Content {
                    channel: 1,
                    method,
                    message,
                },
                &mut buf,
            )
            .unwrap();
        let mut decoder = FrameCodec::new(4096);
        decoder.header_seen = true;
        let mut n = 0;
        while decoder.decode(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2);
    }
}
