//! The web console's terminal ("one-click logon").
//!
//! A browser session does not get a second, weaker pipeline: the gateway opens
//! an in-process SSH connection to its own server over a memory pipe and logs
//! in as the web user with a one-time key that only this connection accepts.
//! From there on it is an ordinary gateway session: the same login-name
//! parsing, `authorize()`, auto-logon through the landing chain, recording,
//! registry (watch, terminate) and audit as `ssh USER#ACCOUNT@RESOURCE@gw`.
//! The user's second factor was checked when the web session was made.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use postern_vault::Actor;
use russh::client;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::Error;
use crate::ssh::server::{PreAuth, SshGateway};

/// What the browser sends.
#[derive(Debug)]
pub enum TermInput {
    /// Keystrokes.
    Data(Vec<u8>),
    /// The terminal was resized.
    Resize {
        /// Columns.
        cols: u32,
        /// Rows.
        rows: u32,
    },
}

/// What the terminal shows.
#[derive(Debug, PartialEq, Eq)]
pub enum TermOutput {
    /// Terminal output (stdout and stderr of the remote shell, and gateway notices).
    Data(Vec<u8>),
    /// The remote shell exited with this status.
    Exit(u32),
}

/// A running web terminal. Dropping `input` ends the session; `output` ends
/// (yields `None`) when the session is over.
#[derive(Debug)]
pub struct WebTerminal {
    /// Keystrokes and resizes, bounded.
    pub input: mpsc::Sender<TermInput>,
    /// Output, bounded: a browser that does not read slows its own session only.
    pub output: mpsc::Receiver<TermOutput>,
}

/// Bound of both queues, in messages.
const QUEUE: usize = 64;

/// The in-process client trusts the other end of its own memory pipe.
struct InProcess;

impl client::Handler for InProcess {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Client(format!("web terminal: {what}: {e}"))
}

impl SshGateway {
    /// Opens a terminal on `account@resource` for `actor`, already authenticated
    /// (with their second factor) by the web console; `client` is the browser's
    /// address for the audit. The session ends when `input` is dropped, when the
    /// remote shell exits, when it is terminated, or at `shutdown`.
    pub async fn open_terminal(
        self: &Arc<Self>,
        actor: Actor,
        account: &str,
        resource: &str,
        size: (u32, u32),
        client: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<WebTerminal, Error> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Client("the gateway is at its connection limit".into()))?;
        let key = PrivateKey::random(&mut rand010::rng(), Algorithm::Ed25519).map_err(|e| internal("key", e))?;
        let key_blob = key.public_key().to_bytes().map_err(|e| internal("key", e))?;
        let login = format!("{}#{}@{}", actor.username, account, resource);
        let pre = PreAuth { actor, key_blob };
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let gw = self.clone();
        let cancel = shutdown.child_token();
        self.tracker.spawn(async move {
            gw.connection(theirs, client, cancel, Some(pre)).await;
            drop(permit);
        });

        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            window_size: 2 * 1024 * 1024,
            ..Default::default()
        });
        let mut handle = client::connect_stream(config, ours, InProcess)
            .await
            .map_err(|e| internal("connect", e))?;
        let auth = handle
            .authenticate_publickey(login, PrivateKeyWithHashAlg::new(Arc::new(key), None))
            .await
            .map_err(|e| internal("login", e))?;
        if !matches!(auth, client::AuthResult::Success) {
            return Err(Error::Client("web terminal: the gateway refused the login".into()));
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| internal("channel", e))?;
        let (cols, rows) = size;
        channel
            .request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
            .await
            .map_err(|e| internal("pty", e))?;
        channel.request_shell(false).await.map_err(|e| internal("shell", e))?;

        let (in_tx, mut in_rx) = mpsc::channel::<TermInput>(QUEUE);
        let (out_tx, out_rx) = mpsc::channel::<TermOutput>(QUEUE);
        self.tracker.spawn(async move {
            let (mut rd, wr) = channel.split();
            loop {
                tokio::select! {
                    msg = rd.wait() => match msg {
                        Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                            if out_tx.send(TermOutput::Data(data.to_vec())).await.is_err() {
                                break;
                            }
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => {
                            let _ = out_tx.send(TermOutput::Exit(exit_status)).await;
                        }
                        Some(ChannelMsg::Close) | None => break,
                        Some(_) => {}
                    },
                    input = in_rx.recv() => match input {
                        Some(TermInput::Data(d)) => {
                            if wr.data_bytes(Bytes::from(d)).await.is_err() {
                                break;
                            }
                        }
                        Some(TermInput::Resize { cols, rows }) => {
                            let _ = wr.window_change(cols, rows, 0, 0).await;
                        }
                        None => {
                            let _ = wr.eof().await;
                            let _ = wr.close().await;
                            break;
                        }
                    },
                }
            }
            debug!("web terminal closed");
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "web terminal closed", "en")
                .await;
        });
        Ok(WebTerminal {
            input: in_tx,
            output: out_rx,
        })
    }
}
