//! Sharing: shares (`/api/v1/shares`), user groups (`/api/v1/user-groups`) and
//! resource groups (`/api/v1/resource-groups`) with their members.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use postern_vault::{NewGroup, NewShare, ResourceGroup, Share, UserGroup};

use super::{created, tags, ApiJson, Id, Ids};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// Lists the shares granted to the caller (directly or through a group) and
/// the shares of objects the caller may share.
#[utoipa::path(get, path = "/api/v1/shares", tag = tags::SHARING, security(("bearer" = [])),
    responses((status = 200, description = "Shares", body = Vec<Share>), AuthErrors, ForbiddenError))]
pub async fn list_shares(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<Share>>> {
    Ok(Json(state.vault.list_shares(&auth.actor, &ctx).await?))
}

/// Shares an account, a resource or a resource group with a user or a user
/// group at `connect` (sessions only, never the password), `view`, `modify` or
/// `full` (may re-share). Needs ownership or a `full` share of the object.
#[utoipa::path(post, path = "/api/v1/shares", tag = tags::SHARING, security(("bearer" = [])), request_body = NewShare,
    responses(
        (status = 201, description = "Created", body = Share, headers(("Location" = String, description = "URL of the share"))),
        AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError,
    ))]
pub async fn create_share(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewShare>,
) -> ApiResult<Response> {
    let s = state.vault.create_share(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/shares/{}", s.id), s))
}

/// Revokes a share.
#[utoipa::path(delete, path = "/api/v1/shares/{id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "Share id (UUID)")),
    responses((status = 204, description = "Revoked"), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn revoke_share(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.revoke_share(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists user groups (all of them for user managers, otherwise the caller's own).
#[utoipa::path(get, path = "/api/v1/user-groups", tag = tags::SHARING, security(("bearer" = [])),
    responses((status = 200, description = "User groups", body = Vec<UserGroup>), AuthErrors, ForbiddenError))]
pub async fn list_user_groups(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<UserGroup>>> {
    Ok(Json(state.vault.list_user_groups(&auth.actor, &ctx).await?))
}

/// Creates a user group (needs Manage users).
#[utoipa::path(post, path = "/api/v1/user-groups", tag = tags::SHARING, security(("bearer" = [])), request_body = NewGroup,
    responses(
        (status = 201, description = "Created", body = UserGroup, headers(("Location" = String, description = "URL of the group"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn create_user_group(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<Response> {
    let g = state.vault.create_user_group(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/user-groups/{}", g.id), g))
}

/// Deletes a user group (its shares go with it).
#[utoipa::path(delete, path = "/api/v1/user-groups/{id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "User group id (UUID)")),
    responses((status = 204, description = "Deleted"), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn delete_user_group(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_user_group(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a user to a user group.
#[utoipa::path(post, path = "/api/v1/user-groups/{id}/members/{user_id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "User group id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "The group", body = UserGroup), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn add_user_group_member(
    State(state): State<AppState>,
    auth: Authenticated,
    Ids(id, user_id): Ids,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<UserGroup>> {
    Ok(Json(
        state
            .vault
            .set_user_group_member(&auth.actor, &id, &user_id, true, &ctx)
            .await?,
    ))
}

/// Removes a user from a user group.
#[utoipa::path(delete, path = "/api/v1/user-groups/{id}/members/{user_id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "User group id"), ("user_id" = String, Path, description = "User id")),
    responses((status = 200, description = "The group", body = UserGroup), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn remove_user_group_member(
    State(state): State<AppState>,
    auth: Authenticated,
    Ids(id, user_id): Ids,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<UserGroup>> {
    Ok(Json(
        state
            .vault
            .set_user_group_member(&auth.actor, &id, &user_id, false, &ctx)
            .await?,
    ))
}

/// Lists the resource groups the caller owns or that are shared with them.
#[utoipa::path(get, path = "/api/v1/resource-groups", tag = tags::SHARING, security(("bearer" = [])),
    responses((status = 200, description = "Resource groups", body = Vec<ResourceGroup>), AuthErrors, ForbiddenError))]
pub async fn list_resource_groups(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<ResourceGroup>>> {
    Ok(Json(state.vault.list_resource_groups(&auth.actor, &ctx).await?))
}

/// Creates a resource group owned by the caller (needs Manage resources).
#[utoipa::path(post, path = "/api/v1/resource-groups", tag = tags::SHARING, security(("bearer" = [])), request_body = NewGroup,
    responses(
        (status = 201, description = "Created", body = ResourceGroup, headers(("Location" = String, description = "URL of the group"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn create_resource_group(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<Response> {
    let g = state.vault.create_resource_group(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/resource-groups/{}", g.id), g))
}

/// Deletes a resource group (not its resources).
#[utoipa::path(delete, path = "/api/v1/resource-groups/{id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource group id (UUID)")),
    responses((status = 204, description = "Deleted"), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn delete_resource_group(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_resource_group(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a resource to a group (needs `modify` on the group and the right to share the resource).
#[utoipa::path(post, path = "/api/v1/resource-groups/{id}/members/{resource_id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource group id"), ("resource_id" = String, Path, description = "Resource id")),
    responses((status = 200, description = "The group", body = ResourceGroup), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn add_resource_group_member(
    State(state): State<AppState>,
    auth: Authenticated,
    Ids(id, rid): Ids,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<ResourceGroup>> {
    Ok(Json(
        state
            .vault
            .set_resource_group_member(&auth.actor, &id, &rid, true, &ctx)
            .await?,
    ))
}

/// Removes a resource from a group.
#[utoipa::path(delete, path = "/api/v1/resource-groups/{id}/members/{resource_id}", tag = tags::SHARING, security(("bearer" = [])),
    params(("id" = String, Path, description = "Resource group id"), ("resource_id" = String, Path, description = "Resource id")),
    responses((status = 200, description = "The group", body = ResourceGroup), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn remove_resource_group_member(
    State(state): State<AppState>,
    auth: Authenticated,
    Ids(id, rid): Ids,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<ResourceGroup>> {
    Ok(Json(
        state
            .vault
            .set_resource_group_member(&auth.actor, &id, &rid, false, &ctx)
            .await?,
    ))
}
