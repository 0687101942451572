//! Postern's web layer: the REST API (axum) over the vault, its OpenAPI
//! document, and TLS serving.
//!
//! * [`router`] builds the whole application (no TLS): `/api/v1/…` JSON
//!   routes, `/api/v1/openapi.json` (which documents every `/api/` route), and
//!   the `/healthz` probe (not part of the API document), and the web
//!   console ([`ui`], a single-page application embedded at build time) for
//!   every other path.
//! * [`auth`] authenticates API requests (Bearer token or browser session
//!   cookie + CSRF token, see [`websession`]) and applies the IP lists.
//! * [`load_tls`] and [`serve`] terminate TLS and run the accept loop with
//!   graceful shutdown.
//!
//! Every error is an RFC 9457 problem (`application/problem+json`, see
//! [`error::ApiError`]); every response carries the security headers
//! (HSTS, CSP, nosniff, no referrer) and `/api/` responses are `no-store`.
//! The only response that ever contains a vaulted secret is
//! `POST /api/v1/accounts/{id}/retrieve`.
//!
//! Live gateway sessions are reached only through [`LiveSessions`], which the
//! root binary implements over the gateway and sets with
//! [`AppState::with_live`]; this crate does not depend on the gateway.

#![warn(missing_docs)]

mod api;
pub mod auth;
pub mod error;
pub mod live;
pub mod rdp_tickets;
pub mod terminal;
mod tls;
pub mod ui;
pub mod websession;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Error};
/// A network in CIDR notation (re-exported for the configuration).
pub use ipnet::IpNet;
pub use live::{LiveSession, LiveSessions, NoLiveSessions, Watch, WatchEnd, WatchFeed, WatchNext};
pub use terminal::{NoTerminals, TerminalError, TerminalInput, TerminalIo, TerminalOutput, Terminals};
pub use tls::{load_tls, serve, HANDSHAKE_TIMEOUT};
pub use websession::{parse_network, IpRules, WebOptions, WebSessions};

/// Largest JSON request body.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The vault every handler goes through.
    pub vault: postern_vault::Vault,
    /// The gateway's live sessions ([`NoLiveSessions`] unless the root sets them).
    pub live: Arc<dyn LiveSessions>,
    /// The public key recordings are verified with (`None`: not configured, verification
    /// reports it).
    pub recording_key: Option<postern_recorder::VerifyingKey>,
    /// The browser terminal ([`NoTerminals`] unless the root sets it).
    pub terminals: Arc<dyn Terminals>,
    /// One-time RDP tickets ([`rdp_tickets::NoRdpTickets`] unless the root sets them).
    pub rdp_tickets: Arc<dyn rdp_tickets::RdpTicketIssuer>,
    /// Web settings and the browser sessions.
    pub web: Arc<WebState>,
    /// The server's effective settings, for `GET /api/v1/settings` (redacted by the root).
    pub settings: Arc<Vec<api::settings::Setting>>,
}

/// The web layer's own state: its settings and the browser sessions.
#[derive(Debug)]
pub struct WebState {
    /// Settings from `[web]`.
    pub options: WebOptions,
    /// Browser sessions (cookie + CSRF token).
    pub sessions: WebSessions,
}

impl WebState {
    fn new(options: WebOptions) -> Self {
        WebState {
            sessions: WebSessions::new(options.session_idle_timeout),
            options,
        }
    }
}

impl AppState {
    /// State over a vault, without a gateway ([`NoLiveSessions`]).
    pub fn new(vault: postern_vault::Vault) -> Self {
        AppState {
            vault,
            live: Arc::new(NoLiveSessions),
            recording_key: None,
            terminals: Arc::new(NoTerminals),
            rdp_tickets: Arc::new(rdp_tickets::NoRdpTickets),
            web: Arc::new(WebState::new(WebOptions::default())),
            settings: Arc::default(),
        }
    }

    /// The same state with these web settings (and a fresh browser-session table).
    pub fn with_options(self, options: WebOptions) -> Self {
        AppState {
            web: Arc::new(WebState::new(options)),
            ..self
        }
    }

    /// The same state, reaching live sessions through `live`.
    pub fn with_live(self, live: Arc<dyn LiveSessions>) -> Self {
        AppState { live, ..self }
    }

    /// The same state, verifying recordings with `key`.
    pub fn with_recording_key(self, key: postern_recorder::VerifyingKey) -> Self {
        AppState {
            recording_key: Some(key),
            ..self
        }
    }

    /// The same state, showing these effective settings (`(key, value)`, already redacted).
    pub fn with_settings(self, settings: Vec<(String, String)>) -> Self {
        let settings = settings
            .into_iter()
            .map(|(key, value)| api::settings::Setting { key, value })
            .collect();
        AppState {
            settings: Arc::new(settings),
            ..self
        }
    }

    /// The same state, issuing one-time RDP tickets through `tickets`.
    pub fn with_rdp_tickets(self, rdp_tickets: Arc<dyn rdp_tickets::RdpTicketIssuer>) -> Self {
        AppState { rdp_tickets, ..self }
    }

    /// The same state, opening browser terminals through `terminals`.
    pub fn with_terminals(self, terminals: Arc<dyn Terminals>) -> Self {
        AppState { terminals, ..self }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Postern API",
        description = "REST API of Postern, the privileged session gateway. Authenticate with \
                       `POST /api/v1/auth/login`, then send `Authorization: Bearer pst_…`. Browsers use \
                       `POST /api/v1/auth/web-login` instead: the token goes into an HttpOnly cookie and \
                       every state-changing request needs the `X-CSRF-Token` header it returns. Errors are RFC 9457 \
                       problem details (`application/problem+json`) whose `type` is `urn:postern:problem:<slug>`."
    ),
    modifiers(&BearerScheme),
    components(schemas(error::Problem, error::FieldError)),
    tags(
        (name = "auth", description = "Login, logout and the caller's own account"),
        (name = "users", description = "Postern users"),
        (name = "resources", description = "Resources (servers, devices, databases...)"),
        (name = "accounts", description = "Accounts on resources, and secret retrieval"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "import", description = "Bulk import"),
        (name = "sessions", description = "Live gateway sessions"),
        (name = "sharing", description = "Shares, user groups and resource groups"),
        (name = "access-requests", description = "Access requests: approval, check-out and check-in"),
        (name = "recordings", description = "Session recordings: catalog, verification, export and search"),
        (name = "meta", description = "The API description"),
    )
)]
struct ApiDoc;

/// Adds the `bearer` HTTP security scheme.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pst_…")
                    .description(Some("Token from POST /api/v1/auth/login"))
                    .build(),
            ),
        );
    }
}

/// The routes with their OpenAPI descriptions.
fn api_routes() -> OpenApiRouter<AppState> {
    use api::{
        access_requests, accounts, audit, auth, browser, import, passwords, rdp_ticket, recordings, resources, roles,
        sessions, shares, terminal, users,
    };
    let csv = OpenApiRouter::new()
        .routes(routes!(import::import_resources))
        .layer(DefaultBodyLimit::max(import::MAX_CSV_BYTES));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::openapi_json))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(browser::web_login))
        .routes(routes!(browser::current_session, browser::end_session))
        .routes(routes!(auth::me))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::totp_begin))
        .routes(routes!(auth::totp_confirm))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::update_user, users::delete_user))
        .routes(routes!(users::list_user_keys, users::add_user_key))
        .routes(routes!(users::delete_user_key))
        .routes(routes!(resources::list_resources, resources::create_resource))
        .routes(routes!(
            resources::get_resource,
            resources::update_resource,
            resources::delete_resource
        ))
        .routes(routes!(resources::forget_host_key))
        .routes(routes!(resources::list_accounts, resources::create_account))
        .routes(routes!(
            accounts::get_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(accounts::retrieve_secret))
        .routes(routes!(terminal::open_terminal))
        .routes(routes!(rdp_ticket::issue_rdp_ticket))
        .routes(routes!(audit::list_events))
        .routes(routes!(audit::verify))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::terminate_session))
        .routes(routes!(shares::list_shares, shares::create_share))
        .routes(routes!(shares::revoke_share))
        .routes(routes!(shares::list_user_groups, shares::create_user_group))
        .routes(routes!(shares::delete_user_group))
        .routes(routes!(shares::add_user_group_member, shares::remove_user_group_member))
        .routes(routes!(shares::list_resource_groups, shares::create_resource_group))
        .routes(routes!(shares::delete_resource_group))
        .routes(routes!(
            shares::add_resource_group_member,
            shares::remove_resource_group_member
        ))
        .routes(routes!(
            access_requests::list_access_requests,
            access_requests::create_access_request
        ))
        .routes(routes!(access_requests::approve))
        .routes(routes!(access_requests::deny))
        .routes(routes!(access_requests::checkout))
        .routes(routes!(access_requests::checkin))
        .routes(routes!(
            access_requests::get_access_policy,
            access_requests::set_access_policy
        ))
        .routes(routes!(roles::list_roles, roles::propose_role))
        .routes(routes!(roles::catalogue))
        .routes(routes!(roles::edit_role, roles::delete_role))
        .routes(routes!(roles::approve_role))
        .routes(routes!(roles::assign_role))
        .routes(routes!(passwords::list_policies, passwords::create_policy))
        .routes(routes!(passwords::set_account_policy))
        .routes(routes!(passwords::set_group_policy))
        .routes(routes!(passwords::reset_account))
        .routes(routes!(passwords::randomize_group))
        .routes(routes!(passwords::get_job))
        .routes(routes!(passwords::passwords_due))
        .routes(routes!(api::settings::list_settings))
        .routes(routes!(users::transfer_ownership))
        .routes(routes!(users::exit_report))
        .routes(routes!(users::reset_all))
        .routes(routes!(sessions::watch_session))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::search_recordings))
        .routes(routes!(recordings::get_recording))
        .routes(routes!(recordings::download_cast))
        .merge(csv)
}

/// The OpenAPI document of the API (the one served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The whole application, without TLS.
///
/// Layers, outermost first: a tracing span per request (method, path,
/// status; never bodies or headers), security headers and problem-details
/// for any error response that is not one yet, the 1 MiB JSON body limit,
/// bearer authentication of `/api/`.
pub fn router(state: AppState) -> axum::Router {
    let (routes, doc) = api_routes().split_for_parts();
    let doc_json = doc.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialize the OpenAPI document");
        "{}".to_owned()
    });
    routes
        .route("/healthz", axum::routing::get(api::healthz))
        .fallback(ui::fallback)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(Extension(api::OpenApiJson(Arc::from(doc_json))))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn(finish_response))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// The Content-Security-Policy of every response: scripts, styles, images,
/// fonts and connections (fetch, WebSocket) from this origin only; no inline
/// script or style, no JavaScript `eval`, no plugins, no framing, no `<base>`
/// tricks. `'wasm-unsafe-eval'` lets the recording player (asciinema-player)
/// compile its bundled WebAssembly terminal emulator; it does not allow
/// JavaScript `eval` or inline code.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
     img-src 'self'; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Adds the security headers, `Cache-Control: no-store` under `/api/`, and
/// turns any error response that is not a problem yet into one.
async fn finish_response(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == error::PROBLEM_CONTENT_TYPE.as_bytes());
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let (mut parts, _) = resp.into_parts();
        let problem = ApiError::from_status(status).into_response();
        let (pparts, body) = problem.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        for (name, value) in &pparts.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        resp = Response::from_parts(parts, body);
    }
    let h = resp.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if is_api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// One span per request: method and path (no query string, no headers, no body) and the final status.
async fn trace_request(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let start = Instant::now();
    async move {
        let resp = next.run(req).await;
        let status = resp.status().as_u16();
        tracing::Span::current().record("status", status);
        let elapsed_ms = start.elapsed().as_millis() as u64;
        if resp.status().is_server_error() {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status, elapsed_ms, "request");
        }
        resp
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_has_every_route_and_the_bearer_scheme() {
        let doc = openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let paths = json["paths"].as_object().unwrap();
        assert!(
            !paths.contains_key("/healthz"),
            "the health probe is not part of the API document"
        );
        for p in [
            "/api/v1/openapi.json",
            "/api/v1/auth/login",
            "/api/v1/auth/logout",
            "/api/v1/auth/web-login",
            "/api/v1/auth/session",
            "/api/v1/me",
            "/api/v1/me/password",
            "/api/v1/me/totp",
            "/api/v1/me/totp/confirm",
            "/api/v1/users",
            "/api/v1/users/{id}",
            "/api/v1/users/{id}/keys",
            "/api/v1/users/{id}/keys/{key_id}",
            "/api/v1/resources",
            "/api/v1/resources/{id}",
            "/api/v1/resources/{id}/accounts",
            "/api/v1/resources/{id}/host-key",
            "/api/v1/accounts/{id}",
            "/api/v1/accounts/{id}/retrieve",
            "/api/v1/import/resources",
            "/api/v1/audit",
            "/api/v1/audit/verify",
            "/api/v1/sessions",
            "/api/v1/sessions/{id}",
            "/api/v1/shares",
            "/api/v1/shares/{id}",
            "/api/v1/user-groups",
            "/api/v1/user-groups/{id}",
            "/api/v1/user-groups/{id}/members/{user_id}",
            "/api/v1/resource-groups",
            "/api/v1/resource-groups/{id}",
            "/api/v1/resource-groups/{id}/members/{resource_id}",
            "/api/v1/access-requests",
            "/api/v1/access-requests/{id}/approve",
            "/api/v1/access-requests/{id}/deny",
            "/api/v1/access-requests/{id}/checkout",
            "/api/v1/access-requests/{id}/checkin",
            "/api/v1/resources/{id}/access-policy",
            "/api/v1/roles",
            "/api/v1/roles/catalogue",
            "/api/v1/roles/{id}",
            "/api/v1/roles/{id}/approve",
            "/api/v1/roles/{id}/assign",
            "/api/v1/password-policies",
            "/api/v1/accounts/{id}/password-policy",
            "/api/v1/resource-groups/{id}/password-policy",
            "/api/v1/accounts/{id}/reset",
            "/api/v1/resource-groups/{id}/randomize",
            "/api/v1/users/{id}/transfer",
            "/api/v1/users/{id}/exit-report",
            "/api/v1/users/{id}/reset-all",
            "/api/v1/jobs/{id}",
            "/api/v1/sessions/{id}/watch",
            "/api/v1/recordings",
            "/api/v1/recordings/search",
            "/api/v1/recordings/{id}",
            "/api/v1/recordings/{id}/cast",
        ] {
            assert!(paths.contains_key(p), "missing {p}");
        }
        assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        for s in [
            "User",
            "Resource",
            "Account",
            "NewResource",
            "NewAccount",
            "UserPatch",
            "AuditEvent",
            "ImportReport",
            "Problem",
            "LoginResponse",
            "UserKey",
            "NewUserKey",
            "LiveSession",
            "TerminateRequest",
            "RecordingInfo",
            "RecordingDetails",
            "SearchResult",
        ] {
            assert!(json["components"]["schemas"].get(s).is_some(), "missing schema {s}");
        }
    }
}
