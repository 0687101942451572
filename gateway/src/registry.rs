//! Live sessions: a registry other parts list and terminate through, and the
//! sink a relay tees traffic into (the recorder plugs in here).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// What is known about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id (also the tracing span's `session.id`).
    pub id: String,
    /// Postern user.
    pub user: String,
    /// `ACCOUNT@RESOURCE`.
    pub target: String,
    /// `ssh` or `rdp`.
    pub protocol: &'static str,
    /// Client address.
    pub client: Option<SocketAddr>,
    /// Start time (RFC 3339).
    pub started_at: String,
}

/// Why a session was ended from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Who ended it.
    pub by: String,
    /// The reason shown to the user.
    pub reason: String,
}

struct Entry {
    info: SessionInfo,
    cancel: CancellationToken,
    termination: Arc<Mutex<Option<Termination>>>,
}

/// The registry of live sessions.
#[derive(Default, Clone)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("live", &self.list().len()).finish()
    }
}

/// Held by a live session; removes it from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    id: String,
    /// Cancelled when the session is terminated from outside.
    pub cancel: CancellationToken,
    termination: Arc<Mutex<Option<Termination>>>,
}

impl Registration {
    /// Who terminated the session and why, once it was.
    pub fn termination(&self) -> Option<Termination> {
        self.termination.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Registry {
    /// Adds a session; it stays listed while the registration lives.
    /// `cancel` is cancelled when the session is terminated from outside.
    pub fn register(&self, info: SessionInfo, cancel: CancellationToken) -> Registration {
        let termination = Arc::new(Mutex::new(None));
        let id = info.id.clone();
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.clone(),
            Entry {
                info,
                cancel: cancel.clone(),
                termination: termination.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            id,
            cancel,
            termination,
        }
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Who terminated a live session and why, once it was.
    pub fn termination(&self, id: &str) -> Option<Termination> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .and_then(|e| e.termination.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Ends a session; false when no such session is live.
    pub fn terminate(&self, id: &str, by: &str, reason: &str) -> bool {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(e) => {
                *e.termination.lock().unwrap_or_else(|e| e.into_inner()) = Some(Termination {
                    by: by.to_owned(),
                    reason: reason.to_owned(),
                });
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

/// Where a relay tees a session's traffic. Implementations must not block:
/// the recorder behind it has a bounded queue and fails the session when full.
pub trait SessionSink: Send + Sync {
    /// Output from the target to the user (terminal output), as a shared buffer the sink may keep a
    /// reference to instead of copying it.
    fn output(&self, channel: u32, data: &bytes::Bytes);
    /// Input from the user to the target.
    fn input(&self, channel: u32, data: &[u8]);
    /// A notable event (exec command, subsystem, resize, file transfer).
    fn event(&self, channel: u32, kind: &str, detail: &str);
    /// The sink failed (disk full, writer too slow): the session must end with this message.
    fn failed(&self) -> Option<String> {
        None
    }
    /// Resolves when the sink can take more output (backpressure: the relay awaits it before
    /// reading more from the target, so a fast transfer slows to the recorder's pace instead of
    /// failing). `None`: always ready.
    fn writable(&self) -> Option<WritableFuture> {
        None
    }
    /// The session ended: finish (seal) the recording; the future yields a line for the audit
    /// (the recording's final hash).
    fn close(&self) -> Option<CloseFuture> {
        None
    }
}

/// What [`SessionSink::writable`] returns.
pub type WritableFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What [`SessionSink::close`] returns.
pub type CloseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// Makes a sink per session.
pub trait SinkFactory: Send + Sync {
    /// A sink for a new session.
    fn open(&self, info: &SessionInfo) -> Arc<dyn SessionSink>;
}

/// A sink that records nothing (used until the recorder is wired in).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl SessionSink for NoopSink {
    fn output(&self, _: u32, _: &bytes::Bytes) {}
    fn input(&self, _: u32, _: &[u8]) {}
    fn event(&self, _: u32, _: &str, _: &str) {}
}

impl SinkFactory for NoopSink {
    fn open(&self, _: &SessionInfo) -> Arc<dyn SessionSink> {
        Arc::new(NoopSink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            user: "u".into(),
            target: "root@web".into(),
            protocol: "ssh",
            client: None,
            started_at: format!("2026-01-01T00:00:0{id}Z"),
        }
    }

    #[test]
    fn register_list_terminate_drop() {
        let reg = Registry::default();
        let root = CancellationToken::new();
        let a = reg.register(info("1"), root.child_token());
        let b = reg.register(info("2"), root.child_token());
        assert_eq!(reg.list().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert!(reg.terminate("1", "admin", "maintenance"));
        assert!(a.cancel.is_cancelled());
        assert_eq!(a.termination().unwrap().reason, "maintenance");
        assert_eq!(reg.termination("1").unwrap().by, "admin");
        assert!(!b.cancel.is_cancelled());
        assert!(!reg.terminate("nope", "admin", "x"));
        drop(a);
        assert_eq!(reg.list().len(), 1);
        root.cancel();
        assert!(b.cancel.is_cancelled(), "shutdown reaches every session");
    }
}
