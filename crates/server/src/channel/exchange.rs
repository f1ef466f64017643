//! exchange.declare, exchange.delete, exchange.bind, exchange.unbind.

//!
//! Permissions are checked where RabbitMQ's `rabbit_channel` checks them:
//! configure on the exchange to declare (not passively) or delete it; and,
//! declaring one with an `alternate-exchange`, read on it and write on the
//! alternate. A binding needs write on its destination and read on its
//! source, and topic read permission for its key on a topic source.

use amq_protocol::protocol::{exchange, AMQPClass};
use amq_protocol::types::AMQPValue;

use crate::connection::Connection;
use crate::permissions::{Permission, Resource};
use crate::AmqpError;

impl Connection {
    pub(crate) async fn handle_exchange_declare(
        &mut self,
        id: u16,
        m: exchange::Declare,
    ) -> Result<(), AmqpError> {
        // The default exchange's own 403 comes first, from the vhost.
        let name = m.exchange.as_str();
        if !m.passive && !name.is_empty() {
            self.access
                .check(Permission::Configure, Resource::Exchange, name)?;
            let alternate = match m.arguments.inner().get("alternate-exchange") {
                Some(AMQPValue::LongString(ae)) => Some(ae.to_string()),
                _ => None,
            };
            if let (Some(alternate), None) = (alternate, self.vhost.exchange_is_topic(name)) {
                self.access.check(Permission::Read, Resource::Exchange, name)?;
                self.access
                    .check(Permission::Write, Resource::Exchange, &alternate)?;
            }
        }
        self.vhost.declare_exchange(
            m.exchange.as_str(),
            m.kind.as_str(),
            m.passive,
            m.durable,
            m.auto_delete,
            m.internal,
            &m.arguments,
        )?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_exchange_delete(
        &mut self,
        id: u16,
        m: exchange::Delete,
    ) -> Result<(), AmqpError> {
        // The default and the `amq.*` exchanges' own 403s come first.
        let name = m.exchange.as_str();
        if !name.is_empty() && !name.starts_with("amq.") {
            self.access
                .check(Permission::Configure, Resource::Exchange, name)?;
        }
        self.vhost.delete_exchange(name, m.if_unused)?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_exchange_bind(&mut self, id: u16, m: exchange::Bind) -> Result<(), AmqpError> {
        self.access.check_binding(
            &self.vhost,
            Resource::Exchange,
            m.destination.as_str(),
            m.source.as_str(),
            m.routing_key.as_str(),
        )?;
        self.vhost.bind_exchange(
            m.destination.as_str(),
            m.source.as_str(),
            m.routing_key.as_str(),
            &m.arguments,
        )?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_exchange_unbind(
        &mut self,
        id: u16,
        m: exchange::Unbind,
    ) -> Result<(), AmqpError> {
        self.access.check_binding(
            &self.vhost,
            Resource::Exchange,
            m.destination.as_str(),
            m.source.as_str(),
            m.routing_key.as_str(),
        )?;
        self.vhost.unbind_exchange(
            m.destination.as_str(),
            m.source.as_str(),
            m.routing_key.as_str(),
            &m.arguments,
        )?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
        )
        .await;
        Ok(())
    }
}
