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
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record that does not decode.
    #[error("{path}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The store cannot be opened as it is: Warren refuses to start rather
    /// than start without what it holds.
    #[error("refusing to open the store: {path}: {what}")]
    Refused {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong, and what to do.
        what: String,
    },
    /// The store's thread is gone (it was closed, or an earlier write
    /// failed and every later one is refused).
    #[error("the store is closed or failed earlier")]
    Closed,
}
