//! Authentication of every request: Bearer tokens (API clients) and the
//! browser session cookie (web console), plus the IP allow/deny lists.
//!
//! [`authenticate`] is a middleware over the whole router:
//!
//! 1. The client address must pass the IP lists of its side: `/api/…` the
//!    API lists, everything else (the console) the UI lists; `/healthz` is
//!    exempt. A refused address gets 403 `ip-refused`.
//! 2. Every request under `/api/` except the public paths
//!    ([`PUBLIC_API_PATHS`]) must be authenticated, either with
//!    `Authorization: Bearer pst_…` or with the `__Host-postern_session`
//!    cookie of a browser session (see [`crate::websession`]): a cookie
//!    request that changes state needs the session's `X-CSRF-Token`, and an
//!    idle session ends. A browser session's token is refused as a Bearer
//!    token. The caller is resolved to a vault [`Actor`] once and stored in
//!    the request extensions, where handlers take it with the
//!    [`Authenticated`] extractor. Unknown `/api/` paths also need
//!    authentication, so the API's shape is not revealed to anonymous callers.
//!
//! WebSocket routes are plain `GET`s, so browsers reach them with the cookie
//! alone (no custom header needed).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use postern_vault::{Actor, RequestContext, SecretString};

use crate::error::ApiError;
use crate::websession::{self, CookieRefusal, CSRF_HEADER};
use crate::AppState;

/// `/api/` paths that need no authentication.
pub const PUBLIC_API_PATHS: [&str; 3] = ["/api/v1/auth/login", "/api/v1/auth/web-login", "/api/v1/openapi.json"];

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer pst_…`.
    Bearer,
    /// The browser session cookie.
    Cookie,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is acting.
    pub actor: Actor,
    /// Bearer header or browser cookie.
    pub method: AuthMethod,
    token: SecretString,
}

impl Authenticated {
    /// The token the request was authenticated with (for logout).
    pub fn token(&self) -> &SecretString {
        &self.token
    }
}

/// The bearer token of a request, if the `Authorization` header carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The peer address of a request (absent when the router is called without
/// `ConnectInfo`, as unit tests do).
fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_canonical())
}

/// Methods that never change state (no CSRF token needed with the cookie).
fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// 401 that also tells the browser to drop its session cookie.
fn cookie_refused(detail: &str) -> Response {
    let mut resp = ApiError::invalid_token(detail).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, websession::clear_cookie());
    resp
}

/// Middleware: IP lists for everything, authentication for every non-public `/api/` request.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_api = path.starts_with("/api/");
    if path != "/healthz" {
        let rules = if is_api {
            &state.web.options.api
        } else {
            &state.web.options.ui
        };
        if !rules.admits(peer_ip(&req)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "ip-refused",
                "Address not allowed",
                "this address may not use this service",
            )
            .into_response();
        }
    }
    if !is_api || PUBLIC_API_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let sessions = &state.web.sessions;
    let (token, method) = if let Some(token) = bearer_token(req.headers()) {
        if sessions.contains(token) {
            return ApiError::invalid_token("a browser session token is accepted only from its cookie").into_response();
        }
        (SecretString::new(token), AuthMethod::Bearer)
    } else if let Some(token) = websession::session_cookie(req.headers()) {
        let csrf = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let background = req.headers().contains_key(websession::BACKGROUND_HEADER);
        match sessions.check(token, !is_safe(req.method()), csrf, background) {
            Ok(()) => (SecretString::new(token), AuthMethod::Cookie),
            Err(CookieRefusal::Csrf) => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf-failed",
                    "CSRF check failed",
                    "a request that changes state with the session cookie needs the session's X-CSRF-Token header",
                )
                .into_response();
            }
            Err(refusal) => {
                // Unknown to this process or idle: the token must not live on.
                if let Err(e) = state.vault.revoke_token(token).await {
                    tracing::warn!(error = %e, "revoking an ended browser session failed");
                }
                let detail = if refusal == CookieRefusal::Idle {
                    "the browser session ended after inactivity; log in again"
                } else {
                    "unknown or ended browser session; log in again"
                };
                return cookie_refused(detail);
            }
        }
    } else {
        return ApiError::invalid_token(
            "this endpoint needs an `Authorization: Bearer pst_…` header or a session cookie",
        )
        .into_response();
    };
    match state.vault.authenticate_token(token.expose()).await {
        Ok(actor) => {
            req.extensions_mut().insert(Authenticated { actor, method, token });
            next.run(req).await
        }
        Err(e) => {
            if method == AuthMethod::Cookie {
                sessions.remove(token.expose());
                return cookie_refused("the browser session ended; log in again");
            }
            ApiError::from(e).into_response()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| ApiError::invalid_token("this endpoint needs an `Authorization: Bearer pst_…` header"))
    }
}

/// The vault [`RequestContext`] of a request: the client address (from
/// `ConnectInfo<SocketAddr>`, absent in tests that call the router directly).
#[derive(Debug, Clone, Default)]
pub struct ClientContext(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for ClientContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip().to_canonical());
        Ok(ClientContext(RequestContext {
            client_ip,
            reason: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn parses_bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer pst_abc"));
        assert_eq!(bearer_token(&h), Some("pst_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer   pst_abc "));
        assert_eq!(bearer_token(&h), Some("pst_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWRtaW46eA=="));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer_token(&h), None);
    }

    #[tokio::test]
    async fn client_context_uses_connect_info() {
        let req = axum::http::Request::builder().uri("/").body(()).unwrap();
        let (mut parts, _) = req.into_parts();
        let ClientContext(ctx) = ClientContext::from_request_parts(&mut parts, &()).await.unwrap();
        assert_eq!(ctx.client_ip, None);
        let addr: SocketAddr = "[::ffff:192.0.2.7]:4433".parse().unwrap();
        parts.extensions.insert(ConnectInfo(addr));
        let ClientContext(ctx) = ClientContext::from_request_parts(&mut parts, &()).await.unwrap();
        assert_eq!(ctx.client_ip, Some("192.0.2.7".parse().unwrap()));
    }
}
