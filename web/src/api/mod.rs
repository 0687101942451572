//! The REST API handlers, and the extractors they share.
//!
//! Extractors reject with problem details (never axum's plain-text defaults):
//! [`ApiJson`] for JSON bodies, [`ApiQuery`] for query strings, [`Id`] (one)
//! and [`Ids`] (two) for UUID path parameters (anything else is a 404).

pub mod access_requests;
pub mod accounts;
pub mod audit;
pub mod auth;
pub mod browser;
pub mod import;
pub mod passwords;
pub mod rdp_ticket;
pub mod recordings;
pub mod resources;
pub mod roles;
pub mod sessions;
pub mod settings;
pub mod shares;
pub mod terminal;
pub mod users;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Tag names of the OpenAPI document.
pub(crate) mod tags {
    pub const AUTH: &str = "auth";
    pub const USERS: &str = "users";
    pub const RESOURCES: &str = "resources";
    pub const ACCOUNTS: &str = "accounts";
    pub const AUDIT: &str = "audit";
    pub const IMPORT: &str = "import";
    pub const SESSIONS: &str = "sessions";
    pub const SHARING: &str = "sharing";
    pub const ACCESS: &str = "access-requests";
    pub const RECORDINGS: &str = "recordings";
    pub const META: &str = "meta";
}

/// A JSON request body, deserialized strictly; every rejection is a problem:
/// wrong or missing `Content-Type` → 415, unreadable or too large body →
/// 400/413, malformed JSON → 400, wrong shape (unknown or missing field,
/// wrong type) → 422 with the JSON path in `field`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// True for `application/json` and `application/*+json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A serde message without the input values it may quote (`invalid type:
/// string "…"` would otherwise reflect whatever the client sent, secrets included).
fn sanitize_serde_message(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let kind = found.split([' ', '`', '"']).next().unwrap_or("value");
            return if expected.is_empty() {
                format!("{prefix}{kind}")
            } else {
                format!("{prefix}{kind}, expected {expected}")
            };
        }
    }
    msg.to_owned()
}

/// Reads the body as bytes, mapping rejections (size limit, broken stream) to problems.
pub(crate) async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    })
}

/// Parses JSON bytes strictly (see [`ApiJson`]).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                ApiError::validation(field, sanitize_serde_message(&inner.to_string()))
            }
            _ => ApiError::bad_request(format!(
                "malformed JSON at line {} column {}",
                inner.line(),
                inner.column()
            )),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!(
            "trailing characters after the JSON value at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type(
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Query-string parameters; rejections are 422 problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => {
                let text = r.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(ApiError::validation(
                    "",
                    format!("query string: {}", sanitize_serde_message(text)),
                ))
            }
        }
    }
}

/// A UUID path parameter (`{id}`), normalized to lowercase hyphenated form.
/// Anything that is not a UUID is answered with 404, like a missing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::not_found("no such object");
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        let id = uuid::Uuid::try_parse(&raw).map_err(|_| not_found())?;
        Ok(Id(id.hyphenated().to_string()))
    }
}

/// Two UUID path parameters (`/…/{id}/…/{key_id}`), in path order, each
/// normalized like [`Id`]; anything that is not a UUID is answered with 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::not_found("no such object");
        let Path((a, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        let parse = |raw: &str| {
            uuid::Uuid::try_parse(raw)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| not_found())
        };
        Ok(Ids(parse(&a)?, parse(&b)?))
    }
}

/// `201 Created` with a `Location` header and a JSON body.
pub(crate) fn created<T: serde::Serialize>(location: String, body: T) -> Response {
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Fallback for unknown routes: 404 problem.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

/// Fallback for a known path with the wrong method: 405 problem.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Liveness probe (`GET /healthz`, no token, plain `ok`); not in the API document.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The OpenAPI document, serialized once when the router is built.
#[derive(Debug, Clone)]
pub(crate) struct OpenApiJson(pub Arc<str>);

/// This API's OpenAPI 3 document (public metadata: no token needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = tags::META,
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        doc.0.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        port: Option<u16>,
    }

    #[test]
    fn json_errors_are_classified_and_do_not_echo_values() {
        let e = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = parse_json::<Body>(b"{\"name\": \"a\", \"bogus\": 1}").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.problem().field.as_deref(), Some("bogus"));
        let e = parse_json::<Body>(b"{\"name\": \"a\", \"port\": \"CANARY-123\"}").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let p = e.problem();
        assert_eq!(p.field.as_deref(), Some("port"));
        assert!(!p.detail.contains("CANARY"), "{}", p.detail);
        assert!(p.detail.contains("invalid type: string"), "{}", p.detail);
        let e = parse_json::<Body>(b"{\"port\": 1}").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.problem().detail.contains("missing field `name`"), "{:?}", e.problem());
        let e = parse_json::<Body>(b"{\"name\": \"a\"} x").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(parse_json::<Body>(b" {\"name\": \"a\"} \n").is_ok());
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("text/csv", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
