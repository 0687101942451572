//! Starting and stopping a whole Postern server.
//!
//! [`App::start`] does the first-start work (data dir, master key, database,
//! first admin, SSH host keys, TLS certificate), binds the listeners and
//! spawns every task under one [`TaskTracker`] with one [`CancellationToken`].
//! [`Running::shutdown`] cancels and waits, bounded by the grace period.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use postern_vault::{InitialAdmin, OpenReport, Vault, VaultOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// Builds the vault options from the config.
pub fn vault_options(cfg: &Config) -> VaultOptions {
    VaultOptions {
        database_url: cfg.vault.database_url.clone(),
        master_key_file: cfg.vault.master_key_file.clone(),
        auth: postern_vault::AuthPolicy {
            lockout_threshold: cfg.auth.lockout_threshold,
            lockout_duration: cfg.auth.lockout_duration,
            token_ttl: cfg.auth.token_ttl,
            min_password_length: cfg.auth.min_password_length,
            deny_new_super_admins: cfg.auth.deny_new_super_admins,
        },
        initial_admin_password_file: Some(initial_password_path(cfg)),
    }
}

/// The effective settings as the web shows them (`GET /api/v1/settings`): every key of
/// [`Config::summary`], with credentials in URLs redacted.
pub fn settings_view(cfg: &Config) -> Vec<(String, String)> {
    cfg.summary()
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_owned(), redact_url_credentials(v)))
        .collect()
}

/// `"postgres://user:pw@host/db"` → `"postgres://user:***@host/db"`; a query string (tokens in
/// webhook URLs) becomes `?***`. Other values are unchanged.
fn redact_url_credentials(v: &str) -> String {
    let Some(scheme_end) = v.find("://") else {
        return v.to_owned();
    };
    let (head, rest) = v.split_at(scheme_end + 3);
    let (rest, quote) = match rest.strip_suffix('"') {
        Some(r) => (r, "\""),
        None => (rest, ""),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?***"),
        None => path.to_owned(),
    };
    format!("{head}{authority}{path}{quote}")
}

/// `<data>/initial-admin-password`.
pub fn initial_password_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("initial-admin-password")
}

/// Creates the data directory (mode 0700).
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {} to mode 0700", dir.display()))?;
        }
    }
    Ok(())
}

/// An exclusive lock on the data directory: one server (or one master-key
/// rotation) at a time. Released when dropped.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("postern.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => Ok(DataDirLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is locked: another Postern server (or a master-key rotation) is using this data directory",
                data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// What the first start created, to tell the operator.
#[derive(Debug, Default)]
pub struct StartReport {
    /// Vault open report (master key created, database created...).
    pub vault: OpenReport,
    /// The first admin, when it was just created.
    pub initial_admin: Option<InitialAdmin>,
    /// Where the initial admin password was written.
    pub initial_password_file: Option<PathBuf>,
    /// SSH host key files created.
    pub host_keys_created: Vec<PathBuf>,
    /// SSH host key fingerprints.
    pub host_key_fingerprints: Vec<String>,
    /// TLS certificate generated at this path.
    pub tls_generated: Option<PathBuf>,
    /// Recording signing key generated at this path.
    pub recording_key_created: Option<PathBuf>,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The web/API address actually bound (useful with port 0).
    pub web_addr: SocketAddr,
    /// The SSH gateway address actually bound.
    pub ssh_addr: SocketAddr,
    /// The RDP gateway address actually bound.
    pub rdp_addr: SocketAddr,
    /// Live gateway sessions.
    pub registry: postern_gateway::Registry,
    /// Live output hubs of the sessions being recorded (what viewers watch).
    pub hubs: crate::recording::LiveHubs,
    /// The vault (tests use it directly).
    pub vault: Vault,
    /// What was created on this start.
    pub report: StartReport,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    _lock: DataDirLock,
}

/// The server.
pub struct App;

impl App {
    /// Does the first-start work, binds and spawns everything.
    pub async fn start(cfg: &Config) -> Result<Running> {
        ensure_data_dir(&cfg.data_dir)?;
        let lock = DataDirLock::acquire(&cfg.data_dir)?;
        let (vault, open_report) = Vault::open(vault_options(cfg)).await.context("opening the vault")?;
        let mut report = StartReport {
            vault: open_report,
            ..Default::default()
        };
        report.initial_admin = vault
            .bootstrap_admin()
            .await
            .context("creating the first administrator")?;
        if report.initial_admin.is_some() {
            report.initial_password_file = Some(initial_password_path(cfg));
        }
        let interrupted = vault
            .mark_interrupted_recordings()
            .await
            .context("checking the recordings catalog")?;
        if !interrupted.is_empty() {
            tracing::warn!(
                count = interrupted.len(),
                "recordings left unsealed by the last stop are marked truncated"
            );
        }
        let keys = postern_gateway::hostkeys::ensure(&cfg.ssh.host_key_dir).context("SSH host keys")?;
        let (recording_key, created) =
            crate::recording::ensure_signing_key(&cfg.data_dir).context("the recording signing key")?;
        if created {
            report.recording_key_created = Some(crate::recording::signing_key_path(&cfg.data_dir));
        }
        let ssh_listener = tokio::net::TcpListener::bind(cfg.ssh.listen)
            .await
            .with_context(|| format!("binding the SSH listener on {}", cfg.ssh.listen))?;
        let ssh_addr = ssh_listener.local_addr()?;
        report.host_keys_created = keys.created.clone();
        report.host_key_fingerprints = keys.fingerprints();
        if crate::tls::ensure_self_signed(&cfg.web.tls_cert, &cfg.web.tls_key, cfg.web.listen)? {
            report.tls_generated = Some(cfg.web.tls_cert.clone());
        }
        let tls =
            postern_web::load_tls(&cfg.web.tls_cert, &cfg.web.tls_key).context("loading the web TLS certificate")?;
        let rdp_listener = tokio::net::TcpListener::bind(cfg.rdp.listen)
            .await
            .with_context(|| format!("binding the RDP listener on {}", cfg.rdp.listen))?;
        let rdp_addr = rdp_listener.local_addr()?;
        let listener = tokio::net::TcpListener::bind(cfg.web.listen)
            .await
            .with_context(|| format!("binding the web listener on {}", cfg.web.listen))?;
        let web_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = postern_gateway::Registry::default();
        let hubs = crate::recording::LiveHubs::default();
        let indexer = crate::recording::spawn_indexer(vault.clone(), &tracker, shutdown.clone());
        let recording_public_key = recording_key.verifying_key();
        if cfg.recording.retention_days > 0 {
            let (vault, token, days) = (vault.clone(), shutdown.clone(), cfg.recording.retention_days);
            tracker.spawn(async move {
                loop {
                    if let Err(e) = crate::recording::purge_expired(&vault, days).await {
                        tracing::error!(error = %e, "purging expired recordings failed");
                    }
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(RETENTION_PERIOD) => {}
                    }
                }
            });
        }
        let sinks: Arc<crate::recording::RecorderSinks> = Arc::new(crate::recording::RecorderSinks::new(
            cfg.data_dir.join("recordings"),
            recording_key,
            cfg.recording.record_input,
            vault.clone(),
            hubs.clone(),
            indexer,
            tracker.clone(),
        ));
        let ssh = postern_gateway::ssh::SshGateway::new(
            vault.clone(),
            registry.clone(),
            sinks.clone(),
            postern_gateway::ssh::SshSettings {
                host_keys: keys,
                connect_timeout: cfg.ssh.connect_timeout,
                login_grace_time: cfg.ssh.login_grace_time,
                idle_timeout: cfg.ssh.idle_timeout,
                max_session_duration: (!cfg.ssh.max_session_duration.is_zero()).then_some(cfg.ssh.max_session_duration),
                max_connections: cfg.ssh.max_connections as usize,
                accept_any_target_host_key: cfg.ssh.dangerous.accept_any_target_host_key,
            },
        );
        // RDP: TLS security with the web's certificate; timeouts and limits as for SSH.
        // One-time tickets (NLA clients, TOTP users): issued by the web, used by the gateway, in memory only.
        let rdp_tickets = Arc::new(postern_gateway::rdp::RdpTickets::new(cfg.rdp.ticket_ttl));
        let rdp = postern_gateway::rdp::RdpGateway::with_tickets(
            vault.clone(),
            registry.clone(),
            sinks,
            postern_gateway::rdp::RdpSettings {
                tls_cert: cfg.web.tls_cert.clone(),
                tls_key: cfg.web.tls_key.clone(),
                connect_timeout: cfg.ssh.connect_timeout,
                login_grace_time: cfg.ssh.login_grace_time,
                idle_timeout: cfg.ssh.idle_timeout,
                max_session_duration: (!cfg.ssh.max_session_duration.is_zero()).then_some(cfg.ssh.max_session_duration),
                max_connections: cfg.ssh.max_connections as usize,
                accept_any_target_certificate: cfg.rdp.dangerous.accept_any_target_certificate,
            },
            rdp_tickets.clone(),
        )
        .context("the RDP gateway")?;
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = rdp.serve(rdp_listener, token).await {
                tracing::error!(error = %e, "RDP gateway stopped with an error");
            }
        });
        let terminals = crate::terminals::GatewayTerminals {
            gateway: ssh.clone(),
            vault: vault.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        };
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = ssh.serve(ssh_listener, token).await {
                tracing::error!(error = %e, "SSH gateway stopped with an error");
            }
        });
        if cfg.ssh.dangerous.accept_any_target_host_key {
            tracing::warn!("[ssh.dangerous] accept_any_target_host_key is on: changed target host keys are accepted");
        }
        if cfg.rdp.dangerous.accept_any_target_certificate {
            tracing::warn!(
                "[rdp.dangerous] accept_any_target_certificate is on: changed RDP target certificates are accepted"
            );
        }
        wire_workflows(cfg, &vault, &registry, &tracker, &shutdown)?;
        let state = postern_web::AppState::new(vault.clone())
            .with_settings(settings_view(cfg))
            .with_live(Arc::new(LiveRegistry {
                registry: registry.clone(),
                hubs: hubs.clone(),
                recordings: cfg.data_dir.join("recordings"),
            }))
            .with_recording_key(recording_public_key)
            .with_options(postern_web::WebOptions {
                session_idle_timeout: cfg.web.session_idle_timeout,
                ui: postern_web::IpRules {
                    allow: cfg.web.ui_allow.clone(),
                    deny: cfg.web.ui_deny.clone(),
                },
                api: postern_web::IpRules {
                    allow: cfg.web.api_allow.clone(),
                    deny: cfg.web.api_deny.clone(),
                },
            })
            .with_terminals(Arc::new(terminals))
            .with_rdp_tickets(Arc::new(crate::rdp_tickets::GatewayRdpTickets {
                tickets: rdp_tickets,
                vault: vault.clone(),
                gateway: rdp_addr,
            }));
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = postern_web::serve(listener, tls, state, token).await {
                tracing::error!(error = %e, "web server stopped with an error");
            }
        });
        tracker.close();
        tracing::info!(addr = %ssh_addr, "SSH gateway listening");
        tracing::info!(addr = %rdp_addr, "RDP gateway listening");
        tracing::info!(addr = %web_addr, url = %format!("https://{web_addr}/"), "web console and API listening");
        Ok(Running {
            web_addr,
            ssh_addr,
            rdp_addr,
            registry,
            hubs,
            vault,
            report,
            shutdown,
            tracker,
            grace: cfg.shutdown_grace,
            _lock: lock,
        })
    }
}

impl Running {
    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server is told to stop (by [`Self::shutdown_token`]).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops every task: cancel, then wait at most the grace period.
    /// Returns false when some task did not finish in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        let vault = self.vault.clone();
        let tracker = self.tracker.clone();
        tokio::time::timeout(self.grace, async move {
            tracker.wait().await;
            vault.close().await;
        })
        .await
        .is_ok()
    }
}

/// Wires the vault's workflows to the rest of the server: the SSH resetter for
/// Linux/Unix resources, the ticket webhook, a task that ends a user's gateway
/// sessions on an account when their access request is checked in, and the
/// periodic sweep that checks in expired check-outs and rotates passwords past
/// their policy's maximum age.
fn wire_workflows(
    cfg: &Config,
    vault: &Vault,
    registry: &postern_gateway::Registry,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<()> {
    vault.set_tasks(tracker.clone(), shutdown.clone());
    vault.set_require_reason(cfg.vault.require_reason);
    let resetter = Arc::new(postern_gateway::reset::SshResetter {
        timeout: cfg.ssh.connect_timeout.max(Duration::from_secs(10)),
    });
    vault.set_resetter(postern_vault::ResourceType::Linux, resetter.clone());
    vault.set_resetter(postern_vault::ResourceType::Unix, resetter);
    if !cfg.vault.ticket_webhook_url.is_empty() {
        let v = crate::tickets::WebhookValidator::new(&cfg.vault.ticket_webhook_url)
            .context("building the ticket webhook client")?;
        vault.set_ticket_validator(Arc::new(v));
    }
    let mut events = vault.subscribe();
    let (reg, token) = (registry.clone(), shutdown.clone());
    tracker.spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = token.cancelled() => break,
            };
            match ev {
                Ok(postern_vault::VaultEvent::CheckedIn {
                    account_label,
                    username,
                    ..
                }) => {
                    for s in reg.list() {
                        if s.user == username && s.target == account_label {
                            reg.terminate(&s.id, "postern", "the access request was checked in");
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "vault events were dropped"),
                Err(RecvError::Closed) => break,
            }
        }
    });
    let (v, token, every) = (vault.clone(), shutdown.clone(), cfg.vault.sweep_interval);
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = token.cancelled() => break,
            }
            let swept = tokio::select! {
                r = v.expire_checkouts(time::OffsetDateTime::now_utc()) => r,
                _ = token.cancelled() => break,
            };
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::info!(checked_in = n, "expired check-outs checked in"),
                Err(e) => tracing::warn!(error = %e, "checking in expired check-outs failed"),
            }
            let rotated = tokio::select! {
                r = v.rotate_aged_passwords(time::OffsetDateTime::now_utc()) => r,
                _ = token.cancelled() => break,
            };
            match rotated {
                Ok(r) if r.is_empty() => {}
                Ok(r) => tracing::info!(
                    rotated = r.iter().filter(|x| x.outcome == "ok").count(),
                    failed = r.iter().filter(|x| x.outcome != "ok").count(),
                    "passwords past their maximum age rotated"
                ),
                Err(e) => tracing::warn!(error = %e, "rotating aged passwords failed"),
            }
        }
    });
    Ok(())
}

/// How often expired recordings are purged (when `[recording] retention_days` is set).
pub const RETENTION_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The web's view of the gateway's live sessions and their output hubs.
struct LiveRegistry {
    registry: postern_gateway::Registry,
    hubs: crate::recording::LiveHubs,
    /// Where the recordings are (a live RDP viewer rebuilds the desktop from its session's file).
    recordings: std::path::PathBuf,
}

/// A viewer's feed from a session's hub.
struct HubFeed(postern_recorder::Subscriber);

impl postern_web::WatchFeed for HubFeed {
    fn next(&mut self) -> postern_web::WatchNext<'_> {
        Box::pin(async move {
            self.0.recv().await.map_err(|e| match e {
                postern_recorder::Error::Lagged => postern_web::WatchEnd::TooSlow,
                _ => postern_web::WatchEnd::SessionEnded,
            })
        })
    }
}

impl postern_web::LiveSessions for LiveRegistry {
    fn list(&self) -> Vec<postern_web::LiveSession> {
        self.registry
            .list()
            .into_iter()
            .map(|s| postern_web::LiveSession {
                id: s.id,
                user: s.user,
                target: s.target,
                protocol: s.protocol.to_owned(),
                client: s.client.map(|c| c.to_string()),
                started_at: s.started_at,
            })
            .collect()
    }

    fn terminate(&self, id: &str, by: &str, reason: &str) -> bool {
        self.registry.terminate(id, by, reason)
    }

    fn watch(&self, id: &str) -> Option<postern_web::Watch> {
        let hub = self.hubs.get(id)?;
        if self.registry.list().iter().any(|s| s.id == id && s.protocol == "rdp") {
            // RDP: PNG frames of the desktop, decoded here.
            let path = postern_recorder::recording_path(&self.recordings, id).ok()?;
            return Some(crate::rdp_live::watch(&hub, path));
        }
        let (snapshot, sub) = hub.subscribe();
        Some(postern_web::Watch {
            snapshot,
            feed: Box::new(HubFeed(sub)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_redacted_in_the_settings_view() {
        assert_eq!(
            redact_url_credentials("\"postgres://pam:s3cret@db:5432/pam\""),
            "\"postgres://pam:***@db:5432/pam\""
        );
        assert_eq!(
            redact_url_credentials("\"https://t.example/check?token=abc\""),
            "\"https://t.example/check?***\""
        );
        assert_eq!(
            redact_url_credentials("\"sqlite:///var/lib/postern/db\""),
            "\"sqlite:///var/lib/postern/db\""
        );
        assert_eq!(redact_url_credentials("\"15m\""), "\"15m\"");
        let cfg = Config::default();
        let view = settings_view(&cfg);
        assert_eq!(view.len(), cfg.summary().lines().count());
        assert!(view.iter().any(|(k, _)| k == "ssh.idle_timeout"));
    }
}
