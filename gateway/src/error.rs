//! The gateway's error type. Every error says which side failed.

use std::path::PathBuf;

/// Which side of a gateway session an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The user's client (bad input, disconnect, failed authentication).
    Client,
    /// The target or a landing server.
    Target,
    /// The gateway itself (configuration, files, bugs).
    Internal,
}

/// Gateway errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host key file could not be read, parsed or written.
    #[error("host key {path}: {detail}")]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Error::HostKey { .. } | Error::Io { .. } => Side::Internal,
        }
    }
}
