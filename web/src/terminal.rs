//! The browser terminal ("one-click logon"), as the web sees it.
//!
//! The web crate does not depend on the gateway: the root implements
//! [`Terminals`] over the gateway's SSH pipeline (same authorization,
//! auto-logon, recording and shadowing as `ssh`) and hands it to the web
//! through [`AppState::with_terminals`](crate::AppState::with_terminals).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use postern_vault::Actor;
use tokio::sync::mpsc;

/// What the browser sends to the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Keystrokes.
    Data(Vec<u8>),
    /// New size in columns and rows.
    Resize(u32, u32),
}

/// What the terminal sends to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalOutput {
    /// Terminal output.
    Data(Vec<u8>),
    /// The remote shell exited with this status.
    Exit(u32),
}

/// A running terminal: bounded queues both ways. Dropping `input` ends the
/// session; `output` yields `None` when it is over.
#[derive(Debug)]
pub struct TerminalIo {
    /// To the session.
    pub input: mpsc::Sender<TerminalInput>,
    /// From the session.
    pub output: mpsc::Receiver<TerminalOutput>,
}

/// Why a terminal could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalError {
    /// The account does not exist or the user may not connect to it.
    NotFound,
    /// The gateway could not open the session (message safe to show).
    Unavailable(String),
}

/// What [`Terminals::open`] returns.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<TerminalIo, TerminalError>> + Send>>;

/// Implemented by the root over the gateway.
pub trait Terminals: Send + Sync + 'static {
    /// Opens a terminal on account `account_id` for `actor` (already
    /// authenticated by the web), sized `cols` × `rows`, from `client`.
    fn open(&self, actor: Actor, account_id: String, cols: u32, rows: u32, client: SocketAddr) -> OpenFuture;
}

/// No gateway: terminals are unavailable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTerminals;

impl Terminals for NoTerminals {
    fn open(&self, _: Actor, _: String, _: u32, _: u32, _: SocketAddr) -> OpenFuture {
        Box::pin(async { Err(TerminalError::Unavailable("no gateway is running".into())) })
    }
}
