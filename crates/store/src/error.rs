//! Store failures.

use std::path::PathBuf;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, or corruption it detected).
    #[error("store at {path}: {source}")]
    Sled {
        /// The store's directory.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
    /// Syncing the store's file failed.
    #[error("syncing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record that does not decode: the store is damaged.
    #[error("store at {path}: corrupt record in tree '{tree}': {what}")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// The sled tree.
        tree: String,
        /// What was wrong.
        what: String,
    },
}
