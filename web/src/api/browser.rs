//! Browser sessions of the web console (`/api/v1/auth/web-login`,
//! `/api/v1/auth/session`): the cookie twin of `POST /api/v1/auth/login`.
//! See [`crate::websession`] for the rules.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use postern_vault::{LoginRequest, User};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{own_user, LoginBody};
use super::{tags, ApiJson};
use crate::auth::{AuthMethod, Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors};
use crate::websession;
use crate::AppState;

/// A browser session.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebSession {
    /// Send this value as `X-CSRF-Token` with every request that changes state.
    pub csrf_token: String,
    /// The session ends after this many seconds without a request.
    pub idle_timeout_seconds: u64,
    /// The user must change their password (POST /api/v1/me/password) before anything else.
    pub must_change_password: bool,
    /// The user.
    pub user: User,
}

/// Logs in like `POST /api/v1/auth/login`, but the token goes into the
/// `__Host-postern_session` cookie (Secure, HttpOnly, SameSite=Strict) instead
/// of the body; the body carries the CSRF token for state-changing requests.
#[utoipa::path(post, path = "/api/v1/auth/web-login", tag = tags::AUTH, request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = WebSession,
            headers(("set-cookie" = String, description = "__Host-postern_session=…; Path=/; Secure; HttpOnly; SameSite=Strict"))),
        (status = 401, description = "Authentication failed (`authentication-failed`), or a TOTP code is needed (`totp-required`)",
            body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many browser sessions at once", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors,
    ))]
pub async fn web_login(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let req = LoginRequest {
        username: body.username,
        password: body.password,
        totp: body.totp,
    };
    let issued = state.vault.login(&req, &ctx).await?;
    let token = issued.token.expose();
    let (csrf, purged) = state.web.sessions.insert(token);
    for old in purged {
        if let Err(e) = state.vault.revoke_token(old.expose()).await {
            tracing::warn!(error = %e, "revoking a purged browser session failed");
        }
    }
    let Some(csrf) = csrf else {
        let _ = state.vault.revoke_token(token).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-sessions",
            "Too many browser sessions",
            "the server holds too many browser sessions; try again later",
        ));
    };
    let user = own_user(&state.vault, &issued.actor, &ctx).await?;
    let body = WebSession {
        csrf_token: csrf,
        idle_timeout_seconds: state.web.sessions.idle_timeout().as_secs(),
        must_change_password: user.must_change_password,
        user,
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, websession::set_cookie(token));
    Ok(resp)
}

/// The current browser session (its CSRF token, e.g. after a page reload).
/// With a Bearer token this is 404: there is no browser session.
#[utoipa::path(get, path = "/api/v1/auth/session", tag = tags::AUTH, security(("bearer" = [])),
    responses((status = 200, description = "The browser session", body = WebSession), AuthErrors,
        (status = 404, description = "Not a browser session", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn current_session(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<WebSession>> {
    let csrf = match auth.method {
        AuthMethod::Cookie => state.web.sessions.csrf(auth.token().expose()),
        AuthMethod::Bearer => None,
    }
    .ok_or_else(|| ApiError::not_found("this request is not authenticated by a browser session"))?;
    let user = own_user(&state.vault, &auth.actor, &ctx).await?;
    Ok(Json(WebSession {
        csrf_token: csrf,
        idle_timeout_seconds: state.web.sessions.idle_timeout().as_secs(),
        must_change_password: user.must_change_password,
        user,
    }))
}

/// Ends the caller's session (cookie or token) and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/auth/session", tag = tags::AUTH, security(("bearer" = [])),
    responses((status = 204, description = "Logged out; the cookie is cleared"), AuthErrors,
        (status = 403, description = "Missing or wrong X-CSRF-Token (`csrf-failed`)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn end_session(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Response> {
    state.web.sessions.remove(auth.token().expose());
    state.vault.revoke_token(auth.token().expose()).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, websession::clear_cookie());
    Ok(resp)
}
