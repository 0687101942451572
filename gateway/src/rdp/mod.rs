//! The RDP front end: native RDP clients in (TLS security with the Postern password, or NLA/TLS with a one-time
//! ticket), the target reached with TLS or NLA (CredSSP with the vaulted credentials), the vaulted credentials
//! also injected into the target's Client Info PDU with autologon, raw relay after that.

mod channels;
mod credssp;
mod pdu;
mod picker;
mod server;
mod ticket;
mod tls;

pub use server::{RdpGateway, RdpSettings, DEFAULT_TICKET_TTL};
pub use ticket::{is_ticket_name, IssuedTicket, RdpTickets, TicketError, TicketGrant, MAX_TICKETS};

/// Log directives the binary always adds: sspi's debug spans show the CredSSP buffers before encryption (the
/// TSCredentials with the vaulted or one-time password), so it never logs below `warn`.
pub const QUIET_LOG_DIRECTIVES: &[&str] = &["sspi=warn"];
