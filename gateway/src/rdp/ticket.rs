//! One-time RDP tickets: how NLA clients (mstsc's default, `xfreerdp /sec:nla`) and users with two-factor
//! authentication connect.
//!
//! The web console issues a ticket to a logged-in user (password and TOTP already checked there) for one account
//! the user may connect to now: a user name `pt-<20 hex>` and a random one-time password. The ticket is good for
//! ONE connection within its time to live: as the NTLM identity when the gateway is the CredSSP server (NLA), or
//! as the Client Info PDU's user name and password under TLS security. It is taken out of the store when used
//! (whatever the outcome after that), when it expires, or after one wrong password (TLS, or a failed NTLM exchange under NLA).
//!
//! The secret lives only here, in memory, as a [`SecretString`] (zeroized when dropped); tickets are lost when
//! the gateway restarts (the user asks for a new one). The store is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postern_vault::{Actor, SecretString};
use rand010::RngExt;
use subtle::ConstantTimeEq;

/// Tickets alive at once (all users together).
pub const MAX_TICKETS: usize = 1000;

/// What a ticket is for; kept with it, handed back on use or expiry (for the audit).
#[derive(Debug, Clone)]
pub struct TicketGrant {
    /// The user the ticket was issued to (as authenticated by the web, then).
    pub actor: Actor,
    /// The account's id.
    pub account_id: String,
    /// The account's login on the target.
    pub login: String,
    /// The resource's name.
    pub resource: String,
    /// The ticket's user name.
    pub name: String,
}

struct Ticket {
    secret: SecretString,
    grant: TicketGrant,
    expires: Instant,
}

/// A ticket just issued: the only time its password leaves the store.
#[derive(Debug)]
pub struct IssuedTicket {
    /// The user name for the RDP client.
    pub username: String,
    /// The one-time password.
    pub password: SecretString,
    /// How long it stays valid.
    pub ttl: Duration,
}

/// Why a ticket was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The store is full.
    #[error("too many RDP tickets are outstanding ({MAX_TICKETS}); try again in a few minutes")]
    Full,
    /// No such ticket: never issued, already used, or swept after expiry.
    #[error("unknown or already used RDP ticket")]
    Unknown,
    /// It expired (it is gone now).
    #[error("the RDP ticket expired")]
    Expired(Box<TicketGrant>),
    /// Wrong password under TLS security (the ticket is burnt).
    #[error("wrong password for the RDP ticket (the ticket is void now)")]
    WrongPassword(Box<TicketGrant>),
}

/// The in-memory ticket store, shared by the web (issue) and the RDP gateway (use).
pub struct RdpTickets {
    ttl: Duration,
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl std::fmt::Debug for RdpTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdpTickets")
            .field("ttl", &self.ttl)
            .field("outstanding", &self.lock().len())
            .finish()
    }
}

/// Whether `name` has the shape of a ticket's user name.
pub fn is_ticket_name(name: &str) -> bool {
    name.strip_prefix("pt-")
        .is_some_and(|h| h.len() == 20 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand010::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

impl RdpTickets {
    /// A store whose tickets live `ttl`.
    pub fn new(ttl: Duration) -> RdpTickets {
        RdpTickets {
            ttl,
            tickets: Mutex::new(HashMap::new()),
        }
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a ticket for `grant` (its `name` is ignored and set here). The caller has authorized the actor to
    /// connect to the account now.
    pub fn issue(&self, mut grant: TicketGrant) -> Result<IssuedTicket, TicketError> {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, t| t.expires > now);
        if map.len() >= MAX_TICKETS {
            return Err(TicketError::Full);
        }
        let name = format!("pt-{}", random_string(b"0123456789abcdef", 20));
        // 24 characters from 56 unambiguous letters and digits: about 139 bits.
        let password = SecretString::new(random_string(
            b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
            24,
        ));
        grant.name = name.clone();
        map.insert(
            name.clone(),
            Ticket {
                secret: SecretString::new(password.expose()),
                grant,
                expires: now + self.ttl,
            },
        );
        Ok(IssuedTicket {
            username: name,
            password,
            ttl: self.ttl,
        })
    }

    /// The password of a live ticket (for the NTLM server, which needs it in plaintext), without using it.
    pub(crate) fn password_of(&self, name: &str) -> Option<String> {
        let map = self.lock();
        map.get(name)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.secret.expose().to_owned())
    }

    /// Uses a ticket: takes it out of the store. `password` is checked when given (TLS security; under NLA the
    /// CredSSP exchange already proved it).
    pub(crate) fn redeem(&self, name: &str, password: Option<&SecretString>) -> Result<TicketGrant, TicketError> {
        let ticket = self.lock().remove(name).ok_or(TicketError::Unknown)?;
        if ticket.expires <= Instant::now() {
            return Err(TicketError::Expired(Box::new(ticket.grant)));
        }
        if let Some(p) = password {
            if !bool::from(p.expose().as_bytes().ct_eq(ticket.secret.expose().as_bytes())) {
                return Err(TicketError::WrongPassword(Box::new(ticket.grant)));
            }
        }
        Ok(ticket.grant)
    }

    /// Removes the expired tickets and returns what they were for (for the audit).
    pub fn sweep_expired(&self) -> Vec<TicketGrant> {
        let now = Instant::now();
        let mut map = self.lock();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| map.remove(&k))
            .map(|t| t.grant)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> TicketGrant {
        TicketGrant {
            actor: Actor::system(),
            account_id: "a1".into(),
            login: "root".into(),
            resource: "win1".into(),
            name: String::new(),
        }
    }

    #[test]
    fn a_ticket_works_once() {
        let store = RdpTickets::new(Duration::from_secs(60));
        let t = store.issue(grant()).unwrap();
        assert!(is_ticket_name(&t.username), "{}", t.username);
        assert_eq!(t.password.expose().len(), 24);
        assert_eq!(store.password_of(&t.username).as_deref(), Some(t.password.expose()));
        let g = store.redeem(&t.username, Some(&t.password)).unwrap();
        assert_eq!((g.login.as_str(), g.name.as_str()), ("root", t.username.as_str()));
        assert!(matches!(
            store.redeem(&t.username, Some(&t.password)),
            Err(TicketError::Unknown)
        ));
        assert!(store.password_of(&t.username).is_none());
    }

    #[test]
    fn a_wrong_password_burns_the_ticket_and_expiry_ends_it() {
        let store = RdpTickets::new(Duration::from_secs(60));
        let t = store.issue(grant()).unwrap();
        let wrong = SecretString::new("not it");
        assert!(matches!(
            store.redeem(&t.username, Some(&wrong)),
            Err(TicketError::WrongPassword(_))
        ));
        assert!(matches!(
            store.redeem(&t.username, Some(&t.password)),
            Err(TicketError::Unknown)
        ));

        let short = RdpTickets::new(Duration::ZERO);
        let t = short.issue(grant()).unwrap();
        assert!(short.password_of(&t.username).is_none());
        assert!(matches!(short.redeem(&t.username, None), Err(TicketError::Expired(_))));
        let t = short.issue(grant()).unwrap();
        let swept = short.sweep_expired();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].name, t.username);
        assert!(short.sweep_expired().is_empty());
    }

    #[test]
    fn names_and_debug() {
        assert!(is_ticket_name("pt-0123456789abcdef0123"));
        assert!(!is_ticket_name("pt-0123456789ABCDEF0123"));
        assert!(!is_ticket_name("alice#root@win1"));
        let store = RdpTickets::new(Duration::from_secs(60));
        let t = store.issue(grant()).unwrap();
        assert!(!format!("{store:?} {t:?}").contains(t.password.expose()));
    }
}
