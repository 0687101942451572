//! One-time RDP tickets from the web console: the web's [`RdpTicketIssuer`] over the RDP gateway's ticket
//! store. The caller is authorized as for a session on the account now (the same `authorize()`, access-request
//! windows included; refusals audited by the vault) before a ticket is issued; issuing is audited.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_gateway::rdp::{RdpTickets, TicketGrant};
use postern_vault::{Actor, RequestContext, Vault};
use postern_web::rdp_tickets::{IssueFuture, RdpTicket, RdpTicketError, RdpTicketIssuer};

/// Issues tickets into the gateway's store.
pub struct GatewayRdpTickets {
    pub tickets: Arc<RdpTickets>,
    pub vault: Vault,
    /// The RDP listener's address (for the `.rdp` file).
    pub gateway: SocketAddr,
}

impl RdpTicketIssuer for GatewayRdpTickets {
    fn issue(&self, actor: Actor, account_id: String, client: SocketAddr) -> IssueFuture {
        let (tickets, vault, gateway) = (self.tickets.clone(), self.vault.clone(), self.gateway);
        Box::pin(async move {
            let ctx = RequestContext::from_ip(client.ip());
            let internal = |e: postern_vault::Error| {
                tracing::warn!(error = %e, "issuing an RDP ticket failed");
                RdpTicketError::Unavailable("internal error while authorizing the ticket".into())
            };
            let accounts = vault.connectable_accounts(&actor, &ctx).await.map_err(internal)?;
            let (resource, account) = accounts
                .into_iter()
                .find(|(_, a)| a.id == account_id)
                .ok_or(RdpTicketError::NotFound)?;
            // Authorized as a session now (access windows too); refusals are audited by the vault.
            match vault.resolve_target(&actor, &account.login, &resource.name, &ctx).await {
                Ok(_) => {}
                Err(postern_vault::Error::NotFound { .. }) => return Err(RdpTicketError::NotFound),
                Err(e) => return Err(internal(e)),
            }
            let label = format!("{}@{}", account.login, resource.name);
            let issued = tickets
                .issue(TicketGrant {
                    actor: actor.clone(),
                    account_id: account.id.clone(),
                    login: account.login.clone(),
                    resource: resource.name.clone(),
                    name: String::new(),
                })
                .map_err(|e| RdpTicketError::Unavailable(e.to_string()))?;
            let expires_at = postern_vault::format_ts(time::OffsetDateTime::now_utc() + issued.ttl);
            if let Err(e) = vault
                .audit_gateway(
                    &actor,
                    "rdp.ticket_issue",
                    Some((account.id.as_str(), label.as_str())),
                    false,
                    format!("RDP ticket {} issued, valid until {expires_at}", issued.username),
                    &ctx,
                )
                .await
            {
                return Err(internal(e));
            }
            Ok(RdpTicket {
                username: issued.username,
                password: issued.password,
                expires_at,
                gateway,
                target: label,
            })
        })
    }
}
