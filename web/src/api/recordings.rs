//! Session recordings (`/api/v1/recordings`): the catalog, one recording's metadata with its
//! verification, the plain asciicast export, and full-text search. Every route needs the
//! View sessions permission and is audited (who listed, read, downloaded or searched what).

use std::io::Write;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use postern_vault::{RecordingAccess, RecordingFilter, RecordingInfo, RecordingMarker, SearchResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{tags, ApiQuery, Id};
use crate::auth::{Authenticated, ClientContext};
use crate::error::{ApiError, ApiResult, AuthErrors, ForbiddenError, NotFoundError, ValidationError};
use crate::AppState;

/// Media type of an asciicast v2 file.
pub const ASCIICAST_CONTENT_TYPE: &str = "application/x-asciicast";

/// Filters of `GET /api/v1/recordings`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordingQuery {
    /// Postern user name equals.
    pub user: Option<String>,
    /// Target (`ACCOUNT@RESOURCE`) equals.
    pub target: Option<String>,
    /// Protocol equals (`ssh`…).
    pub protocol: Option<String>,
    /// Started at or after (RFC 3339).
    pub from: Option<String>,
    /// Started before (RFC 3339).
    pub to: Option<String>,
    /// Max recordings (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Recordings to skip (paging; newest first).
    pub offset: Option<u32>,
}

/// Parameters of `GET /api/v1/recordings/search`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to look for (all must appear in one line of output or one command; at most 200
    /// characters, 16 words).
    pub q: String,
    /// Max recordings (default 20, at most 100).
    pub limit: Option<u32>,
}

/// The result of verifying a recording file with the server's public key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingVerification {
    /// The chain and signatures check out (for a truncated recording: its intact prefix).
    pub ok: bool,
    /// No seal: the recording was cut (live, crash, kill, disk full); only the intact prefix is reported.
    pub truncated: bool,
    /// Intact data chunks.
    pub chunks: u64,
    /// Events in the intact chunks.
    pub events: u64,
    /// Chunks covered by a valid signature.
    pub authenticated_chunks: u64,
    /// Hex chain hash of the last intact chunk (the sealed final hash for sealed recordings).
    pub final_hash: Option<String>,
    /// What is wrong (damaged or tampered chunk and offset, bad signature, missing file).
    pub error: Option<String>,
}

/// A recording with its verification and markers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingDetails {
    /// The catalog entry.
    pub recording: RecordingInfo,
    /// The file checked now with the server's recording public key.
    pub verification: RecordingVerification,
    /// Exec command lines, file transfers, exit statuses… found in it (once indexed).
    pub markers: Vec<RecordingMarker>,
}

/// Lists recordings, newest first (needs View sessions; audited).
#[utoipa::path(get, path = "/api/v1/recordings", tag = tags::RECORDINGS, security(("bearer" = [])), params(RecordingQuery),
    responses((status = 200, description = "Recordings, newest first", body = Vec<RecordingInfo>), AuthErrors, ForbiddenError, ValidationError))]
pub async fn list_recordings(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiQuery(q): ApiQuery<RecordingQuery>,
) -> ApiResult<Json<Vec<RecordingInfo>>> {
    let filter = RecordingFilter {
        user: q.user,
        target: q.target,
        protocol: q.protocol,
        from: q.from,
        to: q.to,
        limit: q.limit,
        offset: q.offset,
    };
    Ok(Json(state.vault.list_recordings(&auth.actor, &filter, &ctx).await?))
}

/// Searches the text of the recordings: output lines and commands typed at a prompt (or
/// exec command lines), with their time offsets (needs View sessions; audited).
#[utoipa::path(get, path = "/api/v1/recordings/search", tag = tags::RECORDINGS, security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, description = "Matching recordings, best first, with their matches in time order", body = Vec<SearchResult>),
        AuthErrors, ForbiddenError, ValidationError))]
pub async fn search_recordings(
    State(state): State<AppState>,
    auth: Authenticated,
    ClientContext(ctx): ClientContext,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Vec<SearchResult>>> {
    Ok(Json(
        state.vault.search_recordings(&auth.actor, &q.q, q.limit, &ctx).await?,
    ))
}

/// One recording: its catalog entry, the verification of its file with the server's
/// public key, and its markers (needs View sessions; audited as `recording.read`).
#[utoipa::path(get, path = "/api/v1/recordings/{id}", tag = tags::RECORDINGS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses((status = 200, description = "The recording", body = RecordingDetails), AuthErrors, ForbiddenError, NotFoundError))]
pub async fn get_recording(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Json<RecordingDetails>> {
    let d = state
        .vault
        .recording(&auth.actor, &id, RecordingAccess::Read, &ctx)
        .await?;
    let key = state.recording_key;
    let path = PathBuf::from(&d.info.path);
    let verification = tokio::task::spawn_blocking(move || verify(&path, key.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "recording verification task failed");
            ApiError::internal()
        })?;
    Ok(Json(RecordingDetails {
        recording: d.info,
        verification,
        markers: d.markers,
    }))
}

fn verify(path: &std::path::Path, key: Option<&postern_recorder::VerifyingKey>) -> RecordingVerification {
    let failed = |error: String| RecordingVerification {
        ok: false,
        truncated: false,
        chunks: 0,
        events: 0,
        authenticated_chunks: 0,
        final_hash: None,
        error: Some(error),
    };
    let Some(key) = key else {
        return failed("the server has no recording public key configured".into());
    };
    if !path.exists() {
        return failed("the recording file is missing".into());
    }
    match postern_recorder::verify(path, key) {
        Ok(v) => RecordingVerification {
            ok: true,
            truncated: v.truncated,
            chunks: v.chunks,
            events: v.events,
            authenticated_chunks: v.authenticated_chunks,
            final_hash: Some(v.final_hash),
            error: None,
        },
        Err(e) => failed(e.to_string()),
    }
}

/// Streams into a bounded channel from a blocking thread.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const EXPORT_PIECE: usize = 64 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// The recording as a plain asciicast v2 file (`asciinema play`/`asciinema cat` read it),
/// streamed (needs View sessions; audited as `recording.download`). A damaged recording is
/// exported up to its intact prefix, then the response is cut (see `GET /api/v1/recordings/{id}`
/// for the verification).
#[utoipa::path(get, path = "/api/v1/recordings/{id}/cast", tag = tags::RECORDINGS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses((status = 200, description = "asciicast v2", body = String, content_type = "application/x-asciicast"),
        AuthErrors, ForbiddenError, NotFoundError))]
pub async fn download_cast(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
) -> ApiResult<Response> {
    let d = state
        .vault
        .recording(&auth.actor, &id, RecordingAccess::Download, &ctx)
        .await?;
    let path = PathBuf::from(&d.info.path);
    if !path.exists() {
        return Err(ApiError::not_found("the recording file is missing"));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let res = postern_recorder::export_cast(&path, &mut w);
        let res = res
            .map_err(|e| e.to_string())
            .and_then(|_| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = res {
            tracing::warn!(error = %e, path = %path.display(), "recording export stopped early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ASCIICAST_CONTENT_TYPE));
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{id}.cast\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Parameters of `GET /api/v1/recordings/{id}/frame`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FrameQuery {
    /// Seconds since the start of the recording (default 0; past the end: the last frame).
    pub at: Option<f64>,
}

/// How many RDP decoders the web player keeps (each holds one desktop framebuffer, at most 64 MiB at the
/// decoder's largest size, a few MiB for usual desktops).
pub const FRAME_PLAYERS: usize = 4;

type PlayerSlot = std::sync::Arc<std::sync::Mutex<postern_recorder::rdp::Player>>;

/// The web player's decoders, one per (user, recording), at most [`FRAME_PLAYERS`], least recently used
/// evicted: playing forward continues decoding where the last frame stopped instead of starting over.
#[derive(Default)]
pub struct FrameCache {
    slots: std::sync::Mutex<Vec<((String, String), PlayerSlot)>>,
}

impl std::fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCache").finish_non_exhaustive()
    }
}

impl FrameCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<((String, String), PlayerSlot)>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, key: &(String, String)) -> bool {
        self.lock().iter().any(|(k, _)| k == key)
    }

    /// The player for `key` (moved to the front), or a new one over `path`.
    fn get(&self, key: (String, String), path: PathBuf) -> PlayerSlot {
        let mut slots = self.lock();
        if let Some(i) = slots.iter().position(|(k, _)| *k == key) {
            let entry = slots.remove(i);
            let p = entry.1.clone();
            slots.insert(0, entry);
            return p;
        }
        let p: PlayerSlot = std::sync::Arc::new(std::sync::Mutex::new(postern_recorder::rdp::Player::open(path)));
        slots.insert(0, (key, p.clone()));
        slots.truncate(FRAME_PLAYERS);
        p
    }
}

/// Media type of a frame.
pub const PNG_CONTENT_TYPE: &str = "image/png";

/// The screen of an RDP recording at a time offset, as a PNG (needs View sessions; the first frame a user asks
/// of a recording is audited as `recording.play`). Headers: `x-postern-frame-at` (the offset shown, seconds) and
/// `x-postern-duration` (the recording's length as far as read, seconds). Decoders are cached per user and
/// recording so that forward playback does not decode from the start again. Not an RDP recording: 404.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/frame", tag = tags::RECORDINGS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (UUID)"), FrameQuery),
    responses((status = 200, description = "The frame", body = Vec<u8>, content_type = "image/png"),
        AuthErrors, ForbiddenError, NotFoundError, ValidationError))]
pub async fn recording_frame(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ClientContext(ctx): ClientContext,
    ApiQuery(q): ApiQuery<FrameQuery>,
) -> ApiResult<Response> {
    let at = q.at.unwrap_or(0.0);
    if !at.is_finite() || !(0.0..=1e9).contains(&at) {
        return Err(ApiError::validation("at", "seconds since the start: a number from 0"));
    }
    let key = (auth.actor.id.clone(), id.clone());
    let first = !state.web.frames.contains(&key);
    let info = state.vault.recording_play(&auth.actor, &id, first, &ctx).await?;
    if info.protocol != "rdp" {
        return Err(ApiError::not_found(
            "this recording has no frames (it is not an RDP recording)",
        ));
    }
    let path = PathBuf::from(&info.path);
    if !path.exists() {
        return Err(ApiError::not_found("the recording file is missing"));
    }
    let player = state.web.frames.get(key, path);
    let t_us = (at * 1e6) as u64;
    let rendered = tokio::task::spawn_blocking(move || {
        let mut p = player.lock().unwrap_or_else(|e| e.into_inner());
        p.frame_at(t_us).map(|f| (f.png(), p.duration_us))
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "the frame rendering task failed");
        ApiError::internal()
    })?;
    let (png, duration_us) = rendered.map_err(|e| {
        tracing::warn!(error = %e, "a recording frame could not be rendered");
        ApiError::not_found("the recording cannot be read")
    })?;
    let mut resp = Body::from(png).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PNG_CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    for (name, secs) in [
        ("x-postern-frame-at", at),
        ("x-postern-duration", duration_us as f64 / 1e6),
    ] {
        if let Ok(v) = HeaderValue::try_from(format!("{secs:.3}")) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}
