//! One-time RDP tickets, as the web issues them. The web crate does not depend on the gateway: the root
//! implements [`RdpTicketIssuer`] over the RDP gateway's ticket store and hands it to the web through
//! [`AppState::with_rdp_tickets`](crate::AppState::with_rdp_tickets). Without it ([`NoRdpTickets`]) no ticket
//! is issued.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use postern_vault::{Actor, SecretString};

/// A ticket just issued.
#[derive(Debug)]
pub struct RdpTicket {
    /// The user name the RDP client logs in with.
    pub username: String,
    /// The one-time password (shown once).
    pub password: SecretString,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The RDP gateway's listen address (`host:port`; an unspecified host is replaced by the web's host name).
    pub gateway: SocketAddr,
    /// `ACCOUNT@RESOURCE`.
    pub target: String,
}

/// Why no ticket was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdpTicketError {
    /// The account does not exist or the user may not connect to it now.
    NotFound,
    /// No ticket can be issued now (message safe to show).
    Unavailable(String),
}

/// What [`RdpTicketIssuer::issue`] returns.
pub type IssueFuture = Pin<Box<dyn Future<Output = Result<RdpTicket, RdpTicketError>> + Send>>;

/// Implemented by the root over the RDP gateway's ticket store.
pub trait RdpTicketIssuer: Send + Sync + 'static {
    /// Issues a ticket to `actor` (authenticated by the web, second factor included) for account `account_id`,
    /// after authorizing a connection to it now; audited.
    fn issue(&self, actor: Actor, account_id: String, client: SocketAddr) -> IssueFuture;
}

/// No RDP gateway (tests, or a web-only deployment).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRdpTickets;

impl RdpTicketIssuer for NoRdpTickets {
    fn issue(&self, _actor: Actor, _account_id: String, _client: SocketAddr) -> IssueFuture {
        Box::pin(async { Err(RdpTicketError::Unavailable("this server has no RDP gateway".into())) })
    }
}
