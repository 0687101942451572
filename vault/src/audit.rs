//! The audit trail: append-only, hash-chained.
//!
//! Each event is appended in the same transaction as the change it records.
//! `hash = SHA-256(prev_hash ‖ canonical JSON of the row)`, where the row
//! includes its sequence number, so an edited, deleted or reordered row breaks
//! the chain at that row. [`Vault::verify_audit`](crate::Vault::verify_audit) walks it.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Row, Transaction};

use crate::error::Result;
use crate::model::{Actor, RequestContext};
use crate::store::{self, Db};

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Outcome of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by authorization.
    Denied,
    /// Attempted and failed (wrong password, target unreachable...).
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Who.
    pub actor_id: Option<&'a str>,
    /// Who, by name (kept even if the user is deleted later).
    pub actor_name: &'a str,
    /// What, as `object.verb` (e.g. `account.retrieve`).
    pub action: &'a str,
    /// Kind of object.
    pub object_type: &'a str,
    /// Object id.
    pub object_id: Option<&'a str>,
    /// Object name at the time.
    pub object_name: Option<&'a str>,
    /// Outcome.
    pub outcome: Outcome,
    /// Free detail (never a secret).
    pub detail: Option<String>,
}

impl<'a> NewEvent<'a> {
    /// An event by `actor`.
    pub fn by(actor: &'a Actor, action: &'a str, object_type: &'a str) -> Self {
        NewEvent {
            actor_id: Some(&actor.id),
            actor_name: &actor.username,
            action,
            object_type,
            object_id: None,
            object_name: None,
            outcome: Outcome::Success,
            detail: None,
        }
    }
    /// Sets the object.
    pub fn object(mut self, id: &'a str, name: &'a str) -> Self {
        self.object_id = Some(id);
        self.object_name = Some(name);
        self
    }
    /// Sets the outcome.
    pub fn outcome(mut self, o: Outcome) -> Self {
        self.outcome = o;
        self
    }
    /// Sets the detail.
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the chain.
    pub seq: i64,
    /// Time (RFC 3339 UTC).
    pub at: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor name.
    pub actor_name: String,
    /// Action.
    pub action: String,
    /// Object type.
    pub object_type: String,
    /// Object id.
    pub object_id: Option<String>,
    /// Object name.
    pub object_name: Option<String>,
    /// Client IP.
    pub client_ip: Option<String>,
    /// Stated reason.
    pub reason: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// Detail.
    pub detail: Option<String>,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl AuditEvent {
    fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.seq,
            self.at,
            self.actor_id,
            self.actor_name,
            self.action,
            self.object_type,
            self.object_id,
            self.object_name,
            self.client_ip,
            self.reason,
            self.outcome,
            self.detail,
        ]);
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(canonical.to_string().as_bytes());
        hex::encode(h.finalize())
    }

    pub(crate) fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Self> {
        Ok(AuditEvent {
            seq: r.try_get("seq")?,
            at: r.try_get("at")?,
            actor_id: r.try_get("actor_id")?,
            actor_name: r.try_get("actor_name")?,
            action: r.try_get("action")?,
            object_type: r.try_get("object_type")?,
            object_id: r.try_get("object_id")?,
            object_name: r.try_get("object_name")?,
            client_ip: r.try_get("client_ip")?,
            reason: r.try_get("reason")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        })
    }
}

/// Appends an event inside the caller's (serialized) write transaction.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Db>,
    ev: NewEvent<'_>,
    ctx: &RequestContext,
) -> Result<String> {
    let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_owned()),
    };
    let mut row = AuditEvent {
        seq,
        at: store::now(),
        actor_id: ev.actor_id.map(str::to_owned),
        actor_name: ev.actor_name.to_owned(),
        action: ev.action.to_owned(),
        object_type: ev.object_type.to_owned(),
        object_id: ev.object_id.map(str::to_owned),
        object_name: ev.object_name.map(str::to_owned),
        client_ip: ctx.client_ip.map(|ip| ip.to_string()),
        reason: ctx.reason.clone(),
        outcome: ev.outcome.as_str().to_owned(),
        detail: ev.detail,
        prev_hash,
        hash: String::new(),
    };
    row.hash = row.compute_hash();
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor_id, actor_name, action, object_type, object_id, object_name, \
         client_ip, reason, outcome, detail, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
    )
    .bind(row.seq)
    .bind(&row.at)
    .bind(&row.actor_id)
    .bind(&row.actor_name)
    .bind(&row.action)
    .bind(&row.object_type)
    .bind(&row.object_id)
    .bind(&row.object_name)
    .bind(&row.client_ip)
    .bind(&row.reason)
    .bind(&row.outcome)
    .bind(&row.detail)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(&mut **tx)
    .await?;
    Ok(row.hash)
}

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerification {
    /// Events checked.
    pub events: u64,
    /// Hash of the last event (the chain head).
    pub head: String,
    /// The first event whose hash or link is wrong, if any.
    pub first_broken: Option<BrokenLink>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokenLink {
    /// Sequence number of the bad row.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Actor name equals.
    pub actor: Option<String>,
    /// Action equals, or starts with it when it ends in `.` (e.g. `account.`).
    pub action: Option<String>,
    /// Object id equals.
    pub object_id: Option<String>,
    /// Outcome equals.
    pub outcome: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// Before (RFC 3339).
    pub until: Option<String>,
    /// Max rows (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events with seq below this (paging backwards).
    pub before_seq: Option<i64>,
}

pub(crate) async fn verify(pool: &sqlx::SqlitePool) -> Result<AuditVerification> {
    use futures_util::StreamExt;
    let mut rows = sqlx::query("SELECT * FROM audit_events ORDER BY seq").fetch(pool);
    let mut expected_prev = GENESIS.to_owned();
    let mut expected_seq = 1i64;
    let mut n = 0u64;
    while let Some(r) = rows.next().await {
        let ev = AuditEvent::from_row(&r?)?;
        n += 1;
        let problem = if ev.seq != expected_seq {
            Some(format!(
                "sequence gap: expected {expected_seq}, found {} (rows deleted or inserted)",
                ev.seq
            ))
        } else if ev.prev_hash != expected_prev {
            Some("link to the previous event does not match (a previous row was changed or removed)".to_owned())
        } else if ev.compute_hash() != ev.hash {
            Some("content does not match its hash (the row was modified)".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Ok(AuditVerification {
                events: n,
                head: ev.hash,
                first_broken: Some(BrokenLink { seq: ev.seq, problem }),
            });
        }
        expected_prev = ev.hash;
        expected_seq += 1;
    }
    Ok(AuditVerification {
        events: n,
        head: expected_prev,
        first_broken: None,
    })
}
