//! The composition root of Postern: configuration, first-start bootstrap, and
//! the wiring of vault, gateway, recorder and web into one running server.
//!
//! `src/main.rs` is the only place that reads the command line and the
//! environment, installs tracing, or exits; everything here takes its inputs
//! as values so tests can start a whole server in-process on `127.0.0.1:0`.

pub mod app;
pub mod config;
pub mod rdp_tickets;
pub mod recording;
pub mod terminals;
pub mod tickets;
pub mod tls;
