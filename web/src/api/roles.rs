//! Roles (`/api/v1/roles`): the predefined roles, custom roles built from the
//! operation catalogue with dual control (a second administrator approves),
//! bulk role change and deletion that moves users first.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use postern_vault::{CatalogueEntry, Role, RoleChange, RoleInfo, RoleProposal};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{created, tags, ApiJson, ApiQuery, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// Users to give a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// User ids (at most 1000).
    pub user_ids: Vec<String>,
}

/// Where a deleted role's users go.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// The role (built-in id or custom role id) the role's users move to.
    pub move_to: Option<String>,
}

/// A role id in a path: a built-in role id or a UUID; anything else is 404.
fn role_id(raw: String) -> Result<String, ApiError> {
    if Role::parse(&raw).is_some() {
        return Ok(raw);
    }
    uuid::Uuid::try_parse(&raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::not_found("role not found"))
}

/// Lists the predefined and custom roles, with their operations, pending changes and user counts.
#[utoipa::path(get, path = "/api/v1/roles", tag = tags::USERS, security(("bearer" = [])),
    responses((status = 200, description = "Roles", body = Vec<RoleInfo>), AuthErrors, ForbiddenError))]
pub async fn list_roles(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<RoleInfo>>> {
    Ok(Json(state.vault.list_roles(&auth.actor, &ctx).await?))
}

/// The operation catalogue custom roles are built from.
#[utoipa::path(get, path = "/api/v1/roles/catalogue", tag = tags::USERS, security(("bearer" = [])),
    responses((status = 200, description = "Operations", body = Vec<CatalogueEntry>), AuthErrors))]
pub async fn catalogue(State(state): State<AppState>, _auth: Authenticated) -> Json<Vec<CatalogueEntry>> {
    Json(state.vault.role_catalogue())
}

/// Proposes a custom role; it can be assigned once another administrator approves it.
#[utoipa::path(post, path = "/api/v1/roles", tag = tags::USERS, security(("bearer" = [])), request_body = RoleProposal,
    responses(
        (status = 201, description = "Proposed, waiting for approval", body = RoleInfo, headers(("Location" = String, description = "URL of the role"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn propose_role(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<RoleProposal>,
) -> ApiResult<Response> {
    let r = state.vault.propose_role(&auth.actor, body, &ctx).await?;
    Ok(created(format!("/api/v1/roles/{}", r.id), r))
}

/// Proposes new operations for a custom role; the current ones stay in force until approved.
#[utoipa::path(put, path = "/api/v1/roles/{id}", tag = tags::USERS, security(("bearer" = [])), request_body = RoleProposal,
    params(("id" = String, Path, description = "Custom role id (UUID)")),
    responses((status = 200, description = "The role, with the pending change", body = RoleInfo), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn edit_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<RoleProposal>,
) -> ApiResult<Json<RoleInfo>> {
    Ok(Json(state.vault.propose_role_edit(&auth.actor, &id, body, &ctx).await?))
}

/// Deletes a custom role, moving its users to `move_to` first.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Custom role id (UUID)"), DeleteQuery),
    responses((status = 200, description = "Deleted; the users moved", body = Vec<RoleChange>), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn delete_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ApiQuery(q): ApiQuery<DeleteQuery>,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<RoleChange>>> {
    Ok(Json(
        state
            .vault
            .delete_role(&auth.actor, &id, q.move_to.as_deref(), &ctx)
            .await?,
    ))
}

/// Approves a custom role's pending operations (another administrator than the author).
#[utoipa::path(post, path = "/api/v1/roles/{id}/approve", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Custom role id (UUID)")),
    responses((status = 200, description = "The role, now in force", body = RoleInfo), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn approve_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<RoleInfo>> {
    Ok(Json(state.vault.approve_role(&auth.actor, &id, &ctx).await?))
}

/// Bulk role change: gives the role (built-in id or approved custom role id) to every listed user;
/// each change is authorized and audited on its own and reported per user.
#[utoipa::path(post, path = "/api/v1/roles/{id}/assign", tag = tags::USERS, security(("bearer" = [])), request_body = AssignRequest,
    params(("id" = String, Path, description = "Role id: a built-in role id or a custom role UUID")),
    responses((status = 200, description = "Per-user outcome", body = Vec<RoleChange>), AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError))]
pub async fn assign_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<AssignRequest>,
) -> ApiResult<Json<Vec<RoleChange>>> {
    let id = role_id(raw)?;
    Ok(Json(
        state
            .vault
            .assign_role(&auth.actor, &id, &body.user_ids, &ctx)
            .await
            .map_err(|e| match e {
                postern_vault::Error::Invalid { field: "role", .. } => ApiError::not_found("role not found"),
                e => e.into(),
            })?,
    ))
}
