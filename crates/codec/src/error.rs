//! Errors in what a peer sent, each carrying the reply code the server must
//! answer with. All of them are connection errors: the spec makes framing and
//! content-assembly faults hard errors.

use amq_protocol::protocol::AMQPHardError;

/// A fault in the byte stream or the frame sequence of one connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer did not open with `AMQP\0\0\x09\x01`.
    ///
    /// spec: the server MUST respond with a valid protocol header and then
    /// close the socket connection.
    #[error("bad protocol header {0:?}")]
    ProtocolHeader([u8; 8]),
    /// A frame that breaks the framing rules (size, end octet, type, syntax).
    #[error("{text}")]
    Frame {
        /// The hard error this is answered with (501, 502, 505, 540 …).
        code: AMQPHardError,
        /// The reply text, in RabbitMQ's words where RabbitMQ has them.
        text: String,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// A 501 FRAME_ERROR.
    pub fn frame_error(text: impl Into<String>) -> Self {
        Self::Frame {
            code: AMQPHardError::FRAMEERROR,
            text: text.into(),
        }
    }

    /// A 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::Frame {
            code: AMQPHardError::UNEXPECTEDFRAME,
            text: text.into(),
        }
    }
}
