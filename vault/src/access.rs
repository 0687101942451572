//! Access requests (PMP 7.3–7.5) as a typed state machine.
//!
//! ```text
//! requested ──approve (1 or 2 distinct approvers, never the requester)──▶ approved
//!     │                                                                     │ check out
//!     └──deny──▶ denied                      queued ◀──(exclusive, queue)───┤
//!                                              │ holder checks in           ▼
//!                                              └───────────────────▶ checked_out ──check in / window end──▶ checked_in
//! ```
//!
//! [`RequestState`] holds each state's data; its transition methods consume
//! the state and return the next one or [`Error::InvalidTransition`], so an
//! impossible step cannot be written to the database. At check-in the vault
//! broadcasts [`VaultEvent::CheckedIn`] (the root ends the user's gateway
//! sessions on the account) and resets the password on the target.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::audit::{self, NewEvent, Outcome};
use crate::authz::{authorize, Access, Action, Object};
use crate::error::{Error, Result};
use crate::model::{Account, Actor, RequestContext, Resource};
use crate::store::{self, format_ts, parse_ts};
use crate::Vault;

/// The access window of an actor on an account, as `authorize()` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessInfo {
    pub access: Access,
    pub window_end: Option<OffsetDateTime>,
    /// The reason of the checked-out request behind an open window.
    pub reason: Option<String>,
}

/// Something the vault tells the rest of the server (the root subscribes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultEvent {
    /// A checked-out account was checked in: end the user's sessions on it.
    CheckedIn {
        /// The request.
        request_id: String,
        /// The account.
        account_id: String,
        /// `login@resource`, as the gateway labels sessions.
        account_label: String,
        /// The requester's user name.
        username: String,
    },
}

/// Checks ticket ids given with access requests (a help-desk integration).
pub trait TicketValidator: Send + Sync {
    /// `Ok(true)`: the ticket exists and allows this request; `Ok(false)`:
    /// refused; `Err(text)`: the ticket system could not answer.
    fn validate<'a>(&'a self, ticket: &'a TicketCheck) -> BoxFuture<'a, std::result::Result<bool, String>>;
}

/// What a [`TicketValidator`] is asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketCheck {
    /// The ticket id the requester gave.
    pub ticket_id: String,
    /// Requester user name.
    pub requester: String,
    /// `login@resource`.
    pub account: String,
    /// The stated reason.
    pub reason: String,
}

/// What happens when an exclusive account is already checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExclusiveMode {
    /// The second check-out is refused (409).
    Refuse,
    /// The second requester waits in a queue and is checked out when the holder checks in.
    Queue,
}

impl ExclusiveMode {
    fn as_str(self) -> &'static str {
        match self {
            ExclusiveMode::Refuse => "refuse",
            ExclusiveMode::Queue => "queue",
        }
    }
}

/// Access control of a resource's accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Sessions and retrievals need an approved, checked-out request (the owner is exempt).
    pub require_request: bool,
    /// Two distinct approvers instead of one.
    #[serde(default)]
    pub dual_approval: bool,
    /// One holder at a time per account.
    #[serde(default)]
    pub exclusive: bool,
    /// When exclusive and taken: `refuse` (default) or `queue`.
    #[serde(default = "default_mode")]
    pub exclusive_mode: ExclusiveMode,
    /// Longest window a request may ask for, in minutes (default 480).
    #[serde(default = "default_max_window")]
    pub max_window_minutes: u32,
    /// Reset the password on the target at check-in (default true).
    #[serde(default = "default_true")]
    pub reset_on_checkin: bool,
}

fn default_mode() -> ExclusiveMode {
    ExclusiveMode::Refuse
}
fn default_max_window() -> u32 {
    480
}
fn default_true() -> bool {
    true
}

/// A new access request.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAccessRequest {
    /// The account.
    pub account_id: String,
    /// Why (required).
    pub reason: String,
    /// A help-desk ticket id, checked by the configured validator.
    #[serde(default)]
    pub ticket_id: Option<String>,
    /// Length of the check-out window in minutes (default and maximum: the policy's maximum).
    #[serde(default)]
    pub window_minutes: Option<u32>,
}

/// An access request as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessRequest {
    /// Id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Who asked.
    pub requester_id: String,
    /// Why.
    pub reason: String,
    /// Ticket id.
    pub ticket_id: Option<String>,
    /// Window length in minutes.
    pub window_minutes: u32,
    /// `requested`, `approved`, `denied`, `queued`, `checked_out` or `checked_in`.
    pub state: String,
    /// Approver user ids so far.
    pub approvals: Vec<String>,
    /// Approvals needed (1, or 2 with dual approval).
    pub needed: u32,
    /// Who denied it.
    pub denied_by: Option<String>,
    /// Check-out time.
    pub checked_out_at: Option<String>,
    /// End of the window.
    pub window_end: Option<String>,
    /// Check-in time.
    pub checked_in_at: Option<String>,
    /// Who checked it in (`system` at the end of the window).
    pub checked_in_by: Option<String>,
    /// Outcome of the password reset at check-in.
    pub reset_outcome: Option<String>,
    /// Creation time.
    pub created_at: String,
}

/// The state of a request with the data each state carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for approvals (the ones given so far).
    Requested {
        /// Approver ids so far.
        approvals: Vec<String>,
    },
    /// Approved, not checked out yet.
    Approved {
        /// Approver ids.
        approvals: Vec<String>,
    },
    /// Refused.
    Denied {
        /// Who refused.
        by: String,
    },
    /// Approved and waiting for an exclusive account to be checked in.
    Queued {
        /// Approver ids.
        approvals: Vec<String>,
    },
    /// Checked out until `until`.
    CheckedOut {
        /// Approver ids.
        approvals: Vec<String>,
        /// Start of the window.
        from: OffsetDateTime,
        /// End of the window.
        until: OffsetDateTime,
    },
    /// Returned.
    CheckedIn {
        /// Approver ids.
        approvals: Vec<String>,
        /// When.
        at: OffsetDateTime,
        /// Who (`system` at the end of the window).
        by: String,
    },
}

impl RequestState {
    /// The state's id.
    pub fn name(&self) -> &'static str {
        match self {
            RequestState::Requested { .. } => "requested",
            RequestState::Approved { .. } => "approved",
            RequestState::Denied { .. } => "denied",
            RequestState::Queued { .. } => "queued",
            RequestState::CheckedOut { .. } => "checked_out",
            RequestState::CheckedIn { .. } => "checked_in",
        }
    }

    fn invalid(&self, action: &'static str) -> Error {
        Error::InvalidTransition {
            action,
            state: self.name(),
        }
    }

    /// One approval. The requester never approves their own request, and an
    /// approver counts once: with `needed = 2` two distinct people must approve.
    pub fn approve(self, approver: &str, requester: &str, needed: u32) -> Result<RequestState> {
        match self {
            RequestState::Requested { mut approvals } => {
                if approver == requester {
                    return Err(Error::Forbidden {
                        reason: "requesters cannot approve their own requests",
                    });
                }
                if approvals.iter().any(|a| a == approver) {
                    return Err(Error::Forbidden {
                        reason: "you already approved this request; a second approver is needed",
                    });
                }
                approvals.push(approver.to_owned());
                Ok(if approvals.len() as u32 >= needed {
                    RequestState::Approved { approvals }
                } else {
                    RequestState::Requested { approvals }
                })
            }
            s => Err(s.invalid("approve")),
        }
    }

    /// Refuses a request that is not checked out yet.
    pub fn deny(self, by: &str) -> Result<RequestState> {
        match self {
            RequestState::Requested { .. } | RequestState::Approved { .. } | RequestState::Queued { .. } => {
                Ok(RequestState::Denied { by: by.to_owned() })
            }
            s => Err(s.invalid("deny")),
        }
    }

    /// Checks out for `window` from `now`. `taken` is `Some(mode)` when the
    /// policy is exclusive and someone else holds the account.
    pub fn checkout(self, now: OffsetDateTime, window: Duration, taken: Option<ExclusiveMode>) -> Result<RequestState> {
        match self {
            RequestState::Approved { approvals } | RequestState::Queued { approvals } => match taken {
                None => Ok(RequestState::CheckedOut {
                    approvals,
                    from: now,
                    until: now + window,
                }),
                Some(ExclusiveMode::Queue) => Ok(RequestState::Queued { approvals }),
                Some(ExclusiveMode::Refuse) => Err(Error::conflict(
                    "the account is checked out by someone else (exclusive access); try again after they check in",
                )),
            },
            s => Err(s.invalid("check out")),
        }
    }

    /// Checks in (by the user, an approver, or the system at the end of the window).
    pub fn checkin(self, now: OffsetDateTime, by: &str) -> Result<RequestState> {
        match self {
            RequestState::CheckedOut { approvals, .. } => Ok(RequestState::CheckedIn {
                approvals,
                at: now,
                by: by.to_owned(),
            }),
            s => Err(s.invalid("check in")),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    account_id: String,
    requester_id: String,
    reason: String,
    ticket_id: Option<String>,
    window_minutes: i64,
    state: String,
    approvals: String,
    needed: i64,
    denied_by: Option<String>,
    checked_out_at: Option<String>,
    window_end: Option<String>,
    checked_in_at: Option<String>,
    checked_in_by: Option<String>,
    reset_outcome: Option<String>,
    created_at: String,
}

impl Row {
    fn corrupt(&self, d: &str) -> Error {
        Error::Corrupt {
            table: "access_requests",
            id: self.id.clone(),
            detail: d.into(),
        }
    }

    fn state(&self) -> Result<RequestState> {
        let approvals: Vec<String> =
            serde_json::from_str(&self.approvals).map_err(|_| self.corrupt("approvals is not a JSON list"))?;
        let ts = |v: &Option<String>, f: &str| {
            v.as_deref()
                .and_then(parse_ts)
                .ok_or_else(|| self.corrupt(&format!("{f} missing or not a time")))
        };
        Ok(match self.state.as_str() {
            "requested" => RequestState::Requested { approvals },
            "approved" => RequestState::Approved { approvals },
            "queued" => RequestState::Queued { approvals },
            "denied" => RequestState::Denied {
                by: self.denied_by.clone().unwrap_or_default(),
            },
            "checked_out" => RequestState::CheckedOut {
                approvals,
                from: ts(&self.checked_out_at, "checked_out_at")?,
                until: ts(&self.window_end, "window_end")?,
            },
            "checked_in" => RequestState::CheckedIn {
                approvals,
                at: ts(&self.checked_in_at, "checked_in_at")?,
                by: self.checked_in_by.clone().unwrap_or_default(),
            },
            other => return Err(self.corrupt(&format!("unknown state {other:?}"))),
        })
    }

    fn into_model(self) -> AccessRequest {
        let approvals = serde_json::from_str(&self.approvals).unwrap_or_default();
        AccessRequest {
            id: self.id,
            account_id: self.account_id,
            requester_id: self.requester_id,
            reason: self.reason,
            ticket_id: self.ticket_id,
            window_minutes: u32::try_from(self.window_minutes).unwrap_or(0),
            state: self.state,
            approvals,
            needed: u32::try_from(self.needed).unwrap_or(1),
            denied_by: self.denied_by,
            checked_out_at: self.checked_out_at,
            window_end: self.window_end,
            checked_in_at: self.checked_in_at,
            checked_in_by: self.checked_in_by,
            reset_outcome: self.reset_outcome,
            created_at: self.created_at,
        }
    }
}

/// Writes a state's columns.
async fn save_state(tx: &mut sqlx::Transaction<'static, store::Db>, id: &str, s: &RequestState) -> Result<()> {
    let (approvals, denied_by, out_at, end, in_at, in_by) = match s {
        RequestState::Requested { approvals }
        | RequestState::Approved { approvals }
        | RequestState::Queued { approvals } => (Some(approvals), None, None, None, None, None),
        RequestState::Denied { by } => (None, Some(by.clone()), None, None, None, None),
        RequestState::CheckedOut { approvals, from, until } => (
            Some(approvals),
            None,
            Some(format_ts(*from)),
            Some(format_ts(*until)),
            None,
            None,
        ),
        RequestState::CheckedIn { approvals, at, by } => (
            Some(approvals),
            None,
            None,
            None,
            Some(format_ts(*at)),
            Some(by.clone()),
        ),
    };
    sqlx::query(
        "UPDATE access_requests SET state = $1, approvals = COALESCE($2, approvals), denied_by = COALESCE($3, denied_by), \
         checked_out_at = COALESCE($4, checked_out_at), window_end = COALESCE($5, window_end), \
         checked_in_at = COALESCE($6, checked_in_at), checked_in_by = COALESCE($7, checked_in_by), updated_at = $8 WHERE id = $9",
    )
    .bind(s.name())
    .bind(approvals.map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into())))
    .bind(denied_by)
    .bind(out_at)
    .bind(end)
    .bind(in_at)
    .bind(in_by)
    .bind(store::now())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const COLS: &str =
    "id, account_id, requester_id, reason, ticket_id, window_minutes, state, approvals, needed, denied_by, \
                    checked_out_at, window_end, checked_in_at, checked_in_by, reset_outcome, created_at";

impl Vault {
    /// Receives the vault's events (bounded: a slow subscriber loses the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<VaultEvent> {
        self.inner.events.subscribe()
    }

    /// Sets the ticket validator (the root wires the webhook one from the config).
    pub fn set_ticket_validator(&self, v: std::sync::Arc<dyn TicketValidator>) {
        *self.inner.tickets.write().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    /// The access policy of a resource (None: no access control).
    pub async fn access_policy(&self, resource_id: &str) -> Result<Option<AccessPolicy>> {
        let row: Option<(bool, bool, bool, String, i64, bool)> = sqlx::query_as(
            "SELECT require_request, dual_approval, exclusive, exclusive_mode, max_window_minutes, reset_on_checkin \
             FROM access_policies WHERE resource_id = $1",
        )
        .bind(resource_id)
        .fetch_optional(&self.store().pool)
        .await?;
        Ok(row.map(
            |(require_request, dual_approval, exclusive, mode, max, reset)| AccessPolicy {
                require_request,
                dual_approval,
                exclusive,
                exclusive_mode: if mode == "queue" {
                    ExclusiveMode::Queue
                } else {
                    ExclusiveMode::Refuse
                },
                max_window_minutes: u32::try_from(max).unwrap_or(480),
                reset_on_checkin: reset,
            },
        ))
    }

    /// Reads a resource's access policy (anyone who sees the resource).
    pub async fn get_access_policy(
        &self,
        actor: &Actor,
        resource_id: &str,
        ctx: &RequestContext,
    ) -> Result<AccessPolicy> {
        self.get_resource(actor, resource_id, ctx).await?;
        Ok(self.access_policy(resource_id).await?.unwrap_or(AccessPolicy {
            require_request: false,
            dual_approval: false,
            exclusive: false,
            exclusive_mode: ExclusiveMode::Refuse,
            max_window_minutes: 480,
            reset_on_checkin: true,
        }))
    }

    /// Sets a resource's access policy (needs the right to change the resource).
    pub async fn set_access_policy(
        &self,
        actor: &Actor,
        resource_id: &str,
        p: AccessPolicy,
        ctx: &RequestContext,
    ) -> Result<AccessPolicy> {
        let r = self.get_resource(actor, resource_id, ctx).await?;
        let share = self.share_level_for(actor, resource_id, None).await?;
        self.require(
            actor,
            Action::UpdateResource,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "resource.access_policy",
            "resource",
            Some((resource_id, &r.name)),
            ctx,
        )
        .await?;
        if p.max_window_minutes == 0 || p.max_window_minutes > 7 * 24 * 60 {
            return Err(Error::invalid(
                "max_window_minutes",
                "must be between 1 and 10080 (a week)",
            ));
        }
        let mut w = self.store().write().await?;
        sqlx::query(
            "INSERT INTO access_policies (resource_id, require_request, dual_approval, exclusive, exclusive_mode, \
             max_window_minutes, reset_on_checkin, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
             ON CONFLICT (resource_id) DO UPDATE SET require_request = excluded.require_request, \
             dual_approval = excluded.dual_approval, exclusive = excluded.exclusive, exclusive_mode = excluded.exclusive_mode, \
             max_window_minutes = excluded.max_window_minutes, reset_on_checkin = excluded.reset_on_checkin, \
             updated_at = excluded.updated_at",
        )
        .bind(resource_id)
        .bind(p.require_request)
        .bind(p.dual_approval)
        .bind(p.exclusive)
        .bind(p.exclusive_mode.as_str())
        .bind(i64::from(p.max_window_minutes))
        .bind(p.reset_on_checkin)
        .bind(store::now())
        .execute(&mut *w.tx)
        .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.access_policy", "resource")
                .object(resource_id, &r.name)
                .detail(format!(
                    "require_request={} dual_approval={} exclusive={} ({}) max_window={}min reset_on_checkin={}",
                    p.require_request,
                    p.dual_approval,
                    p.exclusive,
                    p.exclusive_mode.as_str(),
                    p.max_window_minutes,
                    p.reset_on_checkin
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(p)
    }

    /// The access window of `actor` on an account: `Free` without access
    /// control, `Open` (with its end) during a checked-out window, else `Closed`.
    ///
    /// With `[vault] require_reason`, a session (`for_session`) also needs an
    /// open window: the checked-out request is where the user states the reason.
    /// The open window's request reason is returned for the audit.
    pub(crate) async fn access_for(&self, actor: &Actor, account: &Account, for_session: bool) -> Result<AccessInfo> {
        let controlled = self
            .access_policy(&account.resource_id)
            .await?
            .is_some_and(|p| p.require_request);
        let gated = controlled || (for_session && self.require_reason());
        let now = store::now();
        let open: Option<(String, String)> = sqlx::query_as(
            "SELECT window_end, reason FROM access_requests WHERE account_id = $1 AND requester_id = $2 \
             AND state = 'checked_out' AND window_end > $3 ORDER BY window_end DESC LIMIT 1",
        )
        .bind(&account.id)
        .bind(&actor.id)
        .bind(&now)
        .fetch_optional(&self.store().pool)
        .await?;
        let open = open.and_then(|(end, reason)| parse_ts(&end).map(|t| (t, reason)));
        Ok(match (gated, open) {
            (_, Some((end, reason))) => AccessInfo {
                access: Access::Open,
                window_end: Some(end),
                reason: Some(reason),
            },
            (true, None) => AccessInfo {
                access: Access::Closed,
                window_end: None,
                reason: None,
            },
            (false, None) => AccessInfo {
                access: Access::Free,
                window_end: None,
                reason: None,
            },
        })
    }

    /// `[vault] require_reason` is on.
    pub fn require_reason(&self) -> bool {
        self.inner.require_reason.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes a reason mandatory for every retrieval and every session (`[vault] require_reason`).
    pub fn set_require_reason(&self, on: bool) {
        self.inner
            .require_reason
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    async fn request_row(&self, id: &str) -> Result<Row> {
        sqlx::query_as::<store::Db, Row>(&format!("SELECT {COLS} FROM access_requests WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.store().pool)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })
    }

    async fn request_model(&self, id: &str) -> Result<AccessRequest> {
        Ok(self.request_row(id).await?.into_model())
    }

    /// Asks for access to an account under access control.
    pub async fn create_access_request(
        &self,
        actor: &Actor,
        n: NewAccessRequest,
        ctx: &RequestContext,
    ) -> Result<AccessRequest> {
        let (a, r, share) = self.account_object(actor, &n.account_id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            Action::RequestAccess,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
            "access_request.create",
            "account",
            Some((&a.id, &a.login)),
            ctx,
        )
        .await?;
        if actor.is_system {
            return Err(Error::invalid(
                "account_id",
                "the local operator does not request access",
            ));
        }
        let reason = n.reason.trim();
        if reason.is_empty() || reason.chars().count() > 1000 || reason.chars().any(char::is_control) {
            return Err(Error::invalid(
                "reason",
                "is required: 1 to 1000 characters without control characters",
            ));
        }
        let controlled = self.access_policy(&r.id).await?.filter(|p| p.require_request);
        let (max_window, needed) = match &controlled {
            Some(p) => (p.max_window_minutes, if p.dual_approval { 2 } else { 1 }),
            // With require_reason, a request states the reason for sessions; no approval needed.
            None if self.require_reason() => (480, 0),
            None => {
                return Err(Error::conflict(
                    "this account is not under access control: no request is needed",
                ))
            }
        };
        let window = n.window_minutes.unwrap_or(max_window);
        if window == 0 || window > max_window {
            return Err(Error::invalid(
                "window_minutes",
                format!("must be between 1 and {max_window} (the resource's maximum)"),
            ));
        }
        let label = format!("{}@{}", a.login, r.name);
        let ticket = n.ticket_id.as_deref().map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = ticket {
            if t.len() > 128 || t.chars().any(char::is_control) {
                return Err(Error::invalid("ticket_id", "must be at most 128 characters"));
            }
            let validator = self.inner.tickets.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(v) = validator {
                let check = TicketCheck {
                    ticket_id: t.to_owned(),
                    requester: actor.username.clone(),
                    account: label.clone(),
                    reason: reason.to_owned(),
                };
                let verdict = v.validate(&check).await;
                if verdict != Ok(true) {
                    let why = match &verdict {
                        Err(e) => format!("the ticket system could not check ticket {t}: {e}"),
                        _ => format!("ticket {t} was refused by the ticket system"),
                    };
                    self.audit_alone(
                        NewEvent::by(actor, "access_request.create", "account")
                            .object(&a.id, &label)
                            .outcome(Outcome::Denied)
                            .detail(why.clone()),
                        ctx,
                    )
                    .await?;
                    return Err(Error::invalid("ticket_id", why));
                }
            }
        }
        let id = store::new_id();
        let now = store::now();
        let state = if needed == 0 { "approved" } else { "requested" };
        let mut w = self.store().write().await?;
        sqlx::query(
            "INSERT INTO access_requests (id, account_id, requester_id, reason, ticket_id, window_minutes, state, approvals, \
             needed, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$9,'[]',$7,$8,$8)",
        )
        .bind(&id)
        .bind(&a.id)
        .bind(&actor.id)
        .bind(reason)
        .bind(ticket)
        .bind(i64::from(window))
        .bind(needed)
        .bind(&now)
        .bind(state)
        .execute(&mut *w.tx)
        .await?;
        let mut ctx2 = ctx.clone();
        ctx2.reason = Some(reason.to_owned());
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "access_request.create", "account")
                .object(&a.id, &label)
                .detail(format!(
                    "request {id}: {window} min window, {needed} approval(s) needed{}{}",
                    ticket.map(|t| format!(", ticket {t}")).unwrap_or_default(),
                    if needed == 0 {
                        "; approved at once (reason only)"
                    } else {
                        ""
                    }
                )),
            &ctx2,
        )
        .await?;
        w.commit().await?;
        self.request_model(&id).await
    }

    /// Is the actor an approver of this account's requests? (Never audits.)
    async fn may_approve(&self, actor: &Actor, a: &Account, r: &Resource) -> Result<bool> {
        let share = self.share_level_for(actor, &r.id, Some(&a.id)).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        Ok(authorize(
            actor,
            Action::ApproveAccess,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
        )
        .is_allowed())
    }

    /// Requests the actor may see: their own, and those they may approve.
    pub async fn list_access_requests(&self, actor: &Actor, _ctx: &RequestContext) -> Result<Vec<AccessRequest>> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let rows = sqlx::query_as::<store::Db, Row>(&format!(
            "SELECT {COLS} FROM access_requests ORDER BY created_at DESC, id LIMIT 1000"
        ))
        .fetch_all(&self.store().pool)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let visible = row.requester_id == actor.id || {
                match (self.account_by_id(&row.account_id).await?, actor.is_system) {
                    (_, true) => true,
                    (Some(a), false) => match self.resource_by_id(&a.resource_id).await? {
                        Some(r) => self.may_approve(actor, &a, &r).await?,
                        None => false,
                    },
                    (None, false) => false,
                }
            };
            if visible {
                out.push(row.into_model());
            }
        }
        Ok(out)
    }

    /// Loads a request for `step` by an approver; refusals are audited and answered 404.
    async fn for_approver(
        &self,
        actor: &Actor,
        id: &str,
        step: &str,
        ctx: &RequestContext,
    ) -> Result<(Row, Account, Resource)> {
        let row = self.request_row(id).await?;
        let a = self
            .account_by_id(&row.account_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        let r = self
            .resource_by_id(&a.resource_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        if !self.may_approve(actor, &a, &r).await? {
            self.audit_alone(
                NewEvent::by(actor, step, "access_request")
                    .object(id, &format!("{}@{}", a.login, r.name))
                    .outcome(Outcome::Denied)
                    .detail("not an approver of this account"),
                ctx,
            )
            .await?;
            return Err(if row.requester_id == actor.id {
                Error::Forbidden {
                    reason: "requesters cannot approve their own requests",
                }
            } else {
                Error::NotFound { kind: "access request" }
            });
        }
        Ok((row, a, r))
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        actor: &Actor,
        id: &str,
        step: &str,
        label: &str,
        next: &RequestState,
        detail: String,
        ctx: &RequestContext,
    ) -> Result<()> {
        let mut w = self.store().write().await?;
        save_state(&mut w.tx, id, next).await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, step, "access_request")
                .object(id, label)
                .detail(detail),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Passes a state-machine step through; a refused step is audited as denied first.
    async fn audit_refused_step<T>(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        label: &str,
        step: Result<T>,
        ctx: &RequestContext,
    ) -> Result<T> {
        if let Err(e) = &step {
            self.audit_alone(
                NewEvent::by(actor, action, "access_request")
                    .object(id, label)
                    .outcome(Outcome::Denied)
                    .detail(e.to_string()),
                ctx,
            )
            .await?;
        }
        step
    }

    /// Approves a request (one of two with dual approval).
    pub async fn approve_access_request(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<AccessRequest> {
        let (row, a, r) = self.for_approver(actor, id, "access_request.approve", ctx).await?;
        let label = format!("{}@{}", a.login, r.name);
        let needed = u32::try_from(row.needed).unwrap_or(1);
        let step = row.state()?.approve(&actor.id, &row.requester_id, needed);
        let next = self
            .audit_refused_step(actor, "access_request.approve", id, &label, step, ctx)
            .await?;
        let detail = match &next {
            RequestState::Approved { approvals } => format!("approved ({} of {needed})", approvals.len()),
            RequestState::Requested { approvals } => {
                format!("approval {} of {needed}; waiting for another approver", approvals.len())
            }
            s => s.name().to_owned(),
        };
        self.apply(actor, id, "access_request.approve", &label, &next, detail, ctx)
            .await?;
        self.request_model(id).await
    }

    /// Denies a request.
    pub async fn deny_access_request(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<AccessRequest> {
        let (row, a, r) = self.for_approver(actor, id, "access_request.deny", ctx).await?;
        let label = format!("{}@{}", a.login, r.name);
        let next = row.state()?.deny(&actor.id)?;
        self.apply(actor, id, "access_request.deny", &label, &next, "denied".into(), ctx)
            .await?;
        self.request_model(id).await
    }

    /// Checks out an approved request (the requester only). With an exclusive
    /// policy and another holder, the request is refused or queued.
    pub async fn checkout_access_request(
        &self,
        actor: &Actor,
        id: &str,
        ctx: &RequestContext,
    ) -> Result<AccessRequest> {
        let row = self.request_row(id).await?;
        if row.requester_id != actor.id {
            return Err(Error::NotFound { kind: "access request" });
        }
        let a = self
            .account_by_id(&row.account_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        let r = self
            .resource_by_id(&a.resource_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        let label = format!("{}@{}", a.login, r.name);
        let p = self.access_policy(&r.id).await?;
        let taken = match &p {
            Some(p) if p.exclusive => {
                let other: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM access_requests WHERE account_id = $1 AND state = 'checked_out' AND id <> $2",
                )
                .bind(&a.id)
                .bind(id)
                .fetch_one(&self.store().pool)
                .await?;
                (other > 0).then_some(p.exclusive_mode)
            }
            _ => None,
        };
        let window = Duration::minutes(row.window_minutes);
        let step = row.state()?.checkout(OffsetDateTime::now_utc(), window, taken);
        let next = self
            .audit_refused_step(actor, "access_request.checkout", id, &label, step, ctx)
            .await?;
        let detail = match &next {
            RequestState::CheckedOut { until, .. } => format!("checked out until {}", format_ts(*until)),
            _ => "queued: the account is checked out by someone else".into(),
        };
        self.apply(actor, id, "access_request.checkout", &label, &next, detail, ctx)
            .await?;
        self.request_model(id).await
    }

    /// Checks a request in (the requester, an approver), then ends the user's
    /// sessions on the account (event), resets the password when the policy
    /// says so, and checks out the next queued request.
    pub async fn checkin_access_request(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<AccessRequest> {
        let row = self.request_row(id).await?;
        if row.requester_id != actor.id {
            self.for_approver(actor, id, "access_request.checkin", ctx).await?;
        }
        self.checkin_row(actor, row, ctx).await?;
        self.request_model(id).await
    }

    async fn checkin_row(&self, actor: &Actor, row: Row, ctx: &RequestContext) -> Result<()> {
        let a = self
            .account_by_id(&row.account_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        let r = self
            .resource_by_id(&a.resource_id)
            .await?
            .ok_or(Error::NotFound { kind: "access request" })?;
        let label = format!("{}@{}", a.login, r.name);
        let next = row.state()?.checkin(OffsetDateTime::now_utc(), &actor.username)?;
        let auto = actor.is_system;
        self.apply(
            actor,
            &row.id,
            "access_request.checkin",
            &label,
            &next,
            if auto {
                "checked in automatically at the end of the window".into()
            } else {
                "checked in".into()
            },
            ctx,
        )
        .await?;
        let username = self
            .user_row(&row.requester_id)
            .await?
            .map(|u| u.username)
            .unwrap_or_default();
        // No subscriber is fine (no gateway running).
        let _ = self.inner.events.send(VaultEvent::CheckedIn {
            request_id: row.id.clone(),
            account_id: a.id.clone(),
            account_label: label.clone(),
            username,
        });
        let p = self.access_policy(&r.id).await?;
        if p.as_ref().is_some_and(|p| p.require_request && p.reset_on_checkin) {
            let rctx = RequestContext {
                client_ip: ctx.client_ip,
                reason: Some(format!("check-in of access request {}", row.id)),
            };
            let outcome = match self.reset_account_password(&Actor::system(), &a.id, &rctx).await {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            let mut w = self.store().write().await?;
            sqlx::query("UPDATE access_requests SET reset_outcome = $1 WHERE id = $2")
                .bind(&outcome)
                .bind(&row.id)
                .execute(&mut *w.tx)
                .await?;
            w.commit().await?;
        }
        // The next queued requester gets the account.
        let queued: Option<String> = sqlx::query_scalar(
            "SELECT id FROM access_requests WHERE account_id = $1 AND state = 'queued' ORDER BY updated_at, id LIMIT 1",
        )
        .bind(&a.id)
        .fetch_optional(&self.store().pool)
        .await?;
        if let Some(qid) = queued {
            let q = self.request_row(&qid).await?;
            let next = q
                .state()?
                .checkout(OffsetDateTime::now_utc(), Duration::minutes(q.window_minutes), None)?;
            let detail = match &next {
                RequestState::CheckedOut { until, .. } => {
                    format!("checked out from the queue until {}", format_ts(*until))
                }
                s => s.name().into(),
            };
            self.apply(
                &Actor::system(),
                &qid,
                "access_request.checkout",
                &label,
                &next,
                detail,
                ctx,
            )
            .await?;
        }
        Ok(())
    }

    /// Checks in every request whose window ended before `now` (the root runs
    /// this periodically). Returns how many were checked in.
    pub async fn expire_checkouts(&self, now: OffsetDateTime) -> Result<usize> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM access_requests WHERE state = 'checked_out' AND window_end <= $1 ORDER BY window_end",
        )
        .bind(format_ts(now))
        .fetch_all(&self.store().pool)
        .await?;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let mut n = 0;
        for id in ids {
            let row = self.request_row(&id).await?;
            match self.checkin_row(&sys, row, &ctx).await {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(request = %id, error = %e, "automatic check-in failed"),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20000)
    }

    #[test]
    fn single_and_dual_approval() {
        let s = RequestState::Requested { approvals: vec![] };
        // The requester never approves.
        assert!(matches!(
            s.clone().approve("req", "req", 1),
            Err(Error::Forbidden { .. })
        ));
        let one = s.clone().approve("a1", "req", 1).unwrap();
        assert_eq!(one.name(), "approved");
        // Dual: the same approver twice does not count.
        let half = s.approve("a1", "req", 2).unwrap();
        assert_eq!(half.name(), "requested");
        assert!(matches!(
            half.clone().approve("a1", "req", 2),
            Err(Error::Forbidden { .. })
        ));
        let both = half.approve("a2", "req", 2).unwrap();
        assert_eq!(
            both,
            RequestState::Approved {
                approvals: vec!["a1".into(), "a2".into()]
            }
        );
        // Approving again is an invalid transition.
        assert!(matches!(
            both.approve("a3", "req", 2),
            Err(Error::InvalidTransition {
                action: "approve",
                state: "approved"
            })
        ));
    }

    #[test]
    fn every_invalid_transition_is_an_error() {
        let now = t0();
        let w = Duration::minutes(30);
        let requested = RequestState::Requested { approvals: vec![] };
        let approved = RequestState::Approved {
            approvals: vec!["a".into()],
        };
        let out = approved.clone().checkout(now, w, None).unwrap();
        assert_eq!(
            out,
            RequestState::CheckedOut {
                approvals: vec!["a".into()],
                from: now,
                until: now + w
            }
        );
        let denied = requested.clone().deny("a").unwrap();
        let back = out.clone().checkin(now, "u").unwrap();
        // Not approved yet: no check-out.
        assert!(matches!(
            requested.clone().checkout(now, w, None),
            Err(Error::InvalidTransition { .. })
        ));
        assert!(matches!(
            requested.clone().checkin(now, "u"),
            Err(Error::InvalidTransition { .. })
        ));
        for s in [denied.clone(), back.clone()] {
            assert!(s.clone().approve("x", "req", 1).is_err());
            assert!(s.clone().deny("x").is_err());
            assert!(s.clone().checkout(now, w, None).is_err());
            assert!(s.clone().checkin(now, "x").is_err());
        }
        // Checked out: only check-in.
        assert!(out.clone().deny("x").is_err());
        assert!(out.clone().checkout(now, w, None).is_err());
        assert!(out.clone().approve("x", "req", 1).is_err());
        assert!(approved.clone().checkin(now, "x").is_err());
    }

    #[test]
    fn exclusive_checkout_refuses_or_queues() {
        let now = t0();
        let w = Duration::minutes(5);
        let approved = RequestState::Approved {
            approvals: vec!["a".into()],
        };
        assert!(matches!(
            approved.clone().checkout(now, w, Some(ExclusiveMode::Refuse)),
            Err(Error::Conflict { .. })
        ));
        let q = approved.checkout(now, w, Some(ExclusiveMode::Queue)).unwrap();
        assert_eq!(q.name(), "queued");
        // Still taken: stays queued; free: checked out.
        let q = q.checkout(now, w, Some(ExclusiveMode::Queue)).unwrap();
        assert_eq!(q.clone().checkout(now, w, None).unwrap().name(), "checked_out");
        assert_eq!(q.deny("a").unwrap().name(), "denied");
    }

    /// A resetter standing in for a target in the vault's own unit test (the
    /// real SSH one is tested against sshd in tests/vault_workflows.rs).
    struct Stub {
        fail: std::sync::atomic::AtomicBool,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl crate::Resetter for Stub {
        fn reset<'a>(&'a self, t: &'a crate::ResetTarget, new: &'a crate::SecretString) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(format!(
                    "reset {} from {:?}",
                    t.account.login,
                    t.current.as_ref().map(|c| c.expose().to_owned())
                ));
                assert!(!new.expose().is_empty());
                if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(Error::Reset {
                        stage: crate::ResetStage::Connecting,
                        detail: "connection refused".into(),
                    })
                } else {
                    Ok(())
                }
            })
        }
        fn verify<'a>(&'a self, _: &'a crate::ResetTarget, _: &'a crate::SecretString) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn dual_approval_exclusive_queue_checkin_and_expiry() {
        use crate::model::{ResourceType, Role};
        use crate::testutil::{account, linux, user, vault};
        use crate::{NewShare, SecretKind};
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let sys = Actor::system();
        let owner = user(&v, "owner", Role::PasswordAdministrator).await;
        let carol = user(&v, "carol", Role::Administrator).await;
        let bob = user(&v, "bob", Role::PasswordUser).await;
        let dave = user(&v, "dave", Role::PasswordUser).await;
        let r = v.create_resource(&owner, linux("db1"), &ctx).await.unwrap();
        let a = v
            .create_account(&owner, &r.id, account("oracle", "old-pw"), &ctx)
            .await
            .unwrap();
        for (who, level) in [(&carol, "full"), (&bob, "view"), (&dave, "view")] {
            v.create_share(
                &owner,
                NewShare {
                    user_id: Some(who.id.clone()),
                    group_id: None,
                    account_id: None,
                    resource_id: Some(r.id.clone()),
                    resource_group_id: None,
                    level: level.into(),
                },
                &ctx,
            )
            .await
            .unwrap();
        }
        let req = |reason: &str| NewAccessRequest {
            account_id: a.id.clone(),
            reason: reason.into(),
            ticket_id: None,
            window_minutes: Some(30),
        };
        // Not under access control: no request needed, and bob may retrieve.
        assert!(matches!(
            v.create_access_request(&bob, req("x"), &ctx).await,
            Err(Error::Conflict { .. })
        ));
        assert!(v.retrieve_secret(&bob, &a.id, SecretKind::Password, &ctx).await.is_ok());
        let mut policy = AccessPolicy {
            require_request: true,
            dual_approval: true,
            exclusive: true,
            exclusive_mode: ExclusiveMode::Refuse,
            max_window_minutes: 60,
            reset_on_checkin: true,
        };
        // Bob (view) may not set the policy.
        assert!(v.set_access_policy(&bob, &r.id, policy.clone(), &ctx).await.is_err());
        v.set_access_policy(&owner, &r.id, policy.clone(), &ctx).await.unwrap();
        // Now closed for bob, still open for the owner.
        assert!(matches!(
            v.retrieve_secret(&bob, &a.id, SecretKind::Password, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(v
            .lease_for_session(&bob, &a.id, SecretKind::Password, &ctx)
            .await
            .is_err());
        assert!(v
            .retrieve_secret(&owner, &a.id, SecretKind::Password, &ctx)
            .await
            .is_ok());
        // A reason is required; the window is bounded.
        assert!(matches!(
            v.create_access_request(&bob, req("  "), &ctx).await,
            Err(Error::Invalid { field: "reason", .. })
        ));
        let mut long = req("x");
        long.window_minutes = Some(61);
        assert!(matches!(
            v.create_access_request(&bob, long, &ctx).await,
            Err(Error::Invalid { .. })
        ));
        let rb = v.create_access_request(&bob, req("patching"), &ctx).await.unwrap();
        assert_eq!((rb.state.as_str(), rb.needed), ("requested", 2));
        // Bob cannot approve his own, nor check out before approval; dave cannot approve at all.
        assert!(matches!(
            v.approve_access_request(&bob, &rb.id, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            v.approve_access_request(&dave, &rb.id, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            v.checkout_access_request(&bob, &rb.id, &ctx).await,
            Err(Error::InvalidTransition { .. })
        ));
        // Dual approval: two distinct approvers.
        assert_eq!(
            v.approve_access_request(&owner, &rb.id, &ctx).await.unwrap().state,
            "requested"
        );
        assert!(matches!(
            v.approve_access_request(&owner, &rb.id, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        assert_eq!(
            v.approve_access_request(&carol, &rb.id, &ctx).await.unwrap().state,
            "approved"
        );
        // Only bob checks out his request.
        assert!(matches!(
            v.checkout_access_request(&dave, &rb.id, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        let out = v.checkout_access_request(&bob, &rb.id, &ctx).await.unwrap();
        assert_eq!(out.state, "checked_out");
        assert!(out.window_end.is_some());
        assert_eq!(
            v.retrieve_secret(&bob, &a.id, SecretKind::Password, &ctx)
                .await
                .unwrap()
                .expose_str(),
            Some("old-pw")
        );
        // Dave: exclusive, refused.
        let rd = v.create_access_request(&dave, req("audit"), &ctx).await.unwrap();
        v.approve_access_request(&owner, &rd.id, &ctx).await.unwrap();
        v.approve_access_request(&carol, &rd.id, &ctx).await.unwrap();
        assert!(matches!(
            v.checkout_access_request(&dave, &rd.id, &ctx).await,
            Err(Error::Conflict { .. })
        ));
        assert!(v
            .lease_for_session(&dave, &a.id, SecretKind::Password, &ctx)
            .await
            .is_err());
        // With the queue mode dave waits.
        policy.exclusive_mode = ExclusiveMode::Queue;
        v.set_access_policy(&owner, &r.id, policy, &ctx).await.unwrap();
        assert_eq!(
            v.checkout_access_request(&dave, &rd.id, &ctx).await.unwrap().state,
            "queued"
        );
        // Check-in by bob: event, reset (failing: the old password stays), dave checked out.
        let stub = std::sync::Arc::new(Stub {
            fail: true.into(),
            calls: Default::default(),
        });
        v.set_resetter(ResourceType::Linux, stub.clone());
        let mut events = v.subscribe();
        let back = v.checkin_access_request(&bob, &rb.id, &ctx).await.unwrap();
        assert_eq!(back.state, "checked_in");
        assert!(back.reset_outcome.as_deref().unwrap().starts_with("failed"), "{back:?}");
        assert_eq!(
            events.try_recv().unwrap(),
            VaultEvent::CheckedIn {
                request_id: rb.id.clone(),
                account_id: a.id.clone(),
                account_label: "oracle@db1".into(),
                username: "bob".into()
            }
        );
        assert_eq!(
            v.retrieve_secret(&sys, &a.id, SecretKind::Password, &ctx)
                .await
                .unwrap()
                .expose_str(),
            Some("old-pw")
        );
        let acc = v.account_by_id(&a.id).await.unwrap().unwrap();
        let status: Option<String> = sqlx::query_scalar("SELECT reset_status FROM accounts WHERE id = $1")
            .bind(&acc.id)
            .fetch_one(&v.store().pool)
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("failed"));
        // Bob's window is closed again; dave's is open.
        assert!(v
            .lease_for_session(&bob, &a.id, SecretKind::Password, &ctx)
            .await
            .is_err());
        assert!(v
            .lease_for_session(&dave, &a.id, SecretKind::Password, &ctx)
            .await
            .is_ok());
        // The end of dave's window: automatic check-in, and this time the reset works.
        stub.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(v.expire_checkouts(OffsetDateTime::now_utc()).await.unwrap(), 0);
        assert_eq!(
            v.expire_checkouts(OffsetDateTime::now_utc() + Duration::hours(2))
                .await
                .unwrap(),
            1
        );
        let d = v.request_model(&rd.id).await.unwrap();
        assert_eq!(
            (d.state.as_str(), d.checked_in_by.as_deref(), d.reset_outcome.as_deref()),
            ("checked_in", Some("system"), Some("ok"))
        );
        let new = v
            .retrieve_secret(&sys, &a.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_ne!(new.expose_str(), Some("old-pw"));
        assert!(crate::PasswordPolicy::default().check(new.expose_str().unwrap()));
        assert_eq!(stub.calls.lock().unwrap().len(), 2);
        // Listing: bob sees his own; carol (approver) sees both.
        assert_eq!(v.list_access_requests(&bob, &ctx).await.unwrap().len(), 1);
        assert_eq!(v.list_access_requests(&carol, &ctx).await.unwrap().len(), 2);
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
        let steps: Vec<String> = sqlx::query_scalar(
            "SELECT action || ':' || outcome FROM audit_events WHERE action LIKE 'access_request.%' OR action = 'account.reset' ORDER BY seq",
        )
        .fetch_all(&v.store().pool)
        .await
        .unwrap();
        for want in [
            "access_request.create:success",
            "access_request.approve:denied",
            "access_request.approve:success",
            "access_request.checkout:denied",
            "access_request.checkout:success",
            "access_request.checkin:success",
            "account.reset:failure",
            "account.reset:success",
        ] {
            assert!(steps.iter().any(|s| s == want), "{want} missing from {steps:?}");
        }
    }

    #[tokio::test]
    async fn policies_randomize_now_max_age_and_reset_on_revoke() {
        use crate::model::{ResourceType, Role};
        use crate::reset::{NewPasswordPolicy, PasswordPolicy};
        use crate::testutil::{account, linux, user, vault};
        use crate::{NewGroup, NewShare, SecretKind};
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let sys = Actor::system();
        let owner = user(&v, "owner", Role::PasswordAdministrator).await;
        let bob = user(&v, "bob", Role::PasswordUser).await;
        let r1 = v.create_resource(&owner, linux("web1"), &ctx).await.unwrap();
        let r2 = v.create_resource(&owner, linux("web2"), &ctx).await.unwrap();
        let a1 = v
            .create_account(&owner, &r1.id, account("app", "pw-a1"), &ctx)
            .await
            .unwrap();
        let a2 = v
            .create_account(&owner, &r2.id, account("app", "pw-a2"), &ctx)
            .await
            .unwrap();
        let stub = std::sync::Arc::new(Stub {
            fail: false.into(),
            calls: Default::default(),
        });
        v.set_resetter(ResourceType::Linux, stub.clone());
        // Policies: digits only for the group, 30 lowercase letters for a2 itself.
        let digits = v
            .create_password_policy(
                &owner,
                NewPasswordPolicy::new(
                    "pins",
                    PasswordPolicy {
                        min_length: 10,
                        max_length: 10,
                        lowercase: false,
                        uppercase: false,
                        digits: true,
                        special: false,
                        forbidden_chars: String::new(),
                        max_age_days: Some(30),
                    },
                ),
                &ctx,
            )
            .await
            .unwrap();
        let lower = v
            .create_password_policy(
                &owner,
                NewPasswordPolicy::new(
                    "long",
                    PasswordPolicy {
                        min_length: 30,
                        max_length: 30,
                        lowercase: true,
                        uppercase: false,
                        digits: false,
                        special: false,
                        forbidden_chars: String::new(),
                        max_age_days: None,
                    },
                ),
                &ctx,
            )
            .await
            .unwrap();
        assert!(v
            .create_password_policy(&bob, NewPasswordPolicy::new("x", PasswordPolicy::default()), &ctx)
            .await
            .is_err());
        let g = v
            .create_resource_group(
                &owner,
                NewGroup {
                    name: "web".into(),
                    description: None,
                },
                &ctx,
            )
            .await
            .unwrap();
        for r in [&r1, &r2] {
            v.set_resource_group_member(&owner, &g.id, &r.id, true, &ctx)
                .await
                .unwrap();
        }
        v.set_group_policy(&owner, &g.id, Some(&digits.id), &ctx).await.unwrap();
        v.set_account_policy(&owner, &a2.id, Some(&lower.id), &ctx)
            .await
            .unwrap();
        assert_eq!(v.password_policy_for(&a1.id).await.unwrap().min_length, 10);
        assert_eq!(v.password_policy_for(&a2.id).await.unwrap().min_length, 30);
        // Randomize now: one result per account, each new password under its policy.
        let job = v.randomize_group(&owner, &g.id, &ctx).await.unwrap();
        assert!(job.finished && job.done == 2 && job.total == 2, "{job:?}");
        assert_eq!(v.job(&owner, &job.id).unwrap(), job);
        assert!(matches!(v.job(&bob, &job.id), Err(Error::NotFound { .. })));
        let res = job.results;
        assert_eq!(res.len(), 2);
        assert!(res.iter().all(|r| r.outcome == "ok"), "{res:?}");
        let p1 = v
            .retrieve_secret(&sys, &a1.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        let p2 = v
            .retrieve_secret(&sys, &a2.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        let (p1, p2) = (p1.expose_str().unwrap().to_owned(), p2.expose_str().unwrap().to_owned());
        assert!(p1.len() == 10 && p1.chars().all(|c| c.is_ascii_digit()), "{}", p1.len());
        assert!(p2.len() == 30 && p2.chars().all(|c| c.is_ascii_lowercase()));
        // bob cannot randomize the group.
        assert!(v.randomize_group(&bob, &g.id, &ctx).await.is_err());
        // Max age: a1 (30 days via the group) is due in 31 days, a2 (no max age) never.
        let now = OffsetDateTime::now_utc();
        assert!(v.rotate_aged_passwords(now).await.unwrap().is_empty());
        let later = v.rotate_aged_passwords(now + Duration::days(31)).await.unwrap();
        assert_eq!(
            later.iter().map(|r| r.account_id.as_str()).collect::<Vec<_>>(),
            vec![a1.id.as_str()]
        );
        // A failing reset is retried only after an hour.
        sqlx::query("UPDATE accounts SET password_changed_at = $1 WHERE id = $2")
            .bind(format_ts(now - Duration::days(40)))
            .bind(&a1.id)
            .execute(&v.store().pool)
            .await
            .unwrap();
        stub.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = v.rotate_aged_passwords(now).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].outcome, "failed");
        assert!(v.rotate_aged_passwords(now).await.unwrap().is_empty());
        assert_eq!(
            v.rotate_aged_passwords(now + Duration::hours(2)).await.unwrap().len(),
            1
        );
        stub.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        // Revoking a view share resets what bob could see; a connect share does not.
        let calls = |s: &Stub| s.calls.lock().unwrap().len();
        let share = |level: &str, acc: &str| NewShare {
            user_id: Some(bob.id.clone()),
            group_id: None,
            account_id: Some(acc.into()),
            resource_id: None,
            resource_group_id: None,
            level: level.into(),
        };
        let sv = v.create_share(&owner, share("view", &a1.id), &ctx).await.unwrap();
        let sc = v.create_share(&owner, share("connect", &a2.id), &ctx).await.unwrap();
        let before = calls(&stub);
        v.revoke_share(&owner, &sc.id, &ctx).await.unwrap();
        assert_eq!(calls(&stub), before);
        let seen = v
            .retrieve_secret(&sys, &a1.id, SecretKind::Password, &ctx)
            .await
            .unwrap()
            .expose_str()
            .unwrap()
            .to_owned();
        v.revoke_share(&owner, &sv.id, &ctx).await.unwrap();
        assert_eq!(calls(&stub), before + 1);
        let now_pw = v
            .retrieve_secret(&sys, &a1.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_ne!(now_pw.expose_str(), Some(seen.as_str()));
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }

    /// A ticket system that knows ticket `CHG-1` only, and is down for `DOWN`.
    struct Tickets;

    impl TicketValidator for Tickets {
        fn validate<'a>(&'a self, t: &'a TicketCheck) -> BoxFuture<'a, std::result::Result<bool, String>> {
            Box::pin(async move {
                match t.ticket_id.as_str() {
                    "DOWN" => Err("unreachable".into()),
                    id => Ok(id == "CHG-1" && t.requester == "bob" && t.account == "root@h1"),
                }
            })
        }
    }

    /// A password administrator "owner" and its account root (password "pw")
    /// on a Linux resource h1.
    async fn owner_with_root_account(v: &Vault) -> (Actor, crate::model::Resource, crate::model::Account) {
        use crate::model::Role;
        use crate::testutil::{account, linux, user};
        let ctx = RequestContext::default();
        let owner = user(v, "owner", Role::PasswordAdministrator).await;
        let r = v.create_resource(&owner, linux("h1"), &ctx).await.unwrap();
        let a = v
            .create_account(&owner, &r.id, account("root", "pw"), &ctx)
            .await
            .unwrap();
        (owner, r, a)
    }

    #[tokio::test]
    async fn ticket_ids_are_checked_by_the_validator() {
        use crate::model::Role;
        use crate::testutil::{user, vault};
        use crate::NewShare;
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let (owner, r, a) = owner_with_root_account(&v).await;
        let bob = user(&v, "bob", Role::PasswordUser).await;
        v.create_share(
            &owner,
            NewShare {
                user_id: Some(bob.id.clone()),
                group_id: None,
                account_id: Some(a.id.clone()),
                resource_id: None,
                resource_group_id: None,
                level: "connect".into(),
            },
            &ctx,
        )
        .await
        .unwrap();
        let policy = AccessPolicy {
            require_request: true,
            dual_approval: false,
            exclusive: false,
            exclusive_mode: ExclusiveMode::Refuse,
            max_window_minutes: 60,
            reset_on_checkin: false,
        };
        v.set_access_policy(&owner, &r.id, policy, &ctx).await.unwrap();
        let req = |t: &str| NewAccessRequest {
            account_id: a.id.clone(),
            reason: "fix".into(),
            ticket_id: Some(t.into()),
            window_minutes: None,
        };
        // Without a validator any ticket id is recorded.
        assert!(v.create_access_request(&bob, req("ANY-1"), &ctx).await.is_ok());
        v.set_ticket_validator(std::sync::Arc::new(Tickets));
        let ok = v.create_access_request(&bob, req("CHG-1"), &ctx).await.unwrap();
        assert_eq!(ok.ticket_id.as_deref(), Some("CHG-1"));
        assert_eq!(ok.window_minutes, 60);
        for bad in ["CHG-2", "DOWN"] {
            assert!(
                matches!(
                    v.create_access_request(&bob, req(bad), &ctx).await,
                    Err(Error::Invalid { field: "ticket_id", .. })
                ),
                "{bad}"
            );
        }
        let denied: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'access_request.create' AND outcome = 'denied'",
        )
        .fetch_one(&v.store().pool)
        .await
        .unwrap();
        assert_eq!(denied, 2);
    }

    #[tokio::test]
    async fn require_reason_for_retrievals_and_sessions() {
        use crate::testutil::vault;
        use crate::SecretKind;
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let (owner, _r, a) = owner_with_root_account(&v).await;
        // Off: no reason needed, and no request possible on a free account.
        assert!(v
            .retrieve_secret(&owner, &a.id, SecretKind::Password, &ctx)
            .await
            .is_ok());
        let req = NewAccessRequest {
            account_id: a.id.clone(),
            reason: "why".into(),
            ticket_id: None,
            window_minutes: Some(10),
        };
        assert!(matches!(
            v.create_access_request(&owner, req.clone(), &ctx).await,
            Err(Error::Conflict { .. })
        ));
        v.set_require_reason(true);
        assert!(matches!(
            v.retrieve_secret(&owner, &a.id, SecretKind::Password, &ctx).await,
            Err(Error::Invalid { field: "reason", .. })
        ));
        let with = RequestContext {
            client_ip: None,
            reason: Some("audit".into()),
        };
        assert!(v
            .retrieve_secret(&owner, &a.id, SecretKind::Password, &with)
            .await
            .is_ok());
        // A reason-only request is approved at once.
        let q = v.create_access_request(&owner, req, &ctx).await.unwrap();
        assert_eq!((q.state.as_str(), q.needed), ("approved", 0));
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT reason FROM audit_events WHERE action = 'account.retrieve' AND outcome = 'success' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(&v.store().pool)
        .await
        .unwrap();
        assert_eq!(reason.as_deref(), Some("audit"));
    }
}
