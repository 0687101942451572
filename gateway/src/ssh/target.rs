//! Connecting to a target through its landing-server chain and logging in with
//! vaulted credentials.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_vault::{Account, Actor, PinnedHostKey, RequestContext, Resource, SecretKind, SessionTarget, Vault};
use russh::client::{self, AuthResult, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use crate::error::Error;
use crate::ssh::readahead::ReadAhead;

/// Callback that audits a forwarded connection (detail text).
pub(crate) type ForwardAudit = Arc<dyn Fn(String) + Send + Sync>;

/// What the target may open back towards the user's client: agent channels and
/// remote-forwarded connections, each only where the resource allows it.
#[derive(Clone, Default)]
pub(crate) struct BackChannel {
    /// The user's client connection (set when the client opens its first channel).
    pub client: Arc<Mutex<Option<russh::server::Handle>>>,
    /// Agent forwarding allowed on this resource.
    pub allow_agent: bool,
    /// Remote port forwarding allowed on this resource.
    pub allow_remote: bool,
    /// Audits a forwarded connection when it closes.
    pub audit: Option<ForwardAudit>,
}

impl BackChannel {
    fn client(&self) -> Option<russh::server::Handle> {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Pipes a target-opened channel to a channel opened on the client, then audits the byte counts.
fn pipe(
    from_target: russh::Channel<client::Msg>,
    to_client: russh::Channel<russh::server::Msg>,
    what: String,
    audit: Option<ForwardAudit>,
) {
    tokio::spawn(async move {
        let mut a = from_target.into_stream();
        let mut b = to_client.into_stream();
        let (up, down) = tokio::io::copy_bidirectional(&mut a, &mut b).await.unwrap_or((0, 0));
        if let Some(audit) = audit {
            audit(format!("{what} closed: {up} bytes from the target, {down} bytes to it"));
        }
    });
}

/// Checks the target's host key against the pinned one, and carries what the
/// target may open back (agent, remote forwards).
pub(crate) struct TargetHandler {
    pinned: Option<PinnedHostKey>,
    accept_any: bool,
    seen: Arc<Mutex<Option<PublicKey>>>,
    back: BackChannel,
}

impl client::Handler for TargetHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(match &self.pinned {
            None => true,
            Some(p) => self.accept_any || key.fingerprint(HashAlg::Sha256).to_string() == p.fingerprint,
        })
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let opened = match (self.back.allow_agent, self.back.client()) {
            (true, Some(h)) => h.channel_open_agent().await.ok(),
            _ => None,
        };
        match opened {
            Some(c) => {
                reply.accept().await;
                pipe(channel, c, "agent forwarding channel".into(), self.back.audit.clone());
            }
            None => {
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let opened = match (self.back.allow_remote, self.back.client()) {
            (true, Some(h)) => h
                .channel_open_forwarded_tcpip(connected_address, connected_port, originator_address, originator_port)
                .await
                .ok(),
            _ => None,
        };
        match opened {
            Some(c) => {
                reply.accept().await;
                let what = format!(
                    "remote forward {connected_address}:{connected_port} from {originator_address}:{originator_port}"
                );
                pipe(channel, c, what, self.back.audit.clone());
            }
            None => {
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
        Ok(())
    }
}

/// A logged-in connection to the target, keeping the landing servers' connections alive.
pub(crate) struct Connected {
    pub handle: client::Handle<TargetHandler>,
    _hops: Vec<client::Handle<TargetHandler>>,
}

fn client_config() -> Arc<client::Config> {
    use russh::cipher;
    // AES-GCM first: with AES instructions it is much cheaper than chacha20 on the gateway's hot path.
    let preferred = russh::Preferred {
        cipher: std::borrow::Cow::Owned(vec![
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::CHACHA20_POLY1305,
        ]),
        ..Default::default()
    };
    Arc::new(client::Config {
        preferred,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        // Larger packets from the target: half as many to decrypt, hand over and wake up for.
        maximum_packet_size: 65535,
        ..Default::default()
    })
}

/// Connects and logs in, hop by hop. Errors name the hop that failed.
pub(crate) async fn connect(
    vault: &Vault,
    actor: &Actor,
    target: &SessionTarget,
    connect_timeout: Duration,
    accept_any_host_key: bool,
    back: BackChannel,
    ctx: &RequestContext,
) -> Result<Connected, Error> {
    let n = target.hops.len();
    let legs: Vec<(&Resource, &Account, String)> = target
        .hops
        .iter()
        .enumerate()
        .map(|(i, (r, a))| {
            (
                r,
                a,
                format!("landing server {} of {n} ({}@{})", i + 1, a.login, r.name),
            )
        })
        .chain(std::iter::once((
            &target.resource,
            &target.account,
            format!("target {}@{}", target.account.login, target.resource.name),
        )))
        .collect();
    let mut hops = Vec::new();
    let mut prev: Option<client::Handle<TargetHandler>> = None;
    let last = legs.len() - 1;
    for (i, (resource, account, label)) in legs.into_iter().enumerate() {
        let fail = |detail: String| Error::Target {
            hop: label.clone(),
            detail,
            host_key_changed: false,
        };
        let pinned = vault.pinned_host_key(&resource.id).await?;
        let seen = Arc::new(Mutex::new(None));
        let handler = TargetHandler {
            back: if i == last {
                back.clone()
            } else {
                BackChannel::default()
            },
            pinned: pinned.clone(),
            accept_any: accept_any_host_key,
            seen: seen.clone(),
        };
        let config = client_config();
        let connecting = async {
            match &prev {
                None => {
                    let socket = tokio::net::TcpStream::connect((resource.host.as_str(), resource.port)).await?;
                    let _ = socket.set_nodelay(config.nodelay);
                    client::connect_stream(config, ReadAhead::new(socket), handler).await
                }
                Some(h) => {
                    let ch = h
                        .channel_open_direct_tcpip(resource.host.clone(), u32::from(resource.port), "127.0.0.1", 0)
                        .await?;
                    client::connect_stream(config, ch.into_stream(), handler).await
                }
            }
        };
        let result = tokio::time::timeout(connect_timeout, connecting).await;
        let presented = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut handle = match result {
            Err(_) => return Err(fail(format!("no answer within {}s", connect_timeout.as_secs()))),
            Ok(Err(russh::Error::UnknownKey)) => {
                let now = presented
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
                    .unwrap_or_else(|| "a certificate".into());
                return Err(Error::Target {
                    hop: label.clone(),
                    detail: format!(
                        "its host key changed (pinned {}, presented {now}); refusing to connect. An administrator must confirm the new key.",
                        pinned.map(|p| p.fingerprint).unwrap_or_default()
                    ),
                    host_key_changed: true,
                });
            }
            Ok(Err(e)) => return Err(fail(describe(&e))),
            Ok(Ok(h)) => h,
        };
        let login = tokio::time::timeout(connect_timeout, auto_logon(&mut handle, vault, actor, account, ctx)).await;
        match login {
            Err(_) => return Err(fail("the login did not complete in time".into())),
            Ok(Err(e)) => return Err(fail(e)),
            Ok(Ok(())) => {}
        }
        if pinned.is_none() {
            if let Some(k) = presented {
                let key = PinnedHostKey {
                    algorithm: k.algorithm().as_str().to_owned(),
                    public_key: k.to_openssh().unwrap_or_default(),
                    fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
                };
                vault.pin_host_key(actor, resource, &key, ctx).await?;
            }
        }
        if let Some(p) = prev.take() {
            hops.push(p);
        }
        prev = Some(handle);
    }
    let handle = prev.ok_or_else(|| Error::Client("empty chain".into()))?;
    Ok(Connected { handle, _hops: hops })
}

fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "connection timed out".into(),
            _ => format!("network error: {io}"),
        },
        russh::Error::ChannelOpenFailure(r) => format!("the previous hop could not open a connection to it ({r:?})"),
        russh::Error::Disconnect => "it closed the connection".into(),
        russh::Error::NoCommonAlgo { kind, .. } => format!("no common {kind:?} algorithm"),
        other => format!("SSH error: {other}"),
    }
}

/// Logs in with the account's vaulted key, then password (also answering
/// keyboard-interactive password prompts). The lease is dropped (zeroized)
/// as soon as the target has answered.
async fn auto_logon(
    handle: &mut client::Handle<TargetHandler>,
    vault: &Vault,
    actor: &Actor,
    account: &Account,
    ctx: &RequestContext,
) -> Result<(), String> {
    let login = account.login.clone();
    if account.has_private_key {
        let lease = vault
            .lease_for_session(actor, &account.id, SecretKind::PrivateKey, ctx)
            .await
            .map_err(|e| e.to_string())?;
        let key = lease
            .expose_str()
            .and_then(|t| russh::keys::decode_secret_key(t, None).ok())
            .ok_or_else(|| {
                "the vaulted private key cannot be read (unsupported or encrypted key format)".to_string()
            })?;
        drop(lease);
        let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        let r = handle
            .authenticate_publickey(login.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| describe(&e))?;
        if matches!(r, AuthResult::Success) {
            return Ok(());
        }
        if !account.has_password {
            return Err(format!("the target refused the vaulted key for {login}"));
        }
    }
    if !account.has_password {
        return Err(format!("no credential is vaulted for {login}"));
    }
    let lease = vault
        .lease_for_session(actor, &account.id, SecretKind::Password, ctx)
        .await
        .map_err(|e| e.to_string())?;
    let password = lease.expose_str().unwrap_or_default().to_owned();
    let r = handle
        .authenticate_password(login.clone(), password.clone())
        .await
        .map_err(|e| describe(&e))?;
    if matches!(r, AuthResult::Success) {
        return Ok(());
    }
    // Targets that only offer keyboard-interactive: answer password prompts.
    let mut reply = handle
        .authenticate_keyboard_interactive_start(login.clone(), None)
        .await
        .map_err(|e| describe(&e))?;
    for _ in 0..4 {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(()),
            KeyboardInteractiveAuthResponse::Failure { .. } => break,
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts
                    .iter()
                    .map(|p| if p.echo { String::new() } else { password.clone() })
                    .collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await
                    .map_err(|e| describe(&e))?;
            }
        }
    }
    Err(format!("the target rejected the vaulted password for {login}"))
}
