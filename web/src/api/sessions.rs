//! Live gateway sessions (`/api/v1/sessions`): listing, termination and live
//! watching (WebSocket), through the [`LiveSessions`](crate::LiveSessions) the
//! root wires in.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{tags, ApiJson, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, BodyErrors, ForbiddenError, NotFoundError};
use crate::live::{Watch, WatchEnd};
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

/// A frame to a viewer that is not accepted within this time ends the watch (the session
/// itself never waits for a viewer: its output is queued per viewer, bounded, and a viewer
/// that falls behind is dropped).
pub const WATCH_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// WebSocket close code when the session ended (normal closure).
pub const CLOSE_SESSION_ENDED: u16 = 1000;
/// WebSocket close code when the viewer fell behind and was dropped (policy violation).
pub const CLOSE_TOO_SLOW: u16 = 1008;

/// Watches a live session (needs the View sessions permission; audited as `session.watch`).
///
/// A WebSocket: the server sends binary frames of the session's terminal output — first the
/// recent output (up to 64 KiB, so a late joiner sees the screen), then everything that
/// follows. For an RDP session each binary message is instead one PNG image of the whole
/// desktop (decoded by the server, at most a few per second, only when it changed). It closes with code 1000 and reason "the session ended" at the end of the
/// session, or 1008 and "the viewer fell behind and was disconnected" when the viewer did not
/// keep up (a viewer never slows the session). Messages from the viewer are ignored.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/watch", tag = tags::SESSIONS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses(
        (status = 101, description = "WebSocket upgrade: binary frames of terminal output (RDP sessions: one PNG of the desktop per message)"),
        (status = 400, description = "Not a WebSocket upgrade request", body = crate::error::Problem, content_type = "application/problem+json"),
        AuthErrors, ForbiddenError, NotFoundError))]
pub async fn watch_session(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    state.vault.require_session_oversight(&auth.actor, false, &ctx).await?;
    let ws = ws.map_err(|_| ApiError::bad_request("this endpoint is a WebSocket: send an HTTP/1.1 upgrade request"))?;
    let not_live = || ApiError::not_found("session not found (it is not live)");
    let target = state
        .live
        .list()
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| s.target)
        .ok_or_else(not_live)?;
    let watch = state.live.watch(&id).ok_or_else(not_live)?;
    state
        .vault
        .audit_gateway(
            &auth.actor,
            "session.watch",
            Some((&id, &target)),
            false,
            format!("watching live session {id}"),
            &ctx,
        )
        .await?;
    let who = auth.actor.username.clone();
    Ok(ws
        .on_upgrade(move |socket| async move {
            let end = pump(socket, watch).await;
            tracing::info!(session.id = %id, viewer = %who, end, "live viewer left");
        })
        .into_response())
}

async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(WATCH_SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Relays a watch to a WebSocket; returns how it ended.
async fn pump(mut socket: WebSocket, mut watch: Watch) -> &'static str {
    let snapshot = std::mem::take(&mut watch.snapshot);
    if !snapshot.is_empty() && !send(&mut socket, Message::Binary(snapshot.into())).await {
        return "viewer unreachable";
    }
    let (code, reason) = loop {
        tokio::select! {
            next = watch.feed.next() => match next {
                Ok(bytes) => {
                    if !send(&mut socket, Message::Binary(bytes.into())).await {
                        return "viewer unreachable";
                    }
                }
                Err(WatchEnd::SessionEnded) => break (CLOSE_SESSION_ENDED, "the session ended"),
                Err(WatchEnd::TooSlow) => break (CLOSE_TOO_SLOW, "the viewer fell behind and was disconnected"),
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return "viewer closed",
                Some(Ok(_)) => {}
            },
        }
    };
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(&mut socket, Message::Close(Some(frame))).await;
    reason
}
