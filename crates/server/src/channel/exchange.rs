//! exchange.declare, exchange.delete, exchange.bind, exchange.unbind.

use amq_protocol::protocol::{exchange, AMQPClass};

use crate::connection::Connection;
use crate::AmqpError;

impl Connection {
    pub(crate) async fn handle_exchange_declare(
        &mut self,
        id: u16,
        m: exchange::Declare,
    ) -> Result<(), AmqpError> {
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
        self.vhost.delete_exchange(m.exchange.as_str(), m.if_unused)?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_exchange_bind(&mut self, id: u16, m: exchange::Bind) -> Result<(), AmqpError> {
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
