//! Browser sessions (cookie + CSRF token, inactivity timeout) and the IP
//! allow/deny lists of the web console and the API.
//!
//! A browser logs in with `POST /api/v1/auth/session`; the vault issues an
//! ordinary login token, which travels only in the `__Host-postern_session`
//! cookie (`Secure; HttpOnly; SameSite=Strict; Path=/`). The server keeps, in
//! memory, one [`WebSessions`] entry per such token: its CSRF token and the
//! time of its last request. A token in this table is a *browser* token:
//!
//! * it is accepted only from the cookie, never as `Authorization: Bearer`
//!   (so a stolen cookie value cannot skip the CSRF check or the idle timeout);
//! * a state-changing request (anything but `GET`, `HEAD`, `OPTIONS`) must
//!   carry `X-CSRF-Token` equal to the session's CSRF token (synchronizer
//!   pattern: the token is given at login and by `GET /api/v1/auth/session`);
//! * after [`WebOptions::session_idle_timeout`] without a request the session
//!   ends and the vault token is revoked.
//!
//! The table lives in memory: after a restart every browser logs in again (a
//! cookie this process does not know is refused and its token revoked). It is
//! bounded by [`MAX_WEB_SESSIONS`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use ipnet::IpNet;
use postern_vault::SecretString;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie (the `__Host-` prefix makes browsers insist on
/// `Secure`, `Path=/` and no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-postern_session";

/// Header carrying the CSRF token on state-changing cookie requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Header the console sets on requests it makes on its own (polling); they
/// do not count as activity for the idle timeout.
pub const BACKGROUND_HEADER: &str = "x-postern-background";

/// Most browser sessions kept at once; a login beyond it first drops idle
/// sessions, then is refused (503).
pub const MAX_WEB_SESSIONS: usize = 10_000;

/// Default inactivity timeout of a browser session.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Settings of the web layer that come from the `[web]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOptions {
    /// A browser session with no request for this long ends (`web.session_idle_timeout`).
    pub session_idle_timeout: Duration,
    /// Who may reach the web console (everything outside `/api/`).
    pub ui: IpRules,
    /// Who may reach the API (`/api/`).
    pub api: IpRules,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            session_idle_timeout: DEFAULT_IDLE_TIMEOUT,
            ui: IpRules::default(),
            api: IpRules::default(),
        }
    }
}

/// An allow list and a deny list of networks. An address is admitted when
/// it is in no deny network and, if the allow list is not empty, in one of
/// its networks. Empty lists admit everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    /// When not empty, only these networks are admitted.
    pub allow: Vec<IpNet>,
    /// These networks are always refused.
    pub deny: Vec<IpNet>,
}

impl IpRules {
    /// True when the lists restrict anything.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may connect. IPv4-mapped IPv6 addresses are compared as
    /// IPv4. An unknown address (no peer information) is admitted only when
    /// the lists are empty.
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(ip) = ip.map(|i| i.to_canonical()) else {
            return false;
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Parses a network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) or a
/// single address (`192.0.2.7`, taken as `/32` or `/128`). Host bits are
/// cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_network(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// One browser session.
#[derive(Debug)]
struct Entry {
    csrf: String,
    last_seen: Instant,
    /// The session's token, kept to revoke it when the entry is purged.
    token: SecretString,
}

/// Why a cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieRefusal {
    /// This process does not know the session (never issued, logged out, or
    /// issued before a restart).
    Unknown,
    /// The session was idle for longer than the timeout.
    Idle,
    /// A state-changing request without the right `X-CSRF-Token`.
    Csrf,
}

/// The in-memory table of browser sessions (see the module documentation).
#[derive(Debug)]
pub struct WebSessions {
    idle_timeout: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_csrf() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl WebSessions {
    /// An empty table whose sessions end after `idle_timeout` without a request.
    pub fn new(idle_timeout: Duration) -> Self {
        WebSessions {
            idle_timeout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The inactivity timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a freshly issued token as a browser session; returns its
    /// CSRF token, or `None` when the table is full of active sessions.
    /// Also returns the tokens of idle sessions purged on the way: the
    /// caller revokes them (once out of the table they would otherwise pass
    /// as Bearer tokens).
    pub fn insert(&self, token: &str) -> (Option<String>, Vec<SecretString>) {
        let now = Instant::now();
        let mut map = self.lock();
        let mut dropped = Vec::new();
        if map.len() >= MAX_WEB_SESSIONS {
            let idle = self.idle_timeout;
            let stale: Vec<[u8; 32]> = map
                .iter()
                .filter(|(_, e)| now.duration_since(e.last_seen) >= idle)
                .map(|(k, _)| *k)
                .collect();
            for k in stale {
                if let Some(e) = map.remove(&k) {
                    dropped.push(e.token);
                }
            }
            if map.len() >= MAX_WEB_SESSIONS {
                return (None, dropped);
            }
        }
        let csrf = new_csrf();
        map.insert(
            key(token),
            Entry {
                csrf: csrf.clone(),
                last_seen: now,
                token: SecretString::new(token),
            },
        );
        (Some(csrf), dropped)
    }

    /// True when `token` is a browser session token (refused as Bearer).
    pub fn contains(&self, token: &str) -> bool {
        self.lock().contains_key(&key(token))
    }

    /// Checks a request authenticated by the cookie `token`: known, not idle,
    /// and (when `needs_csrf`) carrying the right CSRF token. On success the
    /// session's idle clock restarts, unless `background` (a page polling on
    /// its own, see [`BACKGROUND_HEADER`]). An idle session is removed.
    pub fn check(
        &self,
        token: &str,
        needs_csrf: bool,
        csrf: Option<&str>,
        background: bool,
    ) -> Result<(), CookieRefusal> {
        let k = key(token);
        let now = Instant::now();
        let mut map = self.lock();
        let Some(e) = map.get_mut(&k) else {
            return Err(CookieRefusal::Unknown);
        };
        if now.duration_since(e.last_seen) >= self.idle_timeout {
            map.remove(&k);
            return Err(CookieRefusal::Idle);
        }
        if needs_csrf {
            let ok = csrf.is_some_and(|c| bool::from(c.as_bytes().ct_eq(e.csrf.as_bytes())));
            if !ok {
                return Err(CookieRefusal::Csrf);
            }
        }
        if !background {
            e.last_seen = now;
        }
        Ok(())
    }

    /// The CSRF token of a known, non-idle session (for `GET /api/v1/auth/session`).
    pub fn csrf(&self, token: &str) -> Option<String> {
        self.lock().get(&key(token)).map(|e| e.csrf.clone())
    }

    /// Forgets a session (logout).
    pub fn remove(&self, token: &str) {
        self.lock().remove(&key(token));
    }

    /// Number of sessions in the table.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is in the table.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Test hook: pretends the session's last request was `ago` ago.
    #[doc(hidden)]
    pub fn age(&self, token: &str, ago: Duration) {
        if let Some(e) = self.lock().get_mut(&key(token)) {
            e.last_seen = Instant::now().checked_sub(ago).unwrap_or(e.last_seen);
        }
    }
}

/// The value of the session cookie in a request, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` value that stores `token` in the browser.
pub fn set_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or_else(|_| clear_cookie())
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-postern_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_rules_apply() {
        assert_eq!(parse_network("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_network(" 192.0.2.7 "), "192.0.2.7/32".parse().ok());
        assert_eq!(parse_network("::1"), "::1/128".parse().ok());
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("example.com"), None);
        assert_eq!(parse_network(""), None);

        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let open = IpRules::default();
        assert!(open.admits(ip("203.0.113.1")) && open.admits(None));
        let r = IpRules {
            allow: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            deny: vec!["10.9.0.0/16".parse().unwrap()],
        };
        assert!(r.admits(ip("10.1.1.1")));
        assert!(!r.admits(ip("10.9.1.1")), "deny wins over allow");
        assert!(!r.admits(ip("192.0.2.1")), "not in the allow list");
        assert!(r.admits(ip("::ffff:10.1.1.1")), "IPv4-mapped compared as IPv4");
        assert!(r.admits(ip("::1")));
        assert!(!r.admits(None), "unknown peers are refused when lists are set");
        let deny_only = IpRules {
            allow: vec![],
            deny: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(!deny_only.admits(ip("127.0.0.1")));
        assert!(deny_only.admits(ip("192.0.2.1")));
    }

    #[test]
    fn sessions_check_csrf_and_idle_time() {
        let s = WebSessions::new(Duration::from_secs(60));
        assert_eq!(s.check("pst_x", false, None, false), Err(CookieRefusal::Unknown));
        let (csrf, _) = s.insert("pst_x");
        let csrf = csrf.unwrap();
        assert_eq!(csrf.len(), 64);
        assert!(s.contains("pst_x") && !s.contains("pst_y"));
        assert_eq!(s.check("pst_x", false, None, false), Ok(()));
        assert_eq!(s.check("pst_x", true, None, false), Err(CookieRefusal::Csrf));
        assert_eq!(s.check("pst_x", true, Some("nope"), false), Err(CookieRefusal::Csrf));
        assert_eq!(s.check("pst_x", true, Some(&csrf), false), Ok(()));
        assert_eq!(s.csrf("pst_x").as_deref(), Some(csrf.as_str()));
        s.age("pst_x", Duration::from_secs(59));
        assert_eq!(
            s.check("pst_x", false, None, false),
            Ok(()),
            "activity restarts the clock"
        );
        s.age("pst_x", Duration::from_secs(50));
        assert_eq!(s.check("pst_x", false, None, true), Ok(()), "polling is let through...");
        s.age("pst_x", Duration::from_secs(61));
        assert_eq!(
            s.check("pst_x", false, None, true),
            Err(CookieRefusal::Idle),
            "...but does not keep the session alive"
        );
        s.insert("pst_x");
        s.age("pst_x", Duration::from_secs(61));
        assert_eq!(s.check("pst_x", false, None, false), Err(CookieRefusal::Idle));
        assert_eq!(
            s.check("pst_x", false, None, false),
            Err(CookieRefusal::Unknown),
            "removed"
        );
        assert!(s.is_empty());
        let (c2, _) = s.insert("pst_z");
        assert_ne!(c2.unwrap(), csrf, "each session has its own CSRF token");
        s.remove("pst_z");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_full_table_purges_idle_sessions_for_revocation_or_refuses() {
        let busy = WebSessions::new(Duration::from_secs(600));
        for i in 0..MAX_WEB_SESSIONS {
            assert!(busy.insert(&format!("pst_{i}")).0.is_some());
        }
        let (csrf, purged) = busy.insert("pst_more");
        assert!(csrf.is_none() && purged.is_empty(), "all active: refused");
        assert!(!busy.contains("pst_more"));

        let idle = WebSessions::new(Duration::from_secs(600));
        for i in 0..MAX_WEB_SESSIONS {
            idle.insert(&format!("pst_{i}"));
        }
        for i in 0..10 {
            idle.age(&format!("pst_{i}"), Duration::from_secs(601));
        }
        let (csrf, purged) = idle.insert("pst_more");
        assert!(csrf.is_some());
        let mut names: Vec<String> = purged.iter().map(|t| t.expose().to_owned()).collect();
        names.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("pst_{i}")).collect();
        want.sort();
        assert_eq!(names, want, "the purged tokens are handed back to be revoked");
        assert_eq!(idle.len(), MAX_WEB_SESSIONS - 10 + 1);
    }

    #[test]
    fn cookie_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(session_cookie(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-postern_session=pst_abc; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("pst_abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("postern_session=pst_abc"));
        assert_eq!(session_cookie(&h), None, "the __Host- prefix is required");
        let c = set_cookie("pst_abc");
        let c = c.to_str().unwrap();
        for part in [
            "__Host-postern_session=pst_abc",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(clear_cookie().to_str().unwrap().contains("Max-Age=0"));
    }
}
