//! The RDP front end: native RDP clients in (TLS security), vaulted credentials injected into the target's
//! Client Info PDU with autologon, raw relay after that.

mod channels;
mod pdu;
mod server;
mod tls;

pub use server::{RdpGateway, RdpSettings};
