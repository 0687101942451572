//! Sharing (PMP 7.1, 7.2): user groups, resource groups and shares.
//!
//! A share gives a user or a user group a [`ShareLevel`] on an account, a
//! resource (all its accounts) or a resource group (all its resources). The
//! effective level of an actor on an account is the highest of every share
//! that reaches it, direct or through a group; [`authorize`](crate::authorize)
//! decides with it.

use serde::{Deserialize, Serialize};

use crate::audit::{self, NewEvent};
use crate::authz::{Access, Action, Object, ShareLevel};
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext, ResourceGroup, UserGroup};
use crate::store;
use crate::Vault;

/// A group's member table, named by the constants below (never by input).
struct Membership {
    /// `user_group_members` or `resource_group_members`.
    table: &'static str,
    /// The member's column in it.
    member_col: &'static str,
}

const USER_GROUP_MEMBERS: Membership = Membership {
    table: "user_group_members",
    member_col: "user_id",
};

const RESOURCE_GROUP_MEMBERS: Membership = Membership {
    table: "resource_group_members",
    member_col: "resource_id",
};

/// A share as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Share {
    /// Id.
    pub id: String,
    /// The user it is shared with (or `group_id`).
    pub user_id: Option<String>,
    /// The user group it is shared with (or `user_id`).
    pub group_id: Option<String>,
    /// The shared account (exactly one of the three objects is set).
    pub account_id: Option<String>,
    /// The shared resource (all its accounts).
    pub resource_id: Option<String>,
    /// The shared resource group (all its resources).
    pub resource_group_id: Option<String>,
    /// `connect`, `view`, `modify` or `full`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub level: String,
    /// Who granted it.
    pub granted_by: Option<String>,
    /// When.
    pub created_at: String,
}

/// A share to create: one principal, one object, one level.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    /// Share with this user...
    #[serde(default)]
    pub user_id: Option<String>,
    /// ...or with this user group.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Share this account...
    #[serde(default)]
    pub account_id: Option<String>,
    /// ...or this resource...
    #[serde(default)]
    pub resource_id: Option<String>,
    /// ...or this resource group.
    #[serde(default)]
    pub resource_group_id: Option<String>,
    /// `connect` (sessions only, never the password), `view`, `modify` or `full` (may re-share).
    pub level: String,
}

/// A group to create (user group or resource group).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct ShareRow {
    id: String,
    user_id: Option<String>,
    group_id: Option<String>,
    account_id: Option<String>,
    resource_id: Option<String>,
    resource_group_id: Option<String>,
    level: String,
    granted_by: Option<String>,
    created_at: String,
}

impl From<ShareRow> for Share {
    fn from(r: ShareRow) -> Share {
        Share {
            id: r.id,
            user_id: r.user_id,
            group_id: r.group_id,
            account_id: r.account_id,
            resource_id: r.resource_id,
            resource_group_id: r.resource_group_id,
            level: r.level,
            granted_by: r.granted_by,
            created_at: r.created_at,
        }
    }
}

const SHARE_COLS: &str =
    "id, user_id, group_id, account_id, resource_id, resource_group_id, level, granted_by, created_at";

/// SQL matching shares that reach user `$1` (directly or through a group).
const PRINCIPAL_MATCH: &str =
    "(s.user_id = $1 OR s.group_id IN (SELECT group_id FROM user_group_members WHERE user_id = $1))";

fn validate_group_name(s: &str) -> Result<()> {
    if s.trim().is_empty() || s.trim() != s || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "must be 1 to 128 characters without surrounding spaces or control characters",
        ));
    }
    Ok(())
}

fn validate_description(d: &Option<String>) -> Result<()> {
    if let Some(d) = d {
        if d.chars().count() > 4000 || d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Error::invalid(
                "description",
                "must be at most 4000 characters without control characters",
            ));
        }
    }
    Ok(())
}

fn unique(res: std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>, msg: &str) -> Result<()> {
    match res {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(msg)),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// What a share names, resolved.
enum Target {
    Account { id: String, name: String },
    Resource { id: String, name: String },
    Group { id: String, name: String },
}

impl Vault {
    /// The actor's effective share level on a resource (`account_id = None`) or
    /// on one of its accounts: the highest level over the direct and group shares
    /// of the account, the resource and every resource group holding it.
    pub(crate) async fn share_level_for(
        &self,
        actor: &Actor,
        resource_id: &str,
        account_id: Option<&str>,
    ) -> Result<Option<ShareLevel>> {
        if actor.is_system {
            return Ok(None);
        }
        let levels: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT s.level FROM shares s WHERE {PRINCIPAL_MATCH} AND (s.account_id = $2 OR s.resource_id = $3 \
             OR s.resource_group_id IN (SELECT group_id FROM resource_group_members WHERE resource_id = $3))"
        ))
        .bind(&actor.id)
        .bind(account_id)
        .bind(resource_id)
        .fetch_all(&self.store().pool)
        .await?;
        Ok(levels.iter().filter_map(|l| ShareLevel::parse(l)).max())
    }

    /// The actor's level on a resource group (shares of the group itself).
    async fn group_share_level(&self, actor: &Actor, group_id: &str) -> Result<Option<ShareLevel>> {
        let levels: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT s.level FROM shares s WHERE {PRINCIPAL_MATCH} AND s.resource_group_id = $2"
        ))
        .bind(&actor.id)
        .bind(group_id)
        .fetch_all(&self.store().pool)
        .await?;
        Ok(levels.iter().filter_map(|l| ShareLevel::parse(l)).max())
    }

    /// Ids of accounts on `resource_id` shared with the actor by an account-level share.
    pub(crate) async fn shared_account_ids(&self, actor: &Actor, resource_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT DISTINCT s.account_id FROM shares s JOIN accounts a ON a.id = s.account_id \
             WHERE {PRINCIPAL_MATCH} AND a.resource_id = $2"
        ))
        .bind(&actor.id)
        .bind(resource_id)
        .fetch_all(&self.store().pool)
        .await?)
    }

    /// SQL condition (on `resources.id`, user id bound as `$2`) selecting resources reachable by a share.
    pub(crate) const SHARED_RESOURCES_SQL: &'static str =
        "id IN (SELECT COALESCE(s.resource_id, a.resource_id) FROM shares s LEFT JOIN accounts a ON a.id = s.account_id \
         WHERE (s.user_id = $2 OR s.group_id IN (SELECT group_id FROM user_group_members WHERE user_id = $2)) \
         AND s.resource_group_id IS NULL) \
         OR id IN (SELECT m.resource_id FROM resource_group_members m JOIN shares s ON s.resource_group_id = m.group_id \
         WHERE s.user_id = $2 OR s.group_id IN (SELECT group_id FROM user_group_members WHERE user_id = $2))";

    async fn resolve_share_target(&self, actor: &Actor, n: &NewShare, ctx: &RequestContext) -> Result<Target> {
        let set = [&n.account_id, &n.resource_id, &n.resource_group_id]
            .iter()
            .filter(|o| o.is_some())
            .count();
        if set != 1 {
            return Err(Error::invalid(
                "account_id",
                "give exactly one of account_id, resource_id, resource_group_id",
            ));
        }
        if let Some(id) = &n.account_id {
            let a = self.get_account(actor, id, ctx).await?;
            let r = self
                .resource_by_id(&a.resource_id)
                .await?
                .ok_or(Error::NotFound { kind: "resource" })?;
            let share = self.share_level_for(actor, &r.id, Some(&a.id)).await?;
            let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
            self.require(
                actor,
                Action::Share,
                Object::Owned {
                    owner_id: owner,
                    share,
                    access: Access::Free,
                },
                "share.create",
                "account",
                Some((id, &a.login)),
                ctx,
            )
            .await?;
            Ok(Target::Account {
                id: a.id,
                name: format!("{}@{}", a.login, r.name),
            })
        } else if let Some(id) = &n.resource_id {
            let r = self.get_resource(actor, id, ctx).await?;
            let share = self.share_level_for(actor, &r.id, None).await?;
            self.require(
                actor,
                Action::Share,
                Object::Owned {
                    owner_id: r.owner_id.as_deref(),
                    share,
                    access: Access::Free,
                },
                "share.create",
                "resource",
                Some((id, &r.name)),
                ctx,
            )
            .await?;
            Ok(Target::Resource { id: r.id, name: r.name })
        } else {
            let id = n.resource_group_id.as_deref().unwrap_or_default();
            let g = self.visible_resource_group(actor, id, ctx).await?;
            let share = self.group_share_level(actor, id).await?;
            self.require(
                actor,
                Action::Share,
                Object::Owned {
                    owner_id: g.owner_id.as_deref(),
                    share,
                    access: Access::Free,
                },
                "share.create",
                "resource_group",
                Some((id, &g.name)),
                ctx,
            )
            .await?;
            Ok(Target::Group { id: g.id, name: g.name })
        }
    }

    /// Shares an account, a resource or a resource group with a user or a user group.
    /// Needs ownership (or super admin) or a `full` share of the object.
    pub async fn create_share(&self, actor: &Actor, n: NewShare, ctx: &RequestContext) -> Result<Share> {
        let level = ShareLevel::parse(&n.level)
            .ok_or_else(|| Error::invalid("level", "must be one of connect, view, modify, full"))?;
        let target = self.resolve_share_target(actor, &n, ctx).await?;
        let principal = match (&n.user_id, &n.group_id) {
            (Some(u), None) => {
                let row = self
                    .user_row(u)
                    .await?
                    .ok_or_else(|| Error::invalid("user_id", "no such user"))?;
                format!("user {}", row.username)
            }
            (None, Some(g)) => {
                let name: Option<String> = sqlx::query_scalar("SELECT name FROM user_groups WHERE id = $1")
                    .bind(g)
                    .fetch_optional(&self.store().pool)
                    .await?;
                format!(
                    "group {}",
                    name.ok_or_else(|| Error::invalid("group_id", "no such user group"))?
                )
            }
            _ => return Err(Error::invalid("user_id", "give exactly one of user_id, group_id")),
        };
        let (acc, res, grp, obj_type, obj_id, obj_name) = match &target {
            Target::Account { id, name } => (Some(id), None, None, "account", id, name),
            Target::Resource { id, name } => (None, Some(id), None, "resource", id, name),
            Target::Group { id, name } => (None, None, Some(id), "resource_group", id, name),
        };
        let id = store::new_id();
        let mut w = self.store().write().await?;
        let res_ = sqlx::query(
            "INSERT INTO shares (id, user_id, group_id, account_id, resource_id, resource_group_id, level, granted_by, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .bind(&id)
        .bind(&n.user_id)
        .bind(&n.group_id)
        .bind(acc)
        .bind(res)
        .bind(grp)
        .bind(level.as_str())
        .bind((!actor.is_system).then_some(actor.id.as_str()))
        .bind(store::now())
        .execute(&mut *w.tx)
        .await;
        unique(
            res_,
            "this object is already shared with that user or group; revoke it first to change the level",
        )?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "share.create", obj_type)
                .object(obj_id, obj_name)
                .detail(format!("{} with {principal} (share {id})", level.as_str())),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.share_by_id(&id).await?.ok_or(Error::NotFound { kind: "share" })
    }

    async fn share_by_id(&self, id: &str) -> Result<Option<Share>> {
        Ok(
            sqlx::query_as::<store::Db, ShareRow>(&format!("SELECT {SHARE_COLS} FROM shares WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.store().pool)
                .await?
                .map(Share::from),
        )
    }

    /// May the actor manage (re-share, revoke) this share's object? Never audits.
    async fn may_share(&self, actor: &Actor, s: &Share) -> Result<bool> {
        let decide = |owner: Option<&str>, share| {
            crate::authorize(
                actor,
                Action::Share,
                Object::Owned {
                    owner_id: owner,
                    share,
                    access: Access::Free,
                },
            )
            .is_allowed()
        };
        if let Some(aid) = &s.account_id {
            let Some(a) = self.account_by_id(aid).await? else {
                return Ok(false);
            };
            let Some(r) = self.resource_by_id(&a.resource_id).await? else {
                return Ok(false);
            };
            let share = self.share_level_for(actor, &r.id, Some(aid)).await?;
            Ok(decide(
                Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref()),
                share,
            ))
        } else if let Some(rid) = &s.resource_id {
            let Some(r) = self.resource_by_id(rid).await? else {
                return Ok(false);
            };
            let share = self.share_level_for(actor, rid, None).await?;
            Ok(decide(r.owner_id.as_deref(), share))
        } else if let Some(gid) = &s.resource_group_id {
            let Some(g) = self.resource_group_by_id(gid).await? else {
                return Ok(false);
            };
            let share = self.group_share_level(actor, gid).await?;
            Ok(decide(g.owner_id.as_deref(), share))
        } else {
            Ok(false)
        }
    }

    /// Shares the actor may see: those granted to them (directly or through a
    /// group) and those of objects they may share.
    pub async fn list_shares(&self, actor: &Actor, _ctx: &RequestContext) -> Result<Vec<Share>> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let rows =
            sqlx::query_as::<store::Db, ShareRow>(&format!("SELECT {SHARE_COLS} FROM shares ORDER BY created_at, id"))
                .fetch_all(&self.store().pool)
                .await?;
        let groups: Vec<String> = sqlx::query_scalar("SELECT group_id FROM user_group_members WHERE user_id = $1")
            .bind(&actor.id)
            .fetch_all(&self.store().pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let s = Share::from(r);
            let mine = s.user_id.as_deref() == Some(actor.id.as_str())
                || s.group_id.as_ref().is_some_and(|g| groups.contains(g));
            if mine || self.may_share(actor, &s).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Revokes a share. When it was `view` or more, the passwords it covered are
    /// reset on their targets (where a resetter exists; each outcome is audited).
    pub async fn revoke_share(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<Share> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let s = self.share_by_id(id).await?.ok_or(Error::NotFound { kind: "share" })?;
        if !self.may_share(actor, &s).await? {
            self.audit_alone(
                NewEvent::by(actor, "share.revoke", "share")
                    .object(id, id)
                    .outcome(audit::Outcome::Denied)
                    .detail("sharing needs ownership or a full share"),
                ctx,
            )
            .await?;
            return Err(Error::NotFound { kind: "share" });
        }
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM shares WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        let principal = s
            .user_id
            .as_deref()
            .map(|u| format!("user {u}"))
            .or_else(|| s.group_id.as_deref().map(|g| format!("group {g}")))
            .unwrap_or_default();
        let (t, o) = if let Some(a) = &s.account_id {
            ("account", a)
        } else if let Some(r) = &s.resource_id {
            ("resource", r)
        } else {
            ("resource_group", s.resource_group_id.as_ref().unwrap_or(&s.id))
        };
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "share.revoke", t)
                .object(o, o)
                .detail(format!("{} from {principal} (share {id})", s.level)),
            ctx,
        )
        .await?;
        w.commit().await?;
        // Whoever could see the password no longer should know it.
        if ShareLevel::parse(&s.level).is_some_and(|l| l >= ShareLevel::View) {
            let accounts = self.share_account_ids(&s).await?;
            self.reset_after_revoke(accounts, ctx).await;
        }
        Ok(s)
    }

    /// Account ids a share covers (the account, every account of the resource, or of the group's resources).
    pub async fn share_account_ids(&self, s: &Share) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM accounts WHERE id = $1 OR resource_id = $2 \
             OR resource_id IN (SELECT resource_id FROM resource_group_members WHERE group_id = $3) ORDER BY id",
        )
        .bind(&s.account_id)
        .bind(&s.resource_id)
        .bind(&s.resource_group_id)
        .fetch_all(&self.store().pool)
        .await?)
    }

    // ----- user groups -----

    async fn user_group_by_id(&self, id: &str) -> Result<Option<UserGroup>> {
        let row: Option<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, name, description FROM user_groups WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.store().pool)
                .await?;
        let Some((id, name, description)) = row else {
            return Ok(None);
        };
        let members: Vec<String> =
            sqlx::query_scalar("SELECT user_id FROM user_group_members WHERE group_id = $1 ORDER BY user_id")
                .bind(&id)
                .fetch_all(&self.store().pool)
                .await?;
        Ok(Some(UserGroup {
            id,
            name,
            description,
            members,
        }))
    }

    /// User groups: every group for user managers, otherwise the actor's own groups.
    pub async fn list_user_groups(&self, actor: &Actor, _ctx: &RequestContext) -> Result<Vec<UserGroup>> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let all = crate::authorize(actor, Action::ManageUserGroups, Object::System).is_allowed();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM user_groups WHERE $1 OR id IN (SELECT group_id FROM user_group_members WHERE user_id = $2) ORDER BY name",
        )
        .bind(all)
        .bind(&actor.id)
        .fetch_all(&self.store().pool)
        .await?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.user_group_by_id(&id).await?);
        }
        Ok(out)
    }

    /// Creates a user group (Manage users).
    pub async fn create_user_group(&self, actor: &Actor, n: NewGroup, ctx: &RequestContext) -> Result<UserGroup> {
        self.require(
            actor,
            Action::ManageUserGroups,
            Object::System,
            "user_group.create",
            "user_group",
            None,
            ctx,
        )
        .await?;
        validate_group_name(&n.name)?;
        validate_description(&n.description)?;
        let id = store::new_id();
        let mut w = self.store().write().await?;
        let r = sqlx::query("INSERT INTO user_groups (id, name, description, created_at) VALUES ($1,$2,$3,$4)")
            .bind(&id)
            .bind(&n.name)
            .bind(n.description.as_deref().filter(|d| !d.is_empty()))
            .bind(store::now())
            .execute(&mut *w.tx)
            .await;
        unique(r, "a user group with that name exists")?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user_group.create", "user_group").object(&id, &n.name),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.user_group_by_id(&id)
            .await?
            .ok_or(Error::NotFound { kind: "user group" })
    }

    async fn managed_user_group(&self, actor: &Actor, id: &str, what: &str, ctx: &RequestContext) -> Result<UserGroup> {
        let g = self
            .user_group_by_id(id)
            .await?
            .ok_or(Error::NotFound { kind: "user group" })?;
        self.require(
            actor,
            Action::ManageUserGroups,
            Object::System,
            what,
            "user_group",
            Some((id, &g.name)),
            ctx,
        )
        .await?;
        Ok(g)
    }

    /// Deletes a user group (its shares go with it).
    pub async fn delete_user_group(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<()> {
        let g = self.managed_user_group(actor, id, "user_group.delete", ctx).await?;
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM user_groups WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user_group.delete", "user_group").object(id, &g.name),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Adds (`add = true`) or removes `member_id` of `group_id` in `m`'s table
    /// and audits `event` only when a row changed. Adding a member already
    /// there is a silent no-op; removing one that is not there is
    /// [`Error::NotFound`] (`member`).
    async fn change_membership(
        &self,
        m: Membership,
        group_id: &str,
        member_id: &str,
        add: bool,
        event: NewEvent<'_>,
        ctx: &RequestContext,
    ) -> Result<()> {
        let Membership { table, member_col } = m;
        let sql = if add {
            format!("INSERT INTO {table} (group_id, {member_col}) VALUES ($1,$2) ON CONFLICT DO NOTHING")
        } else {
            format!("DELETE FROM {table} WHERE group_id = $1 AND {member_col} = $2")
        };
        let mut w = self.store().write().await?;
        let changed = sqlx::query(&sql)
            .bind(group_id)
            .bind(member_id)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if changed > 0 {
            audit::append(&mut w.tx, event, ctx).await?;
            w.commit().await
        } else if add {
            Ok(())
        } else {
            Err(Error::NotFound { kind: "member" })
        }
    }

    /// Adds (`add = true`) or removes a member of a user group.
    pub async fn set_user_group_member(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
        add: bool,
        ctx: &RequestContext,
    ) -> Result<UserGroup> {
        let what = if add {
            "user_group.member_add"
        } else {
            "user_group.member_remove"
        };
        let g = self.managed_user_group(actor, group_id, what, ctx).await?;
        let user = self.user_row(user_id).await?.ok_or(Error::NotFound { kind: "user" })?;
        let event = NewEvent::by(actor, what, "user_group")
            .object(group_id, &g.name)
            .detail(format!("user {}", user.username));
        self.change_membership(USER_GROUP_MEMBERS, group_id, user_id, add, event, ctx)
            .await?;
        self.user_group_by_id(group_id)
            .await?
            .ok_or(Error::NotFound { kind: "user group" })
    }

    // ----- resource groups -----

    pub(crate) async fn resource_group_by_id(&self, id: &str) -> Result<Option<ResourceGroup>> {
        let row: Option<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT id, name, description, owner_id FROM resource_groups WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.store().pool)
                .await?;
        let Some((id, name, description, owner_id)) = row else {
            return Ok(None);
        };
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT resource_id FROM resource_group_members WHERE group_id = $1 ORDER BY resource_id",
        )
        .bind(&id)
        .fetch_all(&self.store().pool)
        .await?;
        Ok(Some(ResourceGroup {
            id,
            name,
            description,
            owner_id,
            members,
        }))
    }

    async fn visible_resource_group(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<ResourceGroup> {
        let g = self
            .resource_group_by_id(id)
            .await?
            .ok_or(Error::NotFound { kind: "resource group" })?;
        let share = self.group_share_level(actor, id).await?;
        self.require(
            actor,
            Action::ViewObject,
            Object::Owned {
                owner_id: g.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "resource_group.view",
            "resource_group",
            Some((id, &g.name)),
            ctx,
        )
        .await
        .map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound { kind: "resource group" },
            e => e,
        })?;
        Ok(g)
    }

    /// A resource group the actor may change (owner, super admin, or a `modify` share); refusals audited as `what`.
    pub(crate) async fn modifiable_resource_group(
        &self,
        actor: &Actor,
        id: &str,
        what: &str,
        ctx: &RequestContext,
    ) -> Result<ResourceGroup> {
        let g = self.visible_resource_group(actor, id, ctx).await?;
        let share = self.group_share_level(actor, id).await?;
        self.require(
            actor,
            Action::UpdateResource,
            Object::Owned {
                owner_id: g.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            what,
            "resource_group",
            Some((id, &g.name)),
            ctx,
        )
        .await?;
        Ok(g)
    }

    /// Resource groups the actor owns or that are shared with them (all for super admins).
    pub async fn list_resource_groups(&self, actor: &Actor, _ctx: &RequestContext) -> Result<Vec<ResourceGroup>> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let all = actor.is_system || actor.super_admin;
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM resource_groups WHERE $2 OR owner_id = $1 OR id IN \
             (SELECT s.resource_group_id FROM shares s WHERE {PRINCIPAL_MATCH}) ORDER BY name"
        ))
        .bind(&actor.id)
        .bind(all)
        .fetch_all(&self.store().pool)
        .await?;
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.resource_group_by_id(&id).await?);
        }
        Ok(out)
    }

    /// Creates a resource group owned by the actor (Manage resources).
    pub async fn create_resource_group(
        &self,
        actor: &Actor,
        n: NewGroup,
        ctx: &RequestContext,
    ) -> Result<ResourceGroup> {
        self.require(
            actor,
            Action::CreateResourceGroup,
            Object::System,
            "resource_group.create",
            "resource_group",
            None,
            ctx,
        )
        .await?;
        validate_group_name(&n.name)?;
        validate_description(&n.description)?;
        let id = store::new_id();
        let mut w = self.store().write().await?;
        let r = sqlx::query(
            "INSERT INTO resource_groups (id, name, description, owner_id, created_at) VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&id)
        .bind(&n.name)
        .bind(n.description.as_deref().filter(|d| !d.is_empty()))
        .bind((!actor.is_system).then_some(actor.id.as_str()))
        .bind(store::now())
        .execute(&mut *w.tx)
        .await;
        unique(r, "a resource group with that name exists")?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource_group.create", "resource_group").object(&id, &n.name),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.resource_group_by_id(&id)
            .await?
            .ok_or(Error::NotFound { kind: "resource group" })
    }

    /// Adds or removes a resource of a group. Needs `modify` on the group and the
    /// right to share the resource (a group shared onward shares its resources).
    pub async fn set_resource_group_member(
        &self,
        actor: &Actor,
        group_id: &str,
        resource_id: &str,
        add: bool,
        ctx: &RequestContext,
    ) -> Result<ResourceGroup> {
        let what = if add {
            "resource_group.member_add"
        } else {
            "resource_group.member_remove"
        };
        let g = self.modifiable_resource_group(actor, group_id, what, ctx).await?;
        let r = self.get_resource(actor, resource_id, ctx).await?;
        let rshare = self.share_level_for(actor, resource_id, None).await?;
        self.require(
            actor,
            Action::Share,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share: rshare,
                access: Access::Free,
            },
            what,
            "resource",
            Some((resource_id, &r.name)),
            ctx,
        )
        .await?;
        let event = NewEvent::by(actor, what, "resource_group")
            .object(group_id, &g.name)
            .detail(format!("resource {}", r.name));
        self.change_membership(RESOURCE_GROUP_MEMBERS, group_id, resource_id, add, event, ctx)
            .await?;
        self.resource_group_by_id(group_id)
            .await?
            .ok_or(Error::NotFound { kind: "resource group" })
    }

    /// Deletes a resource group (not its resources; its shares go with it).
    pub async fn delete_resource_group(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<()> {
        let g = self.visible_resource_group(actor, id, ctx).await?;
        let share = self.group_share_level(actor, id).await?;
        self.require(
            actor,
            Action::DeleteResource,
            Object::Owned {
                owner_id: g.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "resource_group.delete",
            "resource_group",
            Some((id, &g.name)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM resource_groups WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource_group.delete", "resource_group").object(id, &g.name),
            ctx,
        )
        .await?;
        w.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::secret::SecretKind;
    use crate::testutil::{account, linux, user, vault};

    fn share(
        user: Option<&str>,
        group: Option<&str>,
        acc: Option<&str>,
        res: Option<&str>,
        rg: Option<&str>,
        level: &str,
    ) -> NewShare {
        NewShare {
            user_id: user.map(Into::into),
            group_id: group.map(Into::into),
            account_id: acc.map(Into::into),
            resource_id: res.map(Into::into),
            resource_group_id: rg.map(Into::into),
            level: level.into(),
        }
    }

    #[tokio::test]
    async fn effective_level_is_the_highest_direct_or_group_share() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let ctx = RequestContext::default();
        let sys = Actor::system();
        let owner = user(&v, "owner", Role::PasswordAdministrator).await;
        let bob = user(&v, "bob", Role::PasswordUser).await;
        let eve = user(&v, "eve", Role::PasswordUser).await;
        let r = v.create_resource(&owner, linux("web1"), &ctx).await.unwrap();
        let a = v
            .create_account(&owner, &r.id, account("deploy", "pw-1"), &ctx)
            .await
            .unwrap();
        let r2 = v.create_resource(&owner, linux("web2"), &ctx).await.unwrap();
        let a2 = v
            .create_account(&owner, &r2.id, account("deploy", "pw-2"), &ctx)
            .await
            .unwrap();
        // Nothing shared: bob sees nothing.
        assert!(v.list_resources(&bob, &ctx).await.unwrap().is_empty());
        // Group share at connect: sessions yes, password no.
        let g = v
            .create_user_group(
                &sys,
                NewGroup {
                    name: "contractors".into(),
                    description: None,
                },
                &ctx,
            )
            .await
            .unwrap();
        v.set_user_group_member(&sys, &g.id, &bob.id, true, &ctx).await.unwrap();
        let s1 = v
            .create_share(
                &owner,
                share(None, Some(&g.id), Some(&a.id), None, None, "connect"),
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(v.list_resources(&bob, &ctx).await.unwrap().len(), 1);
        assert_eq!(v.list_accounts(&bob, &r.id, &ctx).await.unwrap().len(), 1);
        assert!(v
            .lease_for_session(&bob, &a.id, SecretKind::Password, &ctx)
            .await
            .is_ok());
        assert!(matches!(
            v.retrieve_secret(&bob, &a.id, SecretKind::Password, &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        // Bob (connect) cannot re-share.
        assert!(v
            .create_share(
                &bob,
                share(Some(&eve.id), None, Some(&a.id), None, None, "connect"),
                &ctx
            )
            .await
            .is_err());
        // A direct view share on the resource raises the level: max of both.
        let s2 = v
            .create_share(
                &owner,
                share(Some(&bob.id), None, None, Some(&r.id), None, "view"),
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(
            v.share_level_for(&bob, &r.id, Some(&a.id)).await.unwrap(),
            Some(ShareLevel::View)
        );
        let l = v
            .retrieve_secret(&bob, &a.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_eq!(l.expose_str(), Some("pw-1"));
        // Duplicate share conflicts; bad level is invalid.
        assert!(matches!(
            v.create_share(
                &owner,
                share(Some(&bob.id), None, None, Some(&r.id), None, "full"),
                &ctx
            )
            .await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            v.create_share(
                &owner,
                share(Some(&bob.id), None, Some(&a.id), None, None, "root"),
                &ctx
            )
            .await,
            Err(Error::Invalid { .. })
        ));
        // Resource group share at full: bob may re-share web2 to eve.
        let rg = v
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
        v.set_resource_group_member(&owner, &rg.id, &r2.id, true, &ctx)
            .await
            .unwrap();
        v.create_share(
            &owner,
            share(Some(&bob.id), None, None, None, Some(&rg.id), "full"),
            &ctx,
        )
        .await
        .unwrap();
        assert_eq!(
            v.share_level_for(&bob, &r2.id, Some(&a2.id)).await.unwrap(),
            Some(ShareLevel::Full)
        );
        assert_eq!(v.list_resources(&bob, &ctx).await.unwrap().len(), 2);
        let s3 = v
            .create_share(
                &bob,
                share(Some(&eve.id), None, Some(&a2.id), None, None, "connect"),
                &ctx,
            )
            .await
            .unwrap();
        assert!(v
            .lease_for_session(&eve, &a2.id, SecretKind::Password, &ctx)
            .await
            .is_ok());
        // Eve sees the shares granted to her, not the others.
        let eves: Vec<String> = v
            .list_shares(&eve, &ctx)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(eves, vec![s3.id.clone()]);
        // Eve cannot revoke; bob (full) can.
        assert!(matches!(
            v.revoke_share(&eve, &s3.id, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        v.revoke_share(&bob, &s3.id, &ctx).await.unwrap();
        assert!(matches!(
            v.lease_for_session(&eve, &a2.id, SecretKind::Password, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        // Revoking the view share leaves the group's connect share.
        let covered = v.share_account_ids(&s2).await.unwrap();
        assert_eq!(covered, vec![a.id.clone()]);
        v.revoke_share(&owner, &s2.id, &ctx).await.unwrap();
        assert_eq!(
            v.share_level_for(&bob, &r.id, Some(&a.id)).await.unwrap(),
            Some(ShareLevel::Connect)
        );
        // Leaving the group removes it.
        v.set_user_group_member(&sys, &g.id, &bob.id, false, &ctx)
            .await
            .unwrap();
        assert_eq!(v.share_level_for(&bob, &r.id, Some(&a.id)).await.unwrap(), None);
        v.revoke_share(&owner, &s1.id, &ctx).await.unwrap();
        // A password user cannot make groups.
        assert!(matches!(
            v.create_user_group(
                &bob,
                NewGroup {
                    name: "x".into(),
                    description: None
                },
                &ctx
            )
            .await,
            Err(Error::Forbidden { .. })
        ));
        let audit = v.verify_audit().await.unwrap();
        assert!(audit.first_broken.is_none());
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action LIKE 'share.%' AND outcome = 'success'")
                .fetch_one(&v.store().pool)
                .await
                .unwrap();
        assert_eq!(n, 7, "four shares created, three revoked: each audited");
    }
}
