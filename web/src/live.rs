//! Live gateway sessions, as the web sees them.
//!
//! The web crate does not depend on the gateway: the root binary implements
//! [`LiveSessions`] over the gateway's session registry and hands it to the
//! web through [`AppState::with_live`](crate::AppState::with_live). Without
//! it ([`NoLiveSessions`]: tests, or a web-only deployment) there are never
//! any live sessions.

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
