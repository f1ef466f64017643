//! `warren-perf`: an AMQP 0-9-1 load generator that costs the machine as
//! little as possible, so that what it measures is the broker.
//!
//! It speaks AMQP over raw tokio sockets. Setup (handshake, declarations,
//! consume) goes through `warren-codec`; the hot path does not: publishes
//! are encoded once and copied into 64 KiB batches with only the send
//! timestamp patched in, and deliveries are read by a parser that looks at
//! five methods and skips the rest. Latency is end-to-end, from the
//! timestamp in each body to the moment its last body frame is read.
//!
//! Its own ceiling is measured against `warren-null-broker` (this crate's
//! second binary), which discards publishes and streams deliveries; see
//! docs/performance.md.
//!
//! # Layout
//!
//! - [`options`]: the command line.
//! - [`run`]: one run, its progress lines and summary.
//! - [`publisher`] and [`consumer`]: the hot loops.
//! - [`wire`]: pre-encoded frames and the minimal parser (shared with the
//!   null broker).
//! - [`client`]: handshake and the synchronous methods, via the codec.
//! - [`stats`]: counters and the HDR latency histogram.
//! - [`procfs`]: CPU and RSS of the broker and of the generator.
//! - [`topic`]: seeded topic patterns and keys.

pub mod client;
pub mod consumer;
pub mod options;
pub mod procfs;
pub mod publisher;
pub mod run;
pub mod stats;
pub mod topic;
pub mod wire;
