//! The browser terminal (`GET /api/v1/accounts/{id}/terminal`, a WebSocket):
//! one-click logon into the same gateway pipeline as `ssh`, through the
//! [`Terminals`](crate::terminal::Terminals) the root wires in. The password
//! never reaches the browser.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{tags, ApiQuery, Id};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, AuthErrors, NotFoundError, ValidationError};
use crate::terminal::{TerminalError, TerminalInput, TerminalIo, TerminalOutput};
use crate::AppState;

/// Largest message the browser may send (keystrokes, pastes, control).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Terminal size limits.
const MAX_COLS: u32 = 1000;
const MAX_ROWS: u32 = 500;

/// Initial terminal size.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TerminalParams {
    /// Columns (1–1000, default 80).
    pub cols: Option<u32>,
    /// Rows (1–500, default 24).
    pub rows: Option<u32>,
}

/// A control message (a text frame) from the browser.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Control {
    /// The terminal was resized.
    Resize { cols: u32, rows: u32 },
}

/// A control message (a text frame) to the browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Notice {
    /// The remote shell exited.
    Exit { status: u32 },
}

fn size(v: Option<u32>, default: u32, max: u32, field: &str) -> ApiResult<u32> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(field, format!("must be between 1 and {max}"))),
    }
}

/// True when the request comes from a page of this server (or from a non-browser
/// client, which sends no `Origin`): refuses cross-site WebSocket hijacking.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// Opens a terminal on an account the caller may connect to (a WebSocket).
///
/// Binary frames carry terminal bytes both ways. Text frames carry JSON
/// control messages: `{"type":"resize","cols":C,"rows":R}` from the browser,
/// `{"type":"exit","status":N}` to it. The session is an ordinary gateway
/// session: authorized, auto-logged-on, recorded, listed live, terminable.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/terminal", tag = tags::ACCOUNTS, security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (UUID)"), TerminalParams),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 403, description = "Cross-origin WebSocket refused"),
        (status = 503, description = "The gateway could not open the session"),
        AuthErrors, NotFoundError, ValidationError))]
pub async fn open_terminal(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id,
    ApiQuery(p): ApiQuery<TerminalParams>,
    headers: HeaderMap,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin",
            "Forbidden",
            "a WebSocket from another origin is refused",
        ));
    }
    let cols = size(p.cols, 80, MAX_COLS, "cols")?;
    let rows = size(p.rows, 24, MAX_ROWS, "rows")?;
    let client = connect
        .map(|axum::Extension(ConnectInfo(a))| a)
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    let io = match state.terminals.open(auth.actor, id, cols, rows, client).await {
        Ok(io) => io,
        Err(TerminalError::NotFound) => {
            return Err(ApiError::not_found("no such account, or you may not connect to it"))
        }
        Err(TerminalError::Unavailable(why)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "terminal-unavailable",
                "Service Unavailable",
                why,
            ))
        }
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| pump(socket, io)))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Relays between the WebSocket and the session until either ends.
async fn pump(mut socket: WebSocket, io: TerminalIo) {
    let TerminalIo { input, mut output } = io;
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Some(TerminalOutput::Data(d)) => {
                    if socket.send(Message::Binary(d.into())).await.is_err() {
                        break;
                    }
                }
                Some(TerminalOutput::Exit(status)) => {
                    let text = serde_json::to_string(&Notice::Exit { status }).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    close(&mut socket, 1000, "session ended").await;
                    break;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if input.send(TerminalInput::Data(b.to_vec())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Control>(t.as_str()) {
                    Ok(Control::Resize { cols, rows }) if (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows) => {
                        if input.send(TerminalInput::Resize(cols, rows)).await.is_err() {
                            break;
                        }
                    }
                    _ => {
                        close(&mut socket, 1003, "unknown control message").await;
                        break;
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping `input` ends the gateway session.
    drop(input);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "non-browser clients send no Origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("https://127.0.0.1:8443"));
        assert!(!same_origin(&h), "Origin without Host");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn control_messages_parse_strictly() {
        assert_eq!(
            serde_json::from_str::<Control>(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap(),
            Control::Resize { cols: 100, rows: 30 }
        );
        assert!(serde_json::from_str::<Control>(r#"{"type":"exec","cmd":"id"}"#).is_err());
        assert!(serde_json::from_str::<Control>(r#"{"type":"resize","cols":1}"#).is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(size(None, 80, MAX_COLS, "cols").unwrap(), 80);
        assert_eq!(size(Some(120), 80, MAX_COLS, "cols").unwrap(), 120);
        assert!(size(Some(0), 80, MAX_COLS, "cols").is_err());
        assert!(size(Some(5000), 80, MAX_COLS, "cols").is_err());
    }
}
