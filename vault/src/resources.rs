//! Resources, accounts and their sealed secrets.

use std::collections::BTreeMap;

use serde::Deserialize;
use sqlx::FromRow;

use crate::audit::{self, NewEvent};
use crate::authz::{Access, Action, Object, ShareLevel};
use crate::error::{Error, Result};
use crate::model::{Account, Actor, RequestContext, Resource, ResourceType};
use crate::secret::{Lease, SecretKind, SecretString};
use crate::store::{self, Db};
use crate::users::put_sealed;
use crate::Vault;

/// A new resource.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    /// Unique name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Host name or IP address.
    pub host: String,
    /// Port (default: the type's usual port).
    #[serde(default)]
    pub port: Option<u16>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Landing-server chain: account ids of the hops, in order.
    #[serde(default)]
    pub landing_chain: Vec<String>,
    /// Extra fields.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// Allow port forwarding through gateway sessions (default false).
    #[serde(default)]
    pub allow_port_forwarding: bool,
    /// Allow agent forwarding through gateway sessions (default false).
    #[serde(default)]
    pub allow_agent_forwarding: bool,
    /// Allow the clipboard in RDP sessions (default false; its use is audited).
    #[serde(default)]
    pub allow_clipboard: bool,
    /// Allow drive redirection in RDP sessions (default false; its use is audited).
    #[serde(default)]
    pub allow_drive: bool,
}

/// Changes to a resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New type.
    #[serde(default, rename = "type")]
    pub resource_type: Option<ResourceType>,
    /// New host.
    #[serde(default)]
    pub host: Option<String>,
    /// New port.
    #[serde(default)]
    pub port: Option<u16>,
    /// New description (empty clears).
    #[serde(default)]
    pub description: Option<String>,
    /// New landing chain.
    #[serde(default)]
    pub landing_chain: Option<Vec<String>>,
    /// New extra fields (replaces all).
    #[serde(default)]
    pub extra: Option<BTreeMap<String, String>>,
    /// Allow or forbid port forwarding.
    #[serde(default)]
    pub allow_port_forwarding: Option<bool>,
    /// Allow or forbid agent forwarding.
    #[serde(default)]
    pub allow_agent_forwarding: Option<bool>,
    /// Allow or forbid the clipboard in RDP sessions.
    #[serde(default)]
    pub allow_clipboard: Option<bool>,
    /// Allow or forbid drive redirection in RDP sessions.
    #[serde(default)]
    pub allow_drive: Option<bool>,
}

/// A new account on a resource.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Login name on the target.
    pub login: String,
    /// Password.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub password: Option<SecretString>,
    /// SSH private key (OpenSSH or PEM format).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub private_key: Option<SecretString>,
    /// Notes.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Changes to an account.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// New login name.
    #[serde(default)]
    pub login: Option<String>,
    /// New password (empty string removes it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub password: Option<SecretString>,
    /// New private key (empty string removes it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub private_key: Option<SecretString>,
    /// New notes (empty clears).
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, FromRow)]
struct ResourceRow {
    id: String,
    name: String,
    resource_type: String,
    host: String,
    port: i64,
    description: Option<String>,
    landing_chain: String,
    extra: String,
    owner_id: Option<String>,
    allow_port_forwarding: bool,
    allow_agent_forwarding: bool,
    allow_clipboard: bool,
    allow_drive: bool,
    created_at: String,
}

impl ResourceRow {
    fn into_model(self) -> Result<Resource> {
        let corrupt = |detail: String| Error::Corrupt {
            table: "resources",
            id: self.id.clone(),
            detail,
        };
        let resource_type = ResourceType::parse(&self.resource_type)
            .ok_or_else(|| corrupt(format!("unknown type {:?}", self.resource_type)))?;
        let port = u16::try_from(self.port).map_err(|_| corrupt(format!("port {} out of range", self.port)))?;
        let landing_chain: Vec<String> =
            serde_json::from_str(&self.landing_chain).map_err(|e| corrupt(format!("landing_chain: {e}")))?;
        let extra: BTreeMap<String, String> =
            serde_json::from_str(&self.extra).map_err(|e| corrupt(format!("extra: {e}")))?;
        Ok(Resource {
            id: self.id,
            name: self.name,
            resource_type,
            host: self.host,
            port,
            description: self.description,
            landing_chain,
            extra,
            owner_id: self.owner_id,
            allow_port_forwarding: self.allow_port_forwarding,
            allow_agent_forwarding: self.allow_agent_forwarding,
            allow_clipboard: self.allow_clipboard,
            allow_drive: self.allow_drive,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, FromRow)]
struct AccountRow {
    id: String,
    resource_id: String,
    login: String,
    notes: Option<String>,
    owner_id: Option<String>,
    password_changed_at: Option<String>,
    created_at: String,
    has_password: bool,
    has_private_key: bool,
}

impl AccountRow {
    fn into_model(self) -> Account {
        Account {
            id: self.id,
            resource_id: self.resource_id,
            login: self.login,
            notes: self.notes,
            owner_id: self.owner_id,
            has_password: self.has_password,
            has_private_key: self.has_private_key,
            password_changed_at: self.password_changed_at,
            created_at: self.created_at,
        }
    }
}

const RES_COLS: &str = "id, name, resource_type, host, port, description, landing_chain, extra, owner_id, \
                        allow_port_forwarding, allow_agent_forwarding, allow_clipboard, allow_drive, created_at";
const ACC_SELECT: &str =
    "SELECT a.id, a.resource_id, a.login, a.notes, a.owner_id, a.password_changed_at, a.created_at, \
     EXISTS(SELECT 1 FROM sealed s WHERE s.owner = 'account:' || a.id || ':password') AS has_password, \
     EXISTS(SELECT 1 FROM sealed s WHERE s.owner = 'account:' || a.id || ':private_key') AS has_private_key \
     FROM accounts a";

pub(crate) fn secret_owner(account_id: &str, kind: SecretKind) -> String {
    format!("account:{account_id}:{}", kind.as_str())
}

fn clean_text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn validate_name(s: &str) -> Result<()> {
    if s.trim().is_empty() || s.trim() != s {
        return Err(Error::invalid("name", "must be non-empty without surrounding spaces"));
    }
    clean_text("name", s, 128)?;
    if s.contains('#') || s.contains('@') {
        return Err(Error::invalid(
            "name",
            "must not contain '#' or '@' (they separate parts of gateway logins)",
        ));
    }
    Ok(())
}

fn validate_host(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("host", "must be a host name or an IP address"))
    }
}

fn validate_port(p: u16) -> Result<()> {
    if p == 0 {
        Err(Error::invalid("port", "must be between 1 and 65535"))
    } else {
        Ok(())
    }
}

fn validate_login(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 128 {
        return Err(Error::invalid("login", "must be 1 to 128 characters"));
    }
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '#' || c == '@')
    {
        return Err(Error::invalid(
            "login",
            "must not contain spaces, control characters, '#' or '@'",
        ));
    }
    Ok(())
}

fn validate_secret(kind: SecretKind, s: &SecretString) -> Result<()> {
    match kind {
        SecretKind::Password => {
            if s.expose().len() > 4096 {
                return Err(Error::invalid("password", "must be at most 4096 bytes"));
            }
        }
        SecretKind::PrivateKey => {
            let k = s.expose().trim();
            if k.len() > 64 * 1024 || !(k.starts_with("-----BEGIN ") && k.ends_with("PRIVATE KEY-----")) {
                return Err(Error::invalid("private_key", "must be a PEM or OpenSSH private key"));
            }
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Vault {
    pub(crate) async fn resource_by_id(&self, id: &str) -> Result<Option<Resource>> {
        sqlx::query_as::<Db, ResourceRow>(&format!("SELECT {RES_COLS} FROM resources WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.store().pool)
            .await?
            .map(ResourceRow::into_model)
            .transpose()
    }

    pub(crate) async fn account_by_id(&self, id: &str) -> Result<Option<Account>> {
        Ok(
            sqlx::query_as::<Db, AccountRow>(&format!("{ACC_SELECT} WHERE a.id = $1"))
                .bind(id)
                .fetch_optional(&self.store().pool)
                .await?
                .map(AccountRow::into_model),
        )
    }

    async fn resource_object(&self, actor: &Actor, id: &str) -> Result<(Resource, Option<ShareLevel>)> {
        let r = self
            .resource_by_id(id)
            .await?
            .ok_or(Error::NotFound { kind: "resource" })?;
        let share = self.share_level_for(actor, &r.id, None).await?;
        Ok((r, share))
    }

    /// Loads an account with its resource and decides with the account's facts.
    /// The effective owner is the resource owner when the actor owns the resource.
    pub(crate) async fn account_object(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<(Account, Resource, Option<ShareLevel>)> {
        let a = self
            .account_by_id(id)
            .await?
            .ok_or(Error::NotFound { kind: "account" })?;
        let r = self
            .resource_by_id(&a.resource_id)
            .await?
            .ok_or(Error::NotFound { kind: "resource" })?;
        let share = self.share_level_for(actor, &r.id, Some(&a.id)).await?;
        Ok((a, r, share))
    }

    pub(crate) fn owner_for<'a>(actor: &Actor, a_owner: Option<&'a str>, r_owner: Option<&'a str>) -> Option<&'a str> {
        if r_owner == Some(actor.id.as_str()) {
            r_owner
        } else {
            a_owner
        }
    }

    /// Resources the actor can see.
    pub async fn list_resources(&self, actor: &Actor, _ctx: &RequestContext) -> Result<Vec<Resource>> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let all = actor.is_system || actor.super_admin;
        let rows = sqlx::query_as::<Db, ResourceRow>(&format!(
            "SELECT {RES_COLS} FROM resources WHERE $1 OR owner_id = $2 \
             OR id IN (SELECT resource_id FROM accounts WHERE owner_id = $2) OR {} ORDER BY name",
            Vault::SHARED_RESOURCES_SQL
        ))
        .bind(all)
        .bind(&actor.id)
        .fetch_all(&self.store().pool)
        .await?;
        rows.into_iter().map(ResourceRow::into_model).collect()
    }

    /// One resource.
    pub async fn get_resource(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<Resource> {
        let (r, share) = self.resource_object(actor, id).await?;
        let owned_account: bool =
            sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM accounts WHERE resource_id = $1 AND owner_id = $2)")
                .bind(id)
                .bind(&actor.id)
                .fetch_one(&self.store().pool)
                .await?;
        let shared_account = share.is_none() && !self.shared_account_ids(actor, id).await?.is_empty();
        let owner = if owned_account || shared_account {
            Some(actor.id.as_str())
        } else {
            r.owner_id.as_deref()
        };
        self.require(
            actor,
            Action::ViewObject,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
            "resource.view",
            "resource",
            Some((id, &r.name)),
            ctx,
        )
        .await?;
        Ok(r)
    }

    async fn check_chain(&self, actor: &Actor, chain: &[String], ctx: &RequestContext) -> Result<()> {
        if chain.len() > 8 {
            return Err(Error::invalid("landing_chain", "at most 8 landing servers"));
        }
        for hop in chain {
            let (a, r, share) = self.account_object(actor, hop).await.map_err(|e| match e {
                Error::NotFound { .. } => Error::invalid("landing_chain", format!("account {hop} does not exist")),
                e => e,
            })?;
            let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
            self.require(
                actor,
                Action::Connect,
                Object::Owned {
                    owner_id: owner,
                    share,
                    access: Access::Free,
                },
                "resource.landing_chain",
                "account",
                Some((&a.id, &a.login)),
                ctx,
            )
            .await
            .map_err(|_| {
                Error::invalid(
                    "landing_chain",
                    format!("you may not use account {hop} as a landing server"),
                )
            })?;
        }
        Ok(())
    }

    /// Adds a resource owned by the actor.
    pub async fn create_resource(&self, actor: &Actor, new: NewResource, ctx: &RequestContext) -> Result<Resource> {
        self.require(
            actor,
            Action::CreateResource,
            Object::System,
            "resource.create",
            "resource",
            None,
            ctx,
        )
        .await?;
        validate_name(&new.name)?;
        validate_host(&new.host)?;
        let port = new.port.unwrap_or_else(|| new.resource_type.default_port());
        validate_port(port)?;
        if let Some(d) = &new.description {
            clean_text("description", d, 4000)?;
        }
        for (k, v) in &new.extra {
            clean_text("extra", k, 64)?;
            clean_text("extra", v, 1000)?;
        }
        self.check_chain(actor, &new.landing_chain, ctx).await?;
        let id = store::new_id();
        let now = store::now();
        let owner = (!actor.is_system).then_some(actor.id.as_str());
        let mut w = self.store().write().await?;
        let res = sqlx::query(
            "INSERT INTO resources (id, name, resource_type, host, port, description, landing_chain, extra, owner_id, created_at, \
             updated_at, allow_port_forwarding, allow_agent_forwarding, allow_clipboard, allow_drive) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10,$11,$12,$13,$14)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(new.resource_type.as_str())
        .bind(&new.host)
        .bind(i64::from(port))
        .bind(new.description.as_deref().filter(|d| !d.is_empty()))
        .bind(json(&new.landing_chain))
        .bind(json(&new.extra))
        .bind(owner)
        .bind(&now)
        .bind(new.allow_port_forwarding)
        .bind(new.allow_agent_forwarding)
        .bind(new.allow_clipboard)
        .bind(new.allow_drive)
        .execute(&mut *w.tx)
        .await;
        unique(res, || format!("resource {:?} already exists", new.name))?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.create", "resource")
                .object(&id, &new.name)
                .detail(format!("{} {}:{}", new.resource_type.as_str(), new.host, port)),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.resource_by_id(&id)
            .await?
            .ok_or(Error::NotFound { kind: "resource" })
    }

    /// Changes a resource.
    pub async fn update_resource(
        &self,
        actor: &Actor,
        id: &str,
        p: ResourcePatch,
        ctx: &RequestContext,
    ) -> Result<Resource> {
        let (r, share) = self.resource_object(actor, id).await?;
        self.require(
            actor,
            Action::UpdateResource,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "resource.update",
            "resource",
            Some((id, &r.name)),
            ctx,
        )
        .await?;
        if let Some(n) = &p.name {
            validate_name(n)?;
        }
        if let Some(h) = &p.host {
            validate_host(h)?;
        }
        if let Some(port) = p.port {
            validate_port(port)?;
        }
        if let Some(d) = &p.description {
            clean_text("description", d, 4000)?;
        }
        if let Some(chain) = &p.landing_chain {
            if chain.iter().any(|hop| {
                // A resource cannot be its own landing server.
                hop.is_empty()
            }) {
                return Err(Error::invalid("landing_chain", "empty account id"));
            }
            self.check_chain(actor, chain, ctx).await?;
        }
        let mut w = self.store().write().await?;
        let res = sqlx::query(
            "UPDATE resources SET name = COALESCE($1, name), resource_type = COALESCE($2, resource_type), host = COALESCE($3, host), \
             port = COALESCE($4, port), description = CASE WHEN $5 IS NULL THEN description WHEN $5 = '' THEN NULL ELSE $5 END, \
             landing_chain = COALESCE($6, landing_chain), extra = COALESCE($7, extra), updated_at = $8, \
             allow_port_forwarding = COALESCE($10, allow_port_forwarding), \
             allow_agent_forwarding = COALESCE($11, allow_agent_forwarding), \
             allow_clipboard = COALESCE($12, allow_clipboard), allow_drive = COALESCE($13, allow_drive) WHERE id = $9",
        )
        .bind(&p.name)
        .bind(p.resource_type.map(|t| t.as_str()))
        .bind(&p.host)
        .bind(p.port.map(i64::from))
        .bind(&p.description)
        .bind(p.landing_chain.as_ref().map(json))
        .bind(p.extra.as_ref().map(json))
        .bind(store::now())
        .bind(id)
        .bind(p.allow_port_forwarding)
        .bind(p.allow_agent_forwarding)
        .bind(p.allow_clipboard)
        .bind(p.allow_drive)
        .execute(&mut *w.tx)
        .await;
        unique(res, || "another resource has that name".to_string())?;
        let mut changed = Vec::new();
        for (f, set) in [
            ("name", p.name.is_some()),
            ("type", p.resource_type.is_some()),
            ("host", p.host.is_some()),
            ("port", p.port.is_some()),
            ("description", p.description.is_some()),
            ("landing_chain", p.landing_chain.is_some()),
            ("extra", p.extra.is_some()),
            ("allow_port_forwarding", p.allow_port_forwarding.is_some()),
            ("allow_agent_forwarding", p.allow_agent_forwarding.is_some()),
            ("allow_clipboard", p.allow_clipboard.is_some()),
            ("allow_drive", p.allow_drive.is_some()),
        ] {
            if set {
                changed.push(f);
            }
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.update", "resource")
                .object(id, &r.name)
                .detail(format!("changed: {}", changed.join(", "))),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.resource_by_id(id)
            .await?
            .ok_or(Error::NotFound { kind: "resource" })
    }

    /// Deletes a resource and its accounts (and their secrets).
    pub async fn delete_resource(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<()> {
        let (r, share) = self.resource_object(actor, id).await?;
        self.require(
            actor,
            Action::DeleteResource,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "resource.delete",
            "resource",
            Some((id, &r.name)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        let used_as_hop: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM resources r, accounts a WHERE a.resource_id = $1 AND r.id <> $1 AND r.landing_chain LIKE '%\"' || a.id || '\"%'",
        )
        .bind(id)
        .fetch_one(&mut *w.tx)
        .await?;
        if used_as_hop > 0 {
            return Err(Error::conflict(format!(
                "{} is a landing server of {used_as_hop} other resources; change their chains first",
                r.name
            )));
        }
        sqlx::query("DELETE FROM sealed WHERE owner IN (SELECT 'account:' || id || ':password' FROM accounts WHERE resource_id = $1) \
                     OR owner IN (SELECT 'account:' || id || ':private_key' FROM accounts WHERE resource_id = $1)")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM accounts WHERE resource_id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM resources WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.delete", "resource").object(id, &r.name),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Accounts of a resource the actor can see.
    pub async fn list_accounts(&self, actor: &Actor, resource_id: &str, ctx: &RequestContext) -> Result<Vec<Account>> {
        let (r, share) = self.resource_object(actor, resource_id).await?;
        let sees_all =
            actor.is_system || actor.super_admin || r.owner_id.as_deref() == Some(actor.id.as_str()) || share.is_some();
        let shared = if sees_all {
            Vec::new()
        } else {
            self.shared_account_ids(actor, resource_id).await?
        };
        let rows: Vec<AccountRow> = sqlx::query_as::<Db, AccountRow>(&format!(
            "{ACC_SELECT} WHERE a.resource_id = $1 AND ($2 OR a.owner_id = $3) ORDER BY a.login"
        ))
        .bind(resource_id)
        .bind(sees_all)
        .bind(&actor.id)
        .fetch_all(&self.store().pool)
        .await?;
        let mut rows = rows;
        if !shared.is_empty() {
            let all =
                sqlx::query_as::<Db, AccountRow>(&format!("{ACC_SELECT} WHERE a.resource_id = $1 ORDER BY a.login"))
                    .bind(resource_id)
                    .fetch_all(&self.store().pool)
                    .await?;
            rows = all
                .into_iter()
                .filter(|a| a.owner_id.as_deref() == Some(actor.id.as_str()) || shared.contains(&a.id))
                .collect();
        }
        if rows.is_empty() && !sees_all {
            // Neither the resource nor any account on it is visible.
            self.require(
                actor,
                Action::ViewObject,
                Object::Owned {
                    owner_id: r.owner_id.as_deref(),
                    share,
                    access: Access::Free,
                },
                "account.list",
                "resource",
                Some((resource_id, &r.name)),
                ctx,
            )
            .await?;
        }
        Ok(rows.into_iter().map(AccountRow::into_model).collect())
    }

    /// One account.
    pub async fn get_account(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<Account> {
        let (a, r, share) = self.account_object(actor, id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            Action::ViewObject,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
            "account.view",
            "account",
            Some((id, &a.login)),
            ctx,
        )
        .await?;
        Ok(a)
    }

    /// Adds an account (with its secrets) to a resource.
    pub async fn create_account(
        &self,
        actor: &Actor,
        resource_id: &str,
        new: NewAccount,
        ctx: &RequestContext,
    ) -> Result<Account> {
        let (r, share) = self.resource_object(actor, resource_id).await?;
        self.require(
            actor,
            Action::CreateAccount,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share,
                access: Access::Free,
            },
            "account.create",
            "resource",
            Some((resource_id, &r.name)),
            ctx,
        )
        .await?;
        validate_login(&new.login)?;
        if let Some(n) = &new.notes {
            clean_text("notes", n, 4000)?;
        }
        let secrets = [
            (SecretKind::Password, &new.password),
            (SecretKind::PrivateKey, &new.private_key),
        ];
        for (k, s) in &secrets {
            if let Some(s) = s.as_ref().filter(|s| !s.is_empty()) {
                validate_secret(*k, s)?;
            }
        }
        let id = store::new_id();
        let now = store::now();
        let owner = (!actor.is_system).then_some(actor.id.as_str());
        let keys = self.keys();
        let mut w = self.store().write().await?;
        let res = sqlx::query(
            "INSERT INTO accounts (id, resource_id, login, notes, owner_id, password_changed_at, created_at, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$7)",
        )
        .bind(&id)
        .bind(resource_id)
        .bind(&new.login)
        .bind(new.notes.as_deref().filter(|n| !n.is_empty()))
        .bind(owner)
        .bind(new.password.as_ref().filter(|p| !p.is_empty()).map(|_| now.clone()))
        .bind(&now)
        .execute(&mut *w.tx)
        .await;
        unique(res, || format!("account {:?} already exists on {}", new.login, r.name))?;
        let mut stored = Vec::new();
        for (k, s) in secrets {
            if let Some(s) = s.as_ref().filter(|s| !s.is_empty()) {
                let o = secret_owner(&id, k);
                put_sealed(&mut w.tx, &o, &keys.seal(&o, s.expose().as_bytes())).await?;
                stored.push(k.as_str());
            }
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "account.create", "account")
                .object(&id, &new.login)
                .detail(format!(
                    "on resource {}; secrets: {}",
                    r.name,
                    if stored.is_empty() {
                        "none".into()
                    } else {
                        stored.join(", ")
                    }
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.account_by_id(&id)
            .await?
            .ok_or(Error::NotFound { kind: "account" })
    }

    /// Changes an account or its secrets.
    pub async fn update_account(
        &self,
        actor: &Actor,
        id: &str,
        p: AccountPatch,
        ctx: &RequestContext,
    ) -> Result<Account> {
        let (a, r, share) = self.account_object(actor, id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            Action::UpdateAccount,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
            "account.update",
            "account",
            Some((id, &a.login)),
            ctx,
        )
        .await?;
        if let Some(l) = &p.login {
            validate_login(l)?;
        }
        if let Some(n) = &p.notes {
            clean_text("notes", n, 4000)?;
        }
        let secrets = [
            (SecretKind::Password, &p.password),
            (SecretKind::PrivateKey, &p.private_key),
        ];
        for (k, s) in &secrets {
            if let Some(s) = s.as_ref().filter(|s| !s.is_empty()) {
                validate_secret(*k, s)?;
            }
        }
        let keys = self.keys();
        let now = store::now();
        let mut w = self.store().write().await?;
        let res = sqlx::query(
            "UPDATE accounts SET login = COALESCE($1, login), notes = CASE WHEN $2 IS NULL THEN notes WHEN $2 = '' THEN NULL ELSE $2 END, \
             password_changed_at = CASE WHEN $3 THEN $4 ELSE password_changed_at END, updated_at = $4 WHERE id = $5",
        )
        .bind(&p.login)
        .bind(&p.notes)
        .bind(p.password.is_some())
        .bind(&now)
        .bind(id)
        .execute(&mut *w.tx)
        .await;
        unique(res, || "another account on this resource has that login".to_string())?;
        let mut changed: Vec<&str> = Vec::new();
        if p.login.is_some() {
            changed.push("login");
        }
        if p.notes.is_some() {
            changed.push("notes");
        }
        for (k, s) in secrets {
            let Some(s) = s else { continue };
            let o = secret_owner(id, k);
            if s.is_empty() {
                sqlx::query("DELETE FROM sealed WHERE owner = $1")
                    .bind(&o)
                    .execute(&mut *w.tx)
                    .await?;
            } else {
                put_sealed(&mut w.tx, &o, &keys.seal(&o, s.expose().as_bytes())).await?;
            }
            changed.push(k.as_str());
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "account.update", "account")
                .object(id, &a.login)
                .detail(format!("changed: {}", changed.join(", "))),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.account_by_id(id).await?.ok_or(Error::NotFound { kind: "account" })
    }

    /// Deletes an account and its secrets.
    pub async fn delete_account(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<()> {
        let (a, r, share) = self.account_object(actor, id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            Action::DeleteAccount,
            Object::Owned {
                owner_id: owner,
                share,
                access: Access::Free,
            },
            "account.delete",
            "account",
            Some((id, &a.login)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        let hop_of: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE landing_chain LIKE '%\"' || $1 || '\"%'")
                .bind(id)
                .fetch_one(&mut *w.tx)
                .await?;
        if hop_of > 0 {
            return Err(Error::conflict(format!(
                "the account is a landing server of {hop_of} resources"
            )));
        }
        sqlx::query("DELETE FROM sealed WHERE owner IN ($1, $2)")
            .bind(secret_owner(id, SecretKind::Password))
            .bind(secret_owner(id, SecretKind::PrivateKey))
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "account.delete", "account")
                .object(id, &a.login)
                .detail(format!("on resource {}", r.name)),
            ctx,
        )
        .await?;
        w.commit().await
    }

    async fn lease(
        &self,
        actor: &Actor,
        id: &str,
        kind: SecretKind,
        action: Action,
        audit_action: &str,
        ctx: &RequestContext,
    ) -> Result<Lease> {
        let (a, r, share) = self.account_object(actor, id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        // Sessions are gated by require_reason in resolve_target (the target only, not landing servers).
        let info = self.access_for(actor, &a, false).await?;
        let access = info.access;
        // The checked-out request's reason goes into the audit of the lease.
        let with_reason;
        let ctx = match (&ctx.reason, info.reason) {
            (None, Some(r)) => {
                with_reason = RequestContext {
                    client_ip: ctx.client_ip,
                    reason: Some(r),
                };
                &with_reason
            }
            _ => ctx,
        };
        self.require(
            actor,
            action,
            Object::Owned {
                owner_id: owner,
                share,
                access,
            },
            audit_action,
            "account",
            Some((id, &a.login)),
            ctx,
        )
        .await?;
        let o = secret_owner(id, kind);
        let opened = match self.open_sealed(&o).await {
            Ok(v) => v,
            Err(e) => {
                self.audit_alone(
                    NewEvent::by(actor, audit_action, "account")
                        .object(id, &a.login)
                        .outcome(audit::Outcome::Failure)
                        .detail(e.to_string()),
                    ctx,
                )
                .await?;
                return Err(e);
            }
        };
        let Some(plain) = opened else {
            return Err(Error::NotFound { kind: "secret" });
        };
        self.audit_alone(
            NewEvent::by(actor, audit_action, "account")
                .object(id, &a.login)
                .detail(format!("{} of {}@{}", kind.as_str(), a.login, r.name)),
            ctx,
        )
        .await?;
        Ok(Lease::new(a.id, a.login, kind, plain.to_vec()))
    }

    /// Retrieves a password (or key) for display to a person. Audited with the reason.
    pub async fn retrieve_secret(
        &self,
        actor: &Actor,
        account_id: &str,
        kind: SecretKind,
        ctx: &RequestContext,
    ) -> Result<Lease> {
        if let Some(r) = &ctx.reason {
            clean_text("reason", r, 1000)?;
        }
        if self.require_reason() && ctx.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(Error::invalid("reason", "is required: say why you need the secret"));
        }
        self.lease(actor, account_id, kind, Action::RetrieveSecret, "account.retrieve", ctx)
            .await
    }

    /// Leases a credential for a gateway session (auto-logon). The person never sees it.
    pub async fn lease_for_session(
        &self,
        actor: &Actor,
        account_id: &str,
        kind: SecretKind,
        ctx: &RequestContext,
    ) -> Result<Lease> {
        self.lease(actor, account_id, kind, Action::Connect, "session.lease", ctx)
            .await
    }
}

fn unique(
    res: std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
    msg: impl FnOnce() -> String,
) -> Result<()> {
    match res {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(msg())),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::testutil::vault;
    use crate::users::NewUser;

    fn res(name: &str) -> NewResource {
        NewResource {
            name: name.into(),
            resource_type: ResourceType::Linux,
            host: "127.0.0.1".into(),
            port: None,
            description: None,
            landing_chain: vec![],
            extra: Default::default(),
            allow_port_forwarding: false,
            allow_agent_forwarding: false,
            allow_clipboard: false,
            allow_drive: false,
        }
    }

    fn acc(login: &str, pw: &str) -> NewAccount {
        NewAccount {
            login: login.into(),
            password: Some(pw.into()),
            private_key: None,
            notes: None,
        }
    }

    #[tokio::test]
    async fn canary_never_stored_in_clear_and_tamper_detected() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let r = v.create_resource(&sys, res("web1"), &ctx).await.unwrap();
        assert_eq!(r.port, 22);
        let canary = "CANARY-7f3a9c1e5b";
        let a = v.create_account(&sys, &r.id, acc("root", canary), &ctx).await.unwrap();
        let b = v
            .create_account(&sys, &r.id, acc("other", "second-secret"), &ctx)
            .await
            .unwrap();
        assert!(a.has_password && !a.has_private_key);
        let lease = v
            .retrieve_secret(&sys, &a.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_eq!(lease.expose_str(), Some(canary));
        v.close().await;
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "canary in a file"
            );
        }
        let v = vault(dir.path()).await;
        // Swap the two ciphertexts: both fail to decrypt.
        let oa = secret_owner(&a.id, SecretKind::Password);
        let ob = secret_owner(&b.id, SecretKind::Password);
        sqlx::query("UPDATE sealed SET owner = 'tmp' WHERE owner = $1")
            .bind(&oa)
            .execute(&v.store().pool)
            .await
            .unwrap();
        sqlx::query("UPDATE sealed SET owner = $1 WHERE owner = $2")
            .bind(&oa)
            .bind(&ob)
            .execute(&v.store().pool)
            .await
            .unwrap();
        sqlx::query("UPDATE sealed SET owner = $1 WHERE owner = 'tmp'")
            .bind(&ob)
            .execute(&v.store().pool)
            .await
            .unwrap();
        let e = v
            .retrieve_secret(&sys, &a.id, SecretKind::Password, &ctx)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
        assert!(!e.to_string().contains(canary));
        // The failure is audited, and the chain still verifies.
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }

    #[tokio::test]
    async fn ownership_and_visibility() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let mk = |name: &str, role| NewUser {
            username: name.into(),
            role,
            email: None,
            password: Some("a long enough passphrase".into()),
            super_admin: false,
            must_change_password: Some(false),
        };
        v.create_user(&sys, mk("pa1", Role::PasswordAdministrator), &ctx)
            .await
            .unwrap();
        v.create_user(&sys, mk("pa2", Role::PasswordAdministrator), &ctx)
            .await
            .unwrap();
        v.create_user(&sys, mk("pu", Role::PasswordUser), &ctx).await.unwrap();
        let login = |u: &str| crate::users::LoginRequest {
            username: u.into(),
            password: "a long enough passphrase".into(),
            totp: None,
        };
        let pa1 = v.authenticate_password(&login("pa1"), &ctx).await.unwrap();
        let pa2 = v.authenticate_password(&login("pa2"), &ctx).await.unwrap();
        let pu = v.authenticate_password(&login("pu"), &ctx).await.unwrap();
        let r = v.create_resource(&pa1, res("db1"), &ctx).await.unwrap();
        let a = v
            .create_account(&pa1, &r.id, acc("postgres", "pg-secret-1"), &ctx)
            .await
            .unwrap();
        assert_eq!(v.list_resources(&pa1, &ctx).await.unwrap().len(), 1);
        assert!(v.list_resources(&pa2, &ctx).await.unwrap().is_empty());
        assert!(matches!(
            v.get_resource(&pa2, &r.id, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            v.retrieve_secret(&pa2, &a.id, SecretKind::Password, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            v.lease_for_session(&pu, &a.id, SecretKind::Password, &ctx).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            v.create_resource(&pu, res("x"), &ctx).await,
            Err(Error::Forbidden { .. })
        ));
        // Duplicate names conflict; bad input names its field.
        assert!(matches!(
            v.create_resource(&pa1, res("db1"), &ctx).await,
            Err(Error::Conflict { .. })
        ));
        let mut bad = res("bad");
        bad.host = "exa mple".into();
        assert!(matches!(
            v.create_resource(&pa1, bad, &ctx).await,
            Err(Error::Invalid { field: "host", .. })
        ));
        // A landing chain must name accounts the actor may connect with.
        let mut hop = res("behind");
        hop.landing_chain = vec![a.id.clone()];
        assert!(v.create_resource(&pa2, hop.clone(), &ctx).await.is_err());
        let behind = v.create_resource(&pa1, hop, &ctx).await.unwrap();
        assert_eq!(behind.landing_chain, vec![a.id.clone()]);
        assert!(matches!(
            v.delete_account(&pa1, &a.id, &ctx).await,
            Err(Error::Conflict { .. })
        ));
        // Denials are audited.
        let ev = v
            .audit_events(
                &sys,
                &crate::AuditFilter {
                    outcome: Some("denied".into()),
                    ..Default::default()
                },
                &ctx,
            )
            .await
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| e.actor_name == "pa2" && e.action == "account.retrieve"));
        v.update_account(
            &pa1,
            &a.id,
            AccountPatch {
                password: Some("pg-secret-2".into()),
                ..Default::default()
            },
            &ctx,
        )
        .await
        .unwrap();
        let l = v
            .lease_for_session(&pa1, &a.id, SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_eq!(l.expose_str(), Some("pg-secret-2"));
        v.update_resource(
            &pa1,
            &behind.id,
            ResourcePatch {
                landing_chain: Some(vec![]),
                ..Default::default()
            },
            &ctx,
        )
        .await
        .unwrap();
        v.delete_resource(&pa1, &r.id, &ctx).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sealed WHERE owner LIKE 'account:%'")
            .fetch_one(&v.store().pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "secrets of deleted accounts are gone");
    }
}
