//! Exchanges: their type, their flags, and the rule for redeclaring one.

use std::fmt;
use std::str::FromStr;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::{BindingTable, ExchangeName, RouterError};

/// The delayed exchange's type ([`crate::delayed`]).
pub const DELAYED_TYPE: &str = "x-delayed-message";

/// The exchange types every AMQP 0-9-1 broker provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes on routing key equality.
    Direct,
    /// Routes to every binding.
    Fanout,
    /// Routes on dotted-word patterns with `*` and `#`.
    Topic,
    /// Routes on message header values.
    Headers,
}

impl FromStr for ExchangeKind {
    type Err = RouterError;

    fn from_str(s: &str) -> Result<Self, RouterError> {
        match s {
            "direct" => Ok(Self::Direct),
            "fanout" => Ok(Self::Fanout),
            "topic" => Ok(Self::Topic),
            "headers" => Ok(Self::Headers),
            other => Err(RouterError::UnknownKind(other.to_owned())),
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        })
    }
}

/// An exchange and the bindings of which it is the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    /// Its name.
    pub name: ExchangeName,
    /// How it routes: its type, or a delayed exchange's `x-delayed-type`.
    pub kind: ExchangeKind,
    /// An `x-delayed-message` exchange ([`crate::delayed`]).
    pub delayed: bool,
    /// Whether it survives a restart.
    pub durable: bool,
    /// Whether it is deleted when its last binding is removed.
    pub auto_delete: bool,
    /// Whether clients may not publish to it directly.
    pub internal: bool,
    /// Declare arguments, e.g. `alternate-exchange`.
    pub arguments: FieldTable,
    /// Bindings from this exchange.
    pub bindings: BindingTable,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: ExchangeName,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        Self {
            name,
            kind,
            delayed: false,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: BindingTable::new(kind),
        }
    }

    /// The same exchange, holding messages with an `x-delay` header
    /// ([`crate::delayed`]).
    pub fn delayed(mut self, delayed: bool) -> Self {
        self.delayed = delayed;
        self
    }

    /// Its type as declared: `x-delayed-message` for a delayed exchange.
    pub fn type_name(&self) -> String {
        match self.delayed {
            true => DELAYED_TYPE.to_owned(),
            false => self.kind.to_string(),
        }
    }

    /// The `alternate-exchange` argument, where unroutable messages go.
    pub fn alternate_exchange(&self) -> Option<&str> {
        string_arg(&self.arguments, "alternate-exchange")
    }

    /// Checks that a redeclare asks for what this exchange is; RabbitMQ
    /// compares type, durable, auto-delete, internal and `alternate-exchange`.
    pub fn check_equivalent(&self, other: &Exchange) -> Result<(), RouterError> {
        let mismatch = |field, received: String, current: String| RouterError::Inequivalent {
            exchange: self.name.clone(),
            field,
            received,
            current,
        };
        // A delayed exchange's `x-delayed-type` is an argument, and RabbitMQ
        // compares no argument but `alternate-exchange`: only the declared
        // type counts.
        if self.type_name() != other.type_name() {
            return Err(mismatch("type", other.type_name(), self.type_name()));
        }
        for (field, current, received) in [
            ("durable", self.durable, other.durable),
            ("auto_delete", self.auto_delete, other.auto_delete),
            ("internal", self.internal, other.internal),
        ] {
            if current != received {
                return Err(mismatch(field, received.to_string(), current.to_string()));
            }
        }
        let (current, received) = (self.alternate_exchange(), other.alternate_exchange());
        if current != received {
            let show = |v: Option<&str>| v.map_or("none".to_owned(), str::to_owned);
            return Err(mismatch("alternate-exchange", show(received), show(current)));
        }
        Ok(())
    }
}

/// A string argument, sent by clients as either a long or a short string.
pub(crate) fn string_arg<'a>(args: &'a FieldTable, key: &str) -> Option<&'a str> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}
