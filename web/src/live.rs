//! Live gateway sessions, as the web sees them.
//!
//! The web crate does not depend on the gateway: the root binary implements
//! [`LiveSessions`] over the gateway's session registry and hands it to the
//! web through [`AppState::with_live`](crate::AppState::with_live). Without
//! it ([`NoLiveSessions`]: tests, or a web-only deployment) there are never
//! any live sessions.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use utoipa::ToSchema;

/// A live gateway session as the web shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LiveSession {
    /// Session id (UUID).
    pub id: String,
    /// Postern user name of the person connected.
    pub user: String,
    /// Where the session goes (`account@resource`).
    pub target: String,
    /// Protocol (`ssh`…).
    pub protocol: String,
    /// Client address, when known.
    pub client: Option<String>,
    /// When the session started (RFC 3339).
    pub started_at: String,
}

/// Implemented by the root over the gateway's session registry.
pub trait LiveSessions: Send + Sync + 'static {
    /// The sessions that are live now.
    fn list(&self) -> Vec<LiveSession>;
    /// Ends a session; false when it is not live. `by` is the actor's user name, `reason` is shown to the user.
    fn terminate(&self, id: &str, by: &str, reason: &str) -> bool;
    /// Starts watching a live session's terminal output: the recent output, then everything
    /// after it. `None` when the session is not live (or cannot be watched).
    fn watch(&self, _id: &str) -> Option<Watch> {
        None
    }
}

/// Why a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The session ended (everything it sent was delivered).
    SessionEnded,
    /// The viewer fell behind (its bounded queue overflowed) and was dropped; the session
    /// never waits for a viewer.
    TooSlow,
}

/// What [`WatchFeed::next`] returns.
pub type WatchNext<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, WatchEnd>> + Send + 'a>>;

/// A viewer's bounded feed of a live session's output.
pub trait WatchFeed: Send {
    /// The next output (everything queued since the last call), waiting when there is none.
    /// Cancel-safe: dropping the future loses nothing.
    fn next(&mut self) -> WatchNext<'_>;
}

/// A started watch: the recent output (a late joiner's screen) and the feed of what follows.
pub struct Watch {
    /// The last few KiB of output before the watch started.
    pub snapshot: Vec<u8>,
    /// The output after the snapshot, with no gap and no overlap.
    pub feed: Box<dyn WatchFeed>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("snapshot", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

/// No gateway (tests, or a web-only deployment).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLiveSessions;

impl LiveSessions for NoLiveSessions {
    fn list(&self) -> Vec<LiveSession> {
        Vec::new()
    }

    fn terminate(&self, _id: &str, _by: &str, _reason: &str) -> bool {
        false
    }
}
