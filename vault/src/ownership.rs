//! A leaving administrator (PMP 17.1–17.4): transfer of ownership (and with it
//! the approver duties that come from ownership), the exit report of every
//! password a user could reach, and "reset all" of those passwords.

use serde::{Deserialize, Serialize};

use crate::audit::{self, NewEvent};
use crate::authz::{Action, OpSet, Operation};
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext};
use crate::Vault;

/// Where a user's resources go.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The new owner (must hold the Manage resources or Manage passwords operation).
    pub to_user_id: String,
}

/// What a transfer moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferReport {
    /// Resources now owned by the new owner.
    pub resources: u64,
    /// Accounts now owned by the new owner.
    pub accounts: u64,
    /// Resource groups now owned by the new owner.
    pub resource_groups: u64,
}

/// One password a user could reach, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExitEntry {
    /// The account.
    pub account_id: String,
    /// `login@resource`.
    pub account: String,
    /// `owner`, or the share level (`connect`, `view`, `modify`, `full`).
    pub access: String,
    /// The user could see the password (owner, or `view` and more).
    pub could_see_password: bool,
    /// Last time the user retrieved it (audit), if ever.
    pub last_retrieved: Option<String>,
}

impl Vault {
    async fn manageable_user(&self, actor: &Actor, id: &str, what: &str, ctx: &RequestContext) -> Result<String> {
        let row = self.authorized_user(actor, id, Action::UpdateUser, what, ctx).await?;
        Ok(row.username)
    }

    /// Transfers everything `from` owns (resources, accounts, resource groups) to
    /// `to`. Approver duties follow ownership. Audited.
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        from: &str,
        req: TransferRequest,
        ctx: &RequestContext,
    ) -> Result<TransferReport> {
        let from_name = self.manageable_user(actor, from, "user.transfer", ctx).await?;
        if req.to_user_id == from {
            return Err(Error::invalid("to_user_id", "is the same user"));
        }
        let to = self
            .user_row(&req.to_user_id)
            .await?
            .ok_or_else(|| Error::invalid("to_user_id", "no such user"))?;
        let to_actor = to.to_actor()?;
        let ops = to_actor.custom_ops.unwrap_or_else(|| OpSet::of_role(to_actor.role));
        if !to.enabled || !(ops.contains(Operation::ManageResources) || ops.contains(Operation::ManagePasswords)) {
            return Err(Error::invalid(
                "to_user_id",
                "the new owner must be enabled and hold Manage resources or Manage passwords",
            ));
        }
        let mut w = self.store().write().await?;
        let mut counts = [0u64; 3];
        for (i, table) in ["resources", "accounts", "resource_groups"].iter().enumerate() {
            counts[i] = sqlx::query(&format!("UPDATE {table} SET owner_id = $1 WHERE owner_id = $2"))
                .bind(&to.id)
                .bind(from)
                .execute(&mut *w.tx)
                .await?
                .rows_affected();
        }
        let report = TransferReport {
            resources: counts[0],
            accounts: counts[1],
            resource_groups: counts[2],
        };
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.transfer", "user")
                .object(from, &from_name)
                .detail(format!(
                    "to {}: {} resources, {} accounts, {} resource groups (and their approval duties)",
                    to.username, report.resources, report.accounts, report.resource_groups
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(report)
    }

    /// Every account a user could reach (owned, or shared with them directly,
    /// through a user group, a resource or a resource group), with the level
    /// and the last retrieval. Needs the right to manage the user and View audit.
    pub async fn exit_report(&self, actor: &Actor, user_id: &str, ctx: &RequestContext) -> Result<Vec<ExitEntry>> {
        self.require(
            actor,
            Action::ViewAudit,
            crate::Object::System,
            "user.exit_report",
            "user",
            None,
            ctx,
        )
        .await?;
        let name = self.manageable_user(actor, user_id, "user.exit_report", ctx).await?;
        let target = self
            .user_row(user_id)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?
            .to_actor()?;
        let ids: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT a.id, a.login || '@' || r.name, a.owner_id, r.owner_id FROM accounts a JOIN resources r ON r.id = a.resource_id \
             ORDER BY r.name, a.login",
        )
        .fetch_all(&self.store().pool)
        .await?;
        let mut out = Vec::new();
        for (id, label, a_owner, r_owner) in ids {
            let owner = a_owner.as_deref() == Some(user_id) || r_owner.as_deref() == Some(user_id);
            let resource_id: String = sqlx::query_scalar("SELECT resource_id FROM accounts WHERE id = $1")
                .bind(&id)
                .fetch_one(&self.store().pool)
                .await?;
            let level = self.share_level_for(&target, &resource_id, Some(&id)).await?;
            if !owner && level.is_none() && !target.super_admin {
                continue;
            }
            let last: Option<String> = sqlx::query_scalar(
                "SELECT MAX(at) FROM audit_events WHERE actor_id = $1 AND object_id = $2 AND action = 'account.retrieve' \
                 AND outcome = 'success'",
            )
            .bind(user_id)
            .bind(&id)
            .fetch_one(&self.store().pool)
            .await?;
            let access = if owner {
                "owner".to_string()
            } else if let Some(l) = level {
                l.as_str().to_string()
            } else {
                "super_admin".to_string()
            };
            out.push(ExitEntry {
                account_id: id,
                account: label,
                could_see_password: owner || target.super_admin || level.is_some_and(|l| l >= crate::ShareLevel::View),
                access,
                last_retrieved: last,
            });
        }
        self.audit_alone(
            NewEvent::by(actor, "user.exit_report", "user")
                .object(user_id, &name)
                .detail(format!("{} accounts", out.len())),
            ctx,
        )
        .await?;
        Ok(out)
    }

    /// Resets every password the user could see (the exit report's
    /// `could_see_password` accounts) as a background job with progress.
    pub async fn reset_all_for_user(&self, actor: &Actor, user_id: &str, ctx: &RequestContext) -> Result<crate::Job> {
        let report = self.exit_report(actor, user_id, ctx).await?;
        let name = self.user_row(user_id).await?.map(|u| u.username).unwrap_or_default();
        let ids = report
            .into_iter()
            .filter(|e| e.could_see_password)
            .map(|e| (e.account_id, e.account))
            .collect();
        self.start_reset_job(actor, "reset_all", format!("user {name}"), ids, ctx)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::testutil::{account, linux, user, vault};
    use crate::NewShare;

    #[tokio::test]
    async fn transfer_then_delete_and_exit_report() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let admin = user(&v, "admin", Role::Administrator).await;
        let leaving = user(&v, "leaving", Role::PasswordAdministrator).await;
        let heir = user(&v, "heir", Role::PasswordAdministrator).await;
        let pu = user(&v, "pu", Role::PasswordUser).await;
        let r = v.create_resource(&leaving, linux("db1"), &ctx).await.unwrap();
        let a = v
            .create_account(&leaving, &r.id, account("root", "pw"), &ctx)
            .await
            .unwrap();
        let r2 = v.create_resource(&heir, linux("db2"), &ctx).await.unwrap();
        let a2 = v
            .create_account(&heir, &r2.id, account("app", "pw2"), &ctx)
            .await
            .unwrap();
        v.create_share(
            &heir,
            NewShare {
                user_id: Some(leaving.id.clone()),
                group_id: None,
                account_id: Some(a2.id.clone()),
                resource_id: None,
                resource_group_id: None,
                level: "connect".into(),
            },
            &ctx,
        )
        .await
        .unwrap();
        // Owns a resource: cannot be deleted.
        assert!(matches!(
            v.delete_user(&admin, &leaving.id, &ctx).await,
            Err(Error::Conflict { .. })
        ));
        // Exit report: owned db1 (could see) and connect-only db2.
        let rep = v.exit_report(&admin, &leaving.id, &ctx).await.unwrap();
        let summary: Vec<(String, String, bool)> = rep
            .iter()
            .map(|e| (e.account.clone(), e.access.clone(), e.could_see_password))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("root@db1".into(), "owner".into(), true),
                ("app@db2".into(), "connect".into(), false)
            ]
        );
        // Transfers only go to someone who can manage them.
        let bad = v
            .transfer_ownership(
                &admin,
                &leaving.id,
                TransferRequest {
                    to_user_id: pu.id.clone(),
                },
                &ctx,
            )
            .await;
        assert!(matches!(bad, Err(Error::Invalid { .. })));
        assert!(v
            .transfer_ownership(
                &pu,
                &leaving.id,
                TransferRequest {
                    to_user_id: heir.id.clone()
                },
                &ctx
            )
            .await
            .is_err());
        let t = v
            .transfer_ownership(
                &admin,
                &leaving.id,
                TransferRequest {
                    to_user_id: heir.id.clone(),
                },
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!((t.resources, t.accounts, t.resource_groups), (1, 1, 0));
        assert_eq!(
            v.get_account(&heir, &a.id, &ctx).await.unwrap().owner_id.as_deref(),
            Some(heir.id.as_str())
        );
        v.delete_user(&admin, &leaving.id, &ctx).await.unwrap();
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }
}
