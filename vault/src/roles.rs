//! Roles: the five predefined roles and custom roles built from the operation
//! catalogue (roles seed). A new custom role, and every edit of one, waits
//! for a second administrator's approval (dual control): until then the role
//! cannot be assigned (new) or keeps its previous operations (edit). Users
//! keep a built-in role; a custom role, once assigned, replaces its operations.

use serde::{Deserialize, Serialize};

use crate::audit::{self, NewEvent};
use crate::authz::{Action, Object, OpSet, Operation};
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext, Role};
use crate::store;
use crate::Vault;

/// A role as listed: built-in (`id` is the role id) or custom (`id` is a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleInfo {
    /// `administrator`, … for built-in roles; a UUID for custom roles.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Built-in or custom.
    pub builtin: bool,
    /// Free text.
    pub description: Option<String>,
    /// The operations in force (empty for a custom role never approved).
    pub operations: Vec<String>,
    /// Proposed operations waiting for a second administrator, if any.
    pub pending: Option<Vec<String>>,
    /// Who proposed the pending change.
    pub pending_author: Option<String>,
    /// Who approved the operations in force.
    pub approved_by: Option<String>,
    /// Users holding the role.
    pub users: u32,
}

/// One operation of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogueEntry {
    /// Operation id.
    pub id: String,
    /// The seed's category (`users`, `password`, `reports`, `settings`, `remote_access`).
    pub category: String,
}

/// A custom role to propose, or a proposed edit.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleProposal {
    /// Unique name (ignored on edits).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Operation ids from the catalogue (`GET /api/v1/roles/catalogue`).
    pub operations: Vec<String>,
}

/// The outcome of one user's role change in a bulk change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleChange {
    /// The user.
    pub user_id: String,
    /// `ok`, or the reason it was refused.
    pub outcome: String,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    description: Option<String>,
    operations: Option<String>,
    pending: Option<String>,
    pending_author: Option<String>,
    approved_by: Option<String>,
}

fn ids(json: &Option<String>) -> Option<Vec<String>> {
    json.as_deref()
        .and_then(OpSet::from_json)
        .map(|s| s.ops().iter().map(|o| o.as_str().to_owned()).collect())
}

fn parse_ops(list: &[String]) -> Result<OpSet> {
    let mut ops = Vec::new();
    for id in list {
        ops.push(Operation::parse(id).ok_or_else(|| {
            Error::invalid(
                "operations",
                format!("unknown operation {:?}", id.chars().take(64).collect::<String>()),
            )
        })?);
    }
    Ok(OpSet::of(&ops))
}

/// Which role a bulk change or a delete moves users to.
enum Target {
    Builtin(Role),
    Custom { id: String, ops: OpSet },
}

impl Vault {
    /// The operation catalogue custom roles are built from.
    pub fn role_catalogue(&self) -> Vec<CatalogueEntry> {
        Operation::ALL
            .into_iter()
            .map(|o| CatalogueEntry {
                id: o.as_str().into(),
                category: o.category().into(),
            })
            .collect()
    }

    async fn custom_role_row(&self, id: &str) -> Result<Option<Row>> {
        Ok(sqlx::query_as::<store::Db, Row>(
            "SELECT id, name, description, operations, pending, pending_author, approved_by FROM custom_roles WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.store().pool)
        .await?)
    }

    async fn role_users(&self, builtin: Option<&str>, custom: Option<&str>) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE ($1 IS NOT NULL AND role = $1 AND custom_role_id IS NULL) OR custom_role_id = $2",
        )
        .bind(builtin)
        .bind(custom)
        .fetch_one(&self.store().pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Every role (needs Manage users).
    pub async fn list_roles(&self, actor: &Actor, ctx: &RequestContext) -> Result<Vec<RoleInfo>> {
        self.require(actor, Action::ViewUser, Object::System, "role.list", "role", None, ctx)
            .await?;
        let mut out = Vec::new();
        for r in Role::ALL {
            out.push(RoleInfo {
                id: r.as_str().into(),
                name: r.as_str().into(),
                builtin: true,
                description: None,
                operations: OpSet::of_role(r).ops().iter().map(|o| o.as_str().into()).collect(),
                pending: None,
                pending_author: None,
                approved_by: None,
                users: self.role_users(Some(r.as_str()), None).await?,
            });
        }
        let rows = sqlx::query_as::<store::Db, Row>(
            "SELECT id, name, description, operations, pending, pending_author, approved_by FROM custom_roles ORDER BY name",
        )
        .fetch_all(&self.store().pool)
        .await?;
        for r in rows {
            out.push(RoleInfo {
                users: self.role_users(None, Some(&r.id)).await?,
                operations: ids(&r.operations).unwrap_or_default(),
                pending: ids(&r.pending),
                id: r.id,
                name: r.name,
                builtin: false,
                description: r.description,
                pending_author: r.pending_author,
                approved_by: r.approved_by,
            });
        }
        Ok(out)
    }

    async fn role_info(&self, id: &str) -> Result<RoleInfo> {
        let r = self
            .custom_role_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "role" })?;
        Ok(RoleInfo {
            users: self.role_users(None, Some(&r.id)).await?,
            operations: ids(&r.operations).unwrap_or_default(),
            pending: ids(&r.pending),
            id: r.id,
            name: r.name,
            builtin: false,
            description: r.description,
            pending_author: r.pending_author,
            approved_by: r.approved_by,
        })
    }

    /// Proposes a new custom role; it takes effect once another administrator approves it.
    pub async fn propose_role(&self, actor: &Actor, p: RoleProposal, ctx: &RequestContext) -> Result<RoleInfo> {
        let ops = parse_ops(&p.operations)?;
        self.require(
            actor,
            Action::ProposeRole(ops),
            Object::System,
            "role.propose",
            "role",
            None,
            ctx,
        )
        .await?;
        let name = p.name.as_deref().map(str::trim).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "must be 1 to 64 characters without control characters",
            ));
        }
        if Role::parse(name).is_some() {
            return Err(Error::conflict("that is the name of a predefined role"));
        }
        let id = store::new_id();
        let now = store::now();
        let mut w = self.store().write().await?;
        let r = sqlx::query(
            "INSERT INTO custom_roles (id, name, description, operations, pending, pending_author, created_at, updated_at) \
             VALUES ($1,$2,$3,NULL,$4,$5,$6,$6)",
        )
        .bind(&id)
        .bind(name)
        .bind(p.description.as_deref().filter(|d| !d.is_empty()))
        .bind(ops.to_json())
        .bind(&actor.id)
        .bind(&now)
        .execute(&mut *w.tx)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::conflict(format!("a role named {name:?} exists")))
            }
            r => {
                r?;
            }
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "role.propose", "role")
                .object(&id, name)
                .detail(format!(
                    "new custom role with {}; waiting for a second administrator",
                    ops.to_json()
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.role_info(&id).await
    }

    /// Proposes new operations for a custom role; the old ones stay in force until approval.
    pub async fn propose_role_edit(
        &self,
        actor: &Actor,
        id: &str,
        p: RoleProposal,
        ctx: &RequestContext,
    ) -> Result<RoleInfo> {
        let row = self
            .custom_role_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "role" })?;
        let ops = parse_ops(&p.operations)?;
        self.require(
            actor,
            Action::ProposeRole(ops),
            Object::System,
            "role.propose",
            "role",
            Some((id, &row.name)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        sqlx::query(
            "UPDATE custom_roles SET pending = $1, pending_author = $2, description = COALESCE($3, description), updated_at = $4 \
             WHERE id = $5",
        )
        .bind(ops.to_json())
        .bind(&actor.id)
        .bind(p.description.as_deref())
        .bind(store::now())
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "role.propose", "role")
                .object(id, &row.name)
                .detail(format!(
                    "edit: {} -> {}; waiting for a second administrator",
                    row.operations.as_deref().unwrap_or("[]"),
                    ops.to_json()
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.role_info(id).await
    }

    /// Approves a custom role's pending operations. The author cannot approve,
    /// nor can anyone who lacks one of the operations.
    pub async fn approve_role(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<RoleInfo> {
        let row = self
            .custom_role_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "role" })?;
        let (Some(pending), Some(author)) = (&row.pending, &row.pending_author) else {
            return Err(Error::conflict("nothing is waiting for approval on this role"));
        };
        let ops = OpSet::from_json(pending).ok_or_else(|| Error::Corrupt {
            table: "custom_roles",
            id: id.into(),
            detail: "pending is not a list of operation ids".into(),
        })?;
        self.require(
            actor,
            Action::ApproveRole(ops),
            Object::User {
                id: author,
                role: Role::PasswordUser,
            },
            "role.approve",
            "role",
            Some((id, &row.name)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        sqlx::query(
            "UPDATE custom_roles SET operations = pending, pending = NULL, pending_author = NULL, approved_by = $1, \
             updated_at = $2 WHERE id = $3",
        )
        .bind(&actor.id)
        .bind(store::now())
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "role.approve", "role")
                .object(id, &row.name)
                .detail(format!("now in force: {}", ops.to_json())),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.role_info(id).await
    }

    async fn role_target(&self, role: &str) -> Result<Target> {
        if let Some(r) = Role::parse(role) {
            return Ok(Target::Builtin(r));
        }
        let row = self
            .custom_role_row(role)
            .await?
            .ok_or_else(|| Error::invalid("role", "no such role"))?;
        let ops = row
            .operations
            .as_deref()
            .and_then(OpSet::from_json)
            .ok_or_else(|| Error::conflict("this custom role has not been approved yet"))?;
        Ok(Target::Custom { id: row.id, ops })
    }

    /// Gives every user in `user_ids` the role `role` (a built-in role id or an
    /// approved custom role id). Each change is authorized and audited on its own.
    pub async fn assign_role(
        &self,
        actor: &Actor,
        role: &str,
        user_ids: &[String],
        ctx: &RequestContext,
    ) -> Result<Vec<RoleChange>> {
        if user_ids.len() > 1000 {
            return Err(Error::invalid("user_ids", "at most 1000 users at once"));
        }
        let target = self.role_target(role).await?;
        let mut out = Vec::new();
        for uid in user_ids {
            let r = self.assign_one(actor, &target, uid, ctx).await;
            out.push(RoleChange {
                user_id: uid.clone(),
                outcome: match r {
                    Ok(()) => "ok".into(),
                    Err(e) => e.to_string(),
                },
            });
        }
        Ok(out)
    }

    async fn assign_one(&self, actor: &Actor, target: &Target, uid: &str, ctx: &RequestContext) -> Result<()> {
        let row = self.user_row(uid).await?.ok_or(Error::NotFound { kind: "user" })?;
        let current = Role::parse(&row.role).ok_or_else(|| Error::Corrupt {
            table: "users",
            id: uid.into(),
            detail: "unknown role".into(),
        })?;
        let (action, base, custom, label) = match target {
            Target::Builtin(r) => (Action::AssignRole(*r), *r, None, r.as_str().to_owned()),
            // Custom-role users keep the least built-in role underneath.
            Target::Custom { id, ops } => (
                Action::AssignCustomRole(*ops),
                Role::PasswordUser,
                Some(id.clone()),
                format!("custom role {id}"),
            ),
        };
        self.require(
            actor,
            action,
            Object::User { id: uid, role: current },
            "user.role",
            "user",
            Some((uid, &row.username)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        sqlx::query(
            "UPDATE users SET role = $1, custom_role_id = $2, super_admin = CASE WHEN $3 THEN super_admin ELSE 0 END, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(base.as_str())
        .bind(&custom)
        .bind(custom.is_none() && base.may_be_super_admin())
        .bind(store::now())
        .bind(uid)
        .execute(&mut *w.tx)
        .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.role", "user")
                .object(uid, &row.username)
                .detail(format!(
                    "{} -> {label}",
                    row.custom_role_id
                        .as_deref()
                        .map(|c| format!("custom role {c}"))
                        .unwrap_or_else(|| current.as_str().into())
                )),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Deletes a custom role after moving its users to `move_to` (a role id);
    /// a role that still has users cannot be deleted without `move_to`.
    pub async fn delete_role(
        &self,
        actor: &Actor,
        id: &str,
        move_to: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<Vec<RoleChange>> {
        let row = self
            .custom_role_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "role" })?;
        self.require(
            actor,
            Action::ProposeRole(OpSet::EMPTY),
            Object::System,
            "role.delete",
            "role",
            Some((id, &row.name)),
            ctx,
        )
        .await?;
        let users: Vec<String> = sqlx::query_scalar("SELECT id FROM users WHERE custom_role_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.store().pool)
            .await?;
        let mut moved = Vec::new();
        if !users.is_empty() {
            let Some(to) = move_to.filter(|t| *t != id) else {
                return Err(Error::conflict(format!(
                    "{} users hold this role; give move_to (another role) to move them first",
                    users.len()
                )));
            };
            moved = self.assign_role(actor, to, &users, ctx).await?;
            if moved.iter().any(|c| c.outcome != "ok") {
                return Err(Error::conflict("some users could not be moved; the role is kept"));
            }
        }
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM custom_roles WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "role.delete", "role")
                .object(id, &row.name)
                .detail(format!("{} users moved to {}", users.len(), move_to.unwrap_or("-"))),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{user, vault};

    fn prop(name: &str, ops: &[&str]) -> RoleProposal {
        RoleProposal {
            name: Some(name.into()),
            description: None,
            operations: ops.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn custom_role_takes_effect_only_after_a_second_admin_approves() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let a1 = user(&v, "admin1", Role::Administrator).await;
        let a2 = user(&v, "admin2", Role::Administrator).await;
        let pa = user(&v, "pwadmin", Role::PasswordAdministrator).await;
        let u = user(&v, "tech", Role::PasswordUser).await;
        // Unknown operations and operations the author lacks are refused.
        assert!(matches!(
            v.propose_role(&a1, prop("x", &["root"]), &ctx).await,
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            v.propose_role(&a1, prop("x", &["privacy_security"]), &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            v.propose_role(&pa, prop("x", &["view_audit"]), &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        let r = v
            .propose_role(&a1, prop("auditor-lite", &["view_audit", "view_passwords"]), &ctx)
            .await
            .unwrap();
        assert!(r.operations.is_empty());
        assert_eq!(r.pending.as_deref().map(<[String]>::len), Some(2));
        // Not approved: cannot be assigned, and grants nothing.
        assert!(matches!(
            v.assign_role(&a1, &r.id, std::slice::from_ref(&u.id), &ctx).await,
            Err(Error::Conflict { .. })
        ));
        // The author cannot approve; another administrator can.
        assert!(matches!(
            v.approve_role(&a1, &r.id, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        let ok = v.approve_role(&a2, &r.id, &ctx).await.unwrap();
        assert_eq!(ok.operations, vec!["view_passwords", "view_audit"]);
        assert!(ok.pending.is_none());
        let before = v.user_row(&u.id).await.unwrap().unwrap().to_actor().unwrap();
        assert!(!crate::authorize(&before, Action::ViewAudit, Object::System).is_allowed());
        let res = v
            .assign_role(&a1, &r.id, std::slice::from_ref(&u.id), &ctx)
            .await
            .unwrap();
        assert_eq!(res[0].outcome, "ok");
        let after = v.user_row(&u.id).await.unwrap().unwrap().to_actor().unwrap();
        assert!(crate::authorize(&after, Action::ViewAudit, Object::System).is_allowed());
        // An edit waits too: the old operations stay in force.
        v.propose_role_edit(&a2, &r.id, prop("", &["view_passwords"]), &ctx)
            .await
            .unwrap();
        let mid = v.user_row(&u.id).await.unwrap().unwrap().to_actor().unwrap();
        assert!(crate::authorize(&mid, Action::ViewAudit, Object::System).is_allowed());
        assert!(matches!(
            v.approve_role(&a2, &r.id, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        v.approve_role(&a1, &r.id, &ctx).await.unwrap();
        let edited = v.user_row(&u.id).await.unwrap().unwrap().to_actor().unwrap();
        assert!(!crate::authorize(&edited, Action::ViewAudit, Object::System).is_allowed());
        // Bulk change back, and delete: users must be moved first.
        let u2 = user(&v, "tech2", Role::PasswordUser).await;
        v.assign_role(&a1, &r.id, std::slice::from_ref(&u2.id), &ctx)
            .await
            .unwrap();
        assert_eq!(v.role_info(&r.id).await.unwrap().users, 2);
        assert!(matches!(
            v.delete_role(&a1, &r.id, None, &ctx).await,
            Err(Error::Conflict { .. })
        ));
        let moved = v.delete_role(&a1, &r.id, Some("password_auditor"), &ctx).await.unwrap();
        assert_eq!(moved.len(), 2);
        let back = v.user_row(&u2.id).await.unwrap().unwrap();
        assert_eq!(
            (back.role.as_str(), back.custom_role_id.as_deref()),
            ("password_auditor", None)
        );
        // Bulk change reports per user: one refused (self), one done.
        let res = v
            .assign_role(&a1, "password_user", &[a1.id.clone(), u2.id.clone()], &ctx)
            .await
            .unwrap();
        assert_ne!(res[0].outcome, "ok");
        assert_eq!(res[1].outcome, "ok");
        assert_eq!(v.list_roles(&a1, &ctx).await.unwrap().len(), 5);
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }
}
