//! `POST /api/v1/accounts/{id}/rdp-ticket`: a one-time RDP ticket and its `.rdp` file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{tags, Id};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, AuthErrors, NotFoundError};
use crate::rdp_tickets::RdpTicketError;
use crate::AppState;

/// A one-time RDP ticket. The password is shown this once and is not stored anywhere but in the gateway's
/// memory; the ticket is good for one connection before `expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RdpTicketResponse {
    /// The RDP user name (`pt-` and 20 hex digits).
    pub username: String,
    /// The one-time password.
    pub password: String,
    /// When the ticket expires (RFC 3339).
    pub expires_at: String,
    /// `ACCOUNT@RESOURCE` the ticket connects to.
    pub target: String,
    /// The RDP gateway's address (`host:port`).
    pub gateway: String,
    /// A `.rdp` file for the ticket (gateway address, user name, NLA on); the password is typed when asked.
    pub rdp_file: String,
}

/// The host the `.rdp` file names: the listen address, or the web's host name when it listens on all addresses.
fn gateway_host(gateway: SocketAddr, headers: &HeaderMap) -> String {
    let ip = gateway.ip();
    if !ip.is_unspecified() {
        return match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{}", gateway.port()),
            IpAddr::V4(v4) => format!("{v4}:{}", gateway.port()),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            // `name:port` or `[v6]:port`; a bare `[v6]` or `name` as is.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => name.to_owned(),
            _ => h.to_owned(),
        })
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b)))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", gateway.port())
}

/// Issues a one-time RDP ticket for an account the caller may connect to now.
///
/// For RDP clients with NLA (mstsc's default, `xfreerdp /sec:nla`) and for users with two-factor
/// authentication, who cannot log in to the RDP gateway with their Postern password. The caller is
/// authorized exactly as for a session (the same rules, access-request windows included); refusals answer 404.
/// Issuing is audited (`rdp.ticket_issue`), as are the ticket's use and expiry.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/rdp-ticket", tag = tags::ACCOUNTS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 200, description = "The ticket (shown once)", body = RdpTicketResponse),
        (status = 503, description = "No ticket can be issued now (no RDP gateway, or too many outstanding)"),
        AuthErrors, NotFoundError))]
pub async fn issue_rdp_ticket(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    headers: HeaderMap,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
) -> ApiResult<Json<RdpTicketResponse>> {
    let client = connect
        .map(|axum::Extension(ConnectInfo(a))| a)
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    let t = match state.rdp_tickets.issue(auth.actor, id, client).await {
        Ok(t) => t,
        Err(RdpTicketError::NotFound) => {
            return Err(ApiError::not_found("no such account, or you may not connect to it now"))
        }
        Err(RdpTicketError::Unavailable(why)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rdp-ticket-unavailable",
                "Service Unavailable",
                why,
            ))
        }
    };
    let gateway = gateway_host(t.gateway, &headers);
    let rdp_file = format!(
        "full address:s:{gateway}\r\nusername:s:{}\r\nenablecredsspsupport:i:1\r\nprompt for credentials:i:1\r\nauthentication level:i:0\r\nscreen mode id:i:1\r\n",
        t.username
    );
    Ok(Json(RdpTicketResponse {
        username: t.username,
        password: t.password.expose().to_owned(),
        expires_at: t.expires_at,
        target: t.target,
        gateway,
        rdp_file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rdp_file_names_a_reachable_host() {
        let mut h = HeaderMap::new();
        assert_eq!(gateway_host("127.0.0.1:3389".parse().unwrap(), &h), "127.0.0.1:3389");
        assert_eq!(gateway_host("[::1]:3389".parse().unwrap(), &h), "[::1]:3389");
        assert_eq!(gateway_host("0.0.0.0:3389".parse().unwrap(), &h), "localhost:3389");
        h.insert(header::HOST, "pam.example.org:8443".parse().unwrap());
        assert_eq!(
            gateway_host("0.0.0.0:3389".parse().unwrap(), &h),
            "pam.example.org:3389"
        );
        h.insert(
            header::HOST,
            "evil\r\nusername:s:x"
                .parse()
                .unwrap_or(header::HeaderValue::from_static("x y")),
        );
        assert_eq!(gateway_host("0.0.0.0:3389".parse().unwrap(), &h), "localhost:3389");
    }
}
