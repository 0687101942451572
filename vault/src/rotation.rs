//! Passwords due for rotation (PMP 8.3): what the dashboard lists. The sweep
//! that resets them lives in `reset.rs`; this is the read side.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext};
use crate::store::{self, Db};
use crate::Vault;

/// Accounts whose password reaches its maximum age within this many days are listed.
pub const DUE_WITHIN_DAYS: i64 = 7;

/// An account whose vaulted password is past, or close to, its policy's maximum age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DuePassword {
    /// Account id.
    pub account_id: String,
    /// Login on the target.
    pub login: String,
    /// Resource id.
    pub resource_id: String,
    /// Resource name.
    pub resource: String,
    /// When the password was last set (RFC 3339); `None`: never recorded.
    pub changed_at: Option<String>,
    /// The policy's maximum age in days.
    pub max_age_days: u32,
    /// When it must be (or had to be) changed (RFC 3339); `None` when never recorded (due now).
    pub due_at: Option<String>,
    /// Already past its maximum age.
    pub overdue: bool,
    /// Result of the last reset attempt (`ok`, `failed`), if any.
    pub last_reset: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    login: String,
    resource_id: String,
    resource: String,
    changed: Option<String>,
    status: Option<String>,
}

impl Vault {
    /// Accounts with a vaulted password on resources `actor` can see whose password is past its
    /// maximum age or reaches it within [`DUE_WITHIN_DAYS`] days, most urgent first.
    pub async fn passwords_due(&self, actor: &Actor, ctx: &RequestContext) -> Result<Vec<DuePassword>> {
        let visible = self.list_resources(actor, ctx).await?;
        if visible.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as::<Db, Row>(
            "SELECT a.id, a.login, a.resource_id, r.name AS resource, a.password_changed_at AS changed, \
             a.reset_status AS status FROM accounts a JOIN resources r ON r.id = a.resource_id \
             WHERE EXISTS(SELECT 1 FROM sealed s WHERE s.owner = 'account:' || a.id || ':password')",
        )
        .fetch_all(&self.store().pool)
        .await?;
        let now = time::OffsetDateTime::now_utc();
        let horizon = now + time::Duration::days(DUE_WITHIN_DAYS);
        let mut due = Vec::new();
        for r in rows {
            if !visible.iter().any(|v| v.id == r.resource_id) {
                continue;
            }
            let Some(days) = self.password_policy_for(&r.id).await?.max_age_days else {
                continue;
            };
            let changed = r.changed.as_deref().and_then(store::parse_ts);
            let due_at = changed.map(|c| c + time::Duration::days(i64::from(days)));
            if due_at.is_some_and(|d| d > horizon) {
                continue;
            }
            due.push(DuePassword {
                account_id: r.id,
                login: r.login,
                resource_id: r.resource_id,
                resource: r.resource,
                changed_at: changed.map(store::format_ts),
                max_age_days: days,
                due_at: due_at.map(store::format_ts),
                overdue: due_at.is_none_or(|d| d <= now),
                last_reset: r.status,
            });
        }
        due.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.account_id.cmp(&b.account_id)));
        Ok(due)
    }

    /// Checks that `actor` may read the server's settings (the Settings operation); audited when refused.
    pub async fn require_settings_view(&self, actor: &Actor, ctx: &RequestContext) -> Result<()> {
        self.require(
            actor,
            crate::Action::ManageSettings,
            crate::Object::System,
            "settings.read",
            "settings",
            None,
            ctx,
        )
        .await
        .map_err(|e| match e {
            Error::NotFound { .. } => Error::Forbidden {
                reason: "the Settings operation is needed",
            },
            other => other,
        })
    }
}
