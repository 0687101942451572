//! Wires the web's browser terminal to the gateway's SSH pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_gateway::ssh::{SshGateway, TermInput, TermOutput};
use postern_vault::{Actor, RequestContext, Vault};
use postern_web::{TerminalError, TerminalInput, TerminalIo, TerminalOutput, Terminals};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Opens browser terminals as gateway sessions.
pub struct GatewayTerminals {
    /// The SSH gateway.
    pub gateway: Arc<SshGateway>,
    /// To find the accounts the user may connect to.
    pub vault: Vault,
    /// The server's shutdown.
    pub shutdown: CancellationToken,
    /// Owns the bridging tasks.
    pub tracker: TaskTracker,
}

impl Terminals for GatewayTerminals {
    fn open(
        &self,
        actor: Actor,
        account_id: String,
        cols: u32,
        rows: u32,
        client: SocketAddr,
    ) -> postern_web::terminal::OpenFuture {
        let (gw, vault, shutdown, tracker) = (
            self.gateway.clone(),
            self.vault.clone(),
            self.shutdown.clone(),
            self.tracker.clone(),
        );
        Box::pin(async move {
            let ctx = RequestContext::from_ip(client.ip());
            let accounts = vault.connectable_accounts(&actor, &ctx).await.map_err(|e| {
                tracing::warn!(error = %e, "listing connectable accounts failed");
                TerminalError::Unavailable("internal error while looking up the account".into())
            })?;
            let (resource, account) = accounts
                .into_iter()
                .find(|(_, a)| a.id == account_id)
                .ok_or(TerminalError::NotFound)?;
            let term = gw
                .open_terminal(actor, &account.login, &resource.name, (cols, rows), client, shutdown)
                .await
                .map_err(|e| TerminalError::Unavailable(e.to_string()))?;
            let (in_tx, mut in_rx) = mpsc::channel::<TerminalInput>(16);
            let (out_tx, out_rx) = mpsc::channel::<TerminalOutput>(16);
            let (to_gw, mut from_gw) = (term.input, term.output);
            // Two tiny translations between the web's and the gateway's types; either side ending ends both.
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        i = in_rx.recv() => {
                            let Some(i) = i else { break };
                            let i = match i {
                                TerminalInput::Data(d) => TermInput::Data(d),
                                TerminalInput::Resize(cols, rows) => TermInput::Resize { cols, rows },
                            };
                            if to_gw.send(i).await.is_err() {
                                break;
                            }
                        }
                        o = from_gw.recv() => {
                            let Some(o) = o else { break };
                            let o = match o {
                                TermOutput::Data(d) => TerminalOutput::Data(d),
                                TermOutput::Exit(s) => TerminalOutput::Exit(s),
                            };
                            if out_tx.send(o).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            Ok(TerminalIo {
                input: in_tx,
                output: out_rx,
            })
        })
    }
}
