//! The recordings catalog (one row per gateway session: who, where, when, file, size, final
//! hash, status) and the full-text index of the recordings' text (SQLite FTS5).
//!
//! The root writes the catalog (a row when a session starts, its end when the recording is
//! sealed) and the index (after the seal, off the session's path); people read it through
//! [`Vault::list_recordings`], [`Vault::recording`] and [`Vault::search_recordings`], which
//! need the View sessions permission and are audited. Retention deletes rows with
//! [`Vault::forget_recordings`] (one audit event per purge).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{self, NewEvent};
use crate::authz::{Action, Object};
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext};
use crate::store::{self, format_ts, parse_ts, Db};
use crate::Vault;

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    /// The session is running.
    Live,
    /// Sealed and signed at the end of the session.
    Sealed,
    /// The recording failed (disk full, writer too slow); the session was ended.
    Failed,
    /// Not sealed (the server stopped or crashed during the session): verifies up to its
    /// last flushed chunk.
    Truncated,
}

impl RecordingStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Live => "live",
            RecordingStatus::Sealed => "sealed",
            RecordingStatus::Failed => "failed",
            RecordingStatus::Truncated => "truncated",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "live" => RecordingStatus::Live,
            "sealed" => RecordingStatus::Sealed,
            "failed" => RecordingStatus::Failed,
            "truncated" => RecordingStatus::Truncated,
            _ => return Err(Error::Internal(format!("unknown recording status {s:?}"))),
        })
    }
}

/// A catalog row for a session that starts.
#[derive(Debug, Clone)]
pub struct NewRecording {
    /// Session id.
    pub id: String,
    /// Postern user name.
    pub user: String,
    /// `ACCOUNT@RESOURCE`.
    pub target: String,
    /// `ssh`…
    pub protocol: String,
    /// Client address.
    pub client: Option<String>,
    /// Start (as [`crate::now`] formats it).
    pub started_at: String,
    /// The recording file.
    pub path: String,
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordingEnd {
    /// Sealed, failed or truncated.
    pub status: RecordingStatus,
    /// File size on disk.
    pub size: Option<u64>,
    /// Hex final chain hash (sealed recordings).
    pub final_hash: Option<String>,
    /// Exit status or signal of the session's last channel, when known.
    pub exit_info: Option<String>,
    /// Why it failed, when it did.
    pub detail: Option<String>,
}

/// A recording in the catalog.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordingInfo {
    /// Session id (UUID).
    pub id: String,
    /// Postern user name of the person connected.
    pub user: String,
    /// `ACCOUNT@RESOURCE`.
    pub target: String,
    /// Protocol (`ssh`…).
    pub protocol: String,
    /// Client address, when known.
    pub client: Option<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339), once the session ended.
    pub ended_at: Option<String>,
    /// Size of the recording file, once ended.
    pub size: Option<u64>,
    /// Hex final chain hash of a sealed recording (also in the `session.end` audit event).
    pub final_hash: Option<String>,
    /// Live, sealed, failed or truncated.
    pub status: RecordingStatus,
    /// Exit status of the session's last command or shell, when known.
    pub exit_info: Option<String>,
    /// Why the recording failed or was cut, when it was.
    pub detail: Option<String>,
    /// Whether its text is in the search index.
    pub indexed: bool,
    /// The file on the server (not shown to clients).
    #[serde(skip)]
    pub path: String,
}

/// A marker found in a recording (`exec`, `exit`, `file-upload`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordingMarker {
    /// Seconds from the start of the recording.
    pub offset: f64,
    /// Kind (`exec`, `exit`, `file-upload`, `subsystem`…).
    pub kind: String,
    /// Detail (command line, status, file name, size and hash…).
    pub detail: String,
}

/// A recording with what was extracted from it.
#[derive(Debug, Clone)]
pub struct RecordingDetail {
    /// The catalog row.
    pub info: RecordingInfo,
    /// Markers found when it was indexed (empty until then).
    pub markers: Vec<RecordingMarker>,
}

/// One line of text to index.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    /// Seconds from the start of the recording.
    pub offset: f64,
    /// `output` or `command`.
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

/// Filters of [`Vault::list_recordings`].
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    /// User name equals.
    pub user: Option<String>,
    /// Target (`ACCOUNT@RESOURCE`) equals.
    pub target: Option<String>,
    /// Protocol equals.
    pub protocol: Option<String>,
    /// Started at or after (RFC 3339).
    pub from: Option<String>,
    /// Started before (RFC 3339).
    pub to: Option<String>,
    /// Max rows (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Rows to skip (paging).
    pub offset: Option<u32>,
}

/// Where a search matched in a recording.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    /// Seconds from the start of the recording.
    pub offset: f64,
    /// `output` (a line of terminal output) or `command` (typed at a prompt, or an exec command line).
    pub kind: String,
    /// The matching line (cut around the match when long).
    pub snippet: String,
}

/// A recording that matches a search, with its matches in time order.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResult {
    /// The recording.
    pub recording: RecordingInfo,
    /// Its matching lines (at most 20), in time order.
    pub hits: Vec<SearchHit>,
}

/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words in a search query.
pub const MAX_QUERY_WORDS: usize = 16;
const HITS_PER_RECORDING: usize = 20;
const INSERT_BATCH: usize = 1000;

/// Turns a user's words into an FTS5 query: every word must appear (each is quoted, so FTS5
/// operators and punctuation in the input are plain text; `a-b` matches the phrase `a b`).
pub fn fts_query(q: &str) -> Result<String> {
    let q = q.trim();
    if q.is_empty() {
        return Err(Error::invalid("q", "is required: the words to look for"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(Error::invalid(
            "q",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let words: Vec<&str> = q.split_whitespace().collect();
    if words.len() > MAX_QUERY_WORDS {
        return Err(Error::invalid("q", format!("must be at most {MAX_QUERY_WORDS} words")));
    }
    if !words.iter().any(|w| w.chars().any(char::is_alphanumeric)) {
        return Err(Error::invalid("q", "must contain a letter or a digit"));
    }
    Ok(words
        .iter()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" "))
}

fn info_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RecordingInfo> {
    let size: Option<i64> = r.try_get("size")?;
    let indexed: Option<String> = r.try_get("indexed_at")?;
    Ok(RecordingInfo {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        target: r.try_get("target")?,
        protocol: r.try_get("protocol")?,
        client: r.try_get("client")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        size: size.and_then(|s| u64::try_from(s).ok()),
        final_hash: r.try_get("final_hash")?,
        status: RecordingStatus::parse(&r.try_get::<String, _>("status")?)?,
        exit_info: r.try_get("exit_info")?,
        detail: r.try_get("detail")?,
        indexed: indexed.is_some(),
        path: r.try_get("path")?,
    })
}

/// Why a recording is read (for the audit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingAccess {
    /// Its metadata and verification.
    Read,
    /// Its content (the cast).
    Download,
}

impl Vault {
    /// Catalogs a recording as live (the session started). Idempotent.
    pub async fn recording_started(&self, rec: &NewRecording) -> Result<()> {
        let mut w = self.store().write().await?;
        sqlx::query(
            "INSERT INTO recordings (id, user_name, target, protocol, client, started_at, path, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'live') ON CONFLICT (id) DO NOTHING",
        )
        .bind(&rec.id)
        .bind(&rec.user)
        .bind(&rec.target)
        .bind(&rec.protocol)
        .bind(&rec.client)
        .bind(&rec.started_at)
        .bind(&rec.path)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// Records how a recording ended (sealed, failed, truncated).
    pub async fn recording_ended(&self, id: &str, end: &RecordingEnd) -> Result<()> {
        let mut w = self.store().write().await?;
        sqlx::query(
            "UPDATE recordings SET status = $2, ended_at = $3, size = $4, final_hash = $5, exit_info = $6, detail = $7 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(end.status.as_str())
        .bind(store::now())
        .bind(end.size.and_then(|s| i64::try_from(s).ok()))
        .bind(&end.final_hash)
        .bind(&end.exit_info)
        .bind(&end.detail)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// At server start: recordings still marked live were cut by a stop or crash. Marks
    /// them truncated (one audit event naming them) and returns their ids.
    pub async fn mark_interrupted_recordings(&self) -> Result<Vec<String>> {
        let mut w = self.store().write().await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM recordings WHERE status = 'live' ORDER BY started_at")
                .fetch_all(&mut *w.tx)
                .await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        sqlx::query(
            "UPDATE recordings SET status = 'truncated', \
             detail = 'the server stopped before the recording was sealed' WHERE status = 'live'",
        )
        .execute(&mut *w.tx)
        .await?;
        let sys = Actor::system();
        audit::append(
            &mut w.tx,
            NewEvent::by(&sys, "recording.interrupted", "recording").detail(format!(
                "{} recording(s) left unsealed by a server stop: {}",
                ids.len(),
                ids.join(", ")
            )),
            &RequestContext::default(),
        )
        .await?;
        w.commit().await?;
        Ok(ids)
    }

    async fn require_view_sessions(
        &self,
        actor: &Actor,
        audit_action: &str,
        object: Option<(&str, &str)>,
        ctx: &RequestContext,
    ) -> Result<()> {
        self.require(
            actor,
            Action::ViewSessions,
            Object::System,
            audit_action,
            "recording",
            object,
            ctx,
        )
        .await
    }

    /// Lists recordings, newest first (needs View sessions; audited).
    pub async fn list_recordings(
        &self,
        actor: &Actor,
        filter: &RecordingFilter,
        ctx: &RequestContext,
    ) -> Result<Vec<RecordingInfo>> {
        self.require_view_sessions(actor, "recording.list", None, ctx).await?;
        let mut q = sqlx::QueryBuilder::<Db>::new("SELECT * FROM recordings WHERE 1 = 1");
        for (col, v) in [
            ("user_name", &filter.user),
            ("target", &filter.target),
            ("protocol", &filter.protocol),
        ] {
            if let Some(v) = v {
                q.push(format!(" AND {col} = ")).push_bind(v.clone());
            }
        }
        for (field, v, op) in [
            ("from", &filter.from, " AND started_at >= "),
            ("to", &filter.to, " AND started_at < "),
        ] {
            if let Some(v) = v {
                let t = parse_ts(v)
                    .ok_or_else(|| Error::invalid(field, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"))?;
                q.push(op).push_bind(format_ts(t));
            }
        }
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 1000));
        let offset = i64::from(filter.offset.unwrap_or(0));
        q.push(" ORDER BY started_at DESC, id LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = q.build().fetch_all(&self.store().pool).await?;
        let list = rows.iter().map(info_from_row).collect::<Result<Vec<_>>>()?;
        self.audit_alone(
            NewEvent::by(actor, "recording.list", "recording").detail(format!("{} listed", list.len())),
            ctx,
        )
        .await?;
        Ok(list)
    }

    /// One recording, for reading its metadata or downloading it (needs View sessions;
    /// audited with who and which recording). Unknown ids are `NotFound`.
    pub async fn recording(
        &self,
        actor: &Actor,
        id: &str,
        access: RecordingAccess,
        ctx: &RequestContext,
    ) -> Result<RecordingDetail> {
        let action = match access {
            RecordingAccess::Read => "recording.read",
            RecordingAccess::Download => "recording.download",
        };
        self.require_view_sessions(actor, action, None, ctx).await?;
        let row = self
            .recording_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "recording" })?;
        let info = info_from_row(&row)?;
        let markers: Option<String> = row.try_get("markers")?;
        let markers = markers
            .and_then(|m| serde_json::from_str::<Vec<RecordingMarker>>(&m).ok())
            .unwrap_or_default();
        let label = format!("{} → {}", info.user, info.target);
        self.audit_alone(NewEvent::by(actor, action, "recording").object(id, &label), ctx)
            .await?;
        Ok(RecordingDetail { info, markers })
    }

    /// The catalog row of recording `id`, if there is one.
    async fn recording_row(&self, id: &str) -> Result<Option<sqlx::sqlite::SqliteRow>> {
        Ok(sqlx::query("SELECT * FROM recordings WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store().pool)
            .await?)
    }

    /// One recording for the web player's frames (needs View sessions, checked every time). Audited as
    /// `recording.play` only when `audit` is set (the first frame a player asks for), so that playing back does
    /// not write an audit event per frame. Unknown ids are `NotFound`.
    pub async fn recording_play(
        &self,
        actor: &Actor,
        id: &str,
        audit: bool,
        ctx: &RequestContext,
    ) -> Result<RecordingInfo> {
        self.require_view_sessions(actor, "recording.play", None, ctx).await?;
        let row = self
            .recording_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "recording" })?;
        let info = info_from_row(&row)?;
        if audit {
            let label = format!("{} → {}", info.user, info.target);
            self.audit_alone(
                NewEvent::by(actor, "recording.play", "recording").object(id, &label),
                ctx,
            )
            .await?;
        }
        Ok(info)
    }

    /// Full-text search over the indexed recordings: every word must appear in one line.
    /// Returns at most `limit` recordings (default 20, at most 100), best match first, each
    /// with its matching lines in time order (needs View sessions; audited).
    pub async fn search_recordings(
        &self,
        actor: &Actor,
        q: &str,
        limit: Option<u32>,
        ctx: &RequestContext,
    ) -> Result<Vec<SearchResult>> {
        self.require_view_sessions(actor, "recording.search", None, ctx).await?;
        let fts = fts_query(q)?;
        let limit = limit.unwrap_or(20).clamp(1, 100) as usize;
        let rows = sqlx::query(
            "SELECT recording_id, kind, offset_s, snippet(recording_text, 0, '', '', '…', 32) AS snip \
             FROM recording_text WHERE recording_text MATCH $1 ORDER BY rank LIMIT 2000",
        )
        .bind(&fts)
        .fetch_all(&self.store().pool)
        .await?;
        let mut order: Vec<String> = Vec::new();
        let mut hits: std::collections::HashMap<String, Vec<SearchHit>> = std::collections::HashMap::new();
        for r in &rows {
            let id: String = r.try_get("recording_id")?;
            let e = hits.entry(id.clone()).or_insert_with(|| {
                order.push(id.clone());
                Vec::new()
            });
            if e.len() < HITS_PER_RECORDING {
                e.push(SearchHit {
                    offset: r.try_get::<f64, _>("offset_s").unwrap_or(0.0),
                    kind: r.try_get("kind")?,
                    snippet: r.try_get("snip")?,
                });
            }
        }
        let mut out = Vec::new();
        for id in order {
            if out.len() >= limit {
                break;
            }
            let Some(row) = self.recording_row(&id).await? else {
                continue;
            };
            let mut h = hits.remove(&id).unwrap_or_default();
            h.sort_by(|a, b| a.offset.total_cmp(&b.offset));
            out.push(SearchResult {
                recording: info_from_row(&row)?,
                hits: h,
            });
        }
        let shown: String = q.trim().chars().take(MAX_QUERY_CHARS).collect();
        self.audit_alone(
            NewEvent::by(actor, "recording.search", "recording")
                .detail(format!("search {shown:?}: {} recording(s)", out.len())),
            ctx,
        )
        .await?;
        Ok(out)
    }

    /// Recordings that ended but are not indexed yet (to index at start).
    pub async fn unindexed_recordings(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, path FROM recordings WHERE status != 'live' AND indexed_at IS NULL ORDER BY started_at",
        )
        .fetch_all(&self.store().pool)
        .await?)
    }

    /// Stores the extracted text and markers of a recording (replacing any earlier index of it).
    /// Written in batches so the writer lock is never held long.
    pub async fn store_recording_index(&self, id: &str, lines: &[TextLine], markers: &[RecordingMarker]) -> Result<()> {
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM recording_text WHERE recording_id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        for batch in lines.chunks(INSERT_BATCH) {
            let mut w = self.store().write().await?;
            for l in batch {
                sqlx::query("INSERT INTO recording_text (text, recording_id, kind, offset_s) VALUES ($1, $2, $3, $4)")
                    .bind(&l.text)
                    .bind(id)
                    .bind(l.kind)
                    .bind(l.offset)
                    .execute(&mut *w.tx)
                    .await?;
            }
            w.commit().await?;
        }
        let markers = serde_json::to_string(markers).map_err(|e| Error::Internal(e.to_string()))?;
        let mut w = self.store().write().await?;
        sqlx::query("UPDATE recordings SET markers = $2, indexed_at = $3 WHERE id = $1")
            .bind(id)
            .bind(markers)
            .bind(store::now())
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    /// Recordings that ended before `cutoff` (RFC 3339): (id, file path), oldest first.
    pub async fn expired_recordings(&self, cutoff: &str) -> Result<Vec<(String, String)>> {
        let t = parse_ts(cutoff).ok_or_else(|| Error::invalid("cutoff", "must be an RFC 3339 time"))?;
        Ok(sqlx::query_as(
            "SELECT id, path FROM recordings WHERE status != 'live' AND COALESCE(ended_at, started_at) < $1 \
             ORDER BY started_at",
        )
        .bind(format_ts(t))
        .fetch_all(&self.store().pool)
        .await?)
    }

    /// Deletes catalog rows and index text of purged recordings, with one audit event naming
    /// how many and which (`why` says by what rule).
    pub async fn forget_recordings(&self, ids: &[String], why: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut w = self.store().write().await?;
        for id in ids {
            sqlx::query("DELETE FROM recording_text WHERE recording_id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("DELETE FROM recordings WHERE id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
        }
        let sys = Actor::system();
        audit::append(
            &mut w.tx,
            NewEvent::by(&sys, "recording.purge", "recording").detail(format!(
                "purged {} recording(s) ({why}): {}",
                ids.len(),
                ids.join(", ")
            )),
            &RequestContext::default(),
        )
        .await?;
        w.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::vault;
    use crate::Role;

    fn new_rec(id: &str, user: &str, started: &str) -> NewRecording {
        NewRecording {
            id: id.into(),
            user: user.into(),
            target: "root@web".into(),
            protocol: "ssh".into(),
            client: Some("127.0.0.1:5000".into()),
            started_at: started.into(),
            path: format!("/data/recordings/{id}.pcast"),
        }
    }

    fn line(offset: f64, kind: &'static str, text: &str) -> TextLine {
        TextLine {
            offset,
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn queries_are_quoted() {
        assert_eq!(fts_query(" nginx  restart ").unwrap(), "\"nginx\" \"restart\"");
        assert_eq!(fts_query("a\"b OR c*").unwrap(), "\"a\"\"b\" \"OR\" \"c*\"");
        assert_eq!(fts_query("recorded-42 -- !").unwrap(), "\"recorded-42\"");
        for bad in ["", "   ", "-- !", &"x".repeat(201), &"a ".repeat(17)] {
            assert!(
                matches!(fts_query(bad), Err(Error::Invalid { field: "q", .. })),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn catalog_search_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        v.recording_started(&new_rec("r1", "alice", "2026-01-01T00:00:00.000000Z"))
            .await
            .unwrap();
        v.recording_started(&new_rec("r2", "bob", "2026-01-02T00:00:00.000000Z"))
            .await
            .unwrap();
        v.recording_started(&new_rec("r1", "alice", "2026-01-01T00:00:00.000000Z"))
            .await
            .unwrap();
        v.recording_ended(
            "r1",
            &RecordingEnd {
                status: RecordingStatus::Sealed,
                size: Some(1234),
                final_hash: Some("ab".repeat(32)),
                exit_info: Some("0".into()),
                detail: None,
            },
        )
        .await
        .unwrap();
        let all = v
            .list_recordings(&sys, &RecordingFilter::default(), &ctx)
            .await
            .unwrap();
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r2", "r1"]);
        assert_eq!(all[1].status, RecordingStatus::Sealed);
        assert_eq!(all[1].size, Some(1234));
        assert!(all[1].ended_at.is_some());
        let f = RecordingFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(v.list_recordings(&sys, &f, &ctx).await.unwrap().len(), 1);
        let f = RecordingFilter {
            from: Some("2026-01-01T12:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(v.list_recordings(&sys, &f, &ctx).await.unwrap()[0].id, "r2");
        let f = RecordingFilter {
            limit: Some(1),
            offset: Some(1),
            ..Default::default()
        };
        assert_eq!(v.list_recordings(&sys, &f, &ctx).await.unwrap()[0].id, "r1");
        let f = RecordingFilter {
            to: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(matches!(
            v.list_recordings(&sys, &f, &ctx).await,
            Err(Error::Invalid { field: "to", .. })
        ));

        // Index and search.
        v.store_recording_index(
            "r1",
            &[
                line(1.5, "command", "systemctl restart nginx"),
                line(2.0, "output", "Job for nginx.service failed"),
                line(9.0, "output", "recorded-42"),
            ],
            &[RecordingMarker {
                offset: 0.1,
                kind: "exec".into(),
                detail: "uptime".into(),
            }],
        )
        .await
        .unwrap();
        v.store_recording_index("r2", &[line(3.0, "output", "nginx is fine")], &[])
            .await
            .unwrap();
        let res = v.search_recordings(&sys, "nginx", None, &ctx).await.unwrap();
        assert_eq!(res.len(), 2);
        let r1 = res.iter().find(|r| r.recording.id == "r1").unwrap();
        assert_eq!(r1.hits.len(), 2);
        assert_eq!(r1.hits[0].offset, 1.5);
        assert_eq!(r1.hits[0].kind, "command");
        assert!(r1.hits[0].snippet.contains("restart nginx"), "{:?}", r1.hits);
        assert!(r1.recording.indexed);
        let res = v.search_recordings(&sys, "restart nginx", None, &ctx).await.unwrap();
        assert_eq!(res.len(), 1);
        let res = v.search_recordings(&sys, "recorded-42", None, &ctx).await.unwrap();
        assert_eq!(res[0].hits[0].offset, 9.0);
        assert!(v.search_recordings(&sys, "NEAR(", None, &ctx).await.unwrap().is_empty());
        // Re-indexing replaces.
        v.store_recording_index("r2", &[line(3.0, "output", "all good")], &[])
            .await
            .unwrap();
        assert_eq!(v.search_recordings(&sys, "nginx", None, &ctx).await.unwrap().len(), 1);
        let d = v.recording(&sys, "r1", RecordingAccess::Download, &ctx).await.unwrap();
        assert_eq!(d.markers[0].detail, "uptime");
        assert!(matches!(
            v.recording(&sys, "nope", RecordingAccess::Read, &ctx).await,
            Err(Error::NotFound { .. })
        ));

        // A live recording at start is truncated; purge by age.
        assert_eq!(v.mark_interrupted_recordings().await.unwrap(), ["r2"]);
        assert!(v.mark_interrupted_recordings().await.unwrap().is_empty());
        assert!(v.unindexed_recordings().await.unwrap().is_empty());
        let old = v.expired_recordings("2026-01-01T00:00:01Z").await.unwrap();
        assert!(old.is_empty(), "r1 ended now; r2 started on the 2nd: {old:?}");
        let old = v.expired_recordings("2026-01-03T00:00:00Z").await.unwrap();
        assert_eq!(old, [("r2".to_string(), "/data/recordings/r2.pcast".to_string())]);
        v.forget_recordings(&["r2".into()], "older than 1 days").await.unwrap();
        assert_eq!(
            v.list_recordings(&sys, &RecordingFilter::default(), &ctx)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(v.search_recordings(&sys, "good", None, &ctx).await.unwrap().is_empty());
        let ev = v
            .audit_events(
                &sys,
                &crate::AuditFilter {
                    action: Some("recording.".into()),
                    ..Default::default()
                },
                &ctx,
            )
            .await
            .unwrap();
        let purge = ev.iter().find(|e| e.action == "recording.purge").unwrap();
        assert!(purge.detail.as_deref().unwrap().contains("purged 1 recording(s)"));
        assert!(purge.detail.as_deref().unwrap().contains("r2"));
        assert!(ev
            .iter()
            .any(|e| e.action == "recording.download" && e.object_id.as_deref() == Some("r1")));
        assert!(ev.iter().any(|e| e.action == "recording.search"));
        assert!(ev.iter().any(|e| e.action == "recording.interrupted"));
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }

    #[tokio::test]
    async fn needs_the_view_sessions_permission() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let actor = Actor {
            id: "u1".into(),
            username: "pu".into(),
            role: Role::PasswordUser,
            super_admin: false,
            must_change_password: false,
            is_system: false,
            custom_ops: None,
        };
        assert!(matches!(
            v.list_recordings(&actor, &RecordingFilter::default(), &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            v.search_recordings(&actor, "x", None, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
    }
}
