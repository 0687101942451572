//! Long password jobs ("randomize now" for a resource group, "reset all" for a
//! leaving user) run in the background with progress. The root hands the vault
//! its `TaskTracker` and shutdown token ([`Vault::set_tasks`]); without them
//! (tests, CLI) a job runs to completion before it is returned. Jobs live in
//! memory, bounded to the last [`MAX_JOBS`].

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::NewEvent;
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext};
use crate::reset::ResetResult;
use crate::store;
use crate::Vault;

/// Jobs kept in memory (the oldest finished ones are forgotten first).
pub const MAX_JOBS: usize = 200;

/// A background job and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Id.
    pub id: String,
    /// `randomize` or `reset_all`.
    pub kind: String,
    /// What it works on (`resource group NAME`, `user NAME`).
    pub target: String,
    /// Who started it.
    pub started_by: String,
    /// Accounts to reset.
    pub total: u32,
    /// Accounts done so far.
    pub done: u32,
    /// All accounts were handled (or the server stopped: `cancelled`).
    pub finished: bool,
    /// The server stopped before the job finished.
    pub cancelled: bool,
    /// One result per handled account.
    pub results: Vec<ResetResult>,
    /// Start time.
    pub created_at: String,
}

#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<VecDeque<Job>>,
    tasks: Mutex<Option<(TaskTracker, CancellationToken)>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Jobs {
    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = l.iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }

    fn insert(&self, job: Job) {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        while l.len() >= MAX_JOBS {
            match l.iter().position(|j| j.finished) {
                Some(i) => {
                    l.remove(i);
                }
                None => break,
            }
        }
        l.push_back(job);
    }
}

impl Vault {
    /// Lets background jobs run under the server's tracker and stop with it.
    pub fn set_tasks(&self, tracker: TaskTracker, shutdown: CancellationToken) {
        *self.inner.jobs.tasks.lock().unwrap_or_else(|e| e.into_inner()) = Some((tracker, shutdown));
    }

    /// A job the actor started (super admins and the local operator see all).
    pub fn job(&self, actor: &Actor, id: &str) -> Result<Job> {
        let l = self.inner.jobs.list.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .find(|j| j.id == id && (j.started_by == actor.id || actor.super_admin || actor.is_system))
            .cloned()
            .ok_or(Error::NotFound { kind: "job" })
    }

    /// Starts resetting `ids` one by one as the actor; returns the job (finished
    /// already when no tracker is set).
    pub(crate) async fn start_reset_job(
        &self,
        actor: &Actor,
        kind: &str,
        target: String,
        ids: Vec<(String, String)>,
        ctx: &RequestContext,
    ) -> Result<Job> {
        let job = Job {
            id: store::new_id(),
            kind: kind.into(),
            target,
            started_by: actor.id.clone(),
            total: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            done: 0,
            finished: ids.is_empty(),
            cancelled: false,
            results: Vec::new(),
            created_at: store::now(),
        };
        self.audit_alone(
            NewEvent::by(actor, "job.start", "job")
                .object(&job.id, kind)
                .detail(format!("{} on {}: {} accounts", kind, job.target, job.total)),
            ctx,
        )
        .await?;
        self.inner.jobs.insert(job.clone());
        let (v, actor, ctx, id) = (self.clone(), actor.clone(), ctx.clone(), job.id.clone());
        let tasks = self.inner.jobs.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tasks {
            Some((tracker, token)) => {
                tracker.spawn(async move { v.run_job(&actor, &id, ids, &ctx, Some(token)).await });
                Ok(job)
            }
            None => {
                self.run_job(&actor, &id, ids, &ctx, None).await;
                self.job(&actor, &job.id)
            }
        }
    }

    async fn run_job(
        &self,
        actor: &Actor,
        id: &str,
        ids: Vec<(String, String)>,
        ctx: &RequestContext,
        stop: Option<CancellationToken>,
    ) {
        for (account_id, label) in ids {
            if stop.as_ref().is_some_and(|t| t.is_cancelled()) {
                self.inner.jobs.update(id, |j| {
                    j.cancelled = true;
                    j.finished = true;
                });
                return;
            }
            let r = self.reset_account_password(actor, &account_id, ctx).await;
            let res = ResetResult {
                account_id,
                account: label,
                outcome: if r.is_ok() { "ok" } else { "failed" }.into(),
                error: r.err().map(|e| e.to_string()),
            };
            self.inner.jobs.update(id, |j| {
                j.done += 1;
                j.results.push(res);
            });
        }
        self.inner.jobs.update(id, |j| j.finished = true);
    }
}
