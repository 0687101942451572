//! End-to-end tests of the REST API over a temporary vault, driving the router
//! directly (no TLS, no socket).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use postern_vault::{AuthPolicy, Vault, VaultOptions};
use postern_web::{router, AppState, LiveSession, LiveSessions};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Env {
    app: Router,
    admin_password: String,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(AppState::new).await
}

/// An environment whose state is made by `state` from the vault.
async fn env_with(state: impl FnOnce(Vault) -> AppState) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = Vault::open(VaultOptions {
        database_url: format!("sqlite://{}/v.db", dir.path().display()),
        master_key_file: dir.path().join("master.key"),
        auth: AuthPolicy::default(),
        initial_admin_password_file: None,
    })
    .await
    .unwrap();
    let admin = vault.bootstrap_admin().await.unwrap().unwrap();
    Env {
        app: router(state(vault)),
        admin_password: admin.password.expose().to_owned(),
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    /// Asserts a problem-details response with this status and type slug.
    fn assert_problem(&self, status: u16, slug: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.content_type(), "application/problem+json", "{}", self.text);
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].as_str().unwrap().ends_with(slug), "{p}");
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        p
    }
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    let resp = app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    Resp {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Resp {
    match body {
        Some(v) => {
            send(
                app,
                method,
                uri,
                token,
                Some("application/json"),
                serde_json::to_vec(&v).unwrap(),
            )
            .await
        }
        None => send(app, method, uri, token, None, Vec::new()).await,
    }
}

async fn login(app: &Router, username: &str, password: &str) -> Value {
    let r = call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

/// Logs in as admin, changes the generated password, logs in again; returns the token.
async fn admin_token(e: &Env) -> String {
    let v = login(&e.app, "admin", &e.admin_password).await;
    let t = v["token"].as_str().unwrap().to_owned();
    let r = call(
        &e.app,
        Method::POST,
        "/api/v1/me/password",
        Some(&t),
        Some(json!({"current_password": e.admin_password, "new_password": "correct horse battery staple"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    login(&e.app, "admin", "correct horse battery staple").await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn canary() -> String {
    format!("CANARY-{}", uuid::Uuid::new_v4().simple())
}

/// Every (method, path) the API serves (besides the `/healthz` probe).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/web-login"),
    ("GET", "/api/v1/auth/session"),
    ("DELETE", "/api/v1/auth/session"),
    ("GET", "/api/v1/me"),
    ("POST", "/api/v1/me/password"),
    ("POST", "/api/v1/me/totp"),
    ("POST", "/api/v1/me/totp/confirm"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/{id}"),
    ("PATCH", "/api/v1/users/{id}"),
    ("DELETE", "/api/v1/users/{id}"),
    ("GET", "/api/v1/users/{id}/keys"),
    ("POST", "/api/v1/users/{id}/keys"),
    ("DELETE", "/api/v1/users/{id}/keys/{key_id}"),
    ("GET", "/api/v1/resources"),
    ("POST", "/api/v1/resources"),
    ("GET", "/api/v1/resources/{id}"),
    ("PATCH", "/api/v1/resources/{id}"),
    ("DELETE", "/api/v1/resources/{id}"),
    ("GET", "/api/v1/resources/{id}/accounts"),
    ("POST", "/api/v1/resources/{id}/accounts"),
    ("DELETE", "/api/v1/resources/{id}/host-key"),
    ("GET", "/api/v1/accounts/{id}"),
    ("PATCH", "/api/v1/accounts/{id}"),
    ("DELETE", "/api/v1/accounts/{id}"),
    ("POST", "/api/v1/accounts/{id}/retrieve"),
    ("GET", "/api/v1/accounts/{id}/terminal"),
    ("POST", "/api/v1/import/resources"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/sessions"),
    ("DELETE", "/api/v1/sessions/{id}"),
    ("GET", "/api/v1/shares"),
    ("POST", "/api/v1/shares"),
    ("DELETE", "/api/v1/shares/{id}"),
    ("GET", "/api/v1/user-groups"),
    ("POST", "/api/v1/user-groups"),
    ("DELETE", "/api/v1/user-groups/{id}"),
    ("POST", "/api/v1/user-groups/{id}/members/{user_id}"),
    ("DELETE", "/api/v1/user-groups/{id}/members/{user_id}"),
    ("GET", "/api/v1/resource-groups"),
    ("POST", "/api/v1/resource-groups"),
    ("DELETE", "/api/v1/resource-groups/{id}"),
    ("POST", "/api/v1/resource-groups/{id}/members/{resource_id}"),
    ("DELETE", "/api/v1/resource-groups/{id}/members/{resource_id}"),
    ("GET", "/api/v1/access-requests"),
    ("POST", "/api/v1/access-requests"),
    ("POST", "/api/v1/access-requests/{id}/approve"),
    ("POST", "/api/v1/access-requests/{id}/deny"),
    ("POST", "/api/v1/access-requests/{id}/checkout"),
    ("POST", "/api/v1/access-requests/{id}/checkin"),
    ("GET", "/api/v1/resources/{id}/access-policy"),
    ("PUT", "/api/v1/resources/{id}/access-policy"),
    ("GET", "/api/v1/roles"),
    ("POST", "/api/v1/roles"),
    ("GET", "/api/v1/roles/catalogue"),
    ("PUT", "/api/v1/roles/{id}"),
    ("DELETE", "/api/v1/roles/{id}"),
    ("POST", "/api/v1/roles/{id}/approve"),
    ("POST", "/api/v1/roles/{id}/assign"),
    ("GET", "/api/v1/password-policies"),
    ("POST", "/api/v1/password-policies"),
    ("GET", "/api/v1/passwords/due"),
    ("GET", "/api/v1/settings"),
    ("PUT", "/api/v1/accounts/{id}/password-policy"),
    ("PUT", "/api/v1/resource-groups/{id}/password-policy"),
    ("POST", "/api/v1/accounts/{id}/rdp-ticket"),
    ("POST", "/api/v1/accounts/{id}/reset"),
    ("POST", "/api/v1/resource-groups/{id}/randomize"),
    ("POST", "/api/v1/users/{id}/transfer"),
    ("GET", "/api/v1/users/{id}/exit-report"),
    ("POST", "/api/v1/users/{id}/reset-all"),
    ("GET", "/api/v1/jobs/{id}"),
    ("GET", "/api/v1/sessions/{id}/watch"),
    ("GET", "/api/v1/recordings"),
    ("GET", "/api/v1/recordings/search"),
    ("GET", "/api/v1/recordings/{id}"),
    ("GET", "/api/v1/recordings/{id}/cast"),
];

const PUBLIC: &[&str] = &["/api/v1/openapi.json", "/api/v1/auth/login", "/api/v1/auth/web-login"];

#[tokio::test]
async fn first_admin_must_change_password_then_manages_and_secrets_never_leak() {
    let e = env().await;
    let app = &e.app;
    let mut bodies: Vec<String> = Vec::new();

    // First login: the generated password must be changed.
    let v = login(app, "admin", &e.admin_password).await;
    assert_eq!(v["must_change_password"], true);
    assert_eq!(v["user"]["username"], "admin");
    assert_eq!(v["user"]["role"], "privileged_administrator");
    assert!(v["expires_at"].is_string());
    let first = v["token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("pst_"));

    let r = call(app, Method::GET, "/api/v1/me", Some(&first), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["must_change_password"], true);
    call(app, Method::GET, "/api/v1/users", Some(&first), None)
        .await
        .assert_problem(403, "password-change-required");
    call(app, Method::GET, "/api/v1/resources", Some(&first), None)
        .await
        .assert_problem(403, "password-change-required");
    call(app, Method::POST, "/api/v1/me/totp", Some(&first), None)
        .await
        .assert_problem(403, "password-change-required");
    let p = call(
        app,
        Method::POST,
        "/api/v1/me/password",
        Some(&first),
        Some(json!({"current_password": e.admin_password, "new_password": "short"})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "new_password");
    let p = call(
        app,
        Method::POST,
        "/api/v1/me/password",
        Some(&first),
        Some(json!({"current_password": "not the password", "new_password": "correct horse battery staple"})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "current_password");
    let r = call(
        app,
        Method::POST,
        "/api/v1/me/password",
        Some(&first),
        Some(json!({"current_password": e.admin_password, "new_password": "correct horse battery staple"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // The vault ends every login session on a password change.
    call(app, Method::GET, "/api/v1/me", Some(&first), None)
        .await
        .assert_problem(401, "invalid-token");
    call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": e.admin_password})),
    )
    .await
    .assert_problem(401, "authentication-failed");
    let v = login(app, "admin", "correct horse battery staple").await;
    assert_eq!(v["must_change_password"], false);
    let t = v["token"].as_str().unwrap().to_owned();
    let tok = Some(t.as_str());

    // Users.
    let user_canary = canary();
    let r = call(
        app,
        Method::POST,
        "/api/v1/users",
        tok,
        Some(json!({"username": "alice", "role": "password_user", "password": user_canary, "email": "alice@example.org"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let alice = r.json();
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers[header::LOCATION], format!("/api/v1/users/{alice_id}"));
    assert_eq!(alice["must_change_password"], true);
    bodies.push(r.text);
    call(
        app,
        Method::POST,
        "/api/v1/users",
        tok,
        Some(json!({"username": "alice", "role": "password_user"})),
    )
    .await
    .assert_problem(409, "conflict");
    let p = call(
        app,
        Method::POST,
        "/api/v1/users",
        tok,
        Some(json!({"username": "bob", "role": "root"})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "role");
    let r = call(app, Method::GET, "/api/v1/users", tok, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    bodies.push(r.text);
    let r = call(
        app,
        Method::PATCH,
        &format!("/api/v1/users/{alice_id}"),
        tok,
        Some(json!({"email": "a@example.org"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["email"], "a@example.org");
    bodies.push(r.text);
    let r = call(
        app,
        Method::GET,
        &format!("/api/v1/users/{}", alice_id.to_uppercase()),
        tok,
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "an upper-case UUID is the same id: {}",
        r.text
    );
    bodies.push(r.text);

    // Resources and accounts.
    let r = call(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some(json!({"name": "web1", "type": "linux", "host": "10.0.0.1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let res = r.json();
    let res_id = res["id"].as_str().unwrap().to_owned();
    assert_eq!(res["port"], 22);
    assert_eq!(r.headers[header::LOCATION], format!("/api/v1/resources/{res_id}"));
    bodies.push(r.text);
    let p = call(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some(json!({"name": "web2", "type": "linux", "host": "bad host!"})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "host");
    assert_eq!(p["errors"][0]["field"], "host");

    let secret = canary();
    let r = call(
        app,
        Method::POST,
        &format!("/api/v1/resources/{res_id}/accounts"),
        tok,
        Some(json!({"login": "root", "password": secret, "notes": "break glass"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let acc = r.json();
    let acc_id = acc["id"].as_str().unwrap().to_owned();
    assert_eq!(acc["has_password"], true);
    assert_eq!(r.headers[header::LOCATION], format!("/api/v1/accounts/{acc_id}"));
    bodies.push(r.text);

    for uri in [
        "/api/v1/resources".to_owned(),
        format!("/api/v1/resources/{res_id}"),
        format!("/api/v1/resources/{res_id}/accounts"),
        format!("/api/v1/accounts/{acc_id}"),
        "/api/v1/me".to_owned(),
        "/api/v1/users".to_owned(),
        "/api/v1/openapi.json".to_owned(),
    ] {
        let r = call(app, Method::GET, &uri, tok, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
        bodies.push(r.text);
    }
    let r = call(
        app,
        Method::PATCH,
        &format!("/api/v1/resources/{res_id}"),
        tok,
        Some(json!({"description": "front end"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    bodies.push(r.text);
    let r = call(
        app,
        Method::PATCH,
        &format!("/api/v1/accounts/{acc_id}"),
        tok,
        Some(json!({"notes": "rotated"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    bodies.push(r.text);

    // Retrieval: needs a reason; the one response with the secret.
    let p = call(
        app,
        Method::POST,
        &format!("/api/v1/accounts/{acc_id}/retrieve"),
        tok,
        Some(json!({"reason": "  "})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "reason");
    call(
        app,
        Method::POST,
        &format!("/api/v1/accounts/{acc_id}/retrieve"),
        tok,
        Some(json!({})),
    )
    .await
    .assert_problem(422, "validation-error");
    call(
        app,
        Method::POST,
        &format!("/api/v1/accounts/{acc_id}/retrieve"),
        tok,
        Some(json!({"reason": "incident 42", "kind": "private_key"})),
    )
    .await
    .assert_problem(404, "not-found");
    let r = call(
        app,
        Method::POST,
        &format!("/api/v1/accounts/{acc_id}/retrieve"),
        tok,
        Some(json!({"reason": "incident 42"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({"password": secret}));
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    // Audit: the retrieval is recorded with its reason; the chain verifies.
    let r = call(
        app,
        Method::GET,
        "/api/v1/audit?action=account.retrieve&limit=10",
        tok,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let events = r.json();
    let events = events.as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|ev| ev["reason"] == "incident 42" && ev["outcome"] == "success"),
        "{events:?}"
    );
    bodies.push(r.text);
    let r = call(app, Method::GET, "/api/v1/audit?limit=1000", tok, None).await;
    assert_eq!(r.status, StatusCode::OK);
    bodies.push(r.text);
    call(app, Method::GET, "/api/v1/audit?limit=lots", tok, None)
        .await
        .assert_problem(422, "validation-error");
    call(app, Method::GET, "/api/v1/audit?bogus=1", tok, None)
        .await
        .assert_problem(422, "validation-error");
    let p = call(app, Method::GET, "/api/v1/audit?since=yesterday", tok, None)
        .await
        .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "since");
    let r = call(app, Method::GET, "/api/v1/audit/verify", tok, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ver = r.json();
    assert!(ver["events"].as_u64().unwrap() > 5, "{ver}");
    assert!(ver["first_broken"].is_null(), "{ver}");
    bodies.push(r.text);

    // CSV import.
    let csv_secret = canary();
    let csv =
        format!("name,type,host,account,password\ndb1,linux,10.0.0.2,postgres,{csv_secret}\nbad,toaster,10.0.0.3,,\n");
    let r = send(
        app,
        Method::POST,
        "/api/v1/import/resources",
        tok,
        Some("text/csv; charset=utf-8"),
        csv.into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rep = r.json();
    assert_eq!(rep["rows"], 2);
    assert_eq!(rep["resources_created"], 1);
    assert_eq!(rep["accounts_created"], 1);
    assert_eq!(rep["errors"][0]["line"], 3);
    assert_eq!(rep["errors"][0]["field"], "type");
    assert!(!r.text.contains(&csv_secret));
    send(
        app,
        Method::POST,
        "/api/v1/import/resources",
        tok,
        Some("text/csv"),
        b"colour,shape\nred,round\n".to_vec(),
    )
    .await
    .assert_problem(400, "invalid-csv");
    send(
        app,
        Method::POST,
        "/api/v1/import/resources",
        tok,
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    let r = call(app, Method::GET, "/api/v1/resources", tok, None).await;
    assert!(!r.text.contains(&csv_secret));
    bodies.push(r.text);

    // No response but the retrieval ever carried a secret.
    for b in &bodies {
        for c in [&secret, &csv_secret, &user_canary] {
            assert!(!b.contains(c.as_str()), "secret leaked in {b}");
        }
    }

    // Deletes.
    call(app, Method::DELETE, &format!("/api/v1/resources/{res_id}"), tok, None).await;
    call(app, Method::GET, &format!("/api/v1/accounts/{acc_id}"), tok, None)
        .await
        .assert_problem(404, "not-found");
    let r = call(app, Method::DELETE, &format!("/api/v1/users/{alice_id}"), tok, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    call(app, Method::GET, &format!("/api/v1/users/{alice_id}"), tok, None)
        .await
        .assert_problem(404, "not-found");

    // Logout revokes the token.
    let r = call(app, Method::POST, "/api/v1/auth/logout", tok, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(app, Method::GET, "/api/v1/me", tok, None).await;
    r.assert_problem(401, "invalid-token");
    assert!(r.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

#[tokio::test]
async fn every_route_needs_a_token_and_openapi_lists_every_route() {
    let e = env().await;
    let app = &e.app;
    let r = call(app, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().starts_with("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["type"], "http");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| !m.starts_with('x') && *m != "parameters")
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Authenticated operations declare the bearer scheme; public ones do not.
    for (m, p) in ROUTES {
        let op = &paths[*p][m.to_lowercase()];
        assert_eq!(op["security"].is_array(), !PUBLIC.contains(p), "{m} {p}");
    }

    let id = uuid::Uuid::new_v4().to_string();
    let bad_token = format!("pst_{}", "0".repeat(40));
    for (m, p) in ROUTES.iter().filter(|(_, p)| !PUBLIC.contains(p)) {
        let uri = p
            .replace("{id}", &id)
            .replace("{key_id}", &id)
            .replace("{user_id}", &id)
            .replace("{resource_id}", &id);
        assert!(!uri.contains('{'), "unsubstituted path parameter in {p}");
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        for token in [None, Some(bad_token.as_str()), Some("garbage")] {
            let r = call(app, method.clone(), &uri, token, Some(json!({}))).await;
            let p = r.assert_problem(401, "invalid-token");
            assert!(r.headers.contains_key(header::WWW_AUTHENTICATE), "{m} {uri}: {p}");
        }
    }
    // Unknown API paths need a token too (they do not reveal the API's shape).
    call(app, Method::GET, "/api/v1/nothing-here", None, None)
        .await
        .assert_problem(401, "invalid-token");
    let r = call(app, Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text, "ok");
}

#[tokio::test]
async fn rejections_are_problem_details() {
    let e = env().await;
    let app = &e.app;
    let t = admin_token(&e).await;
    let tok = Some(t.as_str());

    // Malformed JSON.
    let r = send(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some("application/json"),
        b"{\"name\": ".to_vec(),
    )
    .await;
    r.assert_problem(400, "malformed-request");
    let r = send(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some("application/json"),
        b"not json".to_vec(),
    )
    .await;
    r.assert_problem(400, "malformed-request");
    // Unknown field (also on the vault types that do not refuse them themselves).
    for (uri, body) in [
        (
            "/api/v1/resources",
            json!({"name": "x", "type": "linux", "host": "h", "colour": "red"}),
        ),
        (
            "/api/v1/users",
            json!({"username": "carol", "role": "password_user", "is_root": true}),
        ),
        (
            "/api/v1/auth/login",
            json!({"username": "admin", "password": "x", "remember": true}),
        ),
    ] {
        let p = call(app, Method::POST, uri, tok, Some(body))
            .await
            .assert_problem(422, "validation-error");
        assert!(p["detail"].as_str().unwrap().contains("unknown field"), "{p}");
    }
    // Wrong type: 422 naming the field, without echoing the value.
    let r = call(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some(json!({"name": "x", "type": "linux", "host": "h", "port": "CANARY-x"})),
    )
    .await;
    let p = r.assert_problem(422, "validation-error");
    assert_eq!(p["field"], "port");
    assert!(!r.text.contains("CANARY"), "{}", r.text);
    // Missing field.
    call(app, Method::POST, "/api/v1/resources", tok, Some(json!({"name": "x"})))
        .await
        .assert_problem(422, "validation-error");
    // Missing or wrong content type.
    send(app, Method::POST, "/api/v1/resources", tok, None, b"{}".to_vec())
        .await
        .assert_problem(415, "unsupported-media-type");
    send(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    // Too large.
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(1024 * 1024 + 10));
    send(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some("application/json"),
        big.into_bytes(),
    )
    .await
    .assert_problem(413, "payload-too-large");
    // Ids that are not UUIDs, unknown ids, unknown routes, wrong methods.
    for uri in [
        "/api/v1/users/1",
        "/api/v1/resources/..%2F..",
        "/api/v1/accounts/not-a-uuid",
        "/api/v1/resources/abc/accounts",
        "/api/v1/users/abc/keys",
    ] {
        call(app, Method::GET, uri, tok, None)
            .await
            .assert_problem(404, "not-found");
    }
    let id = uuid::Uuid::new_v4();
    for uri in [
        format!("/api/v1/users/{id}/keys/not-a-uuid"),
        format!("/api/v1/users/not-a-uuid/keys/{id}"),
        "/api/v1/resources/abc/host-key".to_owned(),
    ] {
        call(app, Method::DELETE, &uri, tok, None)
            .await
            .assert_problem(404, "not-found");
    }
    call(app, Method::GET, &format!("/api/v1/resources/{id}"), tok, None)
        .await
        .assert_problem(404, "not-found");
    call(app, Method::GET, "/api/v1/nothing-here", tok, None)
        .await
        .assert_problem(404, "not-found");
    // Outside /api/ unknown paths are the console's (index.html), except missing built files.
    call(app, Method::GET, "/assets/nothing-here.js", None, None)
        .await
        .assert_problem(404, "not-found");
    let r = call(app, Method::PUT, "/api/v1/users", tok, Some(json!({}))).await;
    r.assert_problem(405, "method-not-allowed");
    assert!(r.headers.contains_key(header::ALLOW));

    // Login failures.
    call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "nobody", "password": "x"})),
    )
    .await
    .assert_problem(401, "authentication-failed");
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let e = env().await;
    for (uri, api) in [
        ("/healthz", false),
        ("/api/v1/openapi.json", true),
        ("/api/v1/me", true),
        ("/nope", false),
    ] {
        let r = call(&e.app, Method::GET, uri, None, None).await;
        assert_eq!(
            r.headers[header::STRICT_TRANSPORT_SECURITY],
            "max-age=31536000",
            "{uri}"
        );
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert_eq!(csp, postern_web::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval';") && csp.contains("style-src 'self';"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"));
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer");
        if api {
            assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{uri}");
        }
    }
}

#[tokio::test]
async fn totp_enrolment_then_login_needs_a_code() {
    let e = env().await;
    let app = &e.app;
    let t = admin_token(&e).await;
    let tok = Some(t.as_str());
    call(
        app,
        Method::POST,
        "/api/v1/me/totp/confirm",
        tok,
        Some(json!({"code": "123456"})),
    )
    .await
    .assert_problem(409, "conflict");
    let r = call(app, Method::POST, "/api/v1/me/totp", tok, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let en = r.json();
    let uri = en["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"));
    assert!(!en["secret"].as_str().unwrap().is_empty());
    let totp = totp_rs::TOTP::from_url_unchecked(uri).unwrap();
    let code = totp.generate_current().unwrap();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 500_000) % 1_000_000);
    let p = call(
        app,
        Method::POST,
        "/api/v1/me/totp/confirm",
        tok,
        Some(json!({"code": wrong})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "code");
    let r = call(
        app,
        Method::POST,
        "/api/v1/me/totp/confirm",
        tok,
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = call(app, Method::GET, "/api/v1/me", tok, None).await;
    assert_eq!(r.json()["totp_enabled"], true);
    call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": "correct horse battery staple"})),
    )
    .await
    .assert_problem(401, "totp-required");
    call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": "wrong password here", "totp": "000000"})),
    )
    .await
    .assert_problem(401, "authentication-failed");
}

#[tokio::test]
async fn roles_are_enforced_through_the_vault() {
    let e = env().await;
    let app = &e.app;
    let t = admin_token(&e).await;
    let r = call(
        app,
        Method::POST,
        "/api/v1/users",
        Some(&t),
        Some(json!({"username": "paula", "role": "password_user", "password": "paula's long password", "must_change_password": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let paula = login(app, "paula", "paula's long password").await;
    let pt = paula["token"].as_str().unwrap();
    assert_eq!(paula["must_change_password"], false);
    call(app, Method::GET, "/api/v1/users", Some(pt), None)
        .await
        .assert_problem(403, "forbidden");
    call(app, Method::GET, "/api/v1/audit", Some(pt), None)
        .await
        .assert_problem(403, "forbidden");
    call(app, Method::GET, "/api/v1/audit/verify", Some(pt), None)
        .await
        .assert_problem(403, "forbidden");
    call(
        app,
        Method::POST,
        "/api/v1/resources",
        Some(pt),
        Some(json!({"name": "x", "type": "linux", "host": "h"})),
    )
    .await
    .assert_problem(403, "forbidden");
    let r = call(app, Method::GET, "/api/v1/resources", Some(pt), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([]));
    // Denials are audited.
    let r = call(
        app,
        Method::GET,
        "/api/v1/audit?outcome=denied&actor=paula",
        Some(&t),
        None,
    )
    .await;
    assert!(r.json().as_array().unwrap().len() >= 3, "{}", r.text);
}

/// Two valid `ssh-ed25519` public keys (made-up key material) and their `ssh-keygen -l` fingerprints.
const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBERERERERERERERERERERERERERERERERERERERERER";
const FP_A: &str = "SHA256:SQfC+vTbLURn9cTkVxIS8fGQ3FKNAJWeB0o139+gV4M";
const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi";
const FP_B: &str = "SHA256:DZyZLHYkg98LXeBMrWPb1yMuLZRau2MJhzjRAZwPAHU";

/// Creates a password_user that need not change its password; returns (id, token).
async fn plain_user(e: &Env, admin: &str, username: &str) -> (String, String) {
    user_with_role(e, admin, username, "password_user").await
}

/// Creates a user with `role` that need not change its password; returns (id, token).
async fn user_with_role(e: &Env, admin: &str, username: &str, role: &str) -> (String, String) {
    let password = format!("{username}'s long password");
    let r = call(
        &e.app,
        Method::POST,
        "/api/v1/users",
        Some(admin),
        Some(json!({"username": username, "role": role, "password": password, "must_change_password": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let token = login(&e.app, username, &password).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, token)
}

#[tokio::test]
async fn users_manage_their_own_ssh_keys() {
    let e = env().await;
    let app = &e.app;
    let admin = admin_token(&e).await;
    let (paula_id, pt) = plain_user(&e, &admin, "paula").await;
    let (quinn_id, qt) = plain_user(&e, &admin, "quinn").await;
    let paula_keys = format!("/api/v1/users/{paula_id}/keys");
    let quinn_keys = format!("/api/v1/users/{quinn_id}/keys");

    // A password_user adds a key to themself; the comment is kept apart.
    let r = call(
        app,
        Method::POST,
        &paula_keys,
        Some(&pt),
        Some(json!({"public_key": format!("{KEY_A} paula@laptop")})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.json();
    let key_id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers[header::LOCATION], format!("{paula_keys}/{key_id}"));
    assert_eq!(key["user_id"], paula_id.as_str());
    assert_eq!(key["public_key"], KEY_A);
    assert_eq!(key["fingerprint"], FP_A);
    assert_eq!(key["comment"], "paula@laptop");

    // Listed, with its fingerprint.
    let r = call(app, Method::GET, &paula_keys, Some(&pt), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let keys = r.json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["id"], key_id.as_str());
    assert!(
        keys[0]["fingerprint"].as_str().unwrap().starts_with("SHA256:"),
        "{keys:?}"
    );
    // The same key twice is a conflict (with or without a comment).
    call(
        app,
        Method::POST,
        &paula_keys,
        Some(&pt),
        Some(json!({"public_key": KEY_A})),
    )
    .await
    .assert_problem(409, "conflict");

    // Malformed keys: 422 naming `public_key`; unknown fields are refused too.
    for bad in [
        "",
        "ssh-ed25519",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ssh-ed25519 not*base64",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBERERERERERERERERERERERERERERERERERERERERER",
    ] {
        let p = call(
            app,
            Method::POST,
            &paula_keys,
            Some(&pt),
            Some(json!({"public_key": bad})),
        )
        .await
        .assert_problem(422, "validation-error");
        assert_eq!(p["field"], "public_key", "{bad:?}: {p}");
    }
    let p = call(
        app,
        Method::POST,
        &paula_keys,
        Some(&pt),
        Some(json!({"public_key": KEY_B, "comment": "x"})),
    )
    .await
    .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "comment");

    // Another user's keys are out of reach of a password_user.
    for (who, m, uri, body) in [
        (&pt, Method::GET, quinn_keys.clone(), None),
        (
            &pt,
            Method::POST,
            quinn_keys.clone(),
            Some(json!({"public_key": KEY_B})),
        ),
        (&qt, Method::GET, paula_keys.clone(), None),
        (
            &qt,
            Method::POST,
            paula_keys.clone(),
            Some(json!({"public_key": KEY_B})),
        ),
        (&qt, Method::DELETE, format!("{paula_keys}/{key_id}"), None),
    ] {
        let r = call(app, m.clone(), &uri, Some(who), body).await;
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
            "{m} {uri}: {}",
            r.text
        );
        assert_eq!(r.content_type(), "application/problem+json");
    }
    let r = call(app, Method::GET, &quinn_keys, Some(&admin), None).await;
    assert_eq!(r.json(), json!([]), "{}", r.text);
    // An administrator may manage anyone's keys.
    let r = call(
        app,
        Method::POST,
        &quinn_keys,
        Some(&admin),
        Some(json!({"public_key": KEY_B})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["fingerprint"], FP_B);
    assert!(r.json()["comment"].is_null());
    let r = call(app, Method::GET, &quinn_keys, Some(&qt), None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1, "{}", r.text);

    // Delete: 204, then gone; a key id under the wrong user or twice is 404.
    call(
        app,
        Method::DELETE,
        &format!("{quinn_keys}/{key_id}"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not-found");
    let r = call(
        app,
        Method::DELETE,
        &format!("{paula_keys}/{}", key_id.to_uppercase()),
        Some(&pt),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = call(app, Method::GET, &paula_keys, Some(&pt), None).await;
    assert_eq!(r.json(), json!([]), "{}", r.text);
    call(app, Method::DELETE, &format!("{paula_keys}/{key_id}"), Some(&pt), None)
        .await
        .assert_problem(404, "not-found");
    // Unknown user.
    let nobody = uuid::Uuid::new_v4();
    call(
        app,
        Method::GET,
        &format!("/api/v1/users/{nobody}/keys"),
        Some(&admin),
        None,
    )
    .await
    .assert_problem(404, "not-found");

    // Audited.
    let r = call(app, Method::GET, "/api/v1/audit?limit=1000", Some(&admin), None).await;
    let events = r.json();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"user.key_add"), "{actions:?}");
    assert!(actions.contains(&"user.key_delete"), "{actions:?}");
}

#[tokio::test]
async fn resources_carry_forwarding_policy_and_host_keys_can_be_forgotten() {
    let e = env().await;
    let app = &e.app;
    let admin = admin_token(&e).await;
    let tok = Some(admin.as_str());

    let r = call(
        app,
        Method::POST,
        "/api/v1/resources",
        tok,
        Some(json!({"name": "jump", "type": "linux", "host": "10.0.0.9", "allow_port_forwarding": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let res = r.json();
    let id = res["id"].as_str().unwrap().to_owned();
    assert_eq!(res["allow_port_forwarding"], true);
    assert_eq!(res["allow_agent_forwarding"], false);
    let r = call(
        app,
        Method::PATCH,
        &format!("/api/v1/resources/{id}"),
        tok,
        Some(json!({"allow_port_forwarding": false, "allow_agent_forwarding": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(app, Method::GET, &format!("/api/v1/resources/{id}"), tok, None).await;
    assert_eq!(r.json()["allow_port_forwarding"], false, "{}", r.text);
    assert_eq!(r.json()["allow_agent_forwarding"], true, "{}", r.text);
    call(
        app,
        Method::PATCH,
        &format!("/api/v1/resources/{id}"),
        tok,
        Some(json!({"allow_agent_forwarding": "yes"})),
    )
    .await
    .assert_problem(422, "validation-error");

    // The OpenAPI document shows the policy on reads, creation and changes.
    let doc = call(app, Method::GET, "/api/v1/openapi.json", None, None).await.json();
    for schema in ["Resource", "NewResource", "ResourcePatch"] {
        let props = &doc["components"]["schemas"][schema]["properties"];
        for f in ["allow_port_forwarding", "allow_agent_forwarding"] {
            assert!(props.get(f).is_some(), "{schema} lacks {f}: {props}");
        }
    }

    // Forgetting the pinned host key (none pinned yet is fine), audited.
    let r = call(
        app,
        Method::DELETE,
        &format!("/api/v1/resources/{id}/host-key"),
        tok,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = call(
        app,
        Method::GET,
        "/api/v1/audit?action=resource.host_key_forget",
        tok,
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1, "{}", r.text);
    let nowhere = uuid::Uuid::new_v4();
    call(
        app,
        Method::DELETE,
        &format!("/api/v1/resources/{nowhere}/host-key"),
        tok,
        None,
    )
    .await
    .assert_problem(404, "not-found");
    // A password_user cannot.
    let (_, pt) = plain_user(&e, &admin, "paula").await;
    let r = call(
        app,
        Method::DELETE,
        &format!("/api/v1/resources/{id}/host-key"),
        Some(&pt),
        None,
    )
    .await;
    assert!(
        r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
        "{}",
        r.text
    );
}

/// A gateway stand-in: fixed live sessions; records terminations (and ends the session).
struct FakeLive {
    sessions: Mutex<Vec<LiveSession>>,
    /// (id, by, reason) of every successful termination.
    terminated: Mutex<Vec<(String, String, String)>>,
}

impl LiveSessions for FakeLive {
    fn list(&self) -> Vec<LiveSession> {
        self.sessions.lock().unwrap().clone()
    }

    fn terminate(&self, id: &str, by: &str, reason: &str) -> bool {
        let mut sessions = self.sessions.lock().unwrap();
        let Some(i) = sessions.iter().position(|s| s.id == id) else {
            return false;
        };
        sessions.remove(i);
        self.terminated
            .lock()
            .unwrap()
            .push((id.to_owned(), by.to_owned(), reason.to_owned()));
        true
    }
}

fn live_session(user: &str, target: &str) -> LiveSession {
    LiveSession {
        id: uuid::Uuid::new_v4().to_string(),
        user: user.to_owned(),
        target: target.to_owned(),
        protocol: "ssh".to_owned(),
        client: Some("192.0.2.7".to_owned()),
        started_at: "2024-05-01T10:00:00Z".to_owned(),
    }
}

#[tokio::test]
async fn live_sessions_are_listed_and_terminated_through_the_wired_trait() {
    let (s1, s2) = (
        live_session("paula", "root@web1"),
        live_session("quentin", "oracle@db1"),
    );
    let fake = Arc::new(FakeLive {
        sessions: Mutex::new(vec![s1.clone(), s2.clone()]),
        terminated: Mutex::new(Vec::new()),
    });
    let live: Arc<dyn LiveSessions> = fake.clone();
    let e = env_with(|vault| AppState::new(vault).with_live(live)).await;
    let app = &e.app;
    let admin = admin_token(&e).await;
    let tok = Some(admin.as_str());
    let (_, auditor) = user_with_role(&e, &admin, "audrey", "password_auditor").await;
    let (_, user) = plain_user(&e, &admin, "paula").await;
    let reason = json!({"reason": "maintenance window"});

    // Listing: administrators and auditors; not plain users; never anonymously.
    let r = call(app, Method::GET, "/api/v1/sessions", tok, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", r.text);
    assert_eq!(list[0]["id"], s1.id.as_str());
    assert_eq!(list[0]["user"], "paula");
    assert_eq!(list[0]["target"], "root@web1");
    assert_eq!(list[0]["protocol"], "ssh");
    assert_eq!(list[0]["client"], "192.0.2.7");
    assert_eq!(list[0]["started_at"], "2024-05-01T10:00:00Z");
    let r = call(app, Method::GET, "/api/v1/sessions", Some(&auditor), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    call(app, Method::GET, "/api/v1/sessions", Some(&user), None)
        .await
        .assert_problem(403, "forbidden");
    call(app, Method::GET, "/api/v1/sessions", None, None)
        .await
        .assert_problem(401, "invalid-token");

    // Terminating: not by an auditor, nor anonymously; a reason is required.
    let uri = format!("/api/v1/sessions/{}", s1.id);
    call(app, Method::DELETE, &uri, Some(&auditor), Some(reason.clone()))
        .await
        .assert_problem(403, "forbidden");
    call(app, Method::DELETE, &uri, None, Some(reason.clone()))
        .await
        .assert_problem(401, "invalid-token");
    let p = call(app, Method::DELETE, &uri, tok, Some(json!({})))
        .await
        .assert_problem(422, "validation-error");
    assert!(p["detail"].as_str().unwrap().contains("missing field `reason`"), "{p}");
    let p = call(app, Method::DELETE, &uri, tok, Some(json!({"reason": "  "})))
        .await
        .assert_problem(422, "validation-error");
    assert_eq!(p["field"], "reason", "{p}");
    call(app, Method::DELETE, &uri, tok, Some(json!({"reason": "x".repeat(501)})))
        .await
        .assert_problem(422, "validation-error");
    assert!(fake.terminated.lock().unwrap().is_empty());

    // Unknown (or no longer live) sessions are 404.
    let nowhere = uuid::Uuid::new_v4();
    call(
        app,
        Method::DELETE,
        &format!("/api/v1/sessions/{nowhere}"),
        tok,
        Some(reason.clone()),
    )
    .await
    .assert_problem(404, "not-found");
    call(
        app,
        Method::DELETE,
        "/api/v1/sessions/not-a-uuid",
        tok,
        Some(reason.clone()),
    )
    .await
    .assert_problem(404, "not-found");

    let r = call(app, Method::DELETE, &uri, tok, Some(reason.clone())).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        *fake.terminated.lock().unwrap(),
        vec![(s1.id.clone(), "admin".to_owned(), "maintenance window".to_owned())]
    );
    call(app, Method::DELETE, &uri, tok, Some(reason.clone()))
        .await
        .assert_problem(404, "not-found");
    let r = call(app, Method::GET, "/api/v1/sessions", tok, None).await;
    assert_eq!(r.json()[0]["id"], s2.id.as_str(), "{}", r.text);

    // The termination is audited, as are the refusals.
    let r = call(app, Method::GET, "/api/v1/audit?action=session.terminate", tok, None).await;
    let events = r.json();
    let events = events.as_array().unwrap().clone();
    let ok: Vec<&Value> = events.iter().filter(|ev| ev["outcome"] == "success").collect();
    assert_eq!(ok.len(), 1, "{}", r.text);
    assert_eq!(ok[0]["actor_name"], "admin");
    assert_eq!(ok[0]["object_id"], s1.id.as_str());
    assert_eq!(ok[0]["object_name"], "root@web1");
    assert_eq!(ok[0]["detail"], "terminated: maintenance window");
    assert!(
        events
            .iter()
            .any(|ev| ev["outcome"] == "denied" && ev["actor_name"] == "audrey"),
        "{}",
        r.text
    );
    let r = call(
        app,
        Method::GET,
        "/api/v1/audit?action=session.list&outcome=denied",
        tok,
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1, "{}", r.text);
}

#[tokio::test]
async fn without_a_gateway_there_are_no_live_sessions() {
    let e = env().await;
    let admin = admin_token(&e).await;
    let r = call(&e.app, Method::GET, "/api/v1/sessions", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!([]));
    let id = uuid::Uuid::new_v4();
    call(
        &e.app,
        Method::DELETE,
        &format!("/api/v1/sessions/{id}"),
        Some(&admin),
        Some(json!({"reason": "cleanup"})),
    )
    .await
    .assert_problem(404, "not-found");
}
