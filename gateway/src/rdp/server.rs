//! The RDP listener and the per-connection handler.
//!
//! The gateway terminates the client's connection sequence up to the Client Info PDU (X.224 negotiation
//! selecting TLS, TLS with the gateway's certificate, MCS Connect Response, Attach User and Channel Join
//! confirms), so the user is authenticated and authorized before any target is contacted. It then plays the
//! same sequence towards the target (the client's own MCS Connect Initial, replayed), sends a Client Info PDU
//! rewritten with the vaulted account and password and the autologon flag, and relays the rest as raw bytes.
//!
//! A plain `USER` with several RDP accounts first gets the graphical picker (`picker.rs`): the gateway activates
//! the client itself and draws the list; after the pick the same `connect` path runs, the target's licensing is
//! played by the gateway, and the client is reactivated towards the target (Deactivate All, then the target's
//! Demand Active, relayed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironrdp_pdu::mcs::{
    AttachUserConfirm, AttachUserRequest, ChannelJoinConfirm, ChannelJoinRequest, ConnectInitial, ConnectResponse,
    DisconnectReason, ErectDomainPdu, McsMessage,
};
use ironrdp_pdu::nego::{
    ConnectionConfirm, ConnectionRequest, FailureCode, NegoRequestData, RequestFlags, ResponseFlags, SecurityProtocol,
};
use ironrdp_pdu::rdp::server_error_info::ProtocolIndependentCode;
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::x224::X224;
use postern_vault::{Actor, LoginRequest, RequestContext, SecretKind, SecretString, Vault};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument, Span};
use zeroize::Zeroize;

use crate::error::Error;
use crate::login;
use crate::rdp::channels::{is_input_pdu, Boundary, ChannelPolicy, Framer, Verdict};
use crate::rdp::credssp::{self, NlaIdentities};
use crate::rdp::pdu::{self, FrameError, IO_CHANNEL};
use crate::rdp::picker;
use crate::rdp::ticket::{self, RdpTickets, TicketError};
use crate::rdp::tls;
use crate::registry::{Registry, SessionInfo, SessionSink, SinkFactory};

/// Settings of the RDP front end.
#[derive(Debug, Clone)]
pub struct RdpSettings {
    /// The certificate (PEM chain) the gateway shows RDP clients.
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
    /// Timeout to connect to the target and finish its connection sequence.
    pub connect_timeout: Duration,
    /// Clients that have not sent their Client Info PDU by then are dropped.
    pub login_grace_time: Duration,
    /// Sessions without traffic from the client for this long are closed.
    pub idle_timeout: Duration,
    /// Sessions are ended after this long (`None`: unlimited).
    pub max_session_duration: Option<Duration>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connect to targets whose TLS certificate differs from the pinned one (`[rdp.dangerous]`).
    pub accept_any_target_certificate: bool,
}

/// The RDP gateway.
pub struct RdpGateway {
    vault: Vault,
    registry: Registry,
    sinks: Arc<dyn SinkFactory>,
    settings: RdpSettings,
    acceptor: TlsAcceptor,
    /// The one-time RDP tickets (issued by the web).
    tickets: Arc<RdpTickets>,
    /// The public key of the gateway's certificate, which CredSSP with NLA clients binds to.
    own_public_key: Vec<u8>,
}

impl std::fmt::Debug for RdpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdpGateway")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the client sent up to its Client Info PDU.
struct ClientHello {
    connect_initial: Vec<u8>,
    /// Channels the client joined, in its order.
    joined: Vec<u16>,
    static_channels: Vec<u16>,
    /// The client's names of its static channels, in the same order.
    channel_names: Vec<String>,
    /// The user channel the gateway assigned.
    user_channel: u16,
    info: ClientInfoPdu,
    /// The ticket the client proved with CredSSP (NLA), if it used NLA.
    nla_ticket: Option<String>,
}

/// What one client PDU before the Client Info PDU asks for.
enum Step {
    /// Answer with this PDU (or nothing).
    Reply(Option<Result<Vec<u8>, String>>),
    /// The Client Info PDU, decoded.
    Info(Box<Result<ClientInfoPdu, String>>),
}

/// Who is connecting, from where, within which session: what [`RdpGateway::connect`] needs besides the target.
struct Session<'a> {
    peer: SocketAddr,
    id: &'a str,
    span: &'a Span,
    cancel: &'a CancellationToken,
    ctx: &'a RequestContext,
    actor: Actor,
    client_security: &'static str,
}

/// After the picker: the target's Demand Active the client gets first (after the gateway's Deactivate All), and
/// whether the client's PDUs are held back until its Confirm Active (input meant for the picker, sent before
/// the client saw the Deactivate All, does not reach the target).
#[derive(Default)]
struct Reactivation {
    first: Vec<u8>,
    gate: bool,
}

/// The refusal for unknown and forbidden targets (the same words for both).
const NO_TARGET: &str = "no such target, or you may not use it";

/// A refusal: what the log and audit say (never a secret), and which side failed.
type Refusal = Error;

fn client(msg: impl Into<String>) -> Error {
    Error::Client(msg.into())
}

impl RdpGateway {
    /// A gateway over `vault`, registering sessions in `registry` and recording them through `sinks`; loads the
    /// TLS certificate. Its ticket store has tickets of [`DEFAULT_TICKET_TTL`]; see [`RdpGateway::with_tickets`].
    pub fn new(
        vault: Vault,
        registry: Registry,
        sinks: Arc<dyn SinkFactory>,
        settings: RdpSettings,
    ) -> Result<Arc<Self>, Error> {
        Self::with_tickets(
            vault,
            registry,
            sinks,
            settings,
            Arc::new(RdpTickets::new(DEFAULT_TICKET_TTL)),
        )
    }

    /// A gateway accepting the one-time tickets of `tickets` (which the web issues), recording sessions through
    /// `sinks`.
    pub fn with_tickets(
        vault: Vault,
        registry: Registry,
        sinks: Arc<dyn SinkFactory>,
        settings: RdpSettings,
        tickets: Arc<RdpTickets>,
    ) -> Result<Arc<Self>, Error> {
        let acceptor = tls::acceptor(&settings.tls_cert, &settings.tls_key)?;
        let own_public_key = own_public_key(&settings.tls_cert)?;
        Ok(Arc::new(RdpGateway {
            vault,
            registry,
            sinks,
            settings,
            acceptor,
            tickets,
            own_public_key,
        }))
    }

    /// The ticket store.
    pub fn tickets(&self) -> Arc<RdpTickets> {
        self.tickets.clone()
    }

    /// Serves `listener` until `shutdown`; then ends every session and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.settings.max_connections.max(1)));
        let mut sweep = tokio::time::interval(Duration::from_secs(15));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    for g in self.tickets.sweep_expired() {
                        let label = format!("{}@{}", g.login, g.resource);
                        let ctx = RequestContext::default();
                        self.audit(&g.actor, "rdp.ticket_expired", Some((g.account_id.as_str(), label.as_str())), false,
                            format!("RDP ticket {} expired unused", g.name), &ctx).await;
                    }
                    continue;
                }
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "RDP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                warn!(client = %peer, "RDP connection refused: max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let cancel = shutdown.child_token();
            tracker.spawn(async move {
                gw.connection(stream, peer, cancel).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
        let id = uuid::Uuid::new_v4().to_string();
        let span = info_span!("rdp_session", session.id = %id, user = tracing::field::Empty, target = tracing::field::Empty, client = %peer);
        let s = span.clone();
        async move {
            self.session(stream, peer, &id, &s, &cancel).await;
            // Ends this session's helper tasks (the access-window watch).
            cancel.cancel();
        }
        .instrument(span)
        .await
    }

    async fn session(&self, stream: TcpStream, peer: SocketAddr, id: &str, span: &Span, cancel: &CancellationToken) {
        let ctx = RequestContext::from_ip(peer.ip());
        let grace = self.settings.login_grace_time;
        let handshake = tokio::select! {
            _ = cancel.cancelled() => return debug!("the gateway is shutting down"),
            r = tokio::time::timeout(grace, self.client_handshake(stream, peer)) => r,
        };
        let (mut tls, hello) = match handshake {
            Err(_) => return debug!("no Client Info PDU within the login grace time"),
            Ok(Err(e)) => return info!(error = %e, side = ?e.side(), "RDP connection sequence with the client failed"),
            Ok(Ok(x)) => x,
        };
        match self.login(&mut tls, hello, peer, id, span, cancel, &ctx).await {
            Ok(()) => {}
            Err(e) => {
                info!(error = %e, side = ?e.side(), "RDP session refused or failed");
                // Tell the client why in RDP's terms (a reason code), then that the connection is over; the
                // words are in the log and the audit.
                let code = match &e {
                    Error::Client(m) if m.starts_with(NO_TARGET) => {
                        ProtocolIndependentCode::ServerInsufficientPrivileges
                    }
                    _ => ProtocolIndependentCode::ServerDeniedConnection,
                };
                let out = pdu::goodbye(code, DisconnectReason::ProviderInitiated);
                let _ = tls.write_all(&out).await;
                let _ = tls.shutdown().await;
            }
        }
    }

    /// Negotiation, TLS and MCS with the client, up to its Client Info PDU.
    async fn client_handshake(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, ClientHello), Error> {
        let f = pdu::read_tpkt(&mut stream)
            .await
            .map_err(|e| client(format!("X.224 request: {e}")))?;
        let req: X224<ConnectionRequest> = pdu::parse(&f, "X.224 Connection Request").map_err(client)?;
        let req = req.0;
        if let Some(NegoRequestData::Cookie(c)) = &req.nego_data {
            debug!(cookie = %c.0, "client cookie");
        }
        let nla = req.protocol.contains(SecurityProtocol::HYBRID);
        if !nla && !req.protocol.contains(SecurityProtocol::SSL) {
            let fail = pdu::encode(&X224(ConnectionConfirm::Failure {
                code: FailureCode::SSL_REQUIRED_BY_SERVER,
            }))
            .map_err(client)?;
            let _ = stream.write_all(&fail).await;
            return Err(client(format!(
                "the client offered {:?}; the gateway needs TLS security (or NLA)",
                req.protocol
            )));
        }
        // NLA when the client offers it (only one-time tickets can pass it), TLS otherwise.
        let ok = pdu::encode(&X224(ConnectionConfirm::Response {
            flags: ResponseFlags::EXTENDED_CLIENT_DATA_SUPPORTED,
            protocol: if nla {
                SecurityProtocol::HYBRID
            } else {
                SecurityProtocol::SSL
            },
        }))
        .map_err(client)?;
        stream
            .write_all(&ok)
            .await
            .map_err(|e| client(format!("X.224 confirm: {e}")))?;
        let mut tls = self
            .acceptor
            .accept(stream)
            .await
            .map_err(|e| client(format!("TLS handshake: {e}")))?;
        let nla_ticket = if nla {
            let mut ids = TicketIdentities {
                tickets: &self.tickets,
                asked: None,
            };
            match credssp::as_server(&mut tls, self.own_public_key.clone(), &mut ids).await {
                Ok(name) => Some(name),
                Err(e) => {
                    // A live ticket with a wrong password is void now, as under TLS; audited for its user.
                    if let (Some(name), credssp::CredsspError::LogonFailure(_)) = (ids.asked.take(), &e) {
                        if let Err(TicketError::WrongPassword(g)) =
                            self.tickets.redeem(&name, Some(&SecretString::new(String::new())))
                        {
                            let label = format!("{}@{}", g.login, g.resource);
                            self.audit(
                                &g.actor,
                                "rdp.ticket_refused",
                                Some((g.account_id.as_str(), label.as_str())),
                                true,
                                format!("RDP ticket {name}: wrong password under NLA (the ticket is void now)"),
                                &RequestContext::from_ip(peer.ip()),
                            )
                            .await;
                        }
                    }
                    return Err(client(format!(
                        "NLA (only one-time RDP tickets can log in with NLA): {e}"
                    )));
                }
            }
        } else {
            None
        };

        let connect_initial = read(&mut tls, "MCS Connect Initial").await?;
        let ci: ConnectInitial = pdu::parse_wrapped(&connect_initial, "MCS Connect Initial").map_err(client)?;
        let static_channels = pdu::static_channel_ids(pdu::static_channel_count(&ci));
        let channel_names: Vec<String> = ci
            .conference_create_request
            .gcc_blocks()
            .network
            .as_ref()
            .map(|n| {
                n.channels
                    .iter()
                    .map(|c| c.name.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let user_channel = pdu::user_channel(static_channels.len());
        let response = pdu::connect_response(&ci, req.protocol).map_err(client)?;
        tls.write_all(&response)
            .await
            .map_err(|e| client(format!("MCS Connect Response: {e}")))?;

        let mut joined = Vec::new();
        for _ in 0..(8 + static_channels.len()) {
            let mut f = read(&mut tls, "MCS domain PDU").await?;
            let step = match pdu::parse::<X224<McsMessage<'_>>>(&f, "MCS domain PDU")
                .map_err(client)?
                .0
            {
                McsMessage::ErectDomainRequest(_) => Step::Reply(None),
                McsMessage::AttachUserRequest(_) => Step::Reply(Some(pdu::encode(&X224(AttachUserConfirm {
                    result: 0,
                    initiator_id: user_channel,
                })))),
                McsMessage::ChannelJoinRequest(j) => {
                    let known = j.channel_id == user_channel
                        || j.channel_id == IO_CHANNEL
                        || static_channels.contains(&j.channel_id);
                    if known && !joined.contains(&j.channel_id) {
                        joined.push(j.channel_id);
                    }
                    Step::Reply(Some(pdu::encode(&X224(ChannelJoinConfirm {
                        result: if known { 0 } else { 14 }, // rt-no-such-channel
                        initiator_id: user_channel,
                        requested_channel_id: j.channel_id,
                        channel_id: j.channel_id,
                    }))))
                }
                McsMessage::SendDataRequest(sd) => Step::Info(Box::new(pdu::parse(&sd.user_data, "Client Info PDU"))),
                other => return Err(client(format!("unexpected {other:?} before the Client Info PDU"))),
            };
            let reply = match step {
                Step::Reply(r) => r,
                Step::Info(info) => {
                    // The frame holds the user's password (UTF-16): wipe it once decoded.
                    f.zeroize();
                    return Ok((
                        tls,
                        ClientHello {
                            connect_initial,
                            joined,
                            static_channels,
                            channel_names,
                            user_channel,
                            info: (*info).map_err(client)?,
                            nla_ticket,
                        },
                    ));
                }
            };
            if let Some(r) = reply {
                tls.write_all(&r.map_err(client)?)
                    .await
                    .map_err(|e| client(format!("MCS reply: {e}")))?;
            }
        }
        Err(client("too many MCS PDUs before the Client Info PDU"))
    }

    /// Authenticates the user; the target is the one named, the user's only RDP account, or the one picked in
    /// the graphical picker (a plain `USER` with several RDP accounts); then [`RdpGateway::connect`].
    #[allow(clippy::too_many_arguments)]
    async fn login<C>(
        &self,
        client_tls: &mut C,
        mut hello: ClientHello,
        peer: SocketAddr,
        id: &str,
        span: &Span,
        cancel: &CancellationToken,
        ctx: &RequestContext,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (actor, named, client_security) = self.authenticate(&mut hello, span, ctx).await?;
        let (target_name, picked) = match named {
            Some(t) => (t, false),
            None => {
                let mut accounts = self.rdp_accounts(&actor, ctx).await?;
                match accounts.len() {
                    0 => {
                        return Err(client(format!(
                            "{} may use no RDP account: name one as USER#ACCOUNT@RESOURCE",
                            actor.username
                        )))
                    }
                    1 => {
                        let (r, a) = accounts.remove(0);
                        let t = login::TargetName {
                            account: a.login,
                            resource: r.name,
                        };
                        (t, false)
                    }
                    _ => match self.pick(client_tls, &hello, &actor, accounts, cancel, ctx).await? {
                        Some(t) => (t, true),
                        None => return Ok(()),
                    },
                }
            }
        };
        let session = Session {
            peer,
            id,
            span,
            cancel,
            ctx,
            actor,
            client_security,
        };
        self.connect(client_tls, hello, session, target_name, picked).await
    }

    /// The graphical account picker on the client's screen (see `picker.rs`): the account picked, or `None`
    /// when the user left it (Esc, disconnect, untouched for the login grace time), which is audited as
    /// `rdp.pick_abandoned` and told to the client.
    async fn pick<C>(
        &self,
        client_tls: &mut C,
        hello: &ClientHello,
        actor: &Actor,
        accounts: Vec<(postern_vault::Resource, postern_vault::Account)>,
        cancel: &CancellationToken,
        ctx: &RequestContext,
    ) -> Result<Option<login::TargetName>, Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (w, h) = pdu::desktop_size(&hello.connect_initial).unwrap_or((1024, 768));
        let bpp = pdu::client_bpp(&hello.connect_initial);
        let entries = accounts
            .iter()
            .map(|(r, a)| picker::Entry {
                account: a.login.clone(),
                resource: r.name.clone(),
                host: format!("{}:{}", r.host, r.port),
            })
            .collect();
        let mut p = picker::Picker::new(entries, w, h);
        let idle = self.settings.login_grace_time;
        info!(accounts = accounts.len(), "showing the RDP account picker");
        let ran = picker::run(client_tls, &mut p, hello.user_channel, bpp, idle, cancel).await;
        let left = match ran {
            Ok(Ok(i)) => {
                let (r, a) = &accounts[i];
                let label = format!("{}@{}", a.login, r.name);
                info!(target = %label, "picked in the RDP account picker");
                self.audit(
                    actor,
                    "rdp.pick",
                    Some((a.id.as_str(), label.as_str())),
                    false,
                    format!(
                        "{label} picked in the RDP account picker ({} accounts offered)",
                        accounts.len()
                    ),
                    ctx,
                )
                .await;
                return Ok(Some(login::TargetName {
                    account: a.login.clone(),
                    resource: r.name.clone(),
                }));
            }
            Ok(Err(left)) => left,
            Err(e) => {
                let detail = format!("RDP account picker: the client failed: {e}");
                self.audit(actor, "rdp.pick_abandoned", None, true, detail, ctx).await;
                return Err(client(format!("in the account picker: {e}")));
            }
        };
        info!(why = %left, "the RDP account picker ended without a pick");
        self.audit(
            actor,
            "rdp.pick_abandoned",
            None,
            false,
            format!("RDP account picker left without a pick: {left}"),
            ctx,
        )
        .await;
        use ProtocolIndependentCode as Code;
        let code = match left {
            picker::Left::Quit => Some(Code::RpcInitiatedDisconnectByuser),
            picker::Left::Idle(_) => Some(Code::IdleTimeout),
            picker::Left::Shutdown => Some(Code::RpcInitiatedDisconnect),
            picker::Left::Disconnected => None,
        };
        if let Some(code) = code {
            let out = pdu::goodbye(code, DisconnectReason::UserRequested);
            let _ = tokio::time::timeout(Duration::from_secs(2), client_tls.write_all(&out)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), client_tls.shutdown()).await;
        Ok(None)
    }

    /// Authorizes `target_name` for the session's user, leases its password, connects the target and relays;
    /// with `picked`, the client was activated by the picker: the target's licensing is consumed and the client
    /// reactivated towards the target (Deactivate All, then the target's Demand Active).
    async fn connect<C>(
        &self,
        client_tls: &mut C,
        mut hello: ClientHello,
        session: Session<'_>,
        target_name: login::TargetName,
        picked: bool,
    ) -> Result<(), Refusal>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Session {
            peer,
            id,
            span,
            cancel,
            ctx,
            actor,
            client_security,
        } = session;
        let denied = || client(format!("{NO_TARGET}: {target_name}"));
        let target = match self
            .vault
            .resolve_target(&actor, &target_name.account, &target_name.resource, ctx)
            .await
        {
            Ok(t) => t,
            Err(postern_vault::Error::NotFound { .. }) => return Err(denied()),
            Err(e) => return Err(e.into()),
        };
        let label = format!("{}@{}", target.account.login, target.resource.name);
        span.record("target", label.as_str());
        let object = Some((target.account.id.as_str(), label.as_str()));
        if !target.hops.is_empty() {
            let e = Error::Target {
                hop: format!("target {label}"),
                detail: "landing servers are not supported for RDP yet".into(),
                host_key_changed: false,
            };
            self.audit(&actor, "session.connect_failed", object, true, e.to_string(), ctx)
                .await;
            return Err(e);
        }
        let lease = match self
            .vault
            .lease_for_session(&actor, &target.account.id, SecretKind::Password, ctx)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                self.audit(
                    &actor,
                    "session.connect_failed",
                    object,
                    true,
                    "no password is vaulted for this account".into(),
                    ctx,
                )
                .await;
                return Err(e.into());
            }
        };
        // The recording renders bitmap updates, not the graphics pipeline: the target is not offered GFX.
        match pdu::without_gfx(&hello.connect_initial) {
            Ok(Some(ci)) => {
                debug!("the client offered the graphics pipeline (GFX): withdrawn towards the target");
                hello.connect_initial = ci;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "the MCS Connect Initial could not be checked for GFX; replayed as is"),
        }
        let addr = format!("{}:{}", target.resource.host, target.resource.port);
        let hop = format!("target {label}");
        let pinned = self.vault.pinned_rdp_certificate(&target.resource.id).await?;
        let pin = tls::TargetPin::new(pinned.as_ref(), self.settings.accept_any_target_certificate);
        let connected = tokio::select! {
            _ = cancel.cancelled() => Err("the gateway is shutting down".to_string()),
            r = tokio::time::timeout(
                self.settings.connect_timeout,
                self.target_handshake(&addr, &target.account.login, lease.expose_str().unwrap_or_default(), &hello, &pin),
            ) => r.unwrap_or_else(|_| Err(format!("no answer within {:?}", self.settings.connect_timeout))),
        };
        let connected = match connected {
            Ok(t) => self
                .pin_first_use(&actor, &target.resource, &pin, ctx)
                .await
                .map(|()| t),
            Err(detail) => Err(detail),
        };
        let (mut target_tls, target_security) = match connected {
            Ok(t) => t,
            Err(detail) => {
                // A changed certificate is refused in the TLS handshake; the words say what was pinned and seen.
                let changed = matches!(pin.seen(), tls::Seen::Changed { .. });
                let e = Error::Target {
                    hop,
                    detail: if changed { pin.seen().describe() } else { detail },
                    host_key_changed: changed,
                };
                let action = if changed {
                    "session.host_key_mismatch"
                } else {
                    "session.connect_failed"
                };
                self.audit(&actor, action, object, true, e.to_string(), ctx).await;
                return Err(e);
            }
        };
        let target_cert = pin.seen().describe();
        // The rewritten Client Info PDU: the vaulted account and password, autologon.
        let framed = pdu::injected_client_info(
            hello.info,
            hello.user_channel,
            &target.account.login,
            lease.expose_str().unwrap_or_default(),
        );
        drop(lease);
        let mut frame = framed.map_err(|e| Error::Client(format!("re-encoding the Client Info PDU: {e}")))?;
        let sent = target_tls.write_all(&frame).await;
        frame.zeroize();
        if let Err(e) = sent {
            let e = Error::Target {
                hop,
                detail: format!("sending the Client Info PDU: {e}"),
                host_key_changed: false,
            };
            self.audit(&actor, "session.connect_failed", object, true, e.to_string(), ctx)
                .await;
            return Err(e);
        }
        // After the picker the client is licensed and active already: the target's licensing is consumed here,
        // and its Demand Active goes to the client after a Deactivate All (the first bytes the relay sends).
        let mut first = Vec::new();
        if picked {
            let demand = tokio::select! {
                _ = cancel.cancelled() => Err("the gateway is shutting down".to_string()),
                r = tokio::time::timeout(
                    self.settings.connect_timeout,
                    target_licensing(&mut target_tls, hello.user_channel, &target.account.login),
                ) =>
                    r.unwrap_or_else(|_| Err(format!("no Demand Active within {:?}", self.settings.connect_timeout))),
            };
            match demand {
                Ok(d) => first = d,
                Err(detail) => {
                    let e = Error::Target {
                        hop,
                        detail,
                        host_key_changed: false,
                    };
                    self.audit(&actor, "session.connect_failed", object, true, e.to_string(), ctx)
                        .await;
                    return Err(e);
                }
            }
            let deactivate = picker::deactivate_all().map_err(client)?;
            client_tls
                .write_all(&deactivate)
                .await
                .map_err(|e| client(format!("Deactivate All: {e}")))?;
        }

        let info = SessionInfo {
            id: id.to_owned(),
            user: actor.username.clone(),
            target: label.clone(),
            protocol: "rdp",
            client: Some(peer),
            started_at: postern_vault::now(),
        };
        // The recording: the target's PDU stream (and the client's when input is recorded), with the desktop
        // size the client asked for. A recording that cannot start refuses the session.
        let sink = self.sinks.open(&info);
        if let Some(why) = sink.failed() {
            let detail = format!("rdp session {id} refused: {why}");
            self.audit(&actor, "session.connect_failed", object, true, detail, ctx)
                .await;
            if let Some(close) = sink.close() {
                close.await;
            }
            return Err(Error::Recording(format!("session refused: {why}")));
        }
        if let Some((w, h)) = pdu::desktop_size(&hello.connect_initial) {
            sink.event(0, "resize", &format!("{w}x{h}"));
        }
        let registration = self.registry.register(info, cancel.clone());
        let how = if picked { ", picked in the account picker" } else { "" };
        self.audit(
            &actor,
            "session.start",
            object,
            false,
            format!(
                "rdp session {id} from {peer} ({client_security}{how}; towards the target {target_security}, credentials injected with autologon; {target_cert})"
            ),
            ctx,
        )
        .await;
        info!("session started");
        if let Some(end) = target.window_end.as_deref().and_then(postern_vault::parse_ts) {
            // Under access control the session ends with the user's window (RDP has no text channel for the
            // 5-minute notice SSH sessions get).
            let left = Duration::try_from(end - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
            let (registry, id, cancel) = (self.registry.clone(), id.to_owned(), cancel.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(left) => {
                        registry.terminate(&id, "postern", "the access window ended");
                    }
                    _ = cancel.cancelled() => {}
                }
            });
        }
        let started = Instant::now();
        let policy = ChannelPolicy::new(
            &hello.channel_names,
            &hello.static_channels,
            target.resource.allow_clipboard,
            target.resource.allow_drive,
        );
        let (up, down, why) = self
            .relay(
                client_tls,
                &mut target_tls,
                cancel,
                policy,
                &*sink,
                (&actor, object, ctx),
                Reactivation { first, gate: picked },
            )
            .await;
        let why = match registration.termination() {
            Some(t) => format!("terminated by {}: {}", t.by, t.reason),
            None => why,
        };
        drop(registration);
        if let Some(failed) = sink.failed() {
            let detail = format!("session ended: its recording failed: {failed}");
            self.audit(&actor, "session.recording_failed", object, true, detail, ctx)
                .await;
        }
        let recording = match sink.close() {
            Some(f) => f.await,
            None => None,
        };
        let recording = recording.map(|r| format!("; {r}")).unwrap_or_default();
        let secs = started.elapsed().as_secs();
        self.audit(
            &actor,
            "session.end",
            object,
            false,
            format!(
                "rdp session {id} lasted {secs}s ({why}); {up} bytes from the client, {down} bytes from the target{recording}"
            ),
            ctx,
        )
        .await;
        info!(duration_s = secs, bytes_up = up, bytes_down = down, %why, "session ended");
        let _ = target_tls.shutdown().await;
        Ok(())
    }

    /// Who is connecting, to which target, and how the client authenticated: an NLA ticket (proved by CredSSP),
    /// a ticket under TLS (its one-time password in the Client Info PDU), or `USER#ACCOUNT@RESOURCE` with the
    /// Postern password under TLS (refused for users with two-factor authentication).
    async fn authenticate(
        &self,
        hello: &mut ClientHello,
        span: &Span,
        ctx: &RequestContext,
    ) -> Result<(Actor, Option<login::TargetName>, &'static str), Refusal> {
        let creds = &mut hello.info.client_info.credentials;
        let password = SecretString::new(std::mem::take(&mut creds.password));
        let mut name = creds.username.clone();
        let ticket = match &hello.nla_ticket {
            Some(t) => Some((t.clone(), None, "NLA with a one-time ticket")),
            None if ticket::is_ticket_name(&name) => {
                Some((name.clone(), Some(&password), "TLS with a one-time ticket"))
            }
            None => None,
        };
        if let Some((ticket, password, how)) = ticket {
            let grant = match self.tickets.redeem(&ticket, password) {
                Ok(g) => g,
                Err(e) => {
                    let grant = match &e {
                        TicketError::Expired(g) | TicketError::WrongPassword(g) => Some(g),
                        _ => None,
                    };
                    if let Some(g) = grant {
                        let label = format!("{}@{}", g.login, g.resource);
                        self.audit(
                            &g.actor,
                            "rdp.ticket_refused",
                            Some((g.account_id.as_str(), label.as_str())),
                            true,
                            format!("RDP ticket {ticket}: {e}"),
                            ctx,
                        )
                        .await;
                    }
                    return Err(client(format!("RDP ticket {ticket}: {e}")));
                }
            };
            let label = format!("{}@{}", grant.login, grant.resource);
            let actor = self
                .vault
                .authenticate_ticket_holder(&grant.actor.id, format!("RDP ticket {ticket} ({how})"), ctx)
                .await
                .map_err(|_| client(format!("RDP ticket {ticket}: its user may no longer log in")))?;
            span.record("user", actor.username.as_str());
            self.audit(
                &actor,
                "rdp.ticket_use",
                Some((grant.account_id.as_str(), label.as_str())),
                false,
                format!("RDP ticket {ticket} used ({how})"),
                ctx,
            )
            .await;
            let target = login::TargetName {
                account: grant.login,
                resource: grant.resource,
            };
            return Ok((actor, Some(target), how));
        }
        if let Some(d) = creds.domain.as_deref().filter(|d| !d.is_empty()) {
            // `DOMAIN\USER#...` splits into a domain: the whole name is the login.
            name = format!("{d}\\{name}");
        }
        let login = login::parse(&name).map_err(|e| client(format!("login name {name:?}: {e}")))?;
        span.record("user", login.user.as_str());
        if password.is_empty() {
            return Err(client(
                "no password in the Client Info PDU (the client must send it: TLS security)",
            ));
        }
        let req = LoginRequest {
            username: login.user.clone(),
            password,
            totp: None,
        };
        // The password is checked (and a wrong one counted) like every login; a TOTP user with the right password
        // gets `TotpRequired`: RDP's Client Info PDU has no room for a second factor, so such users are refused.
        let actor = match self.vault.authenticate_password(&req, ctx).await {
            Ok(a) if !a.must_change_password => a,
            Ok(_) => return Err(client("the user must first change their password in the web console")),
            Err(postern_vault::Error::TotpRequired) => {
                return Err(client(format!(
                    "{} has two-factor authentication: RDP with a password alone is refused; get a one-time RDP ticket (Download .rdp) from the web console",
                    login.user
                )))
            }
            Err(_) => return Err(client(format!("authentication failed for {}", login.user))),
        };
        Ok((actor, login.target.clone(), "TLS with the Postern password"))
    }

    /// The accounts a plain `USER` login may reach: those on Windows and Windows-domain resources the user may
    /// connect to now.
    async fn rdp_accounts(
        &self,
        actor: &Actor,
        ctx: &RequestContext,
    ) -> Result<Vec<(postern_vault::Resource, postern_vault::Account)>, Error> {
        use postern_vault::ResourceType;
        let all = self.vault.connectable_accounts(actor, ctx).await?;
        Ok(all
            .into_iter()
            .filter(|(r, _)| matches!(r.resource_type, ResourceType::Windows | ResourceType::WindowsDomain))
            .collect())
    }

    /// X.224 (NLA or TLS, as the target selects), TLS, CredSSP with the vaulted credentials when the target
    /// selected NLA, and the client's MCS sequence replayed towards the target; checks the target assigns the
    /// I/O and static channels the gateway already gave the client. The target's certificate is checked against
    /// the resource's pin in the TLS handshake, before CredSSP sends anything. Returns the TLS stream and the
    /// security the target selected (for the audit).
    async fn target_handshake(
        &self,
        addr: &str,
        account: &str,
        password: &str,
        hello: &ClientHello,
        pin: &Arc<tls::TargetPin>,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, &'static str), String> {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let cookie: String = account.chars().filter(|c| !c.is_control()).take(64).collect();
        let req = pdu::encode(&X224(ConnectionRequest {
            nego_data: Some(NegoRequestData::cookie(cookie)),
            flags: RequestFlags::empty(),
            protocol: SecurityProtocol::SSL | SecurityProtocol::HYBRID,
        }))?;
        tcp.write_all(&req).await.map_err(|e| format!("X.224 request: {e}"))?;
        let f = pdu::read_tpkt(&mut tcp)
            .await
            .map_err(|e| format!("X.224 confirm: {e}"))?;
        let confirm: X224<ConnectionConfirm> = pdu::parse(&f, "X.224 Connection Confirm")?;
        let selected = match confirm.0 {
            ConnectionConfirm::Response { protocol, .. }
                if protocol == SecurityProtocol::SSL || protocol == SecurityProtocol::HYBRID =>
            {
                protocol
            }
            ConnectionConfirm::Response { protocol, .. } => {
                return Err(format!(
                    "the target selected {protocol:?}; the gateway offered NLA or TLS"
                ))
            }
            ConnectionConfirm::Failure { code } => {
                return Err(format!(
                    "the target refused both NLA and TLS security (failure code {})",
                    u32::from(code)
                ))
            }
        };
        let nla = selected == SecurityProtocol::HYBRID;
        let name = rustls::pki_types::ServerName::try_from("rdp-target").map_err(|e| e.to_string())?;
        let mut tls = pin
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if nla {
            let der = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .ok_or("the target showed no TLS certificate (NLA binds to its key)")?;
            let key = credssp::public_key_of_certificate(&der).map_err(|e| format!("the target's certificate: {e}"))?;
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            credssp::as_client(&mut tls, account, password, key, host)
                .await
                .map_err(|e| format!("NLA: {e}"))?;
        }
        // The client's Connect Initial names the security the gateway selected for it: the target is told what it
        // selected itself.
        let connect_initial = pdu::with_selected_protocol(&hello.connect_initial, selected)?;
        tls.write_all(&connect_initial)
            .await
            .map_err(|e| format!("MCS Connect Initial: {e}"))?;
        let f = read_target(&mut tls, "MCS Connect Response").await?;
        let resp: ConnectResponse = pdu::parse_wrapped(&f, "MCS Connect Response")?;
        let (io, statics) = (resp.global_channel_id(), resp.channel_ids());
        if io != IO_CHANNEL || statics != hello.static_channels {
            return Err(format!(
                "the target assigned MCS channels {io}/{statics:?}, the gateway expected {IO_CHANNEL}/{:?} (channel id translation is not implemented yet)",
                hello.static_channels
            ));
        }
        let mut out = pdu::encode(&X224(ErectDomainPdu {
            sub_height: 0,
            sub_interval: 0,
        }))?;
        out.extend(pdu::encode(&X224(AttachUserRequest))?);
        tls.write_all(&out).await.map_err(|e| format!("MCS Attach User: {e}"))?;
        let f = read_target(&mut tls, "MCS Attach User Confirm").await?;
        let target_user = match pdu::parse::<X224<McsMessage<'_>>>(&f, "MCS Attach User Confirm")?.0 {
            McsMessage::AttachUserConfirm(c) if c.result == 0 => c.initiator_id,
            McsMessage::AttachUserConfirm(c) => {
                return Err(format!("the target refused the MCS Attach User (result {})", c.result))
            }
            other => return Err(format!("expected an MCS Attach User Confirm, got {other:?}")),
        };
        if target_user != hello.user_channel {
            // Windows and xrdp number the user channel after the static channels, as the gateway does; IronRDP's
            // server uses 1002. The relay does not rewrite the initiator of later PDUs (servers and clients
            // route by channel id, not initiator); only the joins name the target's user channel.
            debug!(
                target_user,
                client_user = hello.user_channel,
                "the target's MCS user channel differs from the client's"
            );
        }
        for ch in &hello.joined {
            let ch = if *ch == hello.user_channel { &target_user } else { ch };
            let j = pdu::encode(&X224(ChannelJoinRequest {
                initiator_id: target_user,
                channel_id: *ch,
            }))?;
            tls.write_all(&j).await.map_err(|e| format!("MCS Channel Join: {e}"))?;
            let f = read_target(&mut tls, "MCS Channel Join Confirm").await?;
            match pdu::parse::<X224<McsMessage<'_>>>(&f, "MCS Channel Join Confirm")?.0 {
                McsMessage::ChannelJoinConfirm(c) if c.result == 0 && c.channel_id == *ch => {}
                other => return Err(format!("joining channel {ch}: {other:?}")),
            }
        }
        Ok((tls, if nla { "NLA (CredSSP/NTLM)" } else { "TLS" }))
    }

    /// Pins the target's certificate on its first use (audited as `resource.host_key_pinned`); when another
    /// connection pinned a different one meanwhile, this one is refused as changed.
    async fn pin_first_use(
        &self,
        actor: &Actor,
        resource: &postern_vault::Resource,
        pin: &tls::TargetPin,
        ctx: &RequestContext,
    ) -> Result<(), String> {
        let tls::Seen::FirstUse(cert) = pin.seen() else {
            return Ok(());
        };
        let pinned = async {
            self.vault.pin_host_key(actor, resource, &cert, ctx).await?;
            self.vault.pinned_rdp_certificate(&resource.id).await
        };
        match pinned.await {
            Ok(Some(p)) if p.fingerprint == cert.fingerprint => Ok(()),
            Ok(Some(p)) => {
                pin.set_seen(tls::Seen::Changed {
                    pinned: p.fingerprint,
                    presented: cert.fingerprint,
                });
                Err("certificate changed".into())
            }
            Ok(None) => Err("pinning its certificate: the pin vanished".into()),
            Err(e) => {
                warn!(error = %e, "could not pin the target's certificate");
                Err("pinning its certificate failed (internal error)".into())
            }
        }
    }

    /// Raw bytes both ways until either side closes, the session is terminated, idles or lasts too long, or its
    /// recording fails. Everything the target sends is teed into `sink` as output, the client's input PDUs (not
    /// its virtual-channel data) as input (the recorder keeps them only when input is recorded). Returns (bytes from the client, bytes from
    /// the target, why it ended).
    #[allow(clippy::too_many_arguments)]
    async fn relay<C, T>(
        &self,
        c: &mut C,
        t: &mut T,
        cancel: &CancellationToken,
        mut policy: ChannelPolicy,
        sink: &dyn SessionSink,
        who: (&Actor, Option<(&str, &str)>, &RequestContext),
        reactivation: Reactivation,
    ) -> (u64, u64, String)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        T: AsyncRead + AsyncWrite + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let (mut cr, mut cw) = tokio::io::split(c);
        let (mut tr, mut tw) = tokio::io::split(t);
        let (mut up, mut down) = (0u64, 0u64);
        let mut cbuf = vec![0u8; 16 * 1024];
        let mut tbuf = vec![0u8; 64 * 1024];
        let idle = self.settings.idle_timeout;
        let max = self
            .settings
            .max_session_duration
            .unwrap_or(Duration::from_secs(100 * 365 * 86400));
        let max_deadline = tokio::time::sleep(max);
        tokio::pin!(max_deadline);
        let idle_deadline = tokio::time::sleep(idle);
        tokio::pin!(idle_deadline);
        // With a governed channel (clipboard, drive) requested, both directions go PDU by PDU.
        let framed = !policy.is_empty();
        let (mut up_frames, mut down_frames) = (Framer::default(), Framer::default());
        let mut notes: Vec<(bool, String)> = Vec::new();
        // Clipboard formats and drive paths of allowed channels: markers in the recording (searchable).
        let mut marks: Vec<(&'static str, String)> = Vec::new();
        // A recording that fails while the session is quiet ends it too.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Where the PDUs relayed as is to the client begin and end: the gateway's own goodbye (a reason code) may
        // only go between two of them.
        let mut to_client = Boundary::default();
        // The client's input PDUs for the recording (it keeps them when input is recorded); `None` once the
        // client's stream could not be framed.
        let mut input = Some(Framer::default());
        // After the picker: the client's PDUs up to its Confirm Active are dropped (see `Reactivation`).
        let mut gate = reactivation.gate.then(Framer::default);
        let mut gated: Vec<u8>;
        if !reactivation.first.is_empty() {
            let first = &reactivation.first;
            down += first.len() as u64;
            sink.output(0, &bytes::Bytes::copy_from_slice(first));
            to_client.advance(first);
            if let Err(e) = cw.write_all(first).await {
                return (up, down, format!("client: {e}"));
            }
        }
        use ProtocolIndependentCode as Code;
        let (why, code) = loop {
            tokio::select! {
                _ = cancel.cancelled() => break ("the gateway is shutting down".to_string(), Some(Code::RpcInitiatedDisconnect)),
                _ = check.tick() => if let Some(why) = sink.failed() {
                    break (format!("its recording failed: {why}"), Some(Code::ServerDeniedConnection));
                },
                _ = &mut max_deadline => break (format!("the maximum session duration ({}s) was reached", max.as_secs()), Some(Code::LogonTimeout)),
                _ = &mut idle_deadline => break (format!("idle for {}s", idle.as_secs()), Some(Code::IdleTimeout)),
                r = cr.read(&mut cbuf) => match r {
                    Ok(0) => break ("the client disconnected".to_string(), None),
                    Ok(n) => {
                        up += n as u64;
                        let data = match gate.as_mut() {
                            None => &cbuf[..n],
                            Some(g) => match confirm_active_onwards(g, &cbuf[..n]) {
                                Ok(None) => continue,
                                Ok(Some(rest)) => {
                                    debug!("the client's Confirm Active towards the target: relaying");
                                    gate = None;
                                    gated = rest;
                                    &gated[..]
                                }
                                Err(e) => break (format!("client: {e}"), None),
                            },
                        };
                        if let Some(f) = input.as_mut() {
                            f.push(data);
                            loop {
                                match f.next_pdu() {
                                    Ok(Some(p)) if is_input_pdu(&p) => sink.input(0, &p),
                                    Ok(Some(_)) => {}
                                    Ok(None) => break,
                                    Err(e) => {
                                        warn!(error = %e, "the client's stream cannot be framed: its input is no longer recorded");
                                        input = None;
                                        break;
                                    }
                                }
                            }
                        }
                        idle_deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                        if !framed {
                            if let Err(e) = tw.write_all(data).await {
                                break (format!("target: {e}"), None);
                            }
                        } else if let Err(e) =
                            forward(&mut up_frames, &mut policy, data, true, &mut tw, &mut notes, &mut marks).await
                        {
                            break (e, None);
                        }
                    }
                    Err(e) => break (format!("client: {e}"), None),
                },
                r = tr.read(&mut tbuf) => match r {
                    Ok(0) => break ("the target disconnected".to_string(), None),
                    Ok(n) => {
                        down += n as u64;
                        sink.output(0, &bytes::Bytes::copy_from_slice(&tbuf[..n]));
                        if let Some(why) = sink.failed() {
                            break (format!("its recording failed: {why}"), Some(Code::ServerDeniedConnection));
                        }
                        // Backpressure: the target waits for the recorder rather than overflowing it.
                        if let Some(ready) = sink.writable() {
                            ready.await;
                        }
                        if !framed {
                            to_client.advance(&tbuf[..n]);
                            if let Err(e) = cw.write_all(&tbuf[..n]).await {
                                break (format!("client: {e}"), None);
                            }
                        } else if let Err(e) =
                            forward(&mut down_frames, &mut policy, &tbuf[..n], false, &mut cw, &mut notes, &mut marks).await
                        {
                            break (e, None);
                        }
                    }
                    Err(e) => break (format!("target: {e}"), None),
                },
            }
            for (kind, detail) in marks.drain(..) {
                sink.event(0, kind, &detail);
            }
            for (blocked, line) in notes.drain(..) {
                let action = if blocked {
                    "session.channel_blocked"
                } else {
                    "session.channel"
                };
                info!(%line, "virtual channel");
                self.audit(who.0, action, who.1, false, line, who.2).await;
            }
        };
        // Ended by the gateway: the client is told why in RDP's terms (a reason code it shows), then that the
        // connection is over, when that can go between two PDUs of the target's.
        if let Some(code) = code.filter(|_| framed || to_client.at_boundary()) {
            let out = pdu::goodbye(code, DisconnectReason::ProviderInitiated);
            let _ = tokio::time::timeout(Duration::from_secs(2), cw.write_all(&out)).await;
        }
        (up, down, why)
    }

    async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        object: Option<(&str, &str)>,
        failed: bool,
        detail: String,
        ctx: &RequestContext,
    ) {
        if let Err(e) = self
            .vault
            .audit_gateway(actor, action, object, failed, detail, ctx)
            .await
        {
            warn!(error = %e, action, "could not write an audit event");
        }
    }
}

/// How long tickets live unless configured (`rdp.ticket_ttl`).
pub const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(300);

/// The ticket store as CredSSP's identities: a ticket's name and one-time password.
struct TicketIdentities<'a> {
    tickets: &'a RdpTickets,
    /// The live ticket the client named, if any.
    asked: Option<String>,
}

impl NlaIdentities for TicketIdentities<'_> {
    fn password_of(&mut self, account: &str) -> Option<String> {
        if !ticket::is_ticket_name(account) {
            return None;
        }
        let password = self.tickets.password_of(account);
        if password.is_some() {
            self.asked = Some(account.to_owned());
        }
        password
    }
}

/// The subjectPublicKey of the first certificate in the PEM file `path`.
fn own_public_key(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let cert = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| Error::Certificate {
            path: path.to_owned(),
            detail: "no certificate in the file".into(),
        })?;
    credssp::public_key_of_certificate(cert.as_ref()).map_err(|detail| Error::Certificate {
        path: path.to_owned(),
        detail,
    })
}

async fn read<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> Result<Vec<u8>, Error> {
    pdu::read_tpkt(s).await.map_err(|e| match e {
        FrameError::Io(e) => client(format!("{what}: {e}")),
        FrameError::Malformed(m) => client(format!("{what}: {m}")),
    })
}

async fn read_target<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> Result<Vec<u8>, String> {
    pdu::read_tpkt(s).await.map_err(|e| format!("{what}: {e}"))
}

/// Relays the whole PDUs `data` completes, as the channel policy says; first uses go to `notes`
/// (`true`: blocked) for the audit, clipboard and drive metadata of relayed PDUs to `marks` for the recording.
async fn forward<W: AsyncWrite + Unpin>(
    frames: &mut Framer,
    policy: &mut ChannelPolicy,
    data: &[u8],
    from_client: bool,
    out: &mut W,
    notes: &mut Vec<(bool, String)>,
    marks: &mut Vec<(&'static str, String)>,
) -> Result<(), String> {
    let (side, other) = if from_client {
        ("client", "target")
    } else {
        ("target", "client")
    };
    frames.push(data);
    loop {
        let pdu = match frames.next_pdu() {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("{side}: {e}")),
        };
        let pass = match policy.judge(&pdu, from_client) {
            Verdict::Pass => true,
            Verdict::PassFirst(line) => {
                notes.push((false, line));
                true
            }
            Verdict::Drop => false,
            Verdict::DropFirst(line) => {
                notes.push((true, line));
                false
            }
        };
        if pass {
            if let Some(m) = policy.metadata(&pdu, from_client) {
                marks.push(m);
            }
            out.write_all(&pdu).await.map_err(|e| format!("{other}: {e}"))?;
        }
    }
}

/// Reads the target's connection sequence after its Client Info PDU up to its Demand Active, which it returns
/// (framed). The client was licensed by the picker's activation, so the gateway plays the client's part of the
/// target's licensing itself: a "valid client" alert ends it at once; a License Request (xrdp sends one) gets a
/// Client New License Request, a Platform Challenge its response, and the new license or the final alert is
/// taken as the end (nothing is stored). Other share PDUs before the Demand Active are dropped.
async fn target_licensing<S: AsyncRead + AsyncWrite + Unpin>(
    t: &mut S,
    user_channel: u16,
    account: &str,
) -> Result<Vec<u8>, String> {
    use ironrdp_pdu::rdp::server_license::{
        ClientNewLicenseRequest, ClientPlatformChallengeResponse, LicenseEncryptionData, LicensePdu,
        PREMASTER_SECRET_SIZE, RANDOM_NUMBER_SIZE,
    };
    use rand010::RngExt;
    let mut keys: Option<LicenseEncryptionData> = None;
    // The hardware id the gateway shows targets (fixed: no license is kept).
    let hardware_id = [0x5053_5452u32, 0x4e52_4450, 0, 0];
    for _ in 0..32 {
        let f = read_target(t, "licensing or Demand Active").await?;
        let user_data = match pdu::parse::<X224<McsMessage<'_>>>(&f, "MCS PDU")?.0 {
            McsMessage::SendDataIndication(sd) => sd.user_data.into_owned(),
            McsMessage::DisconnectProviderUltimatum(d) => {
                return Err(format!(
                    "the target disconnected before its Demand Active ({:?})",
                    d.reason
                ))
            }
            other => return Err(format!("expected licensing or a Demand Active, got {other:?}")),
        };
        match pdu::share_control_type(&user_data) {
            Some(pdu::ShareControlType::DemandActive) => return Ok(f),
            Some(_) => {
                debug!("a share PDU from the target before its Demand Active: dropped");
                continue;
            }
            None if pdu::is_license_pdu(&user_data) => {}
            None => return Err("an undecodable PDU from the target before its Demand Active".into()),
        }
        if pdu::is_license_valid_client(&user_data) {
            debug!("the target's licensing: valid client");
            continue;
        }
        let reply: LicensePdu = match pdu::parse::<LicensePdu>(&user_data, "license PDU")? {
            LicensePdu::ServerLicenseRequest(req) => {
                let mut rng = rand010::rng();
                let mut client_random = [0u8; RANDOM_NUMBER_SIZE];
                let mut premaster = [0u8; PREMASTER_SECRET_SIZE];
                rng.fill(&mut client_random[..]);
                rng.fill(&mut premaster[..]);
                let (req, data) = ClientNewLicenseRequest::from_server_license_request(
                    &req,
                    &client_random,
                    &premaster,
                    account,
                    "postern",
                )
                .map_err(|e| format!("answering the target's License Request: {e}"))?;
                premaster.zeroize();
                keys = Some(data);
                debug!("the target's licensing: License Request answered");
                req.into()
            }
            LicensePdu::ServerPlatformChallenge(c) => {
                let data = keys.as_ref().ok_or("a Platform Challenge before any License Request")?;
                let r = ClientPlatformChallengeResponse::from_server_platform_challenge(&c, hardware_id, data)
                    .map_err(|e| format!("answering the target's Platform Challenge: {e}"))?;
                debug!("the target's licensing: Platform Challenge answered");
                r.into()
            }
            LicensePdu::ServerUpgradeLicense(_) => {
                debug!("the target's licensing: a license was issued (not kept)");
                continue;
            }
            LicensePdu::LicensingErrorMessage(m) => {
                return Err(format!("the target's licensing failed: {:?}", m.error_code))
            }
            other => {
                return Err(format!(
                    "unexpected licensing PDU from the target: {}",
                    ironrdp_core::Encode::name(&other)
                ))
            }
        };
        let body = pdu::encode(&reply)?;
        let frame = pdu::send_data_request(user_channel, &body)?;
        t.write_all(&frame).await.map_err(|e| format!("licensing: {e}"))?;
    }
    Err("no Demand Active from the target after 32 PDUs".into())
}

/// Pushes `data` into `gate` and drops whole PDUs until the client's Confirm Active; returns it and all that
/// follows (`None`: not there yet).
fn confirm_active_onwards(gate: &mut Framer, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    gate.push(data);
    while let Some(p) = gate.next_pdu()? {
        let confirm = p.first() == Some(&3)
            && matches!(
                pdu::parse::<X224<McsMessage<'_>>>(&p, "MCS PDU").map(|m| m.0),
                Ok(McsMessage::SendDataRequest(sd))
                    if sd.channel_id == IO_CHANNEL
                        && pdu::share_control_type(&sd.user_data) == Some(pdu::ShareControlType::ConfirmActive)
            );
        if confirm {
            let mut out = p;
            out.extend(gate.take_rest());
            return Ok(Some(out));
        }
        debug!(
            len = p.len(),
            "a client PDU before its Confirm Active towards the target: dropped"
        );
    }
    Ok(None)
}
