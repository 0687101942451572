//! Errors: the crate's [`Error`] (startup and serving) and [`ApiError`], the
//! RFC 9457 problem details every failed API request answers with.
//!
//! Vault errors are mapped in one place ([`From<postern_vault::Error>`]).
//! Internal errors (database, master key, tampering, bugs) are logged with
//! `tracing::error!` and answered with a generic 500: no database or internal
//! text ever reaches a client.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::ToSchema;

/// Errors of the web crate outside request handling: loading the TLS
/// material and serving the listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS certificate file could not be read or parsed.
    #[error("TLS certificate file {path}: {source}")]
    TlsCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS certificate file holds no PEM certificate.
    #[error("TLS certificate file {path} contains no PEM certificate")]
    TlsNoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The TLS private key file could not be read or parsed.
    #[error("TLS private key file {path}: {source}")]
    TlsKey {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS private key file holds no PEM private key.
    #[error("TLS private key file {path} contains no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    TlsNoKey {
        /// The key file.
        path: PathBuf,
    },
    /// rustls refused the certificate/key pair (key does not match, unsupported key type...).
    #[error("TLS certificate {cert} with key {key}: {source}")]
    TlsConfig {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The underlying error.
        source: rustls::Error,
    },
    /// I/O error of the listener.
    #[error("web listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Prefix of every problem `type` URI; the suffix is a stable slug such as
/// `totp-required` or `password-change-required`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:postern:problem:";

/// Media type of problem details (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field (JSON path for body errors, e.g. `extra.os`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem details document, as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// Problem type URI: `urn:postern:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence.
    pub detail: String,
    /// The offending field, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Field errors, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// A failed API request; renders as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    field: Option<String>,
}

impl ApiError {
    /// A problem with the given status, type slug, title and detail.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            slug,
            title,
            detail: detail.into(),
            field: None,
        }
    }

    /// 401 for a missing, malformed, unknown or expired bearer token.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Authentication required",
            detail,
        )
    }

    /// 401 for failed password (or TOTP) authentication.
    pub fn authentication_failed() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication-failed",
            "Authentication failed",
            "the user name, password or TOTP code is wrong, or the account is disabled or locked",
        )
    }

    /// 403 until the actor has changed their password.
    pub fn password_change_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "password-change-required",
            "Password change required",
            "change your password (POST /api/v1/me/password) before doing anything else",
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 400 for a syntactically broken request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    /// 415.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    /// 422 for a field that fails validation.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let detail = if field.is_empty() {
            message
        } else {
            format!("invalid {field}: {message}")
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            slug: "validation-error",
            title: "Invalid request",
            detail,
            field: Some(field).filter(|f| !f.is_empty()),
        }
    }

    /// 500 with a generic detail. Log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal server error",
            "the server could not complete the request; the error has been logged",
        )
    }

    /// A generic problem for a bare status code (used for responses that are
    /// not problems yet, e.g. axum's 405).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method-not-allowed",
                "Method not allowed",
                "this method is not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload-too-large",
                "Payload too large",
                "the request body is too large",
            ),
            StatusCode::UNAUTHORIZED => Self::invalid_token("a valid bearer token is required"),
            s if s.is_server_error() => ApiError {
                status: s,
                ..Self::internal()
            },
            s => Self::new(
                s,
                "http-error",
                "Request failed",
                s.canonical_reason().unwrap_or("request failed"),
            ),
        }
    }

    /// Renames the problem's field (e.g. the vault's `password` is the API's `new_password`).
    pub fn rename_field(mut self, from: &str, to: &str) -> Self {
        if self.field.as_deref() == Some(from) {
            self.field = Some(to.to_owned());
            if let Some(rest) = self.detail.strip_prefix(&format!("invalid {from}:")) {
                self.detail = format!("invalid {to}:{rest}");
            }
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The type slug (the part after [`PROBLEM_TYPE_PREFIX`]).
    pub fn slug(&self) -> &'static str {
        self.slug
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("{PROBLEM_TYPE_PREFIX}{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            errors: self
                .field
                .iter()
                .map(|f| FieldError {
                    field: f.clone(),
                    message: self.detail.clone(),
                })
                .collect(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            let v = if self.slug == "invalid-token" {
                "Bearer error=\"invalid_token\""
            } else {
                "Bearer"
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

impl From<postern_vault::Error> for ApiError {
    fn from(e: postern_vault::Error) -> Self {
        use postern_vault::Error as V;
        match e {
            V::AuthenticationFailed => ApiError::authentication_failed(),
            V::InvalidToken => ApiError::invalid_token("the bearer token is invalid, expired or revoked"),
            V::TotpRequired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp-required",
                "TOTP code required",
                "this user has two-factor authentication enabled: send the current code in `totp`",
            ),
            V::PasswordChangeRequired => ApiError::password_change_required(),
            V::Forbidden { reason } => ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", reason),
            V::NotFound { kind } => ApiError::not_found(format!("{kind} not found")),
            V::Invalid { field, message } => ApiError::validation(field, message),
            V::Conflict { message } => ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", message),
            e @ V::InvalidTransition { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid-transition",
                "Invalid transition",
                e.to_string(),
            ),
            e @ V::Reset { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "reset-failed",
                "Password reset failed",
                e.to_string(),
            ),
            V::Csv(message) => ApiError::new(StatusCode::BAD_REQUEST, "invalid-csv", "Unusable CSV input", message),
            other => {
                tracing::error!(error = %other, "request failed with an internal error");
                ApiError::internal()
            }
        }
    }
}

/// Result of an API handler.
pub type ApiResult<T> = Result<T, ApiError>;

// ---- OpenAPI: reusable problem responses ------------------------------------

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $($status:literal : $desc:literal),+ ;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                    BTreeMap::from([$(($status.to_string(), problem_response($desc))),+])
                }
            }
        )*
    };
}

problem_responses! {
    /// 401 and 500 problems (every authenticated route).
    AuthErrors => "401": "Missing, invalid or expired bearer token", "500": "Internal error (details are logged, never returned)";
    /// 403 problems.
    ForbiddenError => "403": "Forbidden, or the password must be changed first (`password-change-required`)";
    /// 404 problems.
    NotFoundError => "404": "No such object, or not visible to the caller";
    /// 400, 413, 415 and 422 problems of a JSON body.
    BodyErrors => "400": "Malformed JSON", "413": "Body too large", "415": "Content-Type is not application/json", "422": "Validation failed (unknown field, wrong type, invalid value); `field` names it";
    /// 422 problems of a query string or a body-less request.
    ValidationError => "422": "Validation failed; `field` names it";
    /// 409 problems.
    ConflictError => "409": "Conflicts with stored state (duplicate name, still in use...)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_vault::Error as V;

    #[test]
    fn vault_errors_map_to_statuses_and_stable_types() {
        let cases: Vec<(V, u16, &str)> = vec![
            (V::AuthenticationFailed, 401, "authentication-failed"),
            (V::InvalidToken, 401, "invalid-token"),
            (V::TotpRequired, 401, "totp-required"),
            (V::PasswordChangeRequired, 403, "password-change-required"),
            (V::Forbidden { reason: "nope" }, 403, "forbidden"),
            (V::NotFound { kind: "user" }, 404, "not-found"),
            (
                V::Invalid {
                    field: "port",
                    message: "bad".into(),
                },
                422,
                "validation-error",
            ),
            (V::Conflict { message: "dup".into() }, 409, "conflict"),
            (V::Csv("header".into()), 400, "invalid-csv"),
            (V::Internal("SELECT secret FROM x".into()), 500, "internal-error"),
            (
                V::Corrupt {
                    table: "users",
                    id: "1".into(),
                    detail: "db text".into(),
                },
                500,
                "internal-error",
            ),
            (
                V::Tampered {
                    owner: "account:x".into(),
                },
                500,
                "internal-error",
            ),
        ];
        for (e, status, slug) in cases {
            let a = ApiError::from(e);
            let p = a.problem();
            assert_eq!(p.status, status, "{p:?}");
            assert_eq!(p.type_uri, format!("{PROBLEM_TYPE_PREFIX}{slug}"));
            assert!(p.type_uri.ends_with(slug));
            if status == 500 {
                assert!(
                    !p.detail.contains("SELECT") && !p.detail.contains("db text") && !p.detail.contains("account:x")
                );
            }
        }
    }

    #[test]
    fn validation_problem_has_field_and_errors() {
        let p = ApiError::from(V::Invalid {
            field: "password",
            message: "too short".into(),
        })
        .rename_field("password", "new_password")
        .problem();
        assert_eq!(p.field.as_deref(), Some("new_password"));
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].field, "new_password");
        assert_eq!(p.detail, "invalid new_password: too short");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:postern:problem:validation-error");
        assert_eq!(v["status"], 422);
    }

    #[test]
    fn response_is_problem_json_with_www_authenticate_on_401() {
        let r = ApiError::invalid_token("x").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let r = ApiError::not_found("x").into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn tls_errors_name_the_file() {
        let e = Error::TlsNoKey {
            path: PathBuf::from("/etc/postern/key.pem"),
        };
        assert!(e.to_string().contains("/etc/postern/key.pem"));
    }
}
