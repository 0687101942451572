//! Postern's gateway: SSH and RDP front ends, target connectors, hop chains and relays.
//!
//! This crate never depends on the web stack. The SSH front end (russh) lets
//! stock OpenSSH clients reach vaulted accounts as `USER#ACCOUNT@RESOURCE`,
//! logs in to the target with the vaulted credential through the resource's
//! landing-server chain, and relays the channels with a tee for the recorder.
//! The RDP front end (TLS security) authenticates the user from the Client Info
//! PDU and replays the connection to the target with the vaulted credentials.

#![warn(missing_docs)]

pub mod error;
pub mod hostkeys;
pub mod login;
pub mod rdp;
pub mod registry;
pub mod reset;
pub mod ssh;

pub use error::{Error, Side};
pub use registry::{NoopSink, Registry, SessionInfo, SessionSink, SinkFactory};
