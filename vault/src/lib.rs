//! Postern's vault: the domain, its storage, crypto, authorization, audit and workflows.
//!
//! Everything goes through [`Vault`]: the CLI, the web API and the gateway call
//! the same methods, which authorize with [`authz::authorize`], act, and append
//! to the audit chain in the same transaction. Plaintext secrets leave only in a
//! [`Lease`].

#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod crypto;
pub mod error;
pub mod gateway;
mod import;
mod jobs;
pub mod model;
mod ownership;
mod recordings;
pub mod reset;
mod resources;
mod roles;
mod rotation;
pub mod secret;
mod sharing;
mod store;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

pub use access::{
    AccessPolicy, AccessRequest, ExclusiveMode, NewAccessRequest, RequestState, TicketCheck, TicketValidator,
    VaultEvent,
};
pub use audit::{AuditEvent, AuditFilter, AuditVerification};
pub use auth::AuthPolicy;
pub use authz::{authorize, Access, Action, Decision, Object, OpSet, Operation, ShareLevel};
pub use error::{Error, MasterKeyProblem, ResetStage, Result};
pub use gateway::{NewUserKey, PinnedHostKey, SessionTarget, UserKey, RDP_CERTIFICATE_PIN};
pub use import::{ImportReport, ImportRowError};
pub use jobs::{Job, MAX_JOBS};
pub use model::*;
pub use ownership::{ExitEntry, TransferReport, TransferRequest};
pub use recordings::{
    fts_query, NewRecording, RecordingAccess, RecordingDetail, RecordingEnd, RecordingFilter, RecordingInfo,
    RecordingMarker, RecordingStatus, SearchHit, SearchResult, TextLine,
};
pub use reset::{NewPasswordPolicy, PasswordPolicy, ResetResult, ResetTarget, Resetter, StoredPolicy};
pub use resources::{AccountPatch, NewAccount, NewResource, ResourcePatch};
pub use roles::{CatalogueEntry, RoleChange, RoleInfo, RoleProposal};
pub use rotation::{DuePassword, DUE_WITHIN_DAYS};
pub use secret::{Lease, SecretKind, SecretString};
pub use sharing::{NewGroup, NewShare, Share};
pub use store::{format_ts, now, parse_ts};
pub use users::{IssuedToken, LoginRequest, NewUser, TotpEnrollment, UserPatch};

use crypto::{KeyFiles, Keyring, MasterKey};
use store::Store;

/// How to open the vault.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// `sqlite://path` (created when missing).
    pub database_url: String,
    /// The master key file (created with mode 0600 on first start).
    pub master_key_file: PathBuf,
    /// Authentication policy.
    pub auth: AuthPolicy,
    /// Where the first admin's generated password is written (mode 0600); the
    /// file is removed when that password is changed.
    pub initial_admin_password_file: Option<PathBuf>,
}

/// What `open` had to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A new database was created.
    pub created_database: bool,
    /// A new master key was generated and written to this file.
    pub created_master_key: Option<PathBuf>,
    /// An interrupted master-key rotation was found; both keys are in use until
    /// `rotate-master-key` is run again.
    pub rotation_pending: bool,
    /// Id of the current master key.
    pub master_key_id: String,
}

/// The first administrator, created on first start.
#[derive(Debug)]
pub struct InitialAdmin {
    /// User name (`admin`).
    pub username: String,
    /// The generated password, to show once.
    pub password: SecretString,
}

/// Progress of a master-key rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Id of the old key.
    pub old_key_id: String,
    /// Id of the new key.
    pub new_key_id: String,
    /// Secrets re-wrapped in this run.
    pub rewrapped: u64,
    /// The run resumed an interrupted rotation.
    pub resumed: bool,
}

/// The vault. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Vault {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    keys: std::sync::RwLock<Keyring>,
    key_files: KeyFiles,
    policy: AuthPolicy,
    initial_password_file: Option<PathBuf>,
    /// Bounds concurrent argon2 checks (19 MiB each): memory and CPU stay flat under a login storm.
    hash_slots: tokio::sync::Semaphore,
    /// Work areas of those checks, reused (see [`auth::HashMemory`]).
    hash_memory: Arc<auth::HashMemory>,
    /// Password resetters by resource type (wired by the root).
    resetters: std::sync::RwLock<reset::Resetters>,
    /// Events for the rest of the server (bounded).
    events: tokio::sync::broadcast::Sender<VaultEvent>,
    /// Background password jobs.
    jobs: jobs::Jobs,
    /// `[vault] require_reason`: reasons are mandatory for retrievals and sessions.
    require_reason: std::sync::atomic::AtomicBool,
    /// Ticket validator for access requests (wired by the root).
    tickets: std::sync::RwLock<Option<Arc<dyn TicketValidator>>>,
}

impl std::fmt::Debug for dyn TicketValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketValidator")
    }
}

const META_KEY_ID: &str = "master_key_id";
const META_KEY_CHECK: &str = "master_key_check";
const META_INITIAL_ADMIN: &str = "initial_admin_id";

fn write_private_file(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

impl Vault {
    /// Opens the database (creating and migrating it) and the master key.
    ///
    /// A new master key is generated only for a database that has never had
    /// one; for an existing database a missing or wrong key file is an error
    /// and nothing is written.
    pub async fn open(opts: VaultOptions) -> Result<(Vault, OpenReport)> {
        let (store, created_database) = Store::open(&opts.database_url).await?;
        let key_files = KeyFiles {
            current: opts.master_key_file.clone(),
        };
        let file_key = MasterKey::load(&key_files.current)?;
        let next_key = MasterKey::load(&key_files.next())?;
        let check = store.meta(META_KEY_CHECK).await?;
        let expected = store.meta(META_KEY_ID).await?.unwrap_or_default();
        let mut report = OpenReport {
            created_database,
            ..Default::default()
        };
        let keyring = match (check, file_key) {
            (None, file_key) => {
                let sealed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sealed")
                    .fetch_one(&store.pool)
                    .await?;
                if sealed > 0 {
                    return Err(Error::Corrupt {
                        table: "meta",
                        id: META_KEY_CHECK.into(),
                        detail: "the master key check value is missing but secrets exist".into(),
                    });
                }
                let key = match file_key {
                    Some(k) => k,
                    None => {
                        let k = MasterKey::generate();
                        k.write_new(&key_files.current)?;
                        report.created_master_key = Some(key_files.current.clone());
                        k
                    }
                };
                let mut w = store.write().await?;
                store::set_meta(&mut w.tx, META_KEY_ID, key.id()).await?;
                store::set_meta(&mut w.tx, META_KEY_CHECK, &key.check_value()).await?;
                w.commit().await?;
                Keyring::new(key)
            }
            (Some(_), None) => {
                return Err(Error::MasterKey {
                    path: key_files.current.clone(),
                    problem: MasterKeyProblem::Missing { expected },
                })
            }
            (Some(check), Some(file_key)) => {
                if file_key.verify_check_value(&check) {
                    match next_key {
                        Some(next) => {
                            report.rotation_pending = true;
                            Keyring::new(file_key).with_extra(next)
                        }
                        None => Keyring::new(file_key),
                    }
                } else if let Some(next) = next_key.filter(|n| n.verify_check_value(&check)) {
                    // Rotation finished re-wrapping but the file was not renamed yet.
                    report.rotation_pending = true;
                    Keyring::new(next).with_extra(file_key)
                } else {
                    return Err(Error::MasterKey {
                        path: key_files.current.clone(),
                        problem: MasterKeyProblem::WrongKey {
                            expected,
                            found: file_key.id().to_owned(),
                        },
                    });
                }
            }
        };
        report.master_key_id = keyring.current().id().to_owned();
        let vault = Vault {
            inner: Arc::new(Inner {
                store,
                keys: std::sync::RwLock::new(keyring),
                key_files,
                policy: opts.auth,
                initial_password_file: opts.initial_admin_password_file,
                hash_slots: tokio::sync::Semaphore::new(2),
                hash_memory: Arc::default(),
                resetters: Default::default(),
                events: tokio::sync::broadcast::channel(256).0,
                tickets: Default::default(),
                jobs: Default::default(),
                require_reason: Default::default(),
            }),
        };
        Ok((vault, report))
    }

    /// Verifies a password against its hash off the async threads, at most two at a time.
    pub(crate) async fn verify_password(&self, hash: Option<String>, pw: SecretString) -> Result<bool> {
        let _slot = self
            .inner
            .hash_slots
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mem = self.inner.hash_memory.clone();
        tokio::task::spawn_blocking(move || auth::verify_password_in(&mem, hash.as_deref(), pw.expose()))
            .await
            .map_err(|e| Error::Internal(format!("password check task: {e}")))
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn keys(&self) -> Keyring {
        self.inner.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The authentication policy in force.
    pub fn policy(&self) -> &AuthPolicy {
        &self.inner.policy
    }

    /// Creates the first administrator `admin` with a random password when
    /// the vault has no users. Returns it so the caller can show it once.
    pub async fn bootstrap_admin(&self) -> Result<Option<InitialAdmin>> {
        let mut w = self.store().write().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *w.tx)
            .await?;
        if n > 0 {
            return Ok(None);
        }
        let password = auth::generate_password();
        let hash = auth::hash_password(password.expose())?;
        let id = store::new_id();
        let now = store::now();
        sqlx::query(
            "INSERT INTO users (id, username, role, super_admin, password_hash, must_change_password, created_at, updated_at) \
             VALUES ($1, 'admin', 'privileged_administrator', 1, $2, 1, $3, $3)",
        )
        .bind(&id)
        .bind(&hash)
        .bind(&now)
        .execute(&mut *w.tx)
        .await?;
        store::set_meta(&mut w.tx, META_INITIAL_ADMIN, &id).await?;
        if let Some(path) = &self.inner.initial_password_file {
            write_private_file(path, password.expose())?;
        }
        let system = Actor::system();
        audit::append(
            &mut w.tx,
            audit::NewEvent::by(&system, "user.create", "user")
                .object(&id, "admin")
                .detail("first administrator created on first start (privileged_administrator, super admin)"),
            &RequestContext::default(),
        )
        .await?;
        w.commit().await?;
        Ok(Some(InitialAdmin {
            username: "admin".into(),
            password,
        }))
    }

    /// Lists audit events, newest first (needs the View audit operation).
    pub async fn audit_events(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
        ctx: &RequestContext,
    ) -> Result<Vec<AuditEvent>> {
        self.require(
            actor,
            Action::ViewAudit,
            Object::System,
            "audit.view",
            "audit",
            None,
            ctx,
        )
        .await?;
        let mut q = sqlx::QueryBuilder::<store::Db>::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(a) = &filter.actor {
            q.push(" AND actor_name = ").push_bind(a.clone());
        }
        if let Some(a) = &filter.action {
            if let Some(prefix) = a.strip_suffix('.') {
                q.push(" AND substr(action, 1, ")
                    .push_bind(prefix.len() as i64 + 1)
                    .push(") = ")
                    .push_bind(format!("{prefix}."));
            } else {
                q.push(" AND action = ").push_bind(a.clone());
            }
        }
        if let Some(o) = &filter.object_id {
            q.push(" AND object_id = ").push_bind(o.clone());
        }
        if let Some(o) = &filter.outcome {
            q.push(" AND outcome = ").push_bind(o.clone());
        }
        for (field, v, op) in [
            ("since", &filter.since, " AND at >= "),
            ("until", &filter.until, " AND at < "),
        ] {
            if let Some(v) = v {
                let t = parse_ts(v)
                    .ok_or_else(|| Error::invalid(field, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"))?;
                q.push(op).push_bind(format_ts(t));
            }
        }
        if let Some(b) = filter.before_seq {
            q.push(" AND seq < ").push_bind(b);
        }
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 1000));
        q.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.store().pool).await?;
        rows.iter().map(AuditEvent::from_row).collect()
    }

    /// Walks the audit chain.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        audit::verify(&self.store().pool).await
    }

    /// Re-wraps every sealed secret under a new master key.
    ///
    /// Crash-safe: the new key is written (fsynced) to `<key>.next` first; rows
    /// are re-wrapped in small committed batches; the check value is switched;
    /// only then is `<key>.next` renamed over the key file. Killed anywhere, the
    /// next open holds both keys and every secret stays readable; running the
    /// command again resumes. Run it with the server stopped.
    pub async fn rotate_master_key(&self, batch_size: usize, pause: std::time::Duration) -> Result<RotationReport> {
        let files = &self.inner.key_files;
        let next_path = files.next();
        let (next, resumed) = match MasterKey::load(&next_path)? {
            Some(k) => (k, true),
            None => {
                let k = MasterKey::generate();
                k.write_new(&next_path)?;
                crypto_sync_dir(&next_path);
                (k, false)
            }
        };
        let old = self.keys();
        let mut report = RotationReport {
            old_key_id: old.current().id().to_owned(),
            new_key_id: next.id().to_owned(),
            rewrapped: 0,
            resumed,
        };
        let mut ring = Keyring::new(next.clone());
        for k in old.all() {
            ring = ring.with_extra(k.clone());
        }
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = ring.clone();
        let batch = batch_size.max(1) as i64;
        loop {
            let mut w = self.store().write().await?;
            let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
                "SELECT owner, key_id, wrapped_dek, ciphertext FROM sealed WHERE key_id <> $1 ORDER BY owner LIMIT $2",
            )
            .bind(next.id())
            .bind(batch)
            .fetch_all(&mut *w.tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for (owner, key_id, wrapped_dek, ciphertext) in rows {
                let sealed = crypto::Sealed {
                    key_id,
                    wrapped_dek,
                    ciphertext,
                };
                let new = ring.rewrap(&owner, &sealed)?;
                sqlx::query("UPDATE sealed SET key_id = $1, wrapped_dek = $2 WHERE owner = $3")
                    .bind(&new.key_id)
                    .bind(&new.wrapped_dek)
                    .bind(&owner)
                    .execute(&mut *w.tx)
                    .await?;
                report.rewrapped += 1;
            }
            w.commit().await?;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        let mut w = self.store().write().await?;
        store::set_meta(&mut w.tx, META_KEY_ID, next.id()).await?;
        store::set_meta(&mut w.tx, META_KEY_CHECK, &next.check_value()).await?;
        let system = Actor::system();
        let detail = format!(
            "master key rotated from {} to {}; {} secrets re-wrapped{}",
            report.old_key_id,
            report.new_key_id,
            report.rewrapped,
            if resumed { " (resumed)" } else { "" }
        );
        audit::append(
            &mut w.tx,
            audit::NewEvent::by(&system, "vault.rotate_master_key", "vault").detail(detail),
            &RequestContext::default(),
        )
        .await?;
        w.commit().await?;
        std::fs::rename(&next_path, &files.current).map_err(|e| Error::io(&files.current, e))?;
        crypto_sync_dir(&files.current);
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Keyring::new(next);
        Ok(report)
    }

    /// Removes the initial-password file once the first admin's password changed.
    pub(crate) async fn forget_initial_password(&self, user_id: &str) {
        let Some(path) = &self.inner.initial_password_file else {
            return;
        };
        if let Ok(Some(id)) = self.store().meta(META_INITIAL_ADMIN).await {
            if id == user_id {
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "initial admin password changed; removed the initial password file")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove the initial password file")
                    }
                }
            }
        }
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.store().pool.close().await;
    }
}

fn crypto_sync_dir(path: &std::path::Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(f) = std::fs::File::open(dir) {
            let _ = f.sync_all();
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub async fn vault(dir: &std::path::Path) -> Vault {
        let opts = VaultOptions {
            database_url: format!("sqlite://{}", dir.join("v.db").display()),
            master_key_file: dir.join("master.key"),
            auth: AuthPolicy {
                lockout_threshold: 3,
                ..AuthPolicy::default()
            },
            initial_admin_password_file: None,
        };
        Vault::open(opts).await.unwrap().0
    }

    /// A user (no password: fast) and its actor.
    pub async fn user(v: &Vault, name: &str, role: Role) -> Actor {
        let u = v
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.into(),
                    role,
                    email: None,
                    password: None,
                    super_admin: false,
                    must_change_password: None,
                },
                &RequestContext::default(),
            )
            .await
            .unwrap();
        v.user_row(&u.id).await.unwrap().unwrap().to_actor().unwrap()
    }

    /// A Linux resource at 127.0.0.1.
    pub fn linux(name: &str) -> NewResource {
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

    /// A password account.
    pub fn account(login: &str, pw: &str) -> NewAccount {
        NewAccount {
            login: login.into(),
            password: Some(pw.into()),
            private_key: None,
            notes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &std::path::Path) -> VaultOptions {
        VaultOptions {
            database_url: format!("sqlite://{}", dir.join("v.db").display()),
            master_key_file: dir.join("master.key"),
            auth: AuthPolicy::default(),
            initial_admin_password_file: Some(dir.join("initial-admin-password")),
        }
    }

    #[tokio::test]
    async fn first_open_creates_key_then_wrong_or_missing_key_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (v, r) = Vault::open(opts(dir.path())).await.unwrap();
        assert!(r.created_database);
        assert!(r.created_master_key.is_some());
        let admin = v.bootstrap_admin().await.unwrap().unwrap();
        assert_eq!(admin.username, "admin");
        assert!(v.bootstrap_admin().await.unwrap().is_none());
        v.close().await;
        // Reopen with the same key: fine, nothing created.
        let (v, r) = Vault::open(opts(dir.path())).await.unwrap();
        assert!(r.created_master_key.is_none() && !r.created_database);
        v.close().await;
        // Wrong key.
        let key = dir.path().join("master.key");
        let good = std::fs::read(&key).unwrap();
        std::fs::remove_file(&key).unwrap();
        MasterKey::generate().write_new(&key).unwrap();
        let e = Vault::open(opts(dir.path())).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::MasterKey {
                    problem: MasterKeyProblem::WrongKey { .. },
                    ..
                }
            ),
            "{e}"
        );
        // Missing key: refused, and no new key is written.
        std::fs::remove_file(&key).unwrap();
        let e = Vault::open(opts(dir.path())).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::MasterKey {
                    problem: MasterKeyProblem::Missing { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(!key.exists());
        std::fs::write(&key, good).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Vault::open(opts(dir.path())).await.unwrap();
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use crate::testutil::vault;

    #[tokio::test]
    async fn rotation_rewraps_and_interrupted_rotation_keeps_everything_readable() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let r = v
            .create_resource(
                &sys,
                NewResource {
                    name: "r".into(),
                    resource_type: ResourceType::Linux,
                    host: "h".into(),
                    port: None,
                    description: None,
                    landing_chain: vec![],
                    extra: Default::default(),
                    allow_port_forwarding: false,
                    allow_agent_forwarding: false,
                    allow_clipboard: false,
                    allow_drive: false,
                },
                &ctx,
            )
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let a = v
                .create_account(
                    &sys,
                    &r.id,
                    NewAccount {
                        login: format!("u{i}"),
                        password: Some(format!("pw{i}").into()),
                        private_key: None,
                        notes: None,
                    },
                    &ctx,
                )
                .await
                .unwrap();
            ids.push(a.id);
        }
        let old_id = v.keys().current().id().to_owned();
        // Simulate a rotation killed after re-wrapping two rows: a next key on
        // disk and a mix of rows.
        let next = MasterKey::generate();
        next.write_new(&v.inner.key_files.next()).unwrap();
        let ring = Keyring::new(next.clone()).with_extra(v.keys().current().clone());
        for id in &ids[..2] {
            let owner = resources::secret_owner(id, SecretKind::Password);
            let (key_id, wrapped_dek, ciphertext): (String, Vec<u8>, Vec<u8>) =
                sqlx::query_as("SELECT key_id, wrapped_dek, ciphertext FROM sealed WHERE owner = $1")
                    .bind(&owner)
                    .fetch_one(&v.store().pool)
                    .await
                    .unwrap();
            let s = ring
                .rewrap(
                    &owner,
                    &crypto::Sealed {
                        key_id,
                        wrapped_dek,
                        ciphertext,
                    },
                )
                .unwrap();
            sqlx::query("UPDATE sealed SET key_id = $1, wrapped_dek = $2 WHERE owner = $3")
                .bind(&s.key_id)
                .bind(&s.wrapped_dek)
                .bind(&owner)
                .execute(&v.store().pool)
                .await
                .unwrap();
        }
        v.close().await;
        let (v, report) = Vault::open(testutil_opts(dir.path())).await.unwrap();
        assert!(report.rotation_pending);
        for (i, id) in ids.iter().enumerate() {
            let l = v.retrieve_secret(&sys, id, SecretKind::Password, &ctx).await.unwrap();
            assert_eq!(l.expose_str(), Some(format!("pw{i}").as_str()));
        }
        // Running the rotation again resumes with the same next key.
        let rep = v.rotate_master_key(2, std::time::Duration::ZERO).await.unwrap();
        assert!(rep.resumed);
        assert_eq!(rep.old_key_id, old_id);
        assert_eq!(rep.new_key_id, next.id());
        assert_eq!(rep.rewrapped, 3);
        assert!(!v.inner.key_files.next().exists());
        v.close().await;
        let (v, report) = Vault::open(testutil_opts(dir.path())).await.unwrap();
        assert!(!report.rotation_pending);
        assert_eq!(report.master_key_id, next.id());
        for (i, id) in ids.iter().enumerate() {
            let l = v.retrieve_secret(&sys, id, SecretKind::Password, &ctx).await.unwrap();
            assert_eq!(l.expose_str(), Some(format!("pw{i}").as_str()));
        }
        assert!(v.verify_audit().await.unwrap().first_broken.is_none());
    }

    fn testutil_opts(dir: &std::path::Path) -> VaultOptions {
        VaultOptions {
            database_url: format!("sqlite://{}", dir.join("v.db").display()),
            master_key_file: dir.join("master.key"),
            auth: AuthPolicy::default(),
            initial_admin_password_file: None,
        }
    }

    #[tokio::test]
    async fn audit_chain_detects_a_modified_row() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        v.bootstrap_admin().await.unwrap();
        let ctx = RequestContext::default();
        for i in 0..4 {
            v.create_resource(
                &Actor::system(),
                NewResource {
                    name: format!("r{i}"),
                    resource_type: ResourceType::Linux,
                    host: "h".into(),
                    port: None,
                    description: None,
                    landing_chain: vec![],
                    extra: Default::default(),
                    allow_port_forwarding: false,
                    allow_agent_forwarding: false,
                    allow_clipboard: false,
                    allow_drive: false,
                },
                &ctx,
            )
            .await
            .unwrap();
        }
        let ok = v.verify_audit().await.unwrap();
        assert_eq!(ok.events, 5);
        assert!(ok.first_broken.is_none());
        sqlx::query("UPDATE audit_events SET actor_name = 'mallory' WHERE seq = 3")
            .execute(&v.store().pool)
            .await
            .unwrap();
        let bad = v.verify_audit().await.unwrap();
        assert_eq!(bad.first_broken.unwrap().seq, 3);
        sqlx::query("UPDATE audit_events SET actor_name = 'system' WHERE seq = 3")
            .execute(&v.store().pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_events WHERE seq = 4")
            .execute(&v.store().pool)
            .await
            .unwrap();
        let gap = v.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!(gap.seq, 5);
    }
}
