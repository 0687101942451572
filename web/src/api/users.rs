//! Users (`/api/v1/users`) and their SSH public keys (`/api/v1/users/{id}/keys`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use postern_vault::{NewUser, NewUserKey, Role, SecretString, User, UserKey, UserPatch};
use serde::Deserialize;

use super::{created, tags, ApiJson, ApiQuery, Id, Ids};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, BodyErrors, ConflictError, ForbiddenError, NotFoundError};
use crate::AppState;

/// The vault's [`NewUser`], deserialized with unknown fields refused (the
/// vault type accepts and ignores them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictNewUser {
    username: String,
    role: Role,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    super_admin: bool,
    #[serde(default)]
    must_change_password: Option<bool>,
}

impl From<StrictNewUser> for NewUser {
    fn from(u: StrictNewUser) -> Self {
        NewUser {
            username: u.username,
            role: u.role,
            email: u.email,
            password: u.password,
            super_admin: u.super_admin,
            must_change_password: u.must_change_password,
        }
    }
}

/// The role filter of the user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Only users holding this role: a built-in role id (without a custom role) or a custom role id.
    pub role: Option<String>,
}

/// Lists users, optionally only those holding one role.
#[utoipa::path(get, path = "/api/v1/users", tag = tags::USERS, security(("bearer" = [])), params(UserFilter),
    responses((status = 200, description = "Users", body = Vec<User>), AuthErrors, ForbiddenError, BodyErrors))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> ApiResult<Json<Vec<User>>> {
    let mut users = state.vault.list_users(&auth.actor, &ctx).await?;
    if let Some(role) = filter.role.as_deref() {
        users.retain(|u| match Role::parse(role) {
            Some(r) => u.role == r && u.custom_role_id.is_none(),
            None => u.custom_role_id.as_deref() == Some(role),
        });
    }
    Ok(Json(users))
}

/// Creates a user. Role ids: `administrator`, `password_administrator`,
/// `privileged_administrator`, `password_user`, `password_auditor`.
#[utoipa::path(post, path = "/api/v1/users", tag = tags::USERS, security(("bearer" = [])), request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User, headers(("Location" = String, description = "URL of the new user"))),
        AuthErrors, ForbiddenError, BodyErrors, ConflictError,
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<StrictNewUser>,
) -> ApiResult<Response> {
    let user = state.vault.create_user(&auth.actor, body.into(), &ctx).await?;
    Ok(created(format!("/api/v1/users/{}", user.id), user))
}

/// Reads a user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 200, description = "The user", body = User), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn get_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<User>> {
    Ok(Json(state.vault.get_user(&auth.actor, &id, &ctx).await?))
}

/// Changes a user; absent fields are unchanged.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = tags::USERS, security(("bearer" = [])), request_body = UserPatch,
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 200, description = "The changed user", body = User), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(patch): ApiJson<UserPatch>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.vault.update_user(&auth.actor, &id, patch, &ctx).await?))
}

/// Deletes a user that owns nothing.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 204, description = "Deleted"), AuthErrors, ForbiddenError, NotFoundError, ConflictError))]
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_user(&auth.actor, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists a user's SSH public keys (for public-key login to the SSH gateway).
/// Every user may list their own; listing another user's needs the right to read that user.
#[utoipa::path(get, path = "/api/v1/users/{id}/keys", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 200, description = "The user's keys", body = Vec<UserKey>), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn list_user_keys(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<UserKey>>> {
    Ok(Json(state.vault.user_keys(&auth.actor, &id, &ctx).await?))
}

/// Registers an SSH public key (one `authorized_keys` line: `TYPE BASE64 [COMMENT]`).
/// Every user may add keys to themself; adding one to another user needs the right to change that user.
#[utoipa::path(post, path = "/api/v1/users/{id}/keys", tag = tags::USERS, security(("bearer" = [])), request_body = NewUserKey,
    params(("id" = String, Path, description = "User id (UUID)")),
    responses(
        (status = 201, description = "Registered", body = UserKey, headers(("Location" = String, description = "URL of the new key"))),
        AuthErrors, ForbiddenError, NotFoundError, BodyErrors, ConflictError,
    ))]
pub async fn add_user_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<NewUserKey>,
) -> ApiResult<Response> {
    let key = state.vault.add_user_key(&auth.actor, &id, &body, &ctx).await?;
    Ok(created(format!("/api/v1/users/{}/keys/{}", key.user_id, key.id), key))
}

/// Removes one of a user's SSH public keys.
#[utoipa::path(delete, path = "/api/v1/users/{id}/keys/{key_id}", tag = tags::USERS, security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "User id (UUID)"),
        ("key_id" = String, Path, description = "Key id (UUID)"),
    ),
    responses((status = 204, description = "Removed"), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn delete_user_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Ids(id, key_id): Ids,
    ClientContext(ctx): ClientContext,
) -> ApiResult<StatusCode> {
    state.vault.delete_user_key(&auth.actor, &id, &key_id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Transfers everything the user owns (resources, accounts, resource groups, and with them the
/// approval of access requests) to another user (Manage users; the new owner must manage resources or passwords).
#[utoipa::path(post, path = "/api/v1/users/{id}/transfer", tag = tags::USERS, security(("bearer" = [])), request_body = postern_vault::TransferRequest,
    params(("id" = String, Path, description = "User id (UUID) of the current owner")),
    responses((status = 200, description = "What moved", body = postern_vault::TransferReport), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn transfer_ownership(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiJson(body): ApiJson<postern_vault::TransferRequest>,
) -> ApiResult<Json<postern_vault::TransferReport>> {
    Ok(Json(
        state.vault.transfer_ownership(&auth.actor, &id, body, &ctx).await?,
    ))
}

/// Exit report: every account the user could reach, how, whether they could see the password, and
/// when they last retrieved it (Manage users and View audit).
#[utoipa::path(get, path = "/api/v1/users/{id}/exit-report", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 200, description = "Reachable accounts", body = Vec<postern_vault::ExitEntry>), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn exit_report(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<postern_vault::ExitEntry>>> {
    Ok(Json(state.vault.exit_report(&auth.actor, &id, &ctx).await?))
}

/// Resets every password the user could see (the exit report's `could_see_password` accounts) in a
/// background job; follow it at `GET /api/v1/jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/users/{id}/reset-all", tag = tags::USERS, security(("bearer" = [])),
    params(("id" = String, Path, description = "User id (UUID)")),
    responses((status = 202, description = "Started", body = postern_vault::Job, headers(("Location" = String, description = "URL of the job"))),
        AuthErrors, ForbiddenError, NotFoundError))]
pub async fn reset_all(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Response> {
    let job = state.vault.reset_all_for_user(&auth.actor, &id, &ctx).await?;
    Ok(super::passwords::accepted(job))
}
