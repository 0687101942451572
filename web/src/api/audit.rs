//! The audit trail (`/api/v1/audit`).

use axum::extract::State;
use axum::Json;
use postern_vault::{AuditEvent, AuditFilter, AuditVerification};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{tags, ApiQuery};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiResult, AuthErrors, ForbiddenError, ValidationError};
use crate::AppState;

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Actor name equals.
    pub actor: Option<String>,
    /// Action equals, or starts with it when it ends in `.` (e.g. `account.`).
    pub action: Option<String>,
    /// Object id equals.
    pub object_id: Option<String>,
    /// Outcome: `success`, `denied` or `failure`.
    pub outcome: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// Before (RFC 3339).
    pub until: Option<String>,
    /// Max events (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events with a sequence number below this (paging backwards).
    pub before_seq: Option<i64>,
}

impl From<AuditQuery> for AuditFilter {
    fn from(q: AuditQuery) -> Self {
        AuditFilter {
            actor: q.actor,
            action: q.action,
            object_id: q.object_id,
            outcome: q.outcome,
            since: q.since,
            until: q.until,
            limit: q.limit,
            before_seq: q.before_seq,
        }
    }
}

/// Lists audit events, newest first (needs the View audit operation).
#[utoipa::path(get, path = "/api/v1/audit", tag = tags::AUDIT, security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "Events, newest first", body = Vec<AuditEvent>), AuthErrors, ForbiddenError, ValidationError))]
pub async fn list_events(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    Ok(Json(state.vault.audit_events(&auth.actor, &q.into(), &ctx).await?))
}

/// Walks the hash chain of the audit trail and reports the first broken link (needs the View audit operation).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = tags::AUDIT, security(("bearer" = [])),
    responses((status = 200, description = "Result of the walk", body = AuditVerification), AuthErrors, ForbiddenError))]
pub async fn verify(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<AuditVerification>> {
    // `verify_audit` does not authorize: reading one event enforces (and audits a refusal of) View audit.
    let probe = AuditFilter {
        limit: Some(1),
        ..AuditFilter::default()
    };
    state.vault.audit_events(&auth.actor, &probe, &ctx).await?;
    Ok(Json(state.vault.verify_audit().await?))
}
