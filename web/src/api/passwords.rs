//! Password policies (`/api/v1/password-policies`), attaching them to accounts
//! and resource groups, and remote resets: one account now, or "randomize
//! now" for a resource group with a per-account result.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use postern_vault::{Job, NewPasswordPolicy, StoredPolicy};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{created, tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// Which policy to attach (`null` detaches).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// A password policy id, or null.
    pub policy_id: Option<String>,
}

/// Lists password policies.
#[utoipa::path(get, path = "/api/v1/password-policies", tag = tags::ACCESS, security(("bearer" = [])),
    responses((status = 200, description = "Policies", body = Vec<StoredPolicy>), AuthErrors, ForbiddenError))]
pub async fn list_policies(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<StoredPolicy>>> {
    Ok(Json(state.vault.list_password_policies(&auth.actor, &ctx).await?))
}

/// Creates a password policy (length, character classes, forbidden characters, maximum age).
#[utoipa::path(post, path = "/api/v1/password-policies", tag = tags::ACCESS, security(("bearer" = [])), request_body = NewPasswordPolicy,
    responses(
        (status = 201, description = "Created", body = StoredPolicy, headers(("Location" = String, description = "URL of the policy"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn create_policy(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewPasswordPolicy>,
) -> ApiResult<Response> {
    let p = state.vault.create_password_policy(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/password-policies/{}", p.id), p))
}

/// Attaches a password policy to an account (overrides its resource groups').
#[utoipa::path(put, path = "/api/v1/accounts/{id}/password-policy", tag = tags::ACCESS, security(("bearer" = [])), request_body = PolicyRef,
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 204, description = "Set"), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn set_account_policy(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<PolicyRef>,
) -> ApiResult<StatusCode> {
    state
        .vault
        .set_account_policy(&auth.actor, &id, body.policy_id.as_deref(), &ctx)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attaches a password policy to a resource group (applies to its resources' accounts).
#[utoipa::path(put, path = "/api/v1/resource-groups/{id}/password-policy", tag = tags::ACCESS, security(("bearer" = [])), request_body = PolicyRef,
    params(("id" = String, Path, description = "Resource group id (UUID)")),
    responses((status = 204, description = "Set"), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn set_group_policy(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<PolicyRef>,
) -> ApiResult<StatusCode> {
    state
        .vault
        .set_group_policy(&auth.actor, &id, body.policy_id.as_deref(), &ctx)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resets an account's password on its target now (generated, changed, verified, vaulted;
/// nobody sees it). A failure keeps the old password and answers 502 with the failing stage.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/reset", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (UUID)")),
    responses((status = 204, description = "Reset"), (status = 502, description = "The target refused or could not be reached; the old password stays"),
        AuthErrors, ForbiddenError, NotFoundError))]
pub async fn reset_account(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.reset_account_password(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// "Randomize now": resets every account of the group's resources in a background job;
/// follow its progress and per-account results at `GET /api/v1/jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/resource-groups/{id}/randomize", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource group id (UUID)")),
    responses((status = 202, description = "Started", body = Job, headers(("Location" = String, description = "URL of the job"))),
        AuthErrors, ForbiddenError, NotFoundError))]
pub async fn randomize_group(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Response> {
    let job = state.vault.randomize_group(&auth.actor, &id, &ctx).await?;
    Ok(accepted(job))
}

/// A password job's progress and per-account results (the user who started it, or a super admin).
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses((status = 200, description = "The job", body = Job), AuthErrors, NotFoundError))]
pub async fn get_job(State(state): State<AppState>, auth: Authenticated, Id(id): Id) -> ApiResult<Json<Job>> {
    Ok(Json(state.vault.job(&auth.actor, &id)?))
}

/// `202 Accepted` with the job and its URL.
pub(crate) fn accepted(job: Job) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(&job)).into_response();
    if let Ok(v) = axum::http::HeaderValue::try_from(format!("/api/v1/jobs/{}", job.id)) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}
