//! Resources (`/api/v1/resources`) and the account list/creation under a resource.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use postern_vault::{Account, NewAccount, NewResource, Resource, ResourcePatch};

use super::{created, tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// Lists the resources the caller can see.
#[utoipa::path(get, path = "/api/v1/resources", tag = tags::RESOURCES, security(("bearer" = [])),
    responses((status = 200, description = "Resources", body = Vec<Resource>), AuthErrors, ForbiddenError))]
pub async fn list_resources(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<Resource>>> {
    Ok(Json(state.vault.list_resources(&auth.actor, &ctx).await?))
}

/// Adds a resource owned by the caller.
#[utoipa::path(post, path = "/api/v1/resources", tag = tags::RESOURCES, security(("bearer" = [])), request_body = NewResource,
    responses(
        (status = 201, description = "Created", body = Resource, headers(("Location" = String, description = "URL of the new resource"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn create_resource(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewResource>,
) -> ApiResult<Response> {
    let r = state.vault.create_resource(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/resources/{}", r.id), r))
}

/// Reads a resource.
#[utoipa::path(get, path = "/api/v1/resources/{id}", tag = tags::RESOURCES, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 200, description = "The resource", body = Resource), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn get_resource(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Resource>> {
    Ok(Json(state.vault.get_resource(&auth.actor, &id, &ctx).await?))
}

/// Changes a resource; absent fields are unchanged.
#[utoipa::path(patch, path = "/api/v1/resources/{id}", tag = tags::RESOURCES, security(("bearer" = [])), request_body = ResourcePatch,
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 200, description = "The changed resource", body = Resource), AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError))]
pub async fn update_resource(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(patch): ApiJson<ResourcePatch>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(state.vault.update_resource(&auth.actor, &id, patch, &ctx).await?))
}

/// Deletes a resource with its accounts and their secrets.
#[utoipa::path(delete, path = "/api/v1/resources/{id}", tag = tags::RESOURCES, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 204, description = "Deleted"), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn delete_resource(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_resource(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the resource's pinned SSH host key and pinned RDP TLS certificate, after a legitimate re-install
/// of the target: the gateway pins whatever key or certificate it sees on the next connection.
#[utoipa::path(delete, path = "/api/v1/resources/{id}/host-key", tag = tags::RESOURCES, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 204, description = "Forgotten (also when none was pinned)"), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn forget_host_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.forget_host_key(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the accounts of a resource that the caller can see (metadata only, never secrets).
#[utoipa::path(get, path = "/api/v1/resources/{id}/accounts", tag = tags::ACCOUNTS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses((status = 200, description = "Accounts", body = Vec<Account>), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn list_accounts(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(state.vault.list_accounts(&auth.actor, &id, &ctx).await?))
}

/// Adds an account (with its password and/or private key, which are sealed) to a resource.
#[utoipa::path(post, path = "/api/v1/resources/{id}/accounts", tag = tags::ACCOUNTS, security(("bearer" = [])), request_body = NewAccount,
    params(("id" = String, Path, description = "Resource id (UUID)")),
    responses(
        (status = 201, description = "Created", body = Account, headers(("Location" = String, description = "URL of the new account"))),
        AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError,
    ))]
pub async fn create_account(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewAccount>,
) -> ApiResult<Response> {
    let a = state.vault.create_account(&auth.actor, &id, body, &ctx).await?;
    Ok(created(format!("/api/v1/accounts/{}", a.id), a))
}
