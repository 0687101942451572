//! Postern's gateway: SSH and RDP front ends, target connectors, hop chains and relays.
//!
//! This crate never depends on the web stack. So far it owns the gateway's SSH
//! host keys; the SSH and RDP listeners come in their own issues.

#![warn(missing_docs)]

pub mod error;
pub mod hostkeys;

pub use error::{Error, Side};
