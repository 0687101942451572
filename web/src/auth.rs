//! Bearer-token authentication.
//!
//! [`require_bearer`] is a middleware over the whole router: every request
//! under `/api/` except the public paths ([`PUBLIC_API_PATHS`]) must carry
//! `Authorization: Bearer pst_…`; the token is resolved to a vault
//! [`Actor`] once and stored in the request extensions, where handlers take it
//! with the [`Authenticated`] extractor. Unknown `/api/` paths also need a
//! token, so the API's shape is not revealed to anonymous callers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use postern_vault::{Actor, RequestContext, SecretString};

use crate::error::ApiError;
use crate::AppState;

/// `/api/` paths that need no token.
pub const PUBLIC_API_PATHS: [&str; 2] = ["/api/v1/auth/login", "/api/v1/openapi.json"];

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is acting.
    pub actor: Actor,
    token: SecretString,
}

impl Authenticated {
    /// The bearer token the request was authenticated with (for logout).
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

/// Middleware: authenticates every non-public `/api/` request.
pub async fn require_bearer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") || PUBLIC_API_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let Some(token) = bearer_token(req.headers()) else {
        return ApiError::invalid_token("this endpoint needs an `Authorization: Bearer pst_…` header").into_response();
    };
    let token = SecretString::new(token);
    match state.vault.authenticate_token(token.expose()).await {
        Ok(actor) => {
            req.extensions_mut().insert(Authenticated { actor, token });
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
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
