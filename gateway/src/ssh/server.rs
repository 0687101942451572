//! The SSH listener and the per-connection handler.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_vault::{Actor, LoginRequest, RequestContext, SecretString, SessionTarget, Vault};
use russh::keys::{Algorithm, HashAlg};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument, Span};

use crate::error::Error;
use crate::hostkeys::HostKeys;
use crate::login::{self, Login, TargetName};
use crate::registry::{Registration, Registry, SessionInfo, SessionSink, SinkFactory};
use crate::ssh::readahead::ReadAhead;
use crate::ssh::{relay, target};

/// Settings of the SSH front end (from the `[ssh]` config section).
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// The gateway's host keys.
    pub host_keys: HostKeys,
    /// Timeout to connect and log in to each hop.
    pub connect_timeout: Duration,
    /// Unauthenticated clients are dropped after this.
    pub login_grace_time: Duration,
    /// Sessions without client traffic for this long are closed.
    pub idle_timeout: Duration,
    /// Sessions are ended after this long (`None`: unlimited).
    pub max_session_duration: Option<Duration>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Accept changed target host keys (dangerous).
    pub accept_any_target_host_key: bool,
}

/// The SSH gateway.
pub struct SshGateway {
    vault: Vault,
    registry: Registry,
    sinks: Arc<dyn SinkFactory>,
    settings: SshSettings,
    config: Arc<server::Config>,
    /// Owns every connection task, from the listener and from the web terminal.
    pub(crate) tracker: TaskTracker,
    /// Connections served at once (listener and web terminal together).
    pub(crate) slots: Arc<Semaphore>,
}

/// A user already authenticated elsewhere (the web console, with its second
/// factor): an in-process connection proves it with a one-time key.
#[derive(Clone)]
pub(crate) struct PreAuth {
    pub actor: Actor,
    pub key_blob: Vec<u8>,
}

impl std::fmt::Debug for SshGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshGateway")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn server_config(s: &SshSettings) -> server::Config {
    use russh::{cipher, kex};
    let preferred = russh::Preferred {
        kex: Cow::Owned(vec![
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: Cow::Owned(vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
        ]),
        ..Default::default()
    };
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::KeyboardInteractive);
    methods.push(MethodKind::Password);
    server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Postern")),
        methods,
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![s.host_keys.ed25519.clone(), s.host_keys.rsa.clone()],
        preferred,
        max_auth_attempts: 6,
        inactivity_timeout: Some(s.idle_timeout),
        // A client that stops answering (frozen, network gone) is dropped after three unanswered
        // keepalives, within 6 s of its last packet, so it leaves the live list within 10 s.
        keepalive_interval: Some(Duration::from_secs(2)),
        keepalive_max: 2,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        ..Default::default()
    }
}

impl SshGateway {
    /// A gateway over `vault`, registering sessions in `registry` and recording through `sinks`.
    pub fn new(vault: Vault, registry: Registry, sinks: Arc<dyn SinkFactory>, settings: SshSettings) -> Arc<Self> {
        let config = Arc::new(server_config(&settings));
        let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        Arc::new(SshGateway {
            vault,
            registry,
            sinks,
            settings,
            config,
            tracker: TaskTracker::new(),
            slots,
        })
    }

    /// Serves `listener` until `shutdown`; then disconnects every client and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
        let tracker = self.tracker.clone();
        let slots = self.slots.clone();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "SSH accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                warn!(client = %peer, "SSH connection refused: max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let cancel = shutdown.child_token();
            tracker.spawn(async move {
                gw.connection(stream, peer, cancel, None).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    pub(crate) async fn connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        cancel: CancellationToken,
        pre_auth: Option<PreAuth>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let id = uuid::Uuid::new_v4().to_string();
        let span = info_span!("ssh_session", session.id = %id, user = tracing::field::Empty, target = tracing::field::Empty, client = %peer);
        let authed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            via_web: pre_auth.is_some(),
            gw: self.clone(),
            id: id.clone(),
            peer,
            cancel: cancel.clone(),
            span: span.clone(),
            who: std::sync::Mutex::new(None),
            live: OnceCell::new(),
            client_handle: Arc::new(std::sync::Mutex::new(None)),
            born: Instant::now(),
            last_input_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let handler = Conn {
            shared: shared.clone(),
            authed: authed.clone(),
            kbd: Kbd::Idle,
            key_actor: None,
            pre_auth,
        };
        async move {
            let grace = self.settings.login_grace_time;
            let kill = CancellationToken::new();
            let stream = Killable { inner: ReadAhead::new(stream), killed: Box::pin(kill.clone().cancelled_owned()) };
            let running = match tokio::time::timeout(grace, server::run_stream(self.config.clone(), stream, handler)).await {
                Err(_) => return debug!("no SSH identification within the login grace time"),
                Ok(Err(e)) => return debug!(error = %e, "SSH handshake failed"),
                Ok(Ok(r)) => r,
            };
            let handle = running.handle();
            tokio::pin!(running);
            let login_deadline = tokio::time::sleep(grace);
            tokio::pin!(login_deadline);
            let max = self.settings.max_session_duration.unwrap_or(Duration::from_secs(100 * 365 * 86400));
            let max_deadline = tokio::time::sleep(max);
            tokio::pin!(max_deadline);
            let mut login_checked = false;
            // The idle timeout counts input from the client only: russh's own inactivity timer
            // is reset by the answers to our keepalives, so it never fires for a live client.
            let idle = self.settings.idle_timeout;
            let mut idle_tick = tokio::time::interval(Duration::from_secs(1).min(idle).max(Duration::from_millis(10)));
            idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let ended_by = loop {
                tokio::select! {
                    r = &mut running => {
                        if let Err(e) = r {
                            debug!(error = %e, "SSH connection ended with an error");
                        }
                        break None;
                    }
                    _ = &mut login_deadline, if !login_checked => {
                        login_checked = true;
                        if !authed.load(Ordering::SeqCst) {
                            debug!("not authenticated within the login grace time");
                            break Some("authentication timed out".to_string());
                        }
                    }
                    _ = &mut max_deadline => break Some(format!("the maximum session duration ({}s) was reached", max.as_secs())),
                    _ = idle_tick.tick() => {
                        // A recording that failed while the session was quiet ends it too.
                        if let Some(why) = shared.recording_failure() {
                            break Some(format!("session ended: {why}"));
                        }
                        if shared.idle_for() >= idle {
                            break Some(format!("no input for {}s (idle timeout): session closed", idle.as_secs()));
                        }
                    }
                    _ = cancel.cancelled() => {
                        let why = match self.registry.termination(&id) {
                            Some(t) => format!("session terminated by {}: {}", t.by, t.reason),
                            None => "the gateway is shutting down".to_string(),
                        };
                        break Some(why);
                    }
                }
            };
            if let Some(why) = ended_by {
                shared.notify_all(&why).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    handle.disconnect(russh::Disconnect::ByApplication, why, "en".into()),
                )
                .await;
                if tokio::time::timeout(Duration::from_secs(2), &mut running).await.is_err() {
                    // A client stuck mid-key-exchange never reads the disconnect: cut the socket.
                    kill.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut running).await;
                }
            }
            shared.finish().await;
            cancel.cancel();
        }
        .instrument(span)
        .await
    }
}

/// State shared by the handler and the channel tasks of one connection.
pub(crate) struct Shared {
    /// An in-process connection from the web console's terminal.
    via_web: bool,
    gw: Arc<SshGateway>,
    id: String,
    peer: SocketAddr,
    cancel: CancellationToken,
    span: Span,
    who: std::sync::Mutex<Option<(Actor, Login)>>,
    live: OnceCell<Result<Arc<Live>, String>>,
    client_handle: Arc<std::sync::Mutex<Option<server::Handle>>>,
    /// When the connection was accepted.
    born: Instant,
    /// Milliseconds after `born` of the client's last input (channel data, requests, forwarded bytes).
    last_input_ms: std::sync::atomic::AtomicU64,
}

/// The connected target of a session.
pub(crate) struct Live {
    pub conn: target::Connected,
    pub sink: Arc<dyn SessionSink>,
    pub target: SessionTarget,
    pub started: Instant,
    pub actor: Actor,
    pub label: String,
    pub notices: std::sync::Mutex<Vec<(server::Handle, ChannelId)>>,
    registration: std::sync::Mutex<Option<Registration>>,
}

impl Shared {
    pub(crate) fn ctx(&self) -> RequestContext {
        RequestContext::from_ip(self.peer.ip())
    }

    pub(crate) fn vault(&self) -> &Vault {
        &self.gw.vault
    }

    fn who(&self) -> Option<(Actor, Login)> {
        self.who.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The logged-in target for `name` (connected once per client connection).
    pub(crate) async fn live(&self, name: &TargetName) -> Result<Arc<Live>, String> {
        self.live.get_or_init(|| self.connect(name.clone())).await.clone()
    }

    async fn connect(&self, name: TargetName) -> Result<Arc<Live>, String> {
        let (actor, _) = self.who().ok_or_else(|| "not authenticated".to_string())?;
        let ctx = self.ctx();
        let denied = || format!("no such target, or you may not use it: {name}");
        let target = match self
            .vault()
            .resolve_target(&actor, &name.account, &name.resource, &ctx)
            .await
        {
            Ok(t) => t,
            Err(postern_vault::Error::NotFound { .. }) => return Err(denied()),
            Err(e) => {
                warn!(error = %e, "resolving the target failed");
                return Err("internal error while resolving the target".into());
            }
        };
        let label = format!("{}@{}", target.account.login, target.resource.name);
        self.span.record("target", label.as_str());
        let s = &self.gw.settings;
        let audit: target::ForwardAudit = {
            let (vault, actor, id, label, ctx) = (
                self.vault().clone(),
                actor.clone(),
                target.account.id.clone(),
                label.clone(),
                ctx.clone(),
            );
            Arc::new(move |detail: String| {
                let (vault, actor, id, label, ctx) =
                    (vault.clone(), actor.clone(), id.clone(), label.clone(), ctx.clone());
                tokio::spawn(async move {
                    let _ = vault
                        .audit_gateway(&actor, "session.forward", Some((&id, &label)), false, detail, &ctx)
                        .await;
                });
            })
        };
        let back = target::BackChannel {
            client: self.client_handle.clone(),
            allow_agent: target.resource.allow_agent_forwarding,
            allow_remote: target.resource.allow_port_forwarding,
            audit: Some(audit),
        };
        let conn = match target::connect(
            self.vault(),
            &actor,
            &target,
            s.connect_timeout,
            s.accept_any_target_host_key,
            back,
            &ctx,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let (action, msg) = match &e {
                    Error::Target {
                        host_key_changed: true, ..
                    } => ("session.host_key_mismatch", e.to_string()),
                    Error::Target { .. } => ("session.connect_failed", e.to_string()),
                    other => {
                        warn!(error = %other, "connecting to the target failed");
                        (
                            "session.connect_failed",
                            "internal error while connecting to the target".to_string(),
                        )
                    }
                };
                let _ = self
                    .vault()
                    .audit_gateway(
                        &actor,
                        action,
                        Some((&target.account.id, &label)),
                        true,
                        msg.clone(),
                        &ctx,
                    )
                    .await;
                warn!(%msg, "target connection failed");
                return Err(msg);
            }
        };
        let info = SessionInfo {
            id: self.id.clone(),
            user: actor.username.clone(),
            target: label.clone(),
            protocol: "ssh",
            client: Some(self.peer),
            started_at: postern_vault::now(),
        };
        let sink = self.gw.sinks.open(&info);
        let registration = self.gw.registry.register(info, self.cancel.clone());
        let hops: Vec<String> = target
            .hops
            .iter()
            .map(|(r, a)| format!("{}@{}", a.login, r.name))
            .collect();
        let _ = self
            .vault()
            .audit_gateway(
                &actor,
                "session.start",
                Some((&target.account.id, &label)),
                false,
                format!(
                    "{} session {} from {}{}",
                    if self.via_web { "web terminal" } else { "ssh" },
                    self.id,
                    self.peer,
                    if hops.is_empty() {
                        String::new()
                    } else {
                        format!(" via {}", hops.join(" -> "))
                    }
                ),
                &ctx,
            )
            .await;
        info!("session started");
        let live = Arc::new(Live {
            conn,
            sink,
            target,
            started: Instant::now(),
            actor,
            label,
            notices: std::sync::Mutex::new(Vec::new()),
            registration: std::sync::Mutex::new(Some(registration)),
        });
        if let Some(end) = live.target.window_end.as_deref().and_then(postern_vault::parse_ts) {
            self.watch_window(&live, end);
        }
        Ok(live)
    }

    /// Access window of an account under access control: a notice on every
    /// channel 5 minutes before the end (at once when less is left), and the
    /// session ends with the window.
    fn watch_window(&self, live: &Arc<Live>, end: time::OffsetDateTime) {
        const WARN_BEFORE: Duration = Duration::from_secs(5 * 60);
        let left = Duration::try_from(end - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
        let live = Arc::downgrade(live);
        let registry = self.gw.registry.clone();
        let (id, cancel) = (self.id.clone(), self.cancel.clone());
        let end_text = postern_vault::format_ts(end);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            // Give the client a moment to open its channel when the notice is due at once.
            let warn_at = left.saturating_sub(WARN_BEFORE).max(Duration::from_secs(1)).min(left);
            tokio::select! {
                _ = tokio::time::sleep(warn_at) => {}
                _ = cancel.cancelled() => return,
            }
            if let Some(live) = live.upgrade() {
                let mins = left.saturating_sub(warn_at).as_secs().div_ceil(60);
                let msg = format!("\r\npostern: your access window ends at {end_text} (in {mins} min); the session will be closed then\r\n");
                let chans = live.notices.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for (h, ch) in chans {
                    let _ = h.extended_data(ch, 1, bytes::Bytes::from(msg.clone())).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(start + left) => {
                    registry.terminate(&id, "postern", "the access window ended");
                }
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// Tells every open channel why the session ends.
    async fn notify_all(&self, why: &str) {
        if let Some(Ok(live)) = self.live.get() {
            let chans = live.notices.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (h, id) in chans {
                let _ = h
                    .extended_data(id, 1, bytes::Bytes::from(format!("\r\npostern: {why}\r\n")))
                    .await;
            }
        }
    }

    async fn finish(&self) {
        if let Some(Ok(live)) = self.live.get() {
            // Leave the live list as soon as the connection is gone, whatever tasks still hold the session.
            drop(live.registration.lock().unwrap_or_else(|e| e.into_inner()).take());
            let secs = live.started.elapsed().as_secs();
            // Here rather than where the failure is seen: channel tasks may be cancelled mid-audit.
            if let Some(why) = live.sink.failed() {
                let detail = format!("session ended: its recording failed: {why}");
                self.audit_live(live, "session.recording_failed", true, detail).await;
            }
            let recording = match live.sink.close() {
                Some(f) => f.await,
                None => None,
            };
            let _ = self
                .vault()
                .audit_gateway(
                    &live.actor,
                    "session.end",
                    Some((&live.target.account.id, &live.label)),
                    false,
                    format!(
                        "ssh session {} lasted {secs}s{}",
                        self.id,
                        recording.map(|r| format!("; {r}")).unwrap_or_default()
                    ),
                    &self.ctx(),
                )
                .await;
            info!(duration_s = secs, "session ended");
        }
    }
}

enum Kbd {
    Idle,
    AskedPassword,
    AskedTotp(Option<SecretString>),
}

/// The russh handler of one client connection.
struct Conn {
    shared: Arc<Shared>,
    authed: Arc<AtomicBool>,
    kbd: Kbd,
    key_actor: Option<Actor>,
    pre_auth: Option<PreAuth>,
}

fn partial(prompt: &'static str, echo: bool) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("Postern"),
        instructions: Cow::Borrowed(""),
        prompts: Cow::Owned(vec![(Cow::Borrowed(prompt), echo)]),
    }
}

impl Conn {
    fn parse(&self, user: &str) -> Option<Login> {
        match login::parse(user) {
            Ok(l) => Some(l),
            Err(e) => {
                debug!(error = %e, "malformed login name");
                None
            }
        }
    }

    /// The pre-authenticated actor of an in-process connection, when `user` and `blob` are theirs.
    fn pre_authenticated(&self, login: &Login, blob: &[u8]) -> Option<Actor> {
        let p = self.pre_auth.as_ref()?;
        (p.key_blob == blob && p.actor.username == login.user).then(|| p.actor.clone())
    }

    fn accept(&mut self, actor: Actor, login: Login) -> Auth {
        self.shared.span.record("user", actor.username.as_str());
        if let Some(t) = &login.target {
            self.shared.span.record("target", t.to_string().as_str());
        }
        *self.shared.who.lock().unwrap_or_else(|e| e.into_inner()) = Some((actor, login));
        self.authed.store(true, Ordering::SeqCst);
        Auth::Accept
    }

    async fn check_password(&mut self, login: Login, password: SecretString, totp: Option<String>) -> Auth {
        let req = LoginRequest {
            username: login.user.clone(),
            password,
            totp,
        };
        match self
            .shared
            .vault()
            .authenticate_password(&req, &self.shared.ctx())
            .await
        {
            Ok(actor) if !actor.must_change_password => self.accept(actor, login),
            Ok(_) => {
                info!("refused: the user must first change their password in the web console");
                Auth::reject()
            }
            Err(_) => Auth::reject(),
        }
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.pre_auth.is_some() {
            return Ok(Auth::reject());
        }
        let Some(login) = self.parse(user) else {
            return Ok(Auth::reject());
        };
        if password.is_empty() || self.shared.vault().totp_enrolled(&login.user).await.unwrap_or(true) {
            // TOTP users authenticate with keyboard-interactive (password, then code).
            return Ok(Auth::reject());
        }
        Ok(self.check_password(login, SecretString::new(password), None).await)
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        let Some(login) = self.parse(user) else {
            return Ok(Auth::reject());
        };
        let blob = offer.public_key.to_bytes().unwrap_or_default();
        if self.pre_auth.is_some() {
            return Ok(if self.pre_authenticated(&login, &blob).is_some() {
                Auth::Accept
            } else {
                Auth::reject()
            });
        }
        Ok(
            if self
                .shared
                .vault()
                .has_user_key(&login.user, &blob)
                .await
                .unwrap_or(false)
            {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let Some(login) = self.parse(user) else {
            return Ok(Auth::reject());
        };
        let blob = key.public_key.to_bytes().unwrap_or_default();
        if self.pre_auth.is_some() {
            return Ok(match self.pre_authenticated(&login, &blob) {
                Some(actor) => self.accept(actor, login),
                None => Auth::reject(),
            });
        }
        let actor = match self
            .shared
            .vault()
            .authenticate_publickey(&login.user, &blob, &self.shared.ctx())
            .await
        {
            Ok(a) if !a.must_change_password => a,
            _ => return Ok(Auth::reject()),
        };
        if self.shared.vault().totp_enrolled(&login.user).await.unwrap_or(true) {
            // Second factor still needed: continue with keyboard-interactive.
            self.key_actor = Some(actor);
            let mut methods = MethodSet::empty();
            methods.push(MethodKind::KeyboardInteractive);
            return Ok(Auth::Reject {
                proceed_with_methods: Some(methods),
                partial_success: true,
            });
        }
        Ok(self.accept(actor, login))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if self.pre_auth.is_some() {
            return Ok(Auth::reject());
        }
        let Some(login) = self.parse(user) else {
            return Ok(Auth::reject());
        };
        let answer = response
            .and_then(|mut r| r.next())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let state = std::mem::replace(&mut self.kbd, Kbd::Idle);
        match (state, answer) {
            (Kbd::Idle, _) => {
                if let Some(a) = &self.key_actor {
                    if a.username == login.user {
                        self.kbd = Kbd::AskedTotp(None);
                        return Ok(partial("Verification code: ", true));
                    }
                }
                self.kbd = Kbd::AskedPassword;
                Ok(partial("Password: ", false))
            }
            (Kbd::AskedPassword, Some(pw)) => {
                if self.shared.vault().totp_enrolled(&login.user).await.unwrap_or(false) {
                    self.kbd = Kbd::AskedTotp(Some(SecretString::new(pw)));
                    return Ok(partial("Verification code: ", true));
                }
                Ok(self.check_password(login, SecretString::new(pw), None).await)
            }
            (Kbd::AskedTotp(Some(pw)), Some(code)) => Ok(self.check_password(login, pw, Some(code)).await),
            (Kbd::AskedTotp(None), Some(code)) => {
                let Some(actor) = self.key_actor.clone().filter(|a| a.username == login.user) else {
                    return Ok(Auth::reject());
                };
                match self
                    .shared
                    .vault()
                    .authenticate_totp(&actor, &code, &self.shared.ctx())
                    .await
                {
                    Ok(()) => Ok(self.accept(actor, login)),
                    Err(_) => Ok(Auth::reject()),
                }
            }
            _ => Ok(Auth::reject()),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.set_client_handle(session);
        reply.accept().await;
        let shared = self.shared.clone();
        let handle = session.handle();
        let span = self.shared.span.clone();
        let cancel = self.shared.cancel.clone();
        // Channel tasks end with their connection (the connection task cancels on exit).
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = relay::session_channel(shared, channel, handle) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.set_client_handle(session);
        let shared = self.shared.clone();
        let dest = (host_to_connect.to_owned(), port_to_connect);
        let origin = (originator_address.to_owned(), originator_port);
        let span = self.shared.span.clone();
        // Ends when either side's channel closes (they close with the connection); it then audits the bytes.
        tokio::spawn(relay::direct_tcpip(shared, channel, reply, dest, origin).instrument(span));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.shared.set_client_handle(session);
        let Some((actor, login)) = self.shared.who() else {
            return Ok(false);
        };
        let ctx = self.shared.ctx();
        let Some(name) = login.target else { return Ok(false) };
        let Ok(live) = self.shared.live(&name).await else {
            return Ok(false);
        };
        let account = Some((live.target.account.id.as_str(), live.label.as_str()));
        let vault = self.shared.vault();
        if !live.target.resource.allow_port_forwarding {
            let _ = vault
                .audit_gateway(
                    &actor,
                    "session.forward_denied",
                    account,
                    true,
                    format!("remote forward {address}:{port}: not allowed on this resource"),
                    &ctx,
                )
                .await;
            return Ok(false);
        }
        match live.conn.handle.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                let _ = vault
                    .audit_gateway(
                        &actor,
                        "session.forward",
                        account,
                        false,
                        format!("remote forward {address}:{port} opened on the target"),
                        &ctx,
                    )
                    .await;
                Ok(true)
            }
            Err(e) => {
                let _ = vault
                    .audit_gateway(
                        &actor,
                        "session.forward",
                        account,
                        true,
                        format!("remote forward {address}:{port} refused by the target: {e}"),
                        &ctx,
                    )
                    .await;
                Ok(false)
            }
        }
    }
}

impl Shared {
    /// Audits a gateway event about the live session's account (a failed audit is logged, not fatal here).
    pub(crate) async fn audit_live(&self, live: &Live, action: &str, failed: bool, detail: String) {
        let object = Some((live.target.account.id.as_str(), live.label.as_str()));
        if let Err(e) = self
            .vault()
            .audit_gateway(&live.actor, action, object, failed, detail, &self.ctx())
            .await
        {
            warn!(error = %e, action, "could not write an audit event");
        }
    }

    /// Remembers the client connection so the target can open channels back (agent, remote forwards).
    fn set_client_handle(&self, session: &Session) {
        let mut h = self.client_handle.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_none() {
            *h = Some(session.handle());
        }
    }

    /// Why the session's recording failed, if it did.
    fn recording_failure(&self) -> Option<String> {
        let Some(Ok(live)) = self.live.get() else { return None };
        live.sink.failed()
    }

    /// The client sent input: the session is not idle.
    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_input_ms.store(now, Ordering::Relaxed);
    }

    /// How long since the client's last input.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_input_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// The actor and the login name.
    pub(crate) fn identity(&self) -> Option<(Actor, Login)> {
        self.who()
    }
}

/// The client socket, which the connection task can cut even when the SSH
/// session is stuck (mid key exchange): reads and writes fail once `killed` fires.
struct Killable<S> {
    inner: S,
    killed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<S> Killable<S> {
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> Option<std::io::Error> {
        use std::future::Future;
        self.killed
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed by the gateway"))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Killable<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Killable<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
