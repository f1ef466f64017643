//! A binding: a rule on a source exchange that sends matching messages to a
//! queue or to another exchange.

use amq_protocol::types::FieldTable;

use crate::{ExchangeName, QueueName};

/// Where a binding sends messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// queue.bind
    Queue(QueueName),
    /// exchange.bind (a RabbitMQ extension)
    Exchange(ExchangeName),
}

impl Destination {
    /// The queue's or exchange's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Queue(q) => q.as_str(),
            Self::Exchange(x) => x.as_str(),
        }
    }
}

/// One binding of a source exchange. Two bindings are the same binding when
/// destination, routing key and arguments are all equal, so binding twice is a
/// no-op, as in RabbitMQ.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// Queue or exchange the matching messages go to.
    pub destination: Destination,
    /// The binding key (a pattern for topic exchanges).
    pub routing_key: String,
    /// Binding arguments (the match rules of a headers exchange).
    pub arguments: FieldTable,
}
