//! Users, authentication (password, TOTP, lockout), API tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sqlx::FromRow;
use time::OffsetDateTime;

use crate::audit::{self, NewEvent, Outcome};
use crate::authz::{authorize, Action, Decision, Object, OpSet};
use crate::crypto::Sealed;
use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext, Role, User};
use crate::secret::SecretString;
use crate::store::{self, Db};
use crate::{auth, Vault};

/// Credentials presented at login.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: SecretString,
    /// Current TOTP code, when enrolled.
    #[serde(default)]
    pub totp: Option<String>,
}

/// A bearer token, shown once.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token (`pst_…`).
    pub token: SecretString,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Who it authenticates.
    pub actor: Actor,
}

/// A TOTP enrolment in progress.
#[derive(Debug)]
pub struct TotpEnrollment {
    /// `otpauth://totp/...` URI for a QR code.
    pub otpauth_uri: SecretString,
    /// The secret in base32, for manual entry.
    pub secret_base32: SecretString,
}

/// A new user.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name: letters, digits, `.`, `_`, `-`, `@` (no `#`, which separates the target in gateway logins).
    pub username: String,
    /// Role id.
    pub role: Role,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Initial password (omit for users who will only use keys or a directory).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub password: Option<SecretString>,
    /// Super admin (administrator roles only; set by another administrator).
    #[serde(default)]
    pub super_admin: bool,
    /// Must change the password at first login (default true when a password is given).
    #[serde(default)]
    pub must_change_password: Option<bool>,
}

/// Changes to a user; absent fields are unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// New e-mail (empty string clears it).
    #[serde(default)]
    pub email: Option<String>,
    /// New password (the user must change it at next login unless it is their own).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub password: Option<SecretString>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Grant or revoke super admin.
    #[serde(default)]
    pub super_admin: Option<bool>,
    /// Clear a lockout.
    #[serde(default)]
    pub unlock: Option<bool>,
    /// Remove the TOTP enrolment (the user enrols again).
    #[serde(default)]
    pub reset_totp: Option<bool>,
}

#[derive(Debug, FromRow)]
pub(crate) struct UserRow {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub super_admin: bool,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
    pub enabled: bool,
    pub locked_until: Option<String>,
    pub created_at: String,
    pub custom_role_id: Option<String>,
    /// The custom role's approved operations (JSON), when it has any.
    pub custom_ops: Option<String>,
}

impl UserRow {
    fn role(&self) -> Result<Role> {
        Role::parse(&self.role).ok_or_else(|| Error::Corrupt {
            table: "users",
            id: self.id.clone(),
            detail: format!("unknown role {:?}", self.role),
        })
    }
    fn locked(&self, now: &str) -> bool {
        self.locked_until.as_deref().is_some_and(|t| t > now)
    }
    pub(crate) fn to_user(&self) -> Result<User> {
        Ok(User {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            role: self.role()?,
            super_admin: self.super_admin,
            enabled: self.enabled,
            locked_until: self.locked_until.clone().filter(|t| *t > store::now()),
            totp_enabled: self.totp_enabled,
            must_change_password: self.must_change_password,
            created_at: self.created_at.clone(),
            custom_role_id: self.custom_role_id.clone(),
        })
    }
    pub(crate) fn to_actor(&self) -> Result<Actor> {
        Ok(Actor {
            id: self.id.clone(),
            username: self.username.clone(),
            role: self.role()?,
            super_admin: self.super_admin,
            must_change_password: self.must_change_password,
            is_system: false,
            custom_ops: match (&self.custom_role_id, &self.custom_ops) {
                (None, _) => None,
                // A custom role without approved operations grants nothing.
                (Some(_), None) => Some(OpSet::EMPTY),
                (Some(_), Some(json)) => Some(OpSet::from_json(json).ok_or_else(|| Error::Corrupt {
                    table: "custom_roles",
                    id: self.custom_role_id.clone().unwrap_or_default(),
                    detail: "operations is not a list of operation ids".into(),
                })?),
            },
        })
    }
}

const USER_COLS: &str = "id, username, email, role, super_admin, password_hash, must_change_password, totp_enabled, \
                         totp_last_step, enabled, locked_until, created_at, custom_role_id, \
                         (SELECT operations FROM custom_roles c WHERE c.id = users.custom_role_id) AS custom_ops";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(crate) fn validate_username(u: &str) -> Result<()> {
    if u.is_empty() || u.len() > 64 {
        return Err(Error::invalid("username", "must be 1 to 64 characters"));
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(Error::invalid(
            "username",
            "may contain only letters, digits, '.', '_', '-' and '@'",
        ));
    }
    Ok(())
}

fn validate_email(e: &str) -> Result<()> {
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("email", "is not an e-mail address"))
    }
}

fn user_owner(id: &str, what: &str) -> String {
    format!("user:{id}:{what}")
}

impl Vault {
    pub(crate) async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as::<Db, UserRow>(&format!("SELECT {USER_COLS} FROM users WHERE username = $1"))
                .bind(username)
                .fetch_optional(&self.store().pool)
                .await?,
        )
    }

    pub(crate) async fn user_row(&self, id: &str) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as::<Db, UserRow>(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.store().pool)
                .await?,
        )
    }

    /// Appends one event in its own transaction (for refusals and failures).
    pub(crate) async fn audit_alone(&self, ev: NewEvent<'_>, ctx: &RequestContext) -> Result<()> {
        let mut w = self.store().write().await?;
        audit::append(&mut w.tx, ev, ctx).await?;
        w.commit().await
    }

    /// Authorizes; on refusal audits it and returns the error to give the caller.
    /// Refuses, audited, to make anyone a super administrator when the
    /// `deny_new_super_admins` setting is on.
    async fn refuse_new_super_admin(
        &self,
        actor: &Actor,
        audit_action: &str,
        object_ref: Option<(&str, &str)>,
        ctx: &RequestContext,
    ) -> Result<()> {
        if !self.policy().deny_new_super_admins {
            return Ok(());
        }
        let reason = "further super administrators are denied by the setting auth.deny_new_super_admins";
        let mut ev = NewEvent::by(actor, audit_action, "user")
            .outcome(Outcome::Denied)
            .detail(reason);
        if let Some((id, name)) = object_ref {
            ev = ev.object(id, name);
        }
        self.audit_alone(ev, ctx).await?;
        Err(Error::Forbidden { reason })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn require(
        &self,
        actor: &Actor,
        action: Action,
        object: Object<'_>,
        audit_action: &str,
        object_type: &str,
        object_ref: Option<(&str, &str)>,
        ctx: &RequestContext,
    ) -> Result<()> {
        match authorize(actor, action, object) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                let mut ev = NewEvent::by(actor, audit_action, object_type)
                    .outcome(Outcome::Denied)
                    .detail(reason);
                if let Some((id, name)) = object_ref {
                    ev = ev.object(id, name);
                }
                self.audit_alone(ev, ctx).await?;
                if actor.must_change_password {
                    Err(Error::PasswordChangeRequired)
                } else if reason == "not found" {
                    Err(Error::NotFound {
                        kind: static_kind(object_type),
                    })
                } else {
                    Err(Error::Forbidden { reason })
                }
            }
        }
    }

    /// Checks a user's password (and TOTP) with lockout and constant-time failures.
    /// Used by the web login and by the SSH gateway.
    pub async fn authenticate_password(&self, req: &LoginRequest, ctx: &RequestContext) -> Result<Actor> {
        let row = self.user_by_name(&req.username).await?;
        let hash = row.as_ref().and_then(|r| r.password_hash.clone());
        let pw = req.password.clone();
        let pw_ok = self.verify_password(hash, pw).await?;
        let now = store::now();
        let fail = |detail: &str| NewEvent {
            actor_id: row.as_ref().map(|r| r.id.as_str()),
            actor_name: truncate(&req.username, 64),
            action: "auth.login",
            object_type: "user",
            object_id: row.as_ref().map(|r| r.id.as_str()),
            object_name: row.as_ref().map(|r| r.username.as_str()),
            outcome: Outcome::Failure,
            detail: Some(detail.to_owned()),
        };
        let Some(user) = row.as_ref() else {
            self.audit_alone(fail("unknown user"), ctx).await?;
            return Err(Error::AuthenticationFailed);
        };
        if !user.enabled {
            self.audit_alone(fail("user disabled"), ctx).await?;
            return Err(Error::AuthenticationFailed);
        }
        if user.locked(&now) {
            self.audit_alone(fail("user locked out"), ctx).await?;
            return Err(Error::AuthenticationFailed);
        }
        if !pw_ok {
            self.record_failure(user, "wrong password", ctx).await?;
            return Err(Error::AuthenticationFailed);
        }
        let mut totp_step = None;
        if user.totp_enabled {
            let Some(code) = req.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
                return Err(Error::TotpRequired);
            };
            let secret = self.open_user_secret(&user.id, "totp").await?;
            let t = auth::totp(&secret, &user.username)?;
            match auth::totp_match(&t, code, unix_now()) {
                Some(step) if user.totp_last_step.is_none_or(|last| step as i64 > last) => {
                    totp_step = Some(step as i64)
                }
                Some(_) => {
                    self.record_failure(user, "TOTP code replayed", ctx).await?;
                    return Err(Error::AuthenticationFailed);
                }
                None => {
                    self.record_failure(user, "wrong TOTP code", ctx).await?;
                    return Err(Error::AuthenticationFailed);
                }
            }
        }
        let mut w = self.store().write().await?;
        sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, totp_last_step = COALESCE($1, totp_last_step) WHERE id = $2",
        )
        .bind(totp_step)
        .bind(&user.id)
        .execute(&mut *w.tx)
        .await?;
        let actor = user.to_actor()?;
        let detail = if user.totp_enabled {
            "password + TOTP"
        } else {
            "password"
        };
        audit::append(
            &mut w.tx,
            NewEvent::by(&actor, "auth.login", "user")
                .object(&user.id, &user.username)
                .detail(detail),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(actor)
    }

    /// Checks a TOTP code for a user who already proved a first factor (an SSH
    /// key). Same replay protection and lockout as the password path.
    pub async fn authenticate_totp(&self, actor: &Actor, code: &str, ctx: &RequestContext) -> Result<()> {
        let user = self.user_row(&actor.id).await?.ok_or(Error::AuthenticationFailed)?;
        if !user.totp_enabled {
            return Ok(());
        }
        let secret = self.open_user_secret(&user.id, "totp").await?;
        let t = auth::totp(&secret, &user.username)?;
        match auth::totp_match(&t, code, unix_now()) {
            Some(step) if user.totp_last_step.is_none_or(|last| step as i64 > last) => {
                sqlx::query("UPDATE users SET totp_last_step = $1, failed_logins = 0 WHERE id = $2")
                    .bind(step as i64)
                    .bind(&user.id)
                    .execute(&self.store().pool)
                    .await?;
                Ok(())
            }
            Some(_) => {
                self.record_failure(&user, "TOTP code replayed", ctx).await?;
                Err(Error::AuthenticationFailed)
            }
            None => {
                self.record_failure(&user, "wrong TOTP code", ctx).await?;
                Err(Error::AuthenticationFailed)
            }
        }
    }

    async fn record_failure(&self, user: &UserRow, why: &str, ctx: &RequestContext) -> Result<()> {
        let mut w = self.store().write().await?;
        let failed: i64 = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
        )
        .bind(&user.id)
        .fetch_one(&mut *w.tx)
        .await?;
        let threshold = i64::from(self.policy().lockout_threshold.max(1));
        let mut detail = format!("{why} ({failed} consecutive failures)");
        if failed >= threshold {
            let until = store::format_ts(OffsetDateTime::now_utc() + self.policy().lockout_duration);
            sqlx::query("UPDATE users SET locked_until = $1, failed_logins = 0 WHERE id = $2")
                .bind(&until)
                .bind(&user.id)
                .execute(&mut *w.tx)
                .await?;
            detail.push_str(&format!("; locked until {until}"));
        }
        audit::append(
            &mut w.tx,
            NewEvent {
                actor_id: Some(&user.id),
                actor_name: &user.username,
                action: "auth.login",
                object_type: "user",
                object_id: Some(&user.id),
                object_name: Some(&user.username),
                outcome: Outcome::Failure,
                detail: Some(detail),
            },
            ctx,
        )
        .await?;
        w.commit().await
    }

    /// Password (+ TOTP) login; returns a bearer token valid for the policy's token TTL.
    pub async fn login(&self, req: &LoginRequest, ctx: &RequestContext) -> Result<IssuedToken> {
        let actor = self.authenticate_password(req, ctx).await?;
        self.insert_token(actor, self.policy().token_ttl, "login").await
    }

    async fn insert_token(&self, actor: Actor, ttl: Duration, name: &str) -> Result<IssuedToken> {
        let (token, hash) = auth::new_token();
        let expires_at = store::format_ts(OffsetDateTime::now_utc() + ttl);
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, token_hash, name, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6)",
        )
        .bind(store::new_id())
        .bind(&actor.id)
        .bind(&hash)
        .bind(name)
        .bind(store::now())
        .bind(&expires_at)
        .execute(&self.store().pool)
        .await?;
        Ok(IssuedToken {
            token,
            expires_at,
            actor,
        })
    }

    /// Creates a named API token for `username` (CLI `postern token create`, or an admin).
    pub async fn create_token(
        &self,
        actor: &Actor,
        username: &str,
        ttl: Duration,
        name: &str,
        ctx: &RequestContext,
    ) -> Result<IssuedToken> {
        let row = self
            .user_by_name(username)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?;
        let role = row.role()?;
        self.require(
            actor,
            Action::CreateTokenFor,
            Object::User { id: &row.id, role },
            "token.create",
            "user",
            Some((&row.id, &row.username)),
            ctx,
        )
        .await?;
        if ttl.is_zero() || ttl > Duration::from_secs(366 * 86400) {
            return Err(Error::invalid("ttl", "must be between 1 second and 366 days"));
        }
        if !row.enabled {
            return Err(Error::conflict("the user is disabled"));
        }
        let mut target = row.to_actor()?;
        // A token is for API use; a pending password change still applies to it.
        target.must_change_password = row.must_change_password;
        let issued = self.insert_token(target, ttl, truncate(name, 64)).await?;
        self.audit_alone(
            NewEvent::by(actor, "token.create", "user")
                .object(&row.id, &row.username)
                .detail(format!("token {:?} expires {}", truncate(name, 64), issued.expires_at)),
            ctx,
        )
        .await?;
        Ok(issued)
    }

    /// Resolves a bearer token to its actor.
    pub async fn authenticate_token(&self, token: &str) -> Result<Actor> {
        if !token.starts_with("pst_") || token.len() > 128 {
            return Err(Error::InvalidToken);
        }
        let hash = auth::token_hash(token);
        let row = sqlx::query_as::<Db, UserRow>(&format!(
            "SELECT {USER_COLS} FROM users WHERE id = \
             (SELECT user_id FROM api_tokens WHERE token_hash = $1 AND expires_at > $2)"
        ))
        .bind(&hash)
        .bind(store::now())
        .fetch_optional(&self.store().pool)
        .await?
        .ok_or(Error::InvalidToken)?;
        if !row.enabled {
            return Err(Error::InvalidToken);
        }
        row.to_actor()
    }

    /// Revokes a token (logout).
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        let actor = self.authenticate_token(token).await.ok();
        let mut w = self.store().write().await?;
        sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(auth::token_hash(token))
            .execute(&mut *w.tx)
            .await?;
        if let Some(a) = &actor {
            audit::append(
                &mut w.tx,
                NewEvent::by(a, "auth.logout", "user").object(&a.id, &a.username),
                &RequestContext::default(),
            )
            .await?;
        }
        w.commit().await
    }

    /// Changes the actor's own password (needs the current one).
    pub async fn change_own_password(
        &self,
        actor: &Actor,
        current: &SecretString,
        new: &SecretString,
        ctx: &RequestContext,
    ) -> Result<()> {
        let row = self
            .user_row(&actor.id)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?;
        let hash = row.password_hash.clone();
        let cur = current.clone();
        let ok = self.verify_password(hash, cur).await?;
        if !ok {
            self.record_failure(&row, "wrong current password on password change", ctx)
                .await?;
            return Err(Error::AuthenticationFailed);
        }
        auth::check_new_password(self.policy(), &row.username, new)?;
        if current.expose() == new.expose() {
            return Err(Error::invalid("password", "must differ from the current password"));
        }
        let new_hash = auth::hash_password(new.expose())?;
        let mut w = self.store().write().await?;
        sqlx::query("UPDATE users SET password_hash = $1, must_change_password = 0, updated_at = $2 WHERE id = $3")
            .bind(&new_hash)
            .bind(store::now())
            .bind(&row.id)
            .execute(&mut *w.tx)
            .await?;
        // Other sessions of this user end: their tokens are revoked.
        sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND name = 'login'")
            .bind(&row.id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.change_password", "user").object(&row.id, &row.username),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.forget_initial_password(&row.id).await;
        Ok(())
    }

    /// The actor's own user record (allowed even while a password change is pending).
    pub async fn current_user(&self, actor: &Actor) -> Result<User> {
        self.user_row(&actor.id)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?
            .to_user()
    }

    /// Starts TOTP enrolment for the actor; confirmed by [`Vault::totp_confirm`].
    pub async fn totp_begin(&self, actor: &Actor, ctx: &RequestContext) -> Result<TotpEnrollment> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        if actor.is_system {
            return Err(Error::invalid("user", "the system actor has no TOTP"));
        }
        let secret = auth::new_totp_secret();
        let t = auth::totp(&secret, &actor.username)?;
        let sealed = self.keys().seal(&user_owner(&actor.id, "totp_pending"), &secret);
        let mut w = self.store().write().await?;
        put_sealed(&mut w.tx, &user_owner(&actor.id, "totp_pending"), &sealed).await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.totp_begin", "user").object(&actor.id, &actor.username),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(TotpEnrollment {
            otpauth_uri: SecretString::new(t.get_url()),
            secret_base32: SecretString::new(auth::base32(&secret)),
        })
    }

    /// Confirms TOTP enrolment with a current code.
    pub async fn totp_confirm(&self, actor: &Actor, code: &str, ctx: &RequestContext) -> Result<()> {
        if actor.must_change_password {
            return Err(Error::PasswordChangeRequired);
        }
        let pending = user_owner(&actor.id, "totp_pending");
        let secret = match self.open_sealed(&pending).await? {
            Some(s) => s,
            None => return Err(Error::conflict("no TOTP enrolment in progress; start one first")),
        };
        let t = auth::totp(&secret, &actor.username)?;
        let Some(step) = auth::totp_match(&t, code, unix_now()) else {
            self.audit_alone(
                NewEvent::by(actor, "user.totp_confirm", "user")
                    .object(&actor.id, &actor.username)
                    .outcome(Outcome::Failure),
                ctx,
            )
            .await?;
            return Err(Error::invalid(
                "code",
                "does not match; check the device clock and try the next code",
            ));
        };
        let sealed = self.keys().seal(&user_owner(&actor.id, "totp"), &secret);
        let mut w = self.store().write().await?;
        put_sealed(&mut w.tx, &user_owner(&actor.id, "totp"), &sealed).await?;
        sqlx::query("DELETE FROM sealed WHERE owner = $1")
            .bind(&pending)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("UPDATE users SET totp_enabled = 1, totp_last_step = $1, updated_at = $2 WHERE id = $3")
            .bind(step as i64)
            .bind(store::now())
            .bind(&actor.id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.totp_enable", "user").object(&actor.id, &actor.username),
            ctx,
        )
        .await?;
        w.commit().await
    }

    async fn open_user_secret(&self, user_id: &str, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        self.open_sealed(&user_owner(user_id, what))
            .await?
            .ok_or_else(|| Error::Corrupt {
                table: "sealed",
                id: user_owner(user_id, what),
                detail: "missing".into(),
            })
    }

    pub(crate) async fn open_sealed(&self, owner: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let row: Option<(String, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT key_id, wrapped_dek, ciphertext FROM sealed WHERE owner = $1")
                .bind(owner)
                .fetch_optional(&self.store().pool)
                .await?;
        match row {
            None => Ok(None),
            Some((key_id, wrapped_dek, ciphertext)) => self
                .keys()
                .open(
                    owner,
                    &Sealed {
                        key_id,
                        wrapped_dek,
                        ciphertext,
                    },
                )
                .map(Some),
        }
    }

    // ---- user management ------------------------------------------------

    /// Lists users.
    pub async fn list_users(&self, actor: &Actor, ctx: &RequestContext) -> Result<Vec<User>> {
        self.require(actor, Action::ViewUser, Object::System, "user.list", "user", None, ctx)
            .await?;
        let rows = sqlx::query_as::<Db, UserRow>(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))
            .fetch_all(&self.store().pool)
            .await?;
        rows.iter().map(UserRow::to_user).collect()
    }

    /// Reads a user.
    pub async fn get_user(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<User> {
        self.authorized_user(actor, id, Action::ViewUser, "user.view", ctx)
            .await?
            .to_user()
    }

    /// Loads a user and authorizes `action` on it; a refusal is audited as `audit_action`.
    pub(crate) async fn authorized_user(
        &self,
        actor: &Actor,
        id: &str,
        action: Action,
        audit_action: &str,
        ctx: &RequestContext,
    ) -> Result<UserRow> {
        let row = self.user_row(id).await?.ok_or(Error::NotFound { kind: "user" })?;
        let role = row.role()?;
        self.require(
            actor,
            action,
            Object::User { id, role },
            audit_action,
            "user",
            Some((id, &row.username)),
            ctx,
        )
        .await?;
        Ok(row)
    }

    /// Creates a user.
    pub async fn create_user(&self, actor: &Actor, new: NewUser, ctx: &RequestContext) -> Result<User> {
        self.require(
            actor,
            Action::CreateUser,
            Object::System,
            "user.create",
            "user",
            None,
            ctx,
        )
        .await?;
        self.require(
            actor,
            Action::AssignRole(new.role),
            Object::System,
            "user.create",
            "user",
            None,
            ctx,
        )
        .await?;
        validate_username(&new.username)?;
        if let Some(e) = new.email.as_deref().filter(|e| !e.is_empty()) {
            validate_email(e)?;
        }
        let id = store::new_id();
        if new.super_admin {
            self.refuse_new_super_admin(actor, "user.create", None, ctx).await?;
            self.require(
                actor,
                Action::SetSuperAdmin,
                Object::User {
                    id: &id,
                    role: new.role,
                },
                "user.create",
                "user",
                None,
                ctx,
            )
            .await?;
        }
        let hash = match &new.password {
            Some(p) => {
                auth::check_new_password(self.policy(), &new.username, p)?;
                Some(auth::hash_password(p.expose())?)
            }
            None => None,
        };
        let must_change = new.password.is_some() && new.must_change_password.unwrap_or(true);
        let now = store::now();
        let mut w = self.store().write().await?;
        let res = sqlx::query(
            "INSERT INTO users (id, username, email, role, super_admin, password_hash, must_change_password, created_at, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$8)",
        )
        .bind(&id)
        .bind(&new.username)
        .bind(new.email.as_deref().filter(|e| !e.is_empty()))
        .bind(new.role.as_str())
        .bind(new.super_admin)
        .bind(&hash)
        .bind(must_change)
        .bind(&now)
        .execute(&mut *w.tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &res {
            if e.is_unique_violation() {
                return Err(Error::conflict(format!("user {:?} already exists", new.username)));
            }
        }
        res?;
        let detail = format!(
            "role {}{}",
            new.role.as_str(),
            if new.super_admin { ", super admin" } else { "" }
        );
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.create", "user")
                .object(&id, &new.username)
                .detail(detail),
            ctx,
        )
        .await?;
        w.commit().await?;
        self.user_row(&id)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?
            .to_user()
    }

    /// Changes a user.
    pub async fn update_user(&self, actor: &Actor, id: &str, patch: UserPatch, ctx: &RequestContext) -> Result<User> {
        let row = self.user_row(id).await?.ok_or(Error::NotFound { kind: "user" })?;
        let role = row.role()?;
        let obj = Object::User { id, role };
        let me = Some((id, row.username.as_str()));
        let self_service_password_only = id == actor.id
            && patch.role.is_none()
            && patch.enabled.is_none()
            && patch.super_admin.is_none()
            && patch.unlock.is_none()
            && patch.reset_totp.is_none()
            && patch.password.is_none();
        if !self_service_password_only {
            self.require(actor, Action::UpdateUser, obj, "user.update", "user", me, ctx)
                .await?;
        }
        if let Some(new_role) = patch.role {
            if new_role != role {
                self.require(actor, Action::AssignRole(new_role), obj, "user.update", "user", me, ctx)
                    .await?;
            }
        }
        if patch.super_admin.is_some_and(|s| s != row.super_admin) {
            if patch.super_admin == Some(true) {
                self.refuse_new_super_admin(actor, "user.update", me, ctx).await?;
            }
            self.require(
                actor,
                Action::SetSuperAdmin,
                Object::User {
                    id,
                    role: patch.role.unwrap_or(role),
                },
                "user.update",
                "user",
                me,
                ctx,
            )
            .await?;
        }
        if id == actor.id && patch.enabled == Some(false) {
            return Err(Error::invalid("enabled", "you cannot disable yourself"));
        }
        if let Some(e) = patch.email.as_deref().filter(|e| !e.is_empty()) {
            validate_email(e)?;
        }
        let new_hash = match &patch.password {
            Some(p) => {
                auth::check_new_password(self.policy(), &row.username, p)?;
                Some(auth::hash_password(p.expose())?)
            }
            None => None,
        };
        let mut changes = Vec::new();
        let mut w = self.store().write().await?;
        let now = store::now();
        if let Some(r) = patch.role.filter(|r| *r != role) {
            let keep_super = r.may_be_super_admin() && row.super_admin;
            sqlx::query(
                "UPDATE users SET role = $1, super_admin = $2, updated_at = $3, custom_role_id = NULL WHERE id = $4",
            )
            .bind(r.as_str())
            .bind(keep_super)
            .bind(&now)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
            changes.push(format!("role {} -> {}", role.as_str(), r.as_str()));
        }
        if let Some(e) = &patch.email {
            sqlx::query("UPDATE users SET email = $1, updated_at = $2 WHERE id = $3")
                .bind(Some(e.as_str()).filter(|e| !e.is_empty()))
                .bind(&now)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            changes.push("email".into());
        }
        if let Some(h) = &new_hash {
            sqlx::query("UPDATE users SET password_hash = $1, must_change_password = 1, updated_at = $2 WHERE id = $3")
                .bind(h)
                .bind(&now)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            changes.push("password reset (must change at next login)".into());
        }
        if let Some(en) = patch.enabled {
            sqlx::query("UPDATE users SET enabled = $1, updated_at = $2 WHERE id = $3")
                .bind(en)
                .bind(&now)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            if !en {
                sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *w.tx)
                    .await?;
            }
            changes.push(format!("enabled={en}"));
        }
        if let Some(s) = patch.super_admin {
            sqlx::query("UPDATE users SET super_admin = $1, updated_at = $2 WHERE id = $3")
                .bind(s)
                .bind(&now)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            changes.push(format!("super_admin={s}"));
        }
        if patch.unlock == Some(true) {
            sqlx::query("UPDATE users SET locked_until = NULL, failed_logins = 0 WHERE id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            changes.push("unlocked".into());
        }
        if patch.reset_totp == Some(true) {
            sqlx::query("UPDATE users SET totp_enabled = 0, totp_last_step = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("DELETE FROM sealed WHERE owner IN ($1, $2)")
                .bind(user_owner(id, "totp"))
                .bind(user_owner(id, "totp_pending"))
                .execute(&mut *w.tx)
                .await?;
            changes.push("TOTP reset".into());
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.update", "user")
                .object(id, &row.username)
                .detail(changes.join(", ")),
            ctx,
        )
        .await?;
        w.commit().await?;
        if new_hash.is_some() {
            self.forget_initial_password(id).await;
        }
        self.user_row(id)
            .await?
            .ok_or(Error::NotFound { kind: "user" })?
            .to_user()
    }

    /// Deletes a user that owns nothing.
    pub async fn delete_user(&self, actor: &Actor, id: &str, ctx: &RequestContext) -> Result<()> {
        let row = self
            .authorized_user(actor, id, Action::DeleteUser, "user.delete", ctx)
            .await?;
        let mut w = self.store().write().await?;
        let owned: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM resources WHERE owner_id = $1) + (SELECT COUNT(*) FROM accounts WHERE owner_id = $1) \
             + (SELECT COUNT(*) FROM resource_groups WHERE owner_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut *w.tx)
        .await?;
        if owned > 0 {
            return Err(Error::conflict(format!(
                "{} still owns {owned} resources, accounts or groups; transfer them first",
                row.username
            )));
        }
        sqlx::query("DELETE FROM sealed WHERE owner LIKE $1")
            .bind(format!("user:{id}:%"))
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "user.delete", "user").object(id, &row.username),
            ctx,
        )
        .await?;
        w.commit().await
    }
}

pub(crate) async fn put_sealed(tx: &mut sqlx::Transaction<'static, Db>, owner: &str, s: &Sealed) -> Result<()> {
    sqlx::query(
        "INSERT INTO sealed (owner, key_id, wrapped_dek, ciphertext, updated_at) VALUES ($1,$2,$3,$4,$5) \
         ON CONFLICT (owner) DO UPDATE SET key_id = excluded.key_id, wrapped_dek = excluded.wrapped_dek, \
         ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
    )
    .bind(owner)
    .bind(&s.key_id)
    .bind(&s.wrapped_dek)
    .bind(&s.ciphertext)
    .bind(store::now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn static_kind(object_type: &str) -> &'static str {
    match object_type {
        "user" => "user",
        "resource" => "resource",
        "account" => "account",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::vault;

    fn login(u: &str, p: &str, totp: Option<String>) -> LoginRequest {
        LoginRequest {
            username: u.into(),
            password: p.into(),
            totp,
        }
    }

    async fn admin(v: &Vault) -> (Actor, String) {
        let a = v.bootstrap_admin().await.unwrap().unwrap();
        let pw = a.password.expose().to_owned();
        let actor = v
            .authenticate_password(&login("admin", &pw, None), &RequestContext::default())
            .await
            .unwrap();
        assert!(actor.must_change_password);
        let ctx = RequestContext::default();
        // Everything is refused until the password changes.
        assert!(matches!(
            v.list_users(&actor, &ctx).await,
            Err(Error::PasswordChangeRequired)
        ));
        v.change_own_password(&actor, &pw.clone().into(), &"a new admin passphrase".into(), &ctx)
            .await
            .unwrap();
        let actor = v
            .authenticate_password(&login("admin", "a new admin passphrase", None), &ctx)
            .await
            .unwrap();
        assert!(!actor.must_change_password);
        (actor, "a new admin passphrase".into())
    }

    #[tokio::test]
    async fn first_admin_flow_and_initial_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vault(dir.path()).await;
        let file = dir.path().join("initial-admin-password");
        std::sync::Arc::get_mut(&mut v.inner).unwrap().initial_password_file = Some(file.clone());
        let a = v.bootstrap_admin().await.unwrap().unwrap();
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert_eq!(on_disk.trim(), a.password.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let ctx = RequestContext::default();
        let actor = v
            .authenticate_password(&login("admin", a.password.expose(), None), &ctx)
            .await
            .unwrap();
        v.change_own_password(&actor, &a.password, &"another long passphrase".into(), &ctx)
            .await
            .unwrap();
        assert!(!file.exists(), "initial password file removed after the change");
    }

    #[tokio::test]
    async fn lockout_after_threshold_and_generic_errors() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await; // threshold 3
        let (_, pw) = admin(&v).await;
        let ctx = RequestContext::default();
        for _ in 0..3 {
            assert!(matches!(
                v.authenticate_password(&login("admin", "wrong", None), &ctx).await,
                Err(Error::AuthenticationFailed)
            ));
        }
        // Locked: even the right password fails, with the same error.
        assert!(matches!(
            v.authenticate_password(&login("admin", &pw, None), &ctx).await,
            Err(Error::AuthenticationFailed)
        ));
        assert!(matches!(
            v.authenticate_password(&login("nobody", "x", None), &ctx).await,
            Err(Error::AuthenticationFailed)
        ));
        let ev = v
            .audit_events(
                &Actor::system(),
                &crate::AuditFilter {
                    action: Some("auth.".into()),
                    ..Default::default()
                },
                &ctx,
            )
            .await
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| e.detail.as_deref().unwrap_or("").contains("locked until")));
        assert!(ev.iter().any(|e| e.detail.as_deref() == Some("user locked out")));
        assert!(ev.iter().any(|e| e.detail.as_deref() == Some("unknown user")));
    }

    #[tokio::test]
    async fn totp_enrolment_login_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let (actor, pw) = admin(&v).await;
        let ctx = RequestContext::default();
        let en = v.totp_begin(&actor, &ctx).await.unwrap();
        assert!(en.otpauth_uri.expose().starts_with("otpauth://totp/Postern:admin?"));
        let secret = v
            .open_sealed(&user_owner(&actor.id, "totp_pending"))
            .await
            .unwrap()
            .unwrap();
        let t = auth::totp(&secret, "admin").unwrap();
        assert!(v.totp_confirm(&actor, "000000", &ctx).await.is_err() || t.generate(unix_now()) == "000000");
        // Confirm with the previous step's code, then log in with the current one.
        v.totp_confirm(&actor, &t.generate(unix_now() - 30), &ctx)
            .await
            .unwrap();
        assert!(matches!(
            v.authenticate_password(&login("admin", &pw, None), &ctx).await,
            Err(Error::TotpRequired)
        ));
        let code = t.generate(unix_now());
        v.authenticate_password(&login("admin", &pw, Some(code.clone())), &ctx)
            .await
            .unwrap();
        // The same code cannot be used twice.
        assert!(matches!(
            v.authenticate_password(&login("admin", &pw, Some(code)), &ctx).await,
            Err(Error::AuthenticationFailed)
        ));
    }

    #[tokio::test]
    async fn tokens() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let (_, pw) = admin(&v).await;
        let ctx = RequestContext::default();
        let t = v.login(&login("admin", &pw, None), &ctx).await.unwrap();
        assert_eq!(v.authenticate_token(t.token.expose()).await.unwrap().username, "admin");
        v.revoke_token(t.token.expose()).await.unwrap();
        assert!(matches!(
            v.authenticate_token(t.token.expose()).await,
            Err(Error::InvalidToken)
        ));
        assert!(matches!(
            v.authenticate_token("garbage").await,
            Err(Error::InvalidToken)
        ));
        let cli = v
            .create_token(&Actor::system(), "admin", Duration::from_secs(60), "ci", &ctx)
            .await
            .unwrap();
        assert!(v.authenticate_token(cli.token.expose()).await.is_ok());
    }

    #[tokio::test]
    async fn user_management_rules() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let (admin, _) = admin(&v).await;
        let ctx = RequestContext::default();
        let new = |name: &str, role| NewUser {
            username: name.into(),
            role,
            email: None,
            password: Some("a long enough passphrase".into()),
            super_admin: false,
            must_change_password: Some(false),
        };
        let u = v
            .create_user(&admin, new("carol", Role::PasswordUser), &ctx)
            .await
            .unwrap();
        assert!(matches!(
            v.create_user(&admin, new("carol", Role::PasswordUser), &ctx).await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            v.create_user(&admin, new("bad#name", Role::PasswordUser), &ctx).await,
            Err(Error::Invalid { .. })
        ));
        let carol = v
            .authenticate_password(&login("carol", "a long enough passphrase", None), &ctx)
            .await
            .unwrap();
        assert!(matches!(v.list_users(&carol, &ctx).await, Err(Error::Forbidden { .. })));
        assert_eq!(v.get_user(&carol, &u.id, &ctx).await.unwrap().username, "carol");
        // A password user cannot become super admin.
        let p = UserPatch {
            super_admin: Some(true),
            ..Default::default()
        };
        assert!(v.update_user(&admin, &u.id, p, &ctx).await.is_err());
        let p = UserPatch {
            role: Some(Role::Administrator),
            ..Default::default()
        };
        assert_eq!(
            v.update_user(&admin, &u.id, p, &ctx).await.unwrap().role,
            Role::Administrator
        );
        v.delete_user(&admin, &u.id, &ctx).await.unwrap();
        assert!(v.delete_user(&admin, &admin.id, &ctx).await.is_err());
    }
}
