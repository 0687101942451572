//! The server's effective settings (`GET /api/v1/settings`), read-only: they
//! come from the configuration file, the environment and the command line
//! (`postern check` prints the same). Values that may carry credentials are
//! redacted by the root before they reach the web.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::tags;
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, ForbiddenError};
use crate::AppState;

/// One configuration key and its effective value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Setting {
    /// Dotted key (`ssh.idle_timeout`).
    pub key: String,
    /// Effective value, as TOML (credentials in URLs redacted).
    pub value: String,
}

/// The effective settings (needs the Settings operation). Changing them means
/// editing the configuration and restarting; `postern check` validates a file.
#[utoipa::path(get, path = "/api/v1/settings", tag = tags::META, security(("bearer" = [])),
    responses((status = 200, description = "Effective settings", body = Vec<Setting>), AuthErrors, ForbiddenError))]
pub async fn list_settings(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<Setting>>> {
    state.vault.require_settings_view(&auth.actor, &ctx).await?;
    Ok(Json(state.settings.as_ref().clone()))
}
