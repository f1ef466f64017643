//! Why a router operation was refused. The server turns each into the AMQP
//! reply code and RabbitMQ's reply text, adding the virtual host.

use crate::ExchangeName;

/// A refused declare, delete, bind or unbind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    /// No such exchange (404).
    #[error("no exchange '{0}'")]
    ExchangeNotFound(ExchangeName),
    /// The exchange type is not one this broker knows.
    #[error("unknown exchange type '{0}'")]
    UnknownKind(String),
    /// A redeclare whose properties differ from the existing exchange (406).
    #[error(
        "inequivalent arg '{field}' for exchange '{exchange}': received {received} but current is {current}"
    )]
    Inequivalent {
        /// The exchange.
        exchange: ExchangeName,
        /// The property or argument that differs.
        field: &'static str,
        /// What the declare asked for, rendered as RabbitMQ does.
        received: String,
        /// What the exchange has, rendered as RabbitMQ does.
        current: String,
    },
    /// exchange.delete with if-unused on an exchange that has bindings (406).
    #[error("exchange '{0}' in use")]
    InUse(ExchangeName),
    /// An operation on the default exchange that is not allowed (403).
    #[error("operation not permitted on the default exchange")]
    DefaultExchange,
    /// Bad binding arguments, e.g. an unknown `x-match` (406).
    #[error("{0}")]
    InvalidArgument(String),
}
