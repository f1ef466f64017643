//! Content assembly: `basic.publish`, then one content header, then body
//! frames until `body_size` octets have arrived.
//!
//! spec (4.2.6): "a peer MUST NOT send any other frame on the channel" between
//! the method and the last body frame; anything else is UNEXPECTED_FRAME.

use std::sync::Arc;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, BasicProperties};
use amq_protocol::types::ShortString;
use bytes::{Bytes, BytesMut};

use crate::CodecError;

/// The basic class id, the only class that carries content.
const BASIC_CLASS_ID: u16 = 60;

/// A message as published: where it was sent, its properties and its body.
/// Queues share one `Arc<Message>` per publish, so fan-out copies nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// The content header's properties. Shared: the common headers (no
    /// properties, or only a delivery mode) are one value for every message
    /// that has them, which saves ~290 octets per queued message.
    pub properties: Arc<BasicProperties>,
    /// The body, from one body frame (no copy) or several (one copy).
    pub body: Bytes,
}

/// A publish whose content has fully arrived.
#[derive(Debug)]
pub struct Published {
    /// basic.publish's mandatory flag.
    pub mandatory: bool,
    /// basic.publish's immediate flag.
    pub immediate: bool,
    /// The message, with the exchange and routing key it was published to.
    pub message: Message,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitingHeader(basic::Publish),
    AwaitingBody {
        method: basic::Publish,
        properties: Arc<BasicProperties>,
        remaining: usize,
        body: BodyParts,
    },
}

/// The properties of a content header, shared with every earlier message
/// that had the same common ones.
pub fn shared_properties(properties: BasicProperties) -> Arc<BasicProperties> {
    static COMMON: std::sync::LazyLock<[Arc<BasicProperties>; 3]> = std::sync::LazyLock::new(|| {
        [
            Arc::new(BasicProperties::default()),
            Arc::new(BasicProperties::default().with_delivery_mode(1)),
            Arc::new(BasicProperties::default().with_delivery_mode(2)),
        ]
    });
    match COMMON.iter().find(|common| ***common == properties) {
        Some(common) => common.clone(),
        None => Arc::new(properties),
    }
}

/// Bodies up to this size are copied out of the read buffer.
const SMALL_BODY: usize = 2048;

/// Body chunks collected so far: one chunk is kept as is; a second one moves
/// the body into a contiguous buffer.
#[derive(Debug)]
enum BodyParts {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl BodyParts {
    fn push(self, chunk: Bytes) -> Self {
        match self {
            BodyParts::Empty => BodyParts::One(chunk),
            BodyParts::One(first) => {
                let mut buf = BytesMut::with_capacity(first.len() + chunk.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&chunk);
                BodyParts::Many(buf)
            }
            BodyParts::Many(mut buf) => {
                buf.extend_from_slice(&chunk);
                BodyParts::Many(buf)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            BodyParts::Empty => Bytes::new(),
            // A small body is a slice of the connection's read buffer: copied
            // out, it no longer keeps that whole buffer alive while it sits
            // in a queue.
            BodyParts::One(b) if b.len() <= SMALL_BODY => Bytes::copy_from_slice(&b),
            BodyParts::One(b) => b,
            BodyParts::Many(b) => b.freeze(),
        }
    }
}

/// Per-channel state machine `Idle → AwaitingHeader → AwaitingBody`.
#[derive(Debug, Default)]
pub struct ContentAssembler {
    state: State,
}

impl ContentAssembler {
    /// Whether no content is in progress, i.e. the channel may receive a method.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// A basic.publish arrived: its content header must come next.
    pub fn start(&mut self, method: basic::Publish) -> Result<(), CodecError> {
        self.expect_idle()?;
        self.state = State::AwaitingHeader(method);
        Ok(())
    }

    /// Fails with UNEXPECTED_FRAME if content is in progress.
    pub fn expect_idle(&self) -> Result<(), CodecError> {
        match self.state {
            State::Idle => Ok(()),
            State::AwaitingHeader(_) => Err(CodecError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )),
            State::AwaitingBody { .. } => Err(CodecError::unexpected_frame(
                "expected content body, got non content body frame instead",
            )),
        }
    }

    /// A content header arrived. Returns the message if its body is empty.
    pub fn header(&mut self, header: Box<AMQPContentHeader>) -> Result<Option<Published>, CodecError> {
        let method = match std::mem::take(&mut self.state) {
            State::AwaitingHeader(method) => method,
            State::Idle => {
                return Err(CodecError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ))
            }
            other => {
                self.state = other;
                return self.expect_idle().map(|_| None);
            }
        };
        if header.class_id != BASIC_CLASS_ID {
            return Err(CodecError::unexpected_frame(format!(
                "expected content header for class 60, got one for class {}",
                header.class_id
            )));
        }
        self.state = State::AwaitingBody {
            method,
            properties: shared_properties(header.properties),
            remaining: usize::try_from(header.body_size).unwrap_or(usize::MAX),
            body: BodyParts::Empty,
        };
        Ok(self.complete())
    }

    /// A body frame arrived. Returns the message once the body is complete.
    pub fn body(&mut self, chunk: Bytes) -> Result<Option<Published>, CodecError> {
        match &mut self.state {
            State::AwaitingBody { remaining, body, .. } => {
                if chunk.len() > *remaining {
                    return Err(CodecError::frame_error(format!(
                        "content body frame of {} octets exceeds the {} octets announced",
                        chunk.len(),
                        remaining
                    )));
                }
                *remaining -= chunk.len();
                *body = std::mem::replace(body, BodyParts::Empty).push(chunk);
                Ok(self.complete())
            }
            State::Idle => Err(CodecError::unexpected_frame(
                "expected method frame, got non method frame instead",
            )),
            State::AwaitingHeader(_) => self.expect_idle().map(|_| None),
        }
    }

    fn complete(&mut self) -> Option<Published> {
        if !matches!(self.state, State::AwaitingBody { remaining: 0, .. }) {
            return None;
        }
        let State::AwaitingBody {
            method,
            properties,
            body,
            ..
        } = std::mem::take(&mut self.state)
        else {
            unreachable!("checked above")
        };
        Some(Published {
            mandatory: method.mandatory,
            immediate: method.immediate,
            message: Message {
                exchange: method.exchange,
                routing_key: method.routing_key,
                properties,
                body: body.into_bytes(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> basic::Publish {
        basic::Publish {
            exchange: "x".into(),
            routing_key: "k".into(),
            mandatory: false,
            immediate: false,
        }
    }

    fn header(size: u64) -> Box<AMQPContentHeader> {
        Box::new(AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: BasicProperties::default(),
        })
    }

    #[test]
    fn empty_body_completes_on_the_header() {
        let mut a = ContentAssembler::default();
        a.start(publish()).unwrap();
        let p = a.header(header(0)).unwrap().unwrap();
        assert!(p.message.body.is_empty());
        assert!(a.is_idle());
    }

    #[test]
    fn body_in_several_frames() {
        let mut a = ContentAssembler::default();
        a.start(publish()).unwrap();
        assert!(a.header(header(6)).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"abc")).unwrap().is_none());
        let p = a.body(Bytes::from_static(b"def")).unwrap().unwrap();
        assert_eq!(&p.message.body[..], b"abcdef");
        assert_eq!(p.message.routing_key.as_str(), "k");
    }

    #[test]
    fn out_of_order_frames_are_unexpected() {
        let mut a = ContentAssembler::default();
        assert!(a.header(header(1)).is_err());
        assert!(a.body(Bytes::from_static(b"a")).is_err());
        a.start(publish()).unwrap();
        assert!(a.start(publish()).is_err());
        assert!(a.body(Bytes::from_static(b"a")).is_err());
        a.header(header(1)).unwrap();
        assert!(a.body(Bytes::from_static(b"ab")).is_err());
    }
}
