//! Remote password reset (PMP 6.4, 8.x): password policies, a generator on the
//! OS CSPRNG, the [`Resetter`] trait (one implementation per resource type,
//! provided by the gateway and registered by the root), and
//! [`Vault::reset_account_password`]: generate → change on the target →
//! verify by logging in → vault. On any failure the old password stays
//! vaulted, the account is marked `failed` and the failure is audited.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::audit::{self, NewEvent, Outcome};
use crate::error::{Error, ResetStage, Result};
use crate::gateway::PinnedHostKey;
use crate::model::{Account, Actor, RequestContext, Resource, ResourceType};
use crate::resources::secret_owner;
use crate::secret::{SecretKind, SecretString};
use crate::store;
use crate::users::put_sealed;
use crate::Vault;

/// Rules for generated passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Minimum length.
    pub min_length: u32,
    /// Maximum length.
    pub max_length: u32,
    /// At least one lowercase letter.
    pub lowercase: bool,
    /// At least one uppercase letter.
    pub uppercase: bool,
    /// At least one digit.
    pub digits: bool,
    /// At least one special character.
    pub special: bool,
    /// Characters never used.
    #[serde(default)]
    pub forbidden_chars: String,
    /// Passwords older than this many days are rotated by the periodic task.
    #[serde(default)]
    pub max_age_days: Option<u32>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 20,
            max_length: 24,
            lowercase: true,
            uppercase: true,
            digits: true,
            special: true,
            forbidden_chars: "\"'`\\".into(),
            max_age_days: None,
        }
    }
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const SPECIAL: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

impl PasswordPolicy {
    /// Checks the policy can generate passwords.
    pub fn validate(&self) -> Result<()> {
        if self.min_length < 8 || self.max_length > 128 || self.min_length > self.max_length {
            return Err(Error::invalid(
                "min_length",
                "lengths must satisfy 8 <= min_length <= max_length <= 128",
            ));
        }
        if self.forbidden_chars.chars().any(|c| c.is_control()) {
            return Err(Error::invalid("forbidden_chars", "must not contain control characters"));
        }
        for (on, set, name) in self.classes() {
            if on && set.is_empty() {
                return Err(Error::invalid(
                    "forbidden_chars",
                    format!("forbids every {name} but the policy requires one"),
                ));
            }
        }
        if self.alphabet().len() < 10 {
            return Err(Error::invalid(
                "forbidden_chars",
                "leaves fewer than 10 usable characters",
            ));
        }
        let required = self.classes().iter().filter(|c| c.0).count() as u32;
        if required > self.min_length {
            return Err(Error::invalid(
                "min_length",
                "is shorter than the number of required classes",
            ));
        }
        Ok(())
    }

    fn allowed(&self, set: &str) -> Vec<char> {
        set.chars().filter(|c| !self.forbidden_chars.contains(*c)).collect()
    }

    fn classes(&self) -> [(bool, Vec<char>, &'static str); 4] {
        [
            (self.lowercase, self.allowed(LOWER), "lowercase letter"),
            (self.uppercase, self.allowed(UPPER), "uppercase letter"),
            (self.digits, self.allowed(DIGITS), "digit"),
            (self.special, self.allowed(SPECIAL), "special character"),
        ]
    }

    fn alphabet(&self) -> Vec<char> {
        let mut all = Vec::new();
        for (on, set, _) in self.classes() {
            if on {
                all.extend(set);
            }
        }
        if all.is_empty() {
            all = self.allowed(LOWER);
            all.extend(self.allowed(DIGITS));
        }
        all
    }

    /// Does `pw` satisfy the policy?
    pub fn check(&self, pw: &str) -> bool {
        let n = pw.chars().count() as u32;
        n >= self.min_length
            && n <= self.max_length
            && !pw.chars().any(|c| self.forbidden_chars.contains(c))
            && self
                .classes()
                .iter()
                .all(|(on, set, _)| !on || pw.chars().any(|c| set.contains(&c)))
    }

    /// A new password from the OS CSPRNG satisfying the policy.
    pub fn generate(&self) -> Result<SecretString> {
        self.validate()?;
        let mut rng = rand::rngs::OsRng;
        let len = rng.gen_range(self.min_length..=self.max_length) as usize;
        let alphabet = self.alphabet();
        let mut out: zeroize::Zeroizing<Vec<char>> = zeroize::Zeroizing::new(Vec::with_capacity(len));
        for (on, set, _) in self.classes() {
            if on {
                out.push(set[rng.gen_range(0..set.len())]);
            }
        }
        while out.len() < len {
            out.push(alphabet[rng.gen_range(0..alphabet.len())]);
        }
        // Fisher-Yates so the required characters are not always first.
        for i in (1..out.len()).rev() {
            let j = rng.gen_range(0..=i);
            out.swap(i, j);
        }
        Ok(SecretString::from(out.iter().collect::<String>()))
    }
}

/// What a resetter needs to change one account's password.
pub struct ResetTarget {
    /// The resource (host, port, type).
    pub resource: Resource,
    /// The account whose password changes.
    pub account: Account,
    /// The account's current password, if vaulted.
    pub current: Option<SecretString>,
    /// An administrator account of the same resource (login, password) to reset with, when configured
    /// (the resource's extra field `reset_with` names its login).
    pub admin: Option<(String, SecretString)>,
    /// The pinned host key of the resource, if any (a resetter must refuse another key).
    pub pinned_host_key: Option<PinnedHostKey>,
}

impl std::fmt::Debug for ResetTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetTarget")
            .field("resource", &self.resource.name)
            .field("account", &self.account.login)
            .field("admin", &self.admin.as_ref().map(|a| &a.0))
            .finish_non_exhaustive()
    }
}

/// Changes passwords on one type of target (SSH for Linux/Unix; Windows and
/// network devices later). Errors are [`Error::Reset`] with the failing stage.
pub trait Resetter: Send + Sync {
    /// Changes the account's password on the target to `new`.
    fn reset<'a>(&'a self, target: &'a ResetTarget, new: &'a SecretString) -> BoxFuture<'a, Result<()>>;
    /// Logs in as the account with `password` (verification after a reset).
    fn verify<'a>(&'a self, target: &'a ResetTarget, password: &'a SecretString) -> BoxFuture<'a, Result<()>>;
}

/// The resetters by resource type.
#[derive(Default, Clone)]
pub(crate) struct Resetters(pub HashMap<ResourceType, Arc<dyn Resetter>>);

impl std::fmt::Debug for Resetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The outcome of one account's reset, as reported by "randomize now".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetResult {
    /// The account.
    pub account_id: String,
    /// `login@resource`.
    pub account: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// Why it failed (never a secret).
    pub error: Option<String>,
}

impl Vault {
    /// Registers the resetter for a resource type (the root wires the gateway's SSH resetter).
    pub fn set_resetter(&self, t: ResourceType, r: Arc<dyn Resetter>) {
        self.inner
            .resetters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .insert(t, r);
    }

    fn resetter(&self, t: ResourceType) -> Option<Arc<dyn Resetter>> {
        self.inner
            .resetters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(&t)
            .cloned()
    }

    /// The policy for an account: its own, else its resource's first group's, else the default.
    pub async fn password_policy_for(&self, account_id: &str) -> Result<PasswordPolicy> {
        let row: Option<PolicyRow> = sqlx::query_as(
            "SELECT id, name, min_length, max_length, lowercase, uppercase, digits, special, forbidden_chars, max_age_days \
             FROM password_policies WHERE id = COALESCE( \
               (SELECT password_policy_id FROM accounts WHERE id = $1), \
               (SELECT g.password_policy_id FROM resource_groups g JOIN resource_group_members m ON m.group_id = g.id \
                JOIN accounts a ON a.resource_id = m.resource_id WHERE a.id = $1 AND g.password_policy_id IS NOT NULL \
                ORDER BY g.name LIMIT 1))",
        )
        .bind(account_id)
        .fetch_optional(&self.store().pool)
        .await?;
        Ok(row.map(|r| r.into_stored().policy).unwrap_or_default())
    }

    async fn open_password(&self, account_id: &str) -> Result<Option<SecretString>> {
        let plain = self
            .open_sealed(&secret_owner(account_id, SecretKind::Password))
            .await?;
        Ok(plain.map(|p| SecretString::from(String::from_utf8_lossy(&p).into_owned())))
    }

    /// Resets an account's password on its target: generates one under the
    /// account's policy, changes it with the resource type's [`Resetter`],
    /// verifies it by logging in, then vaults it. On failure the old password
    /// stays vaulted, the account is marked `failed` and the failure is
    /// audited. Nobody ever sees the new password. `actor` must be allowed to
    /// change the account (the system actor for workflow-driven resets).
    pub async fn reset_account_password(&self, actor: &Actor, account_id: &str, ctx: &RequestContext) -> Result<()> {
        let (a, r, share) = self.account_object(actor, account_id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            crate::Action::UpdateAccount,
            crate::Object::Owned {
                owner_id: owner,
                share,
                access: crate::Access::Free,
            },
            "account.reset",
            "account",
            Some((account_id, &a.login)),
            ctx,
        )
        .await?;
        let label = format!("{}@{}", a.login, r.name);
        let outcome = self.try_reset(&a, &r).await;
        let mut w = self.store().write().await?;
        let now = store::now();
        match &outcome {
            Ok(new) => {
                let keys = self.keys();
                let o = secret_owner(&a.id, SecretKind::Password);
                put_sealed(&mut w.tx, &o, &keys.seal(&o, new.expose().as_bytes())).await?;
                sqlx::query(
                    "UPDATE accounts SET password_changed_at = $1, updated_at = $1, reset_status = 'ok', reset_error = NULL, \
                     reset_at = $1 WHERE id = $2",
                )
                .bind(&now)
                .bind(&a.id)
                .execute(&mut *w.tx)
                .await?;
                audit::append(
                    &mut w.tx,
                    NewEvent::by(actor, "account.reset", "account")
                        .object(&a.id, &label)
                        .detail("password changed on the target, verified by logging in, and vaulted"),
                    ctx,
                )
                .await?;
            }
            Err(e) => {
                sqlx::query(
                    "UPDATE accounts SET reset_status = 'failed', reset_error = $1, reset_at = $2 WHERE id = $3",
                )
                .bind(e.to_string())
                .bind(&now)
                .bind(&a.id)
                .execute(&mut *w.tx)
                .await?;
                audit::append(
                    &mut w.tx,
                    NewEvent::by(actor, "account.reset", "account")
                        .object(&a.id, &label)
                        .outcome(Outcome::Failure)
                        .detail(format!("{e}; the old password stays vaulted")),
                    ctx,
                )
                .await?;
            }
        }
        w.commit().await?;
        outcome.map(drop)
    }

    async fn try_reset(&self, a: &Account, r: &Resource) -> Result<SecretString> {
        let unsupported = |d: String| Error::Reset {
            stage: ResetStage::Unsupported,
            detail: d,
        };
        let resetter = self
            .resetter(r.resource_type)
            .ok_or_else(|| unsupported(format!("no resetter for {} resources", r.resource_type.as_str())))?;
        let admin = match r.extra.get("reset_with").filter(|l| l.as_str() != a.login) {
            Some(login) => {
                let id: Option<String> =
                    sqlx::query_scalar("SELECT id FROM accounts WHERE resource_id = $1 AND login = $2")
                        .bind(&r.id)
                        .bind(login)
                        .fetch_optional(&self.store().pool)
                        .await?;
                let id = id.ok_or_else(|| {
                    unsupported(format!(
                        "reset_with names {login:?}, which is not an account of {}",
                        r.name
                    ))
                })?;
                let pw = self
                    .open_password(&id)
                    .await?
                    .ok_or_else(|| unsupported(format!("the reset account {login} has no vaulted password")))?;
                Some((login.clone(), pw))
            }
            None => None,
        };
        let current = self.open_password(&a.id).await?;
        if current.is_none() && admin.is_none() {
            return Err(unsupported(
                "the account has no vaulted password and the resource names no reset_with account".into(),
            ));
        }
        let target = ResetTarget {
            resource: r.clone(),
            account: a.clone(),
            current,
            admin,
            pinned_host_key: self.pinned_host_key(&r.id).await?,
        };
        let policy = self.password_policy_for(&a.id).await?;
        let new = policy.generate()?;
        resetter.reset(&target, &new).await?;
        resetter.verify(&target, &new).await?;
        Ok(new)
    }

    /// Resets every account a finished workflow touched; each outcome is audited
    /// by [`Vault::reset_account_password`]. Never fails as a whole.
    pub async fn reset_accounts(&self, ids: &[String], ctx: &RequestContext) -> Vec<ResetResult> {
        let sys = Actor::system();
        let mut out = Vec::new();
        for id in ids {
            let label = match self.account_by_id(id).await {
                Ok(Some(a)) => match self.resource_by_id(&a.resource_id).await {
                    Ok(Some(r)) => format!("{}@{}", a.login, r.name),
                    _ => a.login,
                },
                _ => id.clone(),
            };
            let r = self.reset_account_password(&sys, id, ctx).await;
            out.push(ResetResult {
                account_id: id.clone(),
                account: label,
                outcome: if r.is_ok() { "ok" } else { "failed" }.into(),
                error: r.err().map(|e| e.to_string()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_follow_the_policy() {
        let p = PasswordPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let pw = p.generate().unwrap();
            assert!(p.check(pw.expose()), "{}", pw.expose().len());
            seen.insert(pw.expose().to_owned());
        }
        assert_eq!(seen.len(), 200, "no repeats");
        let strict = PasswordPolicy {
            min_length: 12,
            max_length: 12,
            lowercase: true,
            uppercase: false,
            digits: true,
            special: false,
            forbidden_chars: "0o1l".into(),
            max_age_days: Some(30),
        };
        for _ in 0..100 {
            let pw = strict.generate().unwrap();
            let s = pw.expose();
            assert_eq!(s.len(), 12);
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{s}");
            assert!(!s.contains(['0', 'o', '1', 'l']), "{s}");
            assert!(s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| c.is_ascii_lowercase()));
        }
        // Impossible policies are refused with a clear error.
        for bad in [
            PasswordPolicy {
                min_length: 4,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                min_length: 30,
                max_length: 20,
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                forbidden_chars: DIGITS.into(),
                ..PasswordPolicy::default()
            },
        ] {
            assert!(matches!(bad.generate(), Err(Error::Invalid { .. })), "{bad:?}");
        }
    }
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    min_length: u32,
    max_length: u32,
    lowercase: bool,
    uppercase: bool,
    digits: bool,
    special: bool,
    forbidden_chars: String,
    max_age_days: Option<u32>,
}

impl PolicyRow {
    fn into_stored(self) -> StoredPolicy {
        StoredPolicy {
            id: self.id,
            name: self.name,
            policy: PasswordPolicy {
                min_length: self.min_length,
                max_length: self.max_length,
                lowercase: self.lowercase,
                uppercase: self.uppercase,
                digits: self.digits,
                special: self.special,
                forbidden_chars: self.forbidden_chars,
                max_age_days: self.max_age_days,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct AgedRow {
    id: String,
    changed: Option<String>,
    rtype: String,
    status: Option<String>,
    at: Option<String>,
}

/// A stored password policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredPolicy {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The rules.
    #[serde(flatten)]
    pub policy: PasswordPolicy,
}

/// A policy to create (the fields of [`PasswordPolicy`] plus a name).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPasswordPolicy {
    /// Unique name.
    pub name: String,
    /// Minimum length.
    pub min_length: u32,
    /// Maximum length.
    pub max_length: u32,
    /// At least one lowercase letter.
    pub lowercase: bool,
    /// At least one uppercase letter.
    pub uppercase: bool,
    /// At least one digit.
    pub digits: bool,
    /// At least one special character.
    pub special: bool,
    /// Characters never used.
    #[serde(default)]
    pub forbidden_chars: String,
    /// Passwords older than this many days are rotated by the periodic task.
    #[serde(default)]
    pub max_age_days: Option<u32>,
}

impl NewPasswordPolicy {
    /// A named policy with these rules.
    pub fn new(name: impl Into<String>, p: PasswordPolicy) -> Self {
        NewPasswordPolicy {
            name: name.into(),
            min_length: p.min_length,
            max_length: p.max_length,
            lowercase: p.lowercase,
            uppercase: p.uppercase,
            digits: p.digits,
            special: p.special,
            forbidden_chars: p.forbidden_chars,
            max_age_days: p.max_age_days,
        }
    }

    /// The rules.
    pub fn policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_length: self.min_length,
            max_length: self.max_length,
            lowercase: self.lowercase,
            uppercase: self.uppercase,
            digits: self.digits,
            special: self.special,
            forbidden_chars: self.forbidden_chars.clone(),
            max_age_days: self.max_age_days,
        }
    }
}

impl Vault {
    /// Password policies (anyone who manages resources or passwords).
    pub async fn list_password_policies(&self, actor: &Actor, ctx: &RequestContext) -> Result<Vec<StoredPolicy>> {
        self.require(
            actor,
            crate::Action::CreateResource,
            crate::Object::System,
            "password_policy.list",
            "password_policy",
            None,
            ctx,
        )
        .await?;
        let rows: Vec<PolicyRow> = sqlx::query_as(
            "SELECT id, name, min_length, max_length, lowercase, uppercase, digits, special, forbidden_chars, max_age_days \
             FROM password_policies ORDER BY name",
        )
        .fetch_all(&self.store().pool)
        .await?;
        Ok(rows.into_iter().map(PolicyRow::into_stored).collect())
    }

    /// Creates a password policy (Manage resources).
    pub async fn create_password_policy(
        &self,
        actor: &Actor,
        n: NewPasswordPolicy,
        ctx: &RequestContext,
    ) -> Result<StoredPolicy> {
        self.require(
            actor,
            crate::Action::CreateResource,
            crate::Object::System,
            "password_policy.create",
            "password_policy",
            None,
            ctx,
        )
        .await?;
        let name = n.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::invalid("name", "must be 1 to 64 characters"));
        }
        let policy = n.policy();
        policy.validate()?;
        if policy.max_age_days == Some(0) {
            return Err(Error::invalid(
                "max_age_days",
                "must be at least 1 (omit it for no maximum)",
            ));
        }
        let p = &policy;
        let id = store::new_id();
        let mut w = self.store().write().await?;
        let r = sqlx::query(
            "INSERT INTO password_policies (id, name, min_length, max_length, lowercase, uppercase, digits, special, \
             forbidden_chars, max_age_days, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        )
        .bind(&id)
        .bind(name)
        .bind(p.min_length)
        .bind(p.max_length)
        .bind(p.lowercase)
        .bind(p.uppercase)
        .bind(p.digits)
        .bind(p.special)
        .bind(&p.forbidden_chars)
        .bind(p.max_age_days)
        .bind(store::now())
        .execute(&mut *w.tx)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::conflict(format!("a policy named {name:?} exists")))
            }
            r => {
                r?;
            }
        }
        audit::append(
            &mut w.tx,
            NewEvent::by(actor, "password_policy.create", "password_policy")
                .object(&id, name)
                .detail(format!(
                    "length {}-{}, max age {}",
                    p.min_length,
                    p.max_length,
                    p.max_age_days
                        .map(|d| format!("{d} days"))
                        .unwrap_or_else(|| "none".into())
                )),
            ctx,
        )
        .await?;
        w.commit().await?;
        Ok(StoredPolicy {
            id,
            name: name.to_owned(),
            policy,
        })
    }

    async fn policy_exists(&self, id: &str) -> Result<()> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM password_policies WHERE id = $1")
            .bind(id)
            .fetch_one(&self.store().pool)
            .await?;
        if n == 0 {
            return Err(Error::invalid("policy_id", "no such password policy"));
        }
        Ok(())
    }

    /// Sets (or clears) an account's password policy (needs the right to change the account).
    pub async fn set_account_policy(
        &self,
        actor: &Actor,
        account_id: &str,
        policy_id: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<()> {
        let (a, r, share) = self.account_object(actor, account_id).await?;
        let owner = Self::owner_for(actor, a.owner_id.as_deref(), r.owner_id.as_deref());
        self.require(
            actor,
            crate::Action::UpdateAccount,
            crate::Object::Owned {
                owner_id: owner,
                share,
                access: crate::Access::Free,
            },
            "account.password_policy",
            "account",
            Some((account_id, &a.login)),
            ctx,
        )
        .await?;
        let event = NewEvent::by(actor, "account.password_policy", "account")
            .object(account_id, &a.login)
            .detail(format!("policy {}", policy_id.unwrap_or("none (group's or default)")));
        self.store_policy_choice("accounts", account_id, policy_id, event, ctx)
            .await
    }

    /// Sets (or clears) a resource group's password policy.
    pub async fn set_group_policy(
        &self,
        actor: &Actor,
        group_id: &str,
        policy_id: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<()> {
        let g = self
            .modifiable_resource_group(actor, group_id, "resource_group.password_policy", ctx)
            .await?;
        let event = NewEvent::by(actor, "resource_group.password_policy", "resource_group")
            .object(group_id, &g.name)
            .detail(format!("policy {}", policy_id.unwrap_or("none (default)")));
        self.store_policy_choice("resource_groups", group_id, policy_id, event, ctx)
            .await
    }

    /// Checks that `policy_id` (if any) exists, stores it as the
    /// `password_policy_id` of row `id` of `table` (a constant of this module,
    /// never input) and audits `event`, in one write.
    async fn store_policy_choice(
        &self,
        table: &'static str,
        id: &str,
        policy_id: Option<&str>,
        event: NewEvent<'_>,
        ctx: &RequestContext,
    ) -> Result<()> {
        if let Some(p) = policy_id {
            self.policy_exists(p).await?;
        }
        let mut w = self.store().write().await?;
        sqlx::query(&format!("UPDATE {table} SET password_policy_id = $1 WHERE id = $2"))
            .bind(policy_id)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        audit::append(&mut w.tx, event, ctx).await?;
        w.commit().await
    }

    /// "Randomize now": resets every account of the group's resources as a
    /// background job with progress ([`Vault::job`]); each outcome is audited.
    pub async fn randomize_group(&self, actor: &Actor, group_id: &str, ctx: &RequestContext) -> Result<crate::Job> {
        let g = self
            .modifiable_resource_group(actor, group_id, "resource_group.randomize", ctx)
            .await?;
        let ids: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.id, a.login || '@' || r.name FROM accounts a JOIN resources r ON r.id = a.resource_id \
             JOIN resource_group_members m ON m.resource_id = a.resource_id WHERE m.group_id = $1 ORDER BY r.name, a.login",
        )
        .bind(group_id)
        .fetch_all(&self.store().pool)
        .await?;
        self.start_reset_job(actor, "randomize", format!("resource group {}", g.name), ids, ctx)
            .await
    }

    /// Rotates passwords older than their policy's maximum age (the root's
    /// sweep calls this). Accounts checked out right now, of types without a
    /// resetter, or whose last reset failed less than an hour ago are skipped.
    pub async fn rotate_aged_passwords(&self, now: time::OffsetDateTime) -> Result<Vec<ResetResult>> {
        let rows: Vec<AgedRow> = sqlx::query_as(
            "SELECT a.id, a.password_changed_at AS changed, r.resource_type AS rtype, a.reset_status AS status, \
             a.reset_at AS at FROM accounts a \
             JOIN resources r ON r.id = a.resource_id \
             WHERE NOT EXISTS (SELECT 1 FROM access_requests q WHERE q.account_id = a.id AND q.state = 'checked_out')",
        )
        .fetch_all(&self.store().pool)
        .await?;
        let hour_ago = store::format_ts(now - time::Duration::hours(1));
        let mut due = Vec::new();
        for AgedRow {
            id,
            changed,
            rtype,
            status,
            at,
        } in rows
        {
            let Some(t) = ResourceType::parse(&rtype) else { continue };
            if self.resetter(t).is_none() {
                continue;
            }
            if status.as_deref() == Some("failed") && at.as_deref().is_some_and(|a| a > hour_ago.as_str()) {
                continue;
            }
            let Some(days) = self.password_policy_for(&id).await?.max_age_days else {
                continue;
            };
            let limit = now - time::Duration::days(i64::from(days));
            let old = changed.as_deref().and_then(store::parse_ts).is_none_or(|c| c <= limit);
            if old {
                due.push(id);
            }
        }
        let ctx = RequestContext {
            client_ip: None,
            reason: Some("password older than its policy's maximum age".into()),
        };
        Ok(self.reset_accounts(&due, &ctx).await)
    }

    /// After a share of `level` is revoked: resets the covered accounts the
    /// principal could have seen (`view` or more), where a resetter exists.
    pub(crate) async fn reset_after_revoke(&self, accounts: Vec<String>, ctx: &RequestContext) -> Vec<ResetResult> {
        let mut due = Vec::new();
        for id in accounts {
            if let Ok(Some(a)) = self.account_by_id(&id).await {
                if let Ok(Some(r)) = self.resource_by_id(&a.resource_id).await {
                    if a.has_password && self.resetter(r.resource_type).is_some() {
                        due.push(id);
                    }
                }
            }
        }
        let ctx = RequestContext {
            client_ip: ctx.client_ip,
            reason: Some("a share that could see the password was revoked".into()),
        };
        self.reset_accounts(&due, &ctx).await
    }
}
