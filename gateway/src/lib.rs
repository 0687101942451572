//! Postern's gateway: SSH and RDP front ends, target connectors, hop chains and relays.
//!
//! This crate never depends on the web stack. The SSH front end (russh) lets
//! stock OpenSSH clients reach vaulted accounts as `USER#ACCOUNT@RESOURCE`,
//! logs in to the target with the vaulted credential through the resource's
//! landing-server chain, and relays the channels with a tee for the recorder.

#![warn(missing_docs)]

pub mod error;
pub mod hostkeys;
pub mod login;
pub mod registry;
pub mod reset;
pub mod ssh;

pub use error::{Error, Side};
pub use registry::{NoopSink, Registry, SessionInfo, SessionSink, SinkFactory};
