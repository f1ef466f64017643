//! queue.declare, queue.bind, queue.unbind, queue.purge, queue.delete.

//!
//! Permissions, where RabbitMQ checks them: configure on the queue to
//! declare (not passively; a server-named queue is checked under the name
//! it gets) or delete it, and, declaring one with a dead-letter exchange,
//! read on it and write on that exchange; read to purge it. Bindings: see
//! [`crate::access::Access::check_binding`].

use amq_protocol::protocol::{queue, AMQPClass};
use amq_protocol::types::AMQPValue;

use crate::connection::Connection;
use crate::events::QueueCommand;
use crate::permissions::{Permission, Resource};
use crate::vhost::{server_named_queue, QueueSpec};
use crate::AmqpError;

impl Connection {
    pub(crate) async fn handle_queue_declare(&mut self, id: u16, m: queue::Declare) -> Result<(), AmqpError> {
        // The direct reply-to pseudo-queue exists for every client that asks.
        if m.queue.as_str() == super::reply_to::REPLY_TO {
            self.reply(
                id,
                m.nowait,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: m.queue,
                    message_count: 0,
                    consumer_count: 0,
                })),
            )
            .await;
            return Ok(());
        }
        let server_named = m.queue.as_str().is_empty() && !m.passive;
        let name = match server_named {
            true => server_named_queue(),
            false => m.queue.to_string(),
        };
        if !m.passive {
            self.access.check(Permission::Configure, Resource::Queue, &name)?;
            let dead_letter_exchange = match m.arguments.inner().get("x-dead-letter-exchange") {
                Some(AMQPValue::LongString(dlx)) => Some(dlx.to_string()),
                _ => None,
            };
            if let Some(dlx) = dead_letter_exchange.filter(|_| self.vhost.queue(&name, self.id).is_err()) {
                self.access.check(Permission::Read, Resource::Queue, &name)?;
                self.access.check(Permission::Write, Resource::Exchange, &dlx)?;
            }
        }
        let handle = self.vhost.declare_queue(
            QueueSpec {
                name: &name,
                server_named,
                passive: m.passive,
                // RabbitMQ: an exclusive queue is never durable, whatever was asked.
                durable: m.durable && !m.exclusive,
                exclusive: m.exclusive,
                auto_delete: m.auto_delete,
                arguments: &m.arguments,
            },
            self.id,
        )?;
        if let Some(channel) = self.channels.get_mut(&id) {
            channel.last_queue = Some(handle.name.to_string());
        }
        if handle.exclusive_owner == Some(self.id) && !self.exclusive_queues.iter().any(|q| q.id == handle.id)
        {
            self.exclusive_queues.push(handle.clone());
        }
        // The queue is asked for its counts, which also renews an
        // x-expires lease: with nowait, only to renew one.
        let leased = handle.arguments.inner().contains_key("x-expires");
        if m.nowait && !leased {
            return Ok(());
        }
        let (message_count, consumer_count) = handle.ask(QueueCommand::Stats).await.unwrap_or((0, 0));
        if !m.nowait {
            self.send(
                id,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: handle.name.as_str().into(),
                    message_count,
                    consumer_count,
                })),
            )
            .await;
        }
        Ok(())
    }

    pub(crate) async fn handle_queue_bind(&mut self, id: u16, m: queue::Bind) -> Result<(), AmqpError> {
        let queue = self.queue_name(id, m.queue.as_str())?;
        // With both empty, the routing key is the last declared queue's name too.
        let routing_key = match (m.queue.as_str(), m.routing_key.as_str()) {
            ("", "") => queue.as_str(),
            (_, key) => key,
        };
        self.access.check_binding(
            &self.vhost,
            Resource::Queue,
            &queue,
            m.exchange.as_str(),
            routing_key,
        )?;
        self.vhost
            .bind_queue(&queue, m.exchange.as_str(), routing_key, &m.arguments, self.id)?;
        self.reply(
            id,
            m.nowait,
            AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_queue_unbind(&mut self, id: u16, m: queue::Unbind) -> Result<(), AmqpError> {
        let queue = self.queue_name(id, m.queue.as_str())?;
        self.access.check_binding(
            &self.vhost,
            Resource::Queue,
            &queue,
            m.exchange.as_str(),
            m.routing_key.as_str(),
        )?;
        self.vhost.unbind_queue(
            &queue,
            m.exchange.as_str(),
            m.routing_key.as_str(),
            &m.arguments,
            self.id,
        )?;
        self.send(
            id,
            AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_queue_purge(&mut self, id: u16, m: queue::Purge) -> Result<(), AmqpError> {
        let name = self.queue_name(id, m.queue.as_str())?;
        self.access.check(Permission::Read, Resource::Queue, &name)?;
        let handle = self.vhost.queue(&name, self.id)?;
        let message_count = handle.ask(QueueCommand::Purge).await.unwrap_or(0);
        self.reply(
            id,
            m.nowait,
            AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_queue_delete(&mut self, id: u16, m: queue::Delete) -> Result<(), AmqpError> {
        let name = self.queue_name(id, m.queue.as_str())?;
        self.access.check(Permission::Configure, Resource::Queue, &name)?;
        let message_count = match self.vhost.queue(&name, self.id) {
            Ok(handle) => {
                let deleted = handle
                    .ask(|reply| QueueCommand::Delete {
                        if_unused: m.if_unused,
                        if_empty: m.if_empty,
                        reply,
                    })
                    .await
                    .unwrap_or(Ok(0))?;
                self.exclusive_queues.retain(|q| q.id != handle.id);
                deleted
            }
            // Deleting a queue that is not there succeeds, as in RabbitMQ.
            Err(e) if e.code() == 404 => 0,
            Err(e) => return Err(e),
        };
        self.reply(
            id,
            m.nowait,
            AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count })),
        )
        .await;
        Ok(())
    }
}
