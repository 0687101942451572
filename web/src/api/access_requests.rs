//! Access requests (`/api/v1/access-requests`) and their transitions, and the
//! access policy of a resource (`/api/v1/resources/{id}/access-policy`).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use postern_vault::{AccessPolicy, AccessRequest, NewAccessRequest};

use super::{created, tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// Lists the caller's requests and those the caller may approve.
#[utoipa::path(get, path = "/api/v1/access-requests", tag = tags::ACCESS, security(("bearer" = [])),
    responses((status = 200, description = "Access requests, newest first", body = Vec<AccessRequest>), AuthErrors, ForbiddenError))]
pub async fn list_access_requests(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<AccessRequest>>> {
    Ok(Json(state.vault.list_access_requests(&auth.actor, &ctx).await?))
}

/// Asks for access to an account under access control. A reason is required;
/// a ticket id is checked by the configured ticket validator.
#[utoipa::path(post, path = "/api/v1/access-requests", tag = tags::ACCESS, security(("bearer" = [])), request_body = NewAccessRequest,
    responses(
        (status = 201, description = "Requested", body = AccessRequest, headers(("Location" = String, description = "URL of the request"))),
        AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError,
    ))]
pub async fn create_access_request(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewAccessRequest>,
) -> ApiResult<Response> {
    let r = state.vault.create_access_request(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/access-requests/{}", r.id), r))
}

/// Approves a request (an owner with Manage passwords, or a `full` share; never the requester).
/// With dual approval two distinct approvers are needed.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/approve", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (UUID)")),
    responses((status = 200, description = "The request", body = AccessRequest), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn approve(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(state.vault.approve_access_request(&auth.actor, &id, &ctx).await?))
}

/// Denies a request.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/deny", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (UUID)")),
    responses((status = 200, description = "The request", body = AccessRequest), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn deny(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(state.vault.deny_access_request(&auth.actor, &id, &ctx).await?))
}

/// Checks out an approved request (the requester): the window starts now.
/// On an exclusive account held by someone else: 409, or `queued` when the policy queues.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/checkout", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (UUID)")),
    responses((status = 200, description = "The request", body = AccessRequest), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn checkout(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(state.vault.checkout_access_request(&auth.actor, &id, &ctx).await?))
}

/// Checks a request in (the requester or an approver): the user's gateway
/// sessions on the account end, and the password is reset on the target when
/// the policy says so (`reset_outcome`).
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/checkin", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Request id (UUID)")),
    responses((status = 200, description = "The request", body = AccessRequest), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn checkin(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(state.vault.checkin_access_request(&auth.actor, &id, &ctx).await?))
}

/// Reads a resource's access policy (no policy reads as `require_request: false`).
#[utoipa::path(get, path = "/api/v1/resources/{id}/access-policy", tag = tags::ACCESS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 200, description = "The policy", body = AccessPolicy), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn get_access_policy(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AccessPolicy>> {
    Ok(Json(state.vault.get_access_policy(&auth.actor, &id, &ctx).await?))
}

/// Sets a resource's access policy (needs the right to change the resource).
#[utoipa::path(put, path = "/api/v1/resources/{id}/access-policy", tag = tags::ACCESS, security(("bearer" = [])), request_body = AccessPolicy,
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 200, description = "The policy", body = AccessPolicy), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn set_access_policy(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<AccessPolicy>,
) -> ApiResult<Json<AccessPolicy>> {
    Ok(Json(state.vault.set_access_policy(&auth.actor, &id, body, &ctx).await?))
}
