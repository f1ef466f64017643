//! [`AmqpError`]: a refused method or a protocol violation, as a value.
//!
//! Handlers return `Result<_, AmqpError>`; the connection turns the error into
//! channel.close (soft codes on a channel) or connection.close (hard codes, or
//! any error on channel 0) in one place, `Connection::fail`. Reply texts follow
//! RabbitMQ's form, `NOT_FOUND - no queue 'x' in vhost '/'`.

use std::fmt;

use amq_protocol::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use amq_protocol::types::ShortString;

/// An AMQP exception: reply code, text, and the method that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct AmqpError {
    /// The reply code, soft (channel) or hard (connection).
    pub kind: AMQPErrorKind,
    /// The explanation after the code name.
    pub text: String,
    /// Class id of the offending method (0 if none).
    pub class_id: u16,
    /// Method id of the offending method (0 if none).
    pub method_id: u16,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $fn:ident => $variant:ident($code:expr);)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(text: impl Into<String>) -> Self {
                Self::new(AMQPErrorKind::$variant($code), text)
            }
        )*
    };
}

impl AmqpError {
    fn new(kind: AMQPErrorKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    constructors! {
        /// 403, soft.
        access_refused => Soft(AMQPSoftError::ACCESSREFUSED);
        /// 404, soft.
        not_found => Soft(AMQPSoftError::NOTFOUND);
        /// 405, soft.
        resource_locked => Soft(AMQPSoftError::RESOURCELOCKED);
        /// 406, soft.
        precondition_failed => Soft(AMQPSoftError::PRECONDITIONFAILED);
        /// 320, hard.
        connection_forced => Hard(AMQPHardError::CONNECTIONFORCED);
        /// 501, hard.
        frame_error => Hard(AMQPHardError::FRAMEERROR);
        /// 503, hard.
        command_invalid => Hard(AMQPHardError::COMMANDINVALID);
        /// 504, hard.
        channel_error => Hard(AMQPHardError::CHANNELERROR);
        /// 505, hard.
        unexpected_frame => Hard(AMQPHardError::UNEXPECTEDFRAME);
        /// 530, hard.
        not_allowed => Hard(AMQPHardError::NOTALLOWED);
        /// 540, hard.
        not_implemented => Hard(AMQPHardError::NOTIMPLEMENTED);
        /// 541, hard.
        internal_error => Hard(AMQPHardError::INTERNALERROR);
    }

    /// The error for a hard code taken from the codec.
    pub fn hard(code: AMQPHardError, text: impl Into<String>) -> Self {
        Self::new(AMQPErrorKind::Hard(code), text)
    }

    /// Records the method that caused the error, unless one is set already.
    pub fn for_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Whether the error closes the whole connection.
    pub fn is_hard(&self) -> bool {
        matches!(self.kind, AMQPErrorKind::Hard(_))
    }

    /// The numeric reply code.
    pub fn code(&self) -> u16 {
        self.kind.get_id()
    }

    /// `CODE_NAME - text`; longer than the 255 octets a short string holds,
    /// it is cut to 252 and ends in `...`, as RabbitMQ does.
    pub fn reply_text(&self) -> ShortString {
        let mut text = self.to_string();
        if text.len() > 255 {
            let mut end = 252;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        ShortString::from(text)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.kind {
            AMQPErrorKind::Soft(s) => s.to_string(),
            AMQPErrorKind::Hard(h) => h.to_string(),
        };
        write!(f, "{} - {}", name.replace('-', "_"), self.text)
    }
}

impl std::error::Error for AmqpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_in_rabbitmq_form_and_fits_a_short_string() {
        let e = AmqpError::not_found("no queue 'x' in vhost '/'");
        assert_eq!(e.reply_text().as_str(), "NOT_FOUND - no queue 'x' in vhost '/'");
        assert_eq!(e.code(), 404);
        assert!(!e.is_hard());
        let long = AmqpError::precondition_failed("é".repeat(300));
        assert!(long.reply_text().as_str().len() <= 255);
        assert!(AmqpError::channel_error("x").is_hard());
    }
}
