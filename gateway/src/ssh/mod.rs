//! The SSH front end: stock OpenSSH clients in, vaulted auto-logon out.

mod readahead;
mod relay;
mod server;
mod target;
mod transfer;
mod webterm;

pub use server::{SshGateway, SshSettings};
pub use webterm::{TermInput, TermOutput, WebTerminal};
