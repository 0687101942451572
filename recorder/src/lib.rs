//! Postern's session recorder.
//!
//! * [`Recording`]: the per-session writer. The session calls [`Recording::output`],
//!   [`Recording::input`], [`Recording::resize`] and [`Recording::marker`], which never
//!   block: events go into a queue bounded in bytes and a dedicated writer thread turns them
//!   into asciicast v2 text, compresses it in independent chunks, chains the chunks with
//!   SHA-256 and, at [`Recording::finish`], seals the file with an ed25519 signature. When
//!   the writer cannot keep up or the disk fails, [`Recording::failed`] says why, and the
//!   session is expected to end (the recorder fails closed).
//! * [`verify`]: recomputes the chain and the signatures of a recording file, names the first
//!   bad chunk, and reports a recording cut by a crash as truncated with its intact prefix.
//! * [`export_cast`]: the plain asciicast v2 text (`asciinema play`/`asciinema cat` read it).
//! * [`index`]: plain text, commands and markers of a recording, for search ([`Indexer`]).
//! * [`Hub`]: the live fan-out of a session's output to any number of viewers; a slow viewer
//!   is dropped and never slows the session.
//!
//! The file layout is documented in `docs/recording-format.md`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod format;
mod hub;
pub mod index;
mod verify;
mod writer;

use std::io;
use std::path::PathBuf;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use format::{SessionMeta, FILE_EXTENSION};
pub use hub::{Hub, HubConfig, Subscriber};
pub use index::{EntryKind, IndexEntry, IndexLimits, IndexMarker, Indexer, TextIndex};
pub use verify::{export_cast, index_recording, verify, Exported, Verification};
pub use writer::{RecorderConfig, Recording, Sealed};

/// Everything that can go wrong in the recorder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation other than writing the recording failed (creating the directory,
    /// opening a file, reading a recording, writing an export).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The session id cannot name a file (it must be 1–128 characters of `A-Z a-z 0-9 . _ -`
    /// and not start with a dot).
    #[error("invalid session id {0:?}: use 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-' (not starting with '.')")]
    InvalidSessionId(String),
    /// The session metadata does not fit in a recording header.
    #[error("session metadata too large for a recording header ({0} bytes)")]
    HeaderTooLarge(usize),
    /// The recording failed (disk full, write error, writer too slow); the message says why.
    #[error("recording failed: {0}")]
    Failed(String),
    /// The writer thread went away without reporting (it panicked): the file is unsealed.
    #[error("the recording writer stopped unexpectedly; the file is not sealed")]
    WriterGone,
    /// The file does not start with the Postern recording magic.
    #[error("not a Postern recording (bad magic)")]
    NotARecording,
    /// The file is a Postern recording of a format version this build does not read.
    #[error("unsupported recording format version {0}")]
    UnsupportedVersion(u32),
    /// The file is damaged or was tampered with. `chunk` is 0 for the header, `1..=n` for
    /// data chunks and `n + 1` for the seal; `offset` is the byte offset where that record
    /// starts.
    #[error("recording damaged or tampered with at chunk {chunk} (byte offset {offset}): {reason}")]
    Corrupt {
        /// The first bad record (0 = header, 1..=n = data chunks, n + 1 = seal).
        chunk: u64,
        /// Byte offset of the start of that record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain is intact but a signature (a chunk checkpoint or the seal) does not verify
    /// with the given public key: the recording was signed by another key or forged.
    #[error("bad signature at chunk {chunk} (byte offset {offset}): {reason}")]
    BadSignature {
        /// The record whose signature failed (a data chunk, or n + 1 for the seal).
        chunk: u64,
        /// Byte offset of the start of that record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A live viewer fell behind (its queue overflowed) and was dropped.
    #[error("the viewer fell behind and was disconnected")]
    Lagged,
    /// The live session ended (the hub was closed or dropped).
    #[error("the session ended")]
    Closed,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_path(what: &str, path: &std::path::Path, source: io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}

/// Where a recording lives for a session id in a recordings directory
/// (`DIR/<session_id>.pcast`).
pub fn recording_path(dir: &std::path::Path, session_id: &str) -> Result<PathBuf, Error> {
    format::check_session_id(session_id)?;
    Ok(dir.join(format!("{session_id}.{FILE_EXTENSION}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids() {
        let p = recording_path(std::path::Path::new("/r"), "0b5c-11_x.y").unwrap();
        assert_eq!(p, PathBuf::from("/r/0b5c-11_x.y.pcast"));
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(matches!(
                recording_path(std::path::Path::new("/r"), bad),
                Err(Error::InvalidSessionId(_))
            ));
        }
    }

    #[test]
    fn errors_read_well() {
        let e = Error::Corrupt {
            chunk: 3,
            offset: 812,
            reason: "chain hash mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "recording damaged or tampered with at chunk 3 (byte offset 812): chain hash mismatch"
        );
        let e = Error::Failed("disk full: No space left on device (os error 28)".into());
        assert!(e.to_string().contains("disk full"));
    }
}
