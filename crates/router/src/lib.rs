//! `warren-router` holds a virtual host's exchanges and bindings and answers
//! one question: to which queues does this message go?
//!
//! It does no I/O and has no tokio dependency: the server keeps one [`Router`]
//! per virtual host behind a lock and calls [`Router::route`] synchronously on
//! every publish. Direct exchanges (and the default exchange) give
//! point-to-point delivery; fanout, topic and headers exchanges give
//! publish/subscribe.
//!
//! # Layout
//!
//! - [`name`]: the [`ExchangeName`] and [`QueueName`] newtypes.
//! - [`exchange`] holds [`Exchange`], [`ExchangeKind`] and the declare-time
//!   equivalence rules.
//! - [`binding`] holds [`Binding`] and [`Destination`].
//! - [`table`] holds [`BindingTable`], an exchange's bindings indexed for
//!   routing: a hash map by key (direct), a trie of pattern words (topic).
//! - [`topic`] and [`headers`]: the matching rules of those exchange types
//!   (topic keys are matched against the trie in [`table`]).
//! - [`router`] holds [`Router`], the binding table and the routing walk
//!   (exchange-to-exchange bindings, alternate exchanges).
//! - [`explain`]: where a message would go and why (which bindings, hops
//!   and alternate exchanges), for operators.
//! - [`error`] holds [`RouterError`].
#![deny(missing_docs)]

pub mod binding;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod explain;
pub mod headers;
pub mod name;
pub mod router;
pub mod table;
pub mod topic;

pub use binding::{Binding, Destination};
pub use error::RouterError;
pub use exchange::{Exchange, ExchangeKind};
pub use explain::{Arrival, Explanation, Hop, Reached};
pub use name::{ExchangeName, QueueName};
pub use router::{Edge, Router, Routing};
pub use table::BindingTable;
