//! What the gateway needs from the vault: public-key login, target resolution
//! by name, the account picker, pinned target host keys and session audit.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{self, NewEvent, Outcome};
use crate::authz::{authorize, Access, Action, Object};
use crate::error::{Error, Result};
use crate::model::{Account, Actor, RequestContext, Resource};
use crate::store::{self, Db};
use crate::users::UserRow;
use crate::Vault;

/// A user's registered SSH public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserKey {
    /// Id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// `ssh-ed25519 AAAA…` (the comment is kept separately).
    pub public_key: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Comment.
    pub comment: Option<String>,
    /// When it was added.
    pub created_at: String,
}

/// A key to register.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUserKey {
    /// One line of an `authorized_keys`/`.pub` file: `TYPE BASE64 [COMMENT]`.
    pub public_key: String,
}

/// Where a gateway session goes: the account, its resource, and the landing chain.
#[derive(Debug, Clone)]
pub struct SessionTarget {
    /// The target resource.
    pub resource: Resource,
    /// The account to log in as.
    pub account: Account,
    /// Landing servers, in order from the gateway: each hop's resource and account.
    pub hops: Vec<(Resource, Account)>,
    /// End of the user's access window (RFC 3339) when the account is under access
    /// control: the gateway warns 5 minutes before and ends the session then.
    pub window_end: Option<String>,
}

/// The `algorithm` of an RDP target's pinned TLS certificate in the host-key table: `public_key` holds the
/// certificate (DER, hex) and `fingerprint` its `SHA256:<hex>` (of the whole DER certificate).
pub const RDP_CERTIFICATE_PIN: &str = "rdp-tls-certificate";

/// A pinned target host key (SSH), or an RDP target's pinned TLS certificate ([`RDP_CERTIFICATE_PIN`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedHostKey {
    /// Key algorithm (`ssh-ed25519`, `rsa-sha2-512`…).
    pub algorithm: String,
    /// OpenSSH public key text.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Parses `TYPE BASE64 [COMMENT]` and returns (normalized key, fingerprint, comment).
pub fn parse_public_key(line: &str) -> Result<(String, String, Option<String>)> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(Error::invalid("public_key", "expected `TYPE BASE64 [COMMENT]`"));
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(Error::invalid(
            "public_key",
            format!("unsupported key type {:?}", kind.chars().take(40).collect::<String>()),
        ));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| Error::invalid("public_key", "the key is not valid base64"))?;
    // The blob starts with the key type as an SSH string.
    let ok = blob.len() > 4 + kind.len() && {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        n == kind.len() && &blob[4..4 + n] == kind.as_bytes()
    };
    if !ok {
        return Err(Error::invalid("public_key", "the key data does not match its type"));
    }
    let comment: Vec<&str> = parts.collect();
    let comment = (!comment.is_empty())
        .then(|| comment.join(" "))
        .filter(|c| c.len() <= 256);
    Ok((format!("{kind} {b64}"), fingerprint(&blob), comment))
}

/// `SHA256:<unpadded base64>` of a public key blob, as OpenSSH prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

impl Vault {
    /// Registers a public key for a user (the user themself, or a user manager).
    pub async fn add_user_key(
        &self,
        actor: &Actor,
        user_id: &str,
        key: &NewUserKey,
        ctx: &RequestContext,
    ) -> Result<UserKey> {
        let user = self.key_owner(actor, user_id, "user.key_add", ctx).await?;
        let (public_key, fp, comment) = parse_public_key(&key.public_key)?;
        let id = store::new_id();
        let mut w = self.store().write().await?;
        let res = sqlx::query("INSERT INTO user_keys (id, user_id, public_key, fingerprint, comment, created_at) VALUES ($1,$2,$3,$4,$5,$6)")
            .bind(&id)
            .bind(user_id)
            .bind(&public_key)
            .bind(&fp)
            .bind(&comment)
            .bind(store::now())
            .execute(&mut *w.tx)
            .await;
        match res {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::conflict("that key is already registered"))
            }
            r => r?,
        };
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.key_add", "user")
                .object(user_id, &user.username)
                .detail(fp.clone()),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.user_keys(actor, user_id, ctx)
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(Error::NotFound { kind: "key" })
    }

    /// The user whose keys are changed: oneself, or a user the actor may update
    /// (a refusal is audited as `audit_action`).
    async fn key_owner(
        &self,
        actor: &Actor,
        user_id: &str,
        audit_action: &str,
        ctx: &RequestContext,
    ) -> Result<crate::model::User> {
        if actor.id == user_id {
            self.get_user(actor, user_id, ctx).await
        } else {
            self.authorized_user(actor, user_id, Action::UpdateUser, audit_action, ctx)
                .await?
                .to_user()
        }
    }

    /// A user's keys.
    pub async fn user_keys(&self, actor: &Actor, user_id: &str, ctx: &RequestContext) -> Result<Vec<UserKey>> {
        self.get_user(actor, user_id, ctx).await?;
        let rows: Vec<(String, String, String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT id, user_id, public_key, fingerprint, comment, created_at FROM user_keys WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(&self.store().pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, user_id, public_key, fingerprint, comment, created_at)| UserKey {
                id,
                user_id,
                public_key,
                fingerprint,
                comment,
                created_at,
            })
            .collect())
    }

    /// Removes a key.
    pub async fn delete_user_key(
        &self,
        actor: &Actor,
        user_id: &str,
        key_id: &str,
        ctx: &RequestContext,
    ) -> Result<()> {
        let user = self.key_owner(actor, user_id, "user.key_delete", ctx).await?;
        let mut w = self.store().write().await?;
        let n = sqlx::query("DELETE FROM user_keys WHERE id = $1 AND user_id = $2")
            .bind(key_id)
            .bind(user_id)
            .execute(&mut *w.tx)
            .await?;
        if n.rows_affected() == 0 {
            return Err(Error::NotFound { kind: "key" });
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.key_delete", "user")
                .object(user_id, &user.username)
                .detail(key_id.to_owned()),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Public-key login for the gateway: the key must be registered to the user
    /// (the SSH layer has already verified the signature).
    pub async fn authenticate_publickey(&self, username: &str, key_blob: &[u8], ctx: &RequestContext) -> Result<Actor> {
        let fp = fingerprint(key_blob);
        let row = self.user_by_name(username).await?;
        let known: bool = match &row {
            Some(r) => {
                sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM user_keys WHERE user_id = $1 AND fingerprint = $2)")
                    .bind(&r.id)
                    .bind(&fp)
                    .fetch_one(&self.store().pool)
                    .await?
            }
            None => false,
        };
        let now = store::now();
        let failure = match &row {
            None => Some("unknown user"),
            Some(_) if !known => Some("public key not registered"),
            Some(r) if !r.enabled => Some("user disabled"),
            Some(r) if r.locked_until.as_deref().is_some_and(|t| t > now.as_str()) => Some("user locked out"),
            _ => None,
        };
        let name: String = username.chars().take(64).collect();
        self.gateway_login(row, &name, failure, format!("publickey {fp}"), ctx)
            .await
    }

    /// Login with a one-time RDP ticket the gateway has just redeemed (issued by the web to `user_id`, so the
    /// password and any second factor were checked then): the user must still exist, be enabled and not locked.
    /// Audited as `auth.login` with `detail` (never the ticket's secret).
    pub async fn authenticate_ticket_holder(
        &self,
        user_id: &str,
        detail: String,
        ctx: &RequestContext,
    ) -> Result<Actor> {
        let row = self.user_row(user_id).await?;
        let now = store::now();
        let failure = match &row {
            None => Some("the user no longer exists"),
            Some(r) if !r.enabled => Some("user disabled"),
            Some(r) if r.locked_until.as_deref().is_some_and(|t| t > now.as_str()) => Some("user locked out"),
            _ => None,
        };
        let name = row.as_ref().map_or_else(|| "?".to_owned(), |r| r.username.clone());
        self.gateway_login(row, &name, failure, detail, ctx).await
    }

    /// The end of a gateway login: audited as `auth.login` under `name`, failed with `why` (the login is then
    /// refused) or succeeded with `detail` (the user's actor).
    async fn gateway_login(
        &self,
        row: Option<UserRow>,
        name: &str,
        failure: Option<&str>,
        detail: String,
        ctx: &RequestContext,
    ) -> Result<Actor> {
        if let Some(why) = failure {
            self.audit_alone(
                NewEvent {
                    actor_id: row.as_ref().map(|r| r.id.as_str()),
                    actor_name: name,
                    action: "auth.login",
                    object_type: "user",
                    object_id: row.as_ref().map(|r| r.id.as_str()),
                    object_name: None,
                    outcome: Outcome::Failure,
                    detail: Some(format!("{detail}: {why}")),
                },
                ctx,
            )
            .await?;
            return Err(Error::AuthenticationFailed);
        }
        let row = row.ok_or(Error::AuthenticationFailed)?;
        let actor = row.to_actor()?;
        self.audit_alone(
            NewEvent::by(&actor, "auth.login", "user")
                .object(&row.id, &row.username)
                .detail(detail),
            ctx,
        )
        .await?;
        Ok(actor)
    }

    /// Whether `key_blob` is registered to `username` (no audit, no state change:
    /// used before the client proves possession of the key).
    pub async fn has_user_key(&self, username: &str, key_blob: &[u8]) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM user_keys k JOIN users u ON u.id = k.user_id WHERE u.username = $1 AND k.fingerprint = $2)",
        )
        .bind(username)
        .bind(fingerprint(key_blob))
        .fetch_one(&self.store().pool)
        .await?)
    }

    /// Whether a user has TOTP enrolled (the gateway then asks for a code).
    pub async fn totp_enrolled(&self, username: &str) -> Result<bool> {
        Ok(self.user_by_name(username).await?.is_some_and(|r| r.totp_enabled))
    }

    async fn resource_by_name(&self, name: &str) -> Result<Option<Resource>> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM resources WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.store().pool)
            .await?;
        match id {
            Some(id) => self.resource_by_id(&id).await,
            None => Ok(None),
        }
    }

    /// Resolves `ACCOUNT@RESOURCE` for a session and authorizes `Connect` on it
    /// and on every landing server. Unknown and forbidden targets give the
    /// same error ([`Error::NotFound`] of kind `target`); refusals are audited.
    pub async fn resolve_target(
        &self,
        actor: &Actor,
        account_login: &str,
        resource_name: &str,
        ctx: &RequestContext,
    ) -> Result<SessionTarget> {
        let not_found = Error::NotFound { kind: "target" };
        let label = format!("{account_login}@{resource_name}");
        let resource = self.resource_by_name(resource_name).await?;
        let account = match &resource {
            Some(r) => self.account_by_login(&r.id, account_login).await?,
            None => None,
        };
        let (Some(resource), Some(account)) = (resource, account) else {
            self.audit_alone(
                NewEvent::by(actor, "session.authorize", "account")
                    .outcome(Outcome::Denied)
                    .detail(format!("{label}: no such target")),
                ctx,
            )
            .await?;
            return Err(not_found);
        };
        if !self.may_connect(actor, &account, &resource, true).await? {
            self.audit_alone(
                NewEvent::by(actor, "session.authorize", "account")
                    .object(&account.id, &label)
                    .outcome(Outcome::Denied)
                    .detail("not allowed to connect"),
                ctx,
            )
            .await?;
            return Err(not_found);
        }
        let mut hops = Vec::new();
        for hop_id in &resource.landing_chain {
            let a = self.account_by_id(hop_id).await?.ok_or_else(|| Error::Corrupt {
                table: "resources",
                id: resource.id.clone(),
                detail: format!("landing chain names missing account {hop_id}"),
            })?;
            let r = self
                .resource_by_id(&a.resource_id)
                .await?
                .ok_or(Error::NotFound { kind: "resource" })?;
            if !self.may_connect(actor, &a, &r, false).await? {
                self.audit_alone(
                    NewEvent::by(actor, "session.authorize", "account")
                        .object(&account.id, &label)
                        .outcome(Outcome::Denied)
                        .detail(format!("not allowed to use landing server {}@{}", a.login, r.name)),
                    ctx,
                )
                .await?;
                return Err(not_found);
            }
            hops.push((r, a));
        }
        self.audit_alone(
            NewEvent::by(actor, "session.authorize", "account")
                .object(&account.id, &label)
                .detail(format!("{} landing servers", hops.len())),
            ctx,
        )
        .await?;
        let window_end = self
            .access_for(actor, &account, true)
            .await?
            .window_end
            .map(store::format_ts);
        Ok(SessionTarget {
            resource,
            account,
            hops,
            window_end,
        })
    }

    /// `target`: the session's own account (with `[vault] require_reason` it needs a stated
    /// reason, i.e. an open window); landing servers only need their own access control.
    async fn may_connect(&self, actor: &Actor, account: &Account, resource: &Resource, target: bool) -> Result<bool> {
        let share = self.share_level_for(actor, &resource.id, Some(&account.id)).await?;
        let access = self.access_for(actor, account, target).await?.access;
        let owner = if resource.owner_id.as_deref() == Some(actor.id.as_str()) {
            resource.owner_id.as_deref()
        } else {
            account.owner_id.as_deref()
        };
        Ok(authorize(
            actor,
            Action::Connect,
            Object::Owned {
                owner_id: owner,
                share,
                access,
            },
        )
        .is_allowed())
    }

    /// Every account the actor may open a session with, for the picker.
    pub async fn connectable_accounts(&self, actor: &Actor, ctx: &RequestContext) -> Result<Vec<(Resource, Account)>> {
        let mut out = Vec::new();
        for r in self.list_resources(actor, ctx).await? {
            for a in self.list_accounts(actor, &r.id, ctx).await? {
                if self.may_connect(actor, &a, &r, true).await? {
                    out.push((r.clone(), a));
                }
            }
        }
        Ok(out)
    }

    /// The SSH host key pinned for a resource, if any (an RDP certificate pin is not one).
    pub async fn pinned_host_key(&self, resource_id: &str) -> Result<Option<PinnedHostKey>> {
        self.pinned_row(resource_id, "algorithm <> $2 ORDER BY first_seen LIMIT 1")
            .await
    }

    /// The TLS certificate pinned for an RDP resource, if any: the row of the host-key table whose algorithm is
    /// [`RDP_CERTIFICATE_PIN`] (pinned with [`Vault::pin_host_key`], cleared with [`Vault::forget_host_key`]).
    pub async fn pinned_rdp_certificate(&self, resource_id: &str) -> Result<Option<PinnedHostKey>> {
        self.pinned_row(resource_id, "algorithm = $2").await
    }

    /// The resource's pinned row whose algorithm satisfies `which` (SQL where `$2` is [`RDP_CERTIFICATE_PIN`]).
    async fn pinned_row(&self, resource_id: &str, which: &'static str) -> Result<Option<PinnedHostKey>> {
        let sql = format!(
            "SELECT algorithm, public_key, fingerprint FROM target_host_keys WHERE resource_id = $1 AND {which}"
        );
        let row: Option<(String, String, String)> = sqlx::query_as(&sql)
            .bind(resource_id)
            .bind(RDP_CERTIFICATE_PIN)
            .fetch_optional(&self.store().pool)
            .await?;
        Ok(row.map(|(algorithm, public_key, fingerprint)| PinnedHostKey {
            algorithm,
            public_key,
            fingerprint,
        }))
    }

    /// Pins a target's host key on first use (audited).
    pub async fn pin_host_key(
        &self,
        actor: &Actor,
        resource: &Resource,
        key: &PinnedHostKey,
        ctx: &RequestContext,
    ) -> Result<()> {
        let mut w = self.store().write().await?;
        sqlx::query(
            "INSERT INTO target_host_keys (resource_id, algorithm, public_key, fingerprint, first_seen) VALUES ($1,$2,$3,$4,$5) \
             ON CONFLICT (resource_id, algorithm) DO NOTHING",
        )
        .bind(&resource.id)
        .bind(&key.algorithm)
        .bind(&key.public_key)
        .bind(&key.fingerprint)
        .bind(store::now())
        .execute(&mut *w.tx)
        .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.host_key_pinned", "resource")
                .object(&resource.id, &resource.name)
                .detail(format!("{} {}", key.algorithm, key.fingerprint)),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Forgets a resource's pinned host key (after a legitimate re-install).
    pub async fn forget_host_key(&self, actor: &Actor, resource_id: &str, ctx: &RequestContext) -> Result<()> {
        let r = self.get_resource(actor, resource_id, ctx).await?;
        self.require(
            actor,
            Action::UpdateResource,
            Object::Owned {
                owner_id: r.owner_id.as_deref(),
                share: None,
                access: Access::Free,
            },
            "resource.host_key_forget",
            "resource",
            Some((resource_id, &r.name)),
            ctx,
        )
        .await?;
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM target_host_keys WHERE resource_id = $1")
            .bind(resource_id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "resource.host_key_forget", "resource").object(resource_id, &r.name),
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Checks that the actor may list/watch live sessions (`terminate = false`)
    /// or terminate them (`terminate = true`); refusals are audited.
    pub async fn require_session_oversight(&self, actor: &Actor, terminate: bool, ctx: &RequestContext) -> Result<()> {
        let (action, name) = if terminate {
            (Action::TerminateSession, "session.terminate")
        } else {
            (Action::ViewSessions, "session.list")
        };
        self.require(actor, action, Object::System, name, "session", None, ctx)
            .await
    }

    /// Appends a gateway event (session start/end, forwards, host key mismatch...).
    #[allow(clippy::too_many_arguments)]
    pub async fn audit_gateway(
        &self,
        actor: &Actor,
        action: &str,
        object: Option<(&str, &str)>,
        failed: bool,
        detail: String,
        ctx: &RequestContext,
    ) -> Result<()> {
        let mut ev = NewEvent::by(actor, action, "session").detail(detail);
        if let Some((id, name)) = object {
            ev = ev.object(id, name);
        }
        if failed {
            ev = ev.outcome(Outcome::Failure);
        }
        self.audit_alone(ev, ctx).await
    }
}

#[derive(sqlx::FromRow)]
struct IdRow {
    id: String,
}

impl Vault {
    async fn account_by_login(&self, resource_id: &str, login: &str) -> Result<Option<Account>> {
        let id: Option<IdRow> =
            sqlx::query_as::<Db, IdRow>("SELECT id FROM accounts WHERE resource_id = $1 AND login = $2")
                .bind(resource_id)
                .bind(login)
                .fetch_optional(&self.store().pool)
                .await?;
        match id {
            Some(r) => self.account_by_id(&r.id).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fingerprints_like_ssh_keygen() {
        // ssh-keygen -l -f on this key prints SHA256:fMpQ3SEs... (computed from the blob below).
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";
        let (k, fp, c) = parse_public_key(line).unwrap();
        assert_eq!(
            k,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        );
        assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
        assert_eq!(c.as_deref(), Some("user@host"));
        assert!(parse_public_key("ssh-ed25519").is_err());
        assert!(parse_public_key("ssh-dss AAAA").is_err());
        assert!(
            parse_public_key("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl").is_err()
        );
        assert!(parse_public_key("ssh-ed25519 !!!").is_err());
    }

    #[tokio::test]
    async fn an_rdp_certificate_pin_is_kept_apart_from_ssh_host_keys_and_forgotten_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let v = crate::testutil::vault(dir.path()).await;
        let (sys, ctx) = (Actor::system(), RequestContext::default());
        let r = v
            .create_resource(&sys, crate::testutil::linux("both"), &ctx)
            .await
            .unwrap();
        let cert = PinnedHostKey {
            algorithm: RDP_CERTIFICATE_PIN.into(),
            public_key: "3082".into(),
            fingerprint: format!("SHA256:{}", "ab".repeat(32)),
        };
        v.pin_host_key(&sys, &r, &cert, &ctx).await.unwrap();
        assert_eq!(
            v.pinned_host_key(&r.id).await.unwrap(),
            None,
            "a certificate is no SSH host key"
        );
        assert_eq!(v.pinned_rdp_certificate(&r.id).await.unwrap(), Some(cert.clone()));
        let key = PinnedHostKey {
            algorithm: "ssh-ed25519".into(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".into(),
            fingerprint: "SHA256:x".into(),
        };
        v.pin_host_key(&sys, &r, &key, &ctx).await.unwrap();
        assert_eq!(v.pinned_host_key(&r.id).await.unwrap(), Some(key));
        assert_eq!(v.pinned_rdp_certificate(&r.id).await.unwrap(), Some(cert));
        v.forget_host_key(&sys, &r.id, &ctx).await.unwrap();
        assert_eq!(v.pinned_rdp_certificate(&r.id).await.unwrap(), None);
        assert_eq!(v.pinned_host_key(&r.id).await.unwrap(), None);
    }
}
