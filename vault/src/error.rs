//! The vault's one error type.
//!
//! Every variant is structured so that callers (CLI, web, gateway) can map it to
//! their own surface (exit code, RFC 9457 problem, SSH disconnect message)
//! without parsing strings. No variant ever carries a plaintext secret.

use std::path::PathBuf;

/// Errors returned by the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed. Deliberately vague: unknown user, wrong password,
    /// wrong TOTP code, disabled or locked account all look the same to the caller.
    /// The audit log records the precise reason.
    #[error("authentication failed")]
    AuthenticationFailed,

    /// The password was right but the user has TOTP enrolled and sent no code.
    #[error("a TOTP code is required for this user")]
    TotpRequired,

    /// The bearer token is unknown, expired or revoked.
    #[error("invalid or expired token")]
    InvalidToken,

    /// The actor must change their password before doing anything else.
    #[error("the password must be changed before any other operation")]
    PasswordChangeRequired,

    /// Authorization denied the action.
    #[error("permission denied: {reason}")]
    Forbidden {
        /// Why, in words safe to show to the actor.
        reason: &'static str,
    },

    /// The object does not exist (or is not visible to the actor: the vault
    /// never tells an actor that an object it may not see exists).
    #[error("{kind} not found")]
    NotFound {
        /// What kind of object was looked up ("user", "resource", ...).
        kind: &'static str,
    },

    /// Input failed validation.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// The change conflicts with stored state (duplicate name, owner still owns things, ...).
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },

    /// The master key file could not be used.
    #[error("master key {path}: {problem}")]
    MasterKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: MasterKeyProblem,
    },

    /// A stored ciphertext failed to authenticate: tampered, swapped between rows,
    /// or sealed under a key the vault does not hold.
    #[error("stored secret {owner} cannot be decrypted (tampered, moved, or sealed under another key)")]
    Tampered {
        /// Which sealed row (e.g. `account:<id>:password`).
        owner: String,
    },

    /// A stored row could not be decoded.
    #[error("corrupted stored data in {table} row {id}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Row id.
        id: String,
        /// What could not be decoded.
        detail: String,
    },

    /// CSV import input could not be read at all (per-row problems are reported in the import report).
    #[error("CSV input: {0}")]
    Csv(String),

    /// Database error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// Schema migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// File-system error outside the database.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A workflow step that the object's current state does not allow
    /// (approving a denied request, checking in one never checked out...).
    #[error("cannot {action} an access request that is {state}")]
    InvalidTransition {
        /// The attempted step (`approve`, `deny`, `check out`, `check in`).
        action: &'static str,
        /// The current state (`requested`, `approved`, ...).
        state: &'static str,
    },

    /// A remote password reset failed at `stage`; the old password stays vaulted.
    #[error("password reset failed while {stage}: {detail}")]
    Reset {
        /// Where it failed.
        stage: ResetStage,
        /// What the target or the connection said (never a secret).
        detail: String,
    },

    /// An internal invariant was broken (a bug). Never includes secrets.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Where a remote password reset failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStage {
    /// No resetter exists for the resource type, or the account cannot be reset that way.
    Unsupported,
    /// Reaching or logging in to the target.
    Connecting,
    /// Changing the password on the target.
    Changing,
    /// Logging in with the new password.
    Verifying,
}

impl std::fmt::Display for ResetStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResetStage::Unsupported => "choosing a reset method",
            ResetStage::Connecting => "connecting to the target",
            ResetStage::Changing => "changing the password on the target",
            ResetStage::Verifying => "verifying the new password",
        })
    }
}

/// Why the master key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyProblem {
    /// No key file, but the database already holds data sealed under a key.
    #[error("file is missing but the database was sealed with key {expected}; restore the key file (the vault will not create a new key for an existing database)")]
    Missing {
        /// Key id recorded in the database.
        expected: String,
    },
    /// The key file does not match the database.
    #[error("does not match this database (file has key {found}, database expects {expected}); refusing to start")]
    WrongKey {
        /// Key id the database expects.
        expected: String,
        /// Key id of the file.
        found: String,
    },
    /// The key file is not 32 bytes of hex.
    #[error("malformed key file: {0}")]
    Malformed(&'static str),
    /// The key file is readable by group or others.
    #[error("permissions {mode:o} are too open; it must be 0600 (chmod 600)")]
    Permissions {
        /// The file mode.
        mode: u32,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
