//! What makes a publisher confirm mean "on disk".
//!
//! A persistent message routed to durable queues is handed to the store's
//! thread once, by the publishing connection, naming every durable queue it
//! went to, together with its [`ConfirmTracker`] (see
//! `warren_store::writer`). The connection hands the message to its queues
//! only after that, so anything a queue later sends the store about it (a
//! delivered mark, an ack) arrives after the message itself: the store's
//! inbox is one FIFO channel. The store writes each round's messages, syncs
//! the segment once (fdatasync), and only then counts the trackers down;
//! the connection sends basic.ack when its tracker reaches zero. A message
//! every queue settled before the round began is never written, and is
//! confirmed with that round. A tx.commit waits the same way, with one
//! tracker for all the transaction's persistent messages, before commit-ok.

use crate::events::ConfirmTracker;

impl warren_store::Durable for ConfirmTracker {
    fn done(&self, ok: bool) {
        ConfirmTracker::done(self, ok);
    }
}
