//! The gateway's error type. Every error says which side failed.

use std::path::PathBuf;

/// Which side of a gateway session an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The user's client (bad input, disconnect, failed authentication).
    Client,
    /// The target or a landing server.
    Target,
    /// The gateway itself (configuration, files, vault, bugs).
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
    /// A TLS certificate or key could not be loaded.
    #[error("certificate {path}: {detail}")]
    Certificate {
        /// The file.
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
    /// The listener failed.
    #[error("listener: {0}")]
    Listen(std::io::Error),
    /// The user's client misbehaved or went away.
    #[error("client: {0}")]
    Client(String),
    /// A target or landing server failed; `hop` names it in words safe to show the user.
    #[error("{hop}: {detail}")]
    Target {
        /// `target root@web1` or `landing server 1 (jump@bastion)`.
        hop: String,
        /// What happened, safe to show the user (never a secret).
        detail: String,
        /// The failure was a changed host key (audited as such).
        host_key_changed: bool,
    },
    /// The vault refused or failed.
    #[error("vault: {0}")]
    Vault(#[from] postern_vault::Error),
    /// The SSH library failed internally.
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// The session's recording could not start or failed (the gateway fails closed).
    #[error("recording: {0}")]
    Recording(String),
}

impl Error {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Error::Client(_) => Side::Client,
            Error::Target { .. } => Side::Target,
            Error::HostKey { .. }
            | Error::Certificate { .. }
            | Error::Io { .. }
            | Error::Listen(_)
            | Error::Vault(_)
            | Error::Ssh(_)
            | Error::Recording(_) => Side::Internal,
        }
    }
}
