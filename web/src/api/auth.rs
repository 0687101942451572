//! Login, logout and the caller's own account (`/api/v1/auth/*`, `/api/v1/me*`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use postern_vault::{Actor, LoginRequest, RequestContext, SecretString, User, Vault};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{tags, ApiJson};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError};
use crate::AppState;

/// Credentials presented at login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// User name.
    pub username: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// Current TOTP code, when the user has enrolled TOTP.
    #[serde(default)]
    pub totp: Option<String>,
}

/// A successful login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token (`pst_…`) for `Authorization: Bearer`.
    pub token: String,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
    /// The user must change their password (POST /api/v1/me/password) before anything else.
    pub must_change_password: bool,
    /// The user.
    pub user: User,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// The new password.
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// A TOTP enrolment in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollmentResponse {
    /// `otpauth://totp/…` URI, for a QR code.
    pub otpauth_uri: String,
    /// The TOTP secret in base32, for manual entry.
    pub secret: String,
}

/// Confirmation of a TOTP enrolment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    /// The current code shown by the authenticator.
    pub code: String,
}

/// The actor's own user record (allowed even while a password change is pending).
pub(crate) async fn own_user(vault: &Vault, actor: &Actor, _ctx: &RequestContext) -> ApiResult<User> {
    Ok(vault.current_user(actor).await?)
}

/// Logs in with a password (and TOTP code) and returns a bearer token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = tags::AUTH, request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Authentication failed (`authentication-failed`), or a TOTP code is needed (`totp-required`)",
            body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors,
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let req = LoginRequest {
        username: body.username,
        password: body.password,
        totp: body.totp,
    };
    let issued = state.vault.login(&req, &ctx).await?;
    let user = own_user(&state.vault, &issued.actor, &ctx).await?;
    Ok(Json(LoginResponse {
        token: issued.token.expose().to_owned(),
        expires_at: issued.expires_at,
        must_change_password: user.must_change_password,
        user,
    }))
}

/// Revokes the bearer token of this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = tags::AUTH, security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), AuthErrors))]
pub async fn logout(State(state): State<AppState>, auth: Authenticated) -> ApiResult<StatusCode> {
    state.vault.revoke_token(auth.token().expose()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own user record (allowed while a password change is pending).
#[utoipa::path(get, path = "/api/v1/me", tag = tags::AUTH, security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = User), AuthErrors))]
pub async fn me(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<User>> {
    Ok(Json(own_user(&state.vault, &auth.actor, &ctx).await?))
}

/// Changes the caller's password (allowed, and required, while a password
/// change is pending). Every login session of the user ends, this one
/// included: log in again with the new password.
#[utoipa::path(post, path = "/api/v1/me/password", tag = tags::AUTH, security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 204, description = "Changed; log in again"), AuthErrors, BodyErrors))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    match state
        .vault
        .change_own_password(&auth.actor, &body.current_password, &body.new_password, &ctx)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        // A wrong current password is a field error, not a failed bearer authentication.
        Err(postern_vault::Error::AuthenticationFailed) => Err(ApiError::validation("current_password", "is wrong")),
        Err(e) => Err(ApiError::from(e).rename_field("password", "new_password")),
    }
}

/// Starts TOTP enrolment: returns the secret to load into an authenticator.
#[utoipa::path(post, path = "/api/v1/me/totp", tag = tags::AUTH, security(("bearer" = [])),
    responses((status = 200, description = "Enrolment started; confirm with a code", body = TotpEnrollmentResponse), AuthErrors, ForbiddenError))]
pub async fn totp_begin(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<TotpEnrollmentResponse>> {
    if auth.actor.must_change_password {
        return Err(ApiError::password_change_required());
    }
    let e = state.vault.totp_begin(&auth.actor, &ctx).await?;
    Ok(Json(TotpEnrollmentResponse {
        otpauth_uri: e.otpauth_uri.expose().to_owned(),
        secret: e.secret_base32.expose().to_owned(),
    }))
}

/// Confirms TOTP enrolment with a current code; from then on login needs a code.
#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = tags::AUTH, security(("bearer" = [])), request_body = TotpConfirm,
    responses((status = 204, description = "TOTP enabled"), AuthErrors, ForbiddenError, BodyErrors, ConflictError))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<TotpConfirm>,
) -> ApiResult<StatusCode> {
    if auth.actor.must_change_password {
        return Err(ApiError::password_change_required());
    }
    state.vault.totp_confirm(&auth.actor, body.code.trim(), &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}
