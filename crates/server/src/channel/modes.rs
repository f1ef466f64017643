//! Channel modes: publisher confirms (confirm.select) and transactions
//! (tx.select, tx.commit, tx.rollback). A channel is in at most one of them.

use tokio::sync::oneshot;

use super::{Routed, Settle, Unacked};
use crate::connection::Connection;
use crate::events::ConfirmTracker;
use crate::AmqpError;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use amq_protocol::protocol::{confirm, tx, AMQPClass};

/// Publisher-confirm sequence numbers of a channel in confirm mode.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Unique per confirm.select, so that a confirm meant for a closed
    /// channel is never applied to a new channel with the same number.
    pub epoch: u64,
    /// Messages enqueued since confirm.select: the last sequence number given.
    /// Messages complete in publish order, so this is also the publish count.
    pub published: u64,
    /// Sequence numbers waiting for the group commit of their writes, or
    /// for a queue's decision.
    pub outstanding: BTreeSet<u64>,
    /// Sequence numbers a queue refused, not yet told: basic.nack.
    pub nacked: BTreeSet<u64>,
    /// Highest sequence number acked to the client.
    pub acked: u64,
}

impl Confirms {
    /// The highest sequence number that can be acked with every one below
    /// it: confirms go out in order, one `multiple` ack covering many.
    pub fn confirmable(&self) -> u64 {
        self.outstanding.first().map_or(self.published, |first| first - 1)
    }
}

/// Work held back until tx.commit.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// Messages routed at publish time, handed to their queues at commit.
    pub publishes: Vec<Routed>,
    /// Acks, nacks and rejects to apply at commit.
    pub settles: Vec<(Vec<Unacked>, Settle)>,
}

impl Connection {
    pub(crate) async fn handle_confirm_select(
        &mut self,
        id: u16,
        m: confirm::Select,
    ) -> Result<(), AmqpError> {
        let channel = self.channels.get_mut(&id).expect("open channel");
        if channel.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        static EPOCH: AtomicU64 = AtomicU64::new(1);
        channel.confirms.get_or_insert_with(|| Confirms {
            epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
            ..Confirms::default()
        });
        self.reply(
            id,
            m.nowait,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn handle_tx_select(&mut self, id: u16) -> Result<(), AmqpError> {
        let channel = self.channels.get_mut(&id).expect("open channel");
        if channel.confirms.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from confirm to tx mode",
            ));
        }
        channel.tx.get_or_insert_with(Transaction::default);
        self.send(id, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            .await;
        Ok(())
    }

    fn take_transaction(&mut self, id: u16) -> Result<Transaction, AmqpError> {
        let channel = self.channels.get_mut(&id).expect("open channel");
        let tx = channel
            .tx
            .as_mut()
            .ok_or_else(|| AmqpError::precondition_failed("channel is not transactional"))?;
        Ok(std::mem::take(tx))
    }

    /// Applies the transaction's publishes, then its acks, in order; answers
    /// commit-ok once its persistent messages on durable queues are durable,
    /// as RabbitMQ does (one group commit for the whole transaction).
    pub(crate) async fn handle_tx_commit(&mut self, id: u16) -> Result<(), AmqpError> {
        let tx = self.take_transaction(id)?;
        let (done, durable) = oneshot::channel();
        let commit = ConfirmTracker::commit(done);
        for routed in tx.publishes {
            self.enqueue(id, routed, Some(&commit)).await?;
        }
        // The queues must have them before the commit can wait on them.
        self.flush_publishes().await;
        for (entries, how) in tx.settles {
            self.settle(entries, how).await;
        }
        commit.done(true);
        // Queues and the group commit never wait on this task, so waiting
        // here cannot deadlock; deliveries wait in the inbox meanwhile.
        if !durable.await.unwrap_or(false) {
            return Err(AmqpError::internal_error("cannot store a committed message"));
        }
        self.send(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
            .await;
        Ok(())
    }

    /// Drops the transaction's publishes; messages it acked become unacked
    /// again, as in RabbitMQ.
    pub(crate) async fn handle_tx_rollback(&mut self, id: u16) -> Result<(), AmqpError> {
        let tx = self.take_transaction(id)?;
        let entries: Vec<Unacked> = tx.settles.into_iter().flat_map(|(entries, _)| entries).collect();
        // Unacked again, so timed again: the timer may have moved past them.
        let first = entries.iter().filter_map(|u| u.deadline).min_by_key(|d| d.at);
        self.watch_deadline(first);
        self.channels
            .get_mut(&id)
            .expect("open channel")
            .restore_unacked(entries);
        self.send(id, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            .await;
        Ok(())
    }
}
