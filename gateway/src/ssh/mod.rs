//! The SSH front end: stock OpenSSH clients in, vaulted auto-logon out.

mod relay;
mod server;
mod target;
mod transfer;

pub use server::{SshGateway, SshSettings};
