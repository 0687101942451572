//! CSV import (`/api/v1/import/resources`).

use axum::extract::{Request, State};
use axum::http::header;
use axum::Json;
use postern_vault::ImportReport;

use super::{body_bytes, tags};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, ForbiddenError};
use crate::AppState;

/// Largest CSV body accepted.
pub const MAX_CSV_BYTES: usize = 10 * 1024 * 1024;

/// Imports resources and accounts from CSV (`Content-Type: text/csv`, at most
/// 10 MiB). The header names the columns (`name`, `type`, `host`, `port`,
/// `account`, `password`, `private_key`, `description`, `notes`); each row is
/// imported on its own and bad rows are reported with their line number. A
/// header that cannot be used is a 400 problem and nothing is imported.
#[utoipa::path(post, path = "/api/v1/import/resources", tag = tags::IMPORT, security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv", description = "CSV with a header line"),
    responses(
        (status = 200, description = "What was imported, and the rows that were not", body = ImportReport),
        (status = 400, description = "Unusable CSV header (`invalid-csv`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 10 MiB", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not text/csv", body = crate::error::Problem, content_type = "application/problem+json"),
        AuthErrors, ForbiddenError,
    ))]
pub async fn import_resources(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    req: Request,
) -> ApiResult<Json<ImportReport>> {
    let is_csv = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/csv"));
    if !is_csv {
        return Err(ApiError::unsupported_media_type(
            "the body must be CSV (Content-Type: text/csv)",
        ));
    }
    let data = body_bytes(req, &()).await?;
    Ok(Json(state.vault.import_resources_csv(&auth.actor, &data, &ctx).await?))
}
