//! Live gateway sessions (`/api/v1/sessions`): listing and termination,
//! through the [`LiveSessions`](crate::LiveSessions) the root wires in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, ForbiddenError, NotFoundError};
use crate::{AppState, LiveSession};

/// Longest termination reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A request to end a live session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    /// Why the session is ended (required, at most 500 characters; shown to the
    /// session's user and recorded in the audit trail).
    pub reason: String,
}

/// Lists the live gateway sessions (needs the View audit operation).
#[utoipa::path(get, path = "/api/v1/sessions", tag = tags::SESSIONS, security(("bearer" = [])),
    responses((status = 200, description = "Live sessions", body = Vec<LiveSession>), AuthErrors, ForbiddenError))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<Vec<LiveSession>>> {
    state.vault.require_session_oversight(&auth.actor, false, &ctx).await?;
    Ok(Json(state.live.list()))
}

/// Ends a live gateway session (needs the Session control operation). The
/// reason is shown to the session's user and recorded in the audit trail.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = tags::SESSIONS, security(("bearer" = [])), request_body = TerminateRequest,
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses((status = 204, description = "Terminated"), AuthErrors, ForbiddenError, NotFoundError, BodyErrors))]
pub async fn terminate_session(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(mut ctx): ClientContext,
    ApiJson(body): ApiJson<TerminateRequest>,
) -> ApiResult<StatusCode> {
    state.vault.require_session_oversight(&auth.actor, true, &ctx).await?;
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::validation(
            "reason",
            "is required: say why the session is ended",
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::validation(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    let not_live = || ApiError::not_found("session not found (it is not live)");
    let target = state
        .live
        .list()
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| s.target)
        .ok_or_else(not_live)?;
    if !state.live.terminate(&id, &auth.actor.username, reason) {
        return Err(not_live());
    }
    ctx.reason = Some(reason.to_owned());
    state
        .vault
        .audit_gateway(
            &auth.actor,
            "session.terminate",
            Some((&id, &target)),
            false,
            format!("terminated: {reason}"),
            &ctx,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
