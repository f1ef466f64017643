//! `warren-codec` turns bytes on an AMQP 0-9-1 socket into frames and frames into
//! bytes, and assembles `basic.publish` + content header + body frames into one
//! [`Message`].
//!
//! It is a thin layer over amq-protocol's parsers and generators that adds what
//! a broker needs and amq-protocol leaves out: the protocol-header check, the
//! negotiated `frame_max` limit, the frame-end check, and body frames kept as
//! [`bytes::Bytes`] so a message body is never copied between the socket and
//! every queue it is routed to.
//!
//! # Layout
//!
//! - [`frame`] holds [`Frame`], the unit the server reads and writes, and
//!   [`FrameCodec`], the tokio-util `Decoder`/`Encoder` for it.
//! - [`content`] holds [`ContentAssembler`], the per-channel state machine
//!   `Idle → AwaitingHeader → AwaitingBody`, and [`Message`].
//! - [`fast`]: hand-written decoders for basic.publish, basic.ack and plain
//!   content headers, the bulk of all traffic; everything else, and
//!   anything they do not recognise, goes to amq-protocol's parsers.
//! - [`nesting`] bounds how deeply field tables nest, without recursion,
//!   before amq-protocol's recursive parser sees them.
//! - [`error`] holds [`CodecError`], every way peer bytes can be wrong, with the
//!   AMQP reply code the server answers it with.
#![deny(missing_docs)]

pub mod content;
pub mod error;
pub mod expiration;
pub mod fast;
pub mod frame;
pub mod nesting;

pub use amq_protocol;
pub use bytes;
pub use content::{shared_properties, ContentAssembler, Message, Published};
pub use error::CodecError;
pub use frame::{Frame, FrameCodec, Outbound, PROTOCOL_HEADER};
