//! Accounts (`/api/v1/accounts/{id}`) and secret retrieval, the only route
//! that ever returns a vaulted secret.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use postern_vault::{Account, AccountPatch, SecretKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// A request to see an account's secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    /// Why the secret is needed (required; recorded in the audit trail).
    pub reason: String,
    /// Which secret: `password` (default) or `private_key`.
    #[serde(default)]
    pub kind: Option<SecretKind>,
}

/// A retrieved secret: exactly one of the fields is present.
#[derive(Serialize, ToSchema)]
pub struct RetrievedSecret {
    /// The password, when `kind` was `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    pub password: Option<String>,
    /// The private key, when `kind` was `private_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    pub private_key: Option<String>,
}

impl std::fmt::Debug for RetrievedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetrievedSecret(***)")
    }
}

/// Reads an account (metadata only).
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = tags::ACCOUNTS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 200, description = "The account", body = Account), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn get_account(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Account>> {
    Ok(Json(state.vault.get_account(&auth.actor, &id, &ctx).await?))
}

/// Changes an account or its secrets (an empty string removes a secret).
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = tags::ACCOUNTS, security(("bearer" = [])), request_body = AccountPatch,
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 200, description = "The changed account", body = Account), AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError))]
pub async fn update_account(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(patch): ApiJson<AccountPatch>,
) -> ApiResult<Json<Account>> {
    Ok(Json(state.vault.update_account(&auth.actor, &id, patch, &ctx).await?))
}

/// Deletes an account and its secrets.
#[utoipa::path(delete, path = "/api/v1/accounts/{id}", tag = tags::ACCOUNTS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 204, description = "Deleted"), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn delete_account(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_account(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Retrieves an account's password (or private key) for display. Needs a
/// reason, which is recorded in the audit trail. The response is never cached.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/retrieve", tag = tags::ACCOUNTS, security(("bearer" = [])), request_body = RetrieveRequest,
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses(
        (status = 200, description = "The secret (`Cache-Control: no-store`)", body = RetrievedSecret),
        AuthErrors, ForbiddenError, NotFoundError, BodyErrors,
    ))]
pub async fn retrieve_secret(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(mut ctx): ClientContext,
    ApiJson(body): ApiJson<RetrieveRequest>,
) -> ApiResult<Response> {
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::validation(
            "reason",
            "is required: say why you need the secret",
        ));
    }
    ctx.reason = Some(reason.to_owned());
    let kind = body.kind.unwrap_or(SecretKind::Password);
    let lease = state.vault.retrieve_secret(&auth.actor, &id, kind, &ctx).await?;
    let Some(plain) = lease.expose_str() else {
        tracing::error!(account_id = %id, "retrieved secret is not UTF-8; cannot return it as JSON");
        return Err(ApiError::internal());
    };
    let secret = match kind {
        SecretKind::Password => RetrievedSecret {
            password: Some(plain.to_owned()),
            private_key: None,
        },
        SecretKind::PrivateKey => RetrievedSecret {
            password: None,
            private_key: Some(plain.to_owned()),
        },
    };
    let mut resp = Json(secret).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
