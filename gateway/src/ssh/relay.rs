//! Relaying channels between the user's client and the target, with a tee to
//! the session sink. Two independent directions, so a full window on one side
//! never stalls the other; requests are forwarded with `want_reply` and the
//! target's replies are passed back in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::server::{self, ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf, Pty};
use tracing::{debug, info, warn};

use crate::login::TargetName;
use crate::ssh::server::{Live, Shared};
use crate::ssh::transfer::{FileEvent, Tracker};

/// The file-transfer tracker of a channel, fed by both directions.
type Transfers = Arc<Mutex<Option<Tracker>>>;

/// Feeds bytes to the channel's transfer tracker (if any); returns the events.
fn track(xfer: &Transfers, from_client: bool, data: &[u8]) -> Vec<FileEvent> {
    let mut out = Vec::new();
    if let Some(t) = xfer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        if from_client {
            t.client_bytes(data, &mut out);
        } else {
            t.target_bytes(data, &mut out);
        }
    }
    out
}

/// Records file events as `file` markers and audits each transferred file.
async fn file_events(shared: &Shared, live: &Live, ch: u32, events: Vec<FileEvent>) {
    for e in events {
        live.sink.event(ch, "file", &e.to_json());
        if e.is_transfer() {
            shared.audit_live(live, "session.file", e.failed(), e.summary()).await;
        } else if e.op == "stopped" {
            warn!(why = %e.status, "file transfer metadata: parsing stopped");
        }
    }
}

/// What the client asked for before the target was chosen (picker mode).
struct PtyParams {
    /// Keystrokes typed after the choice, for the target's shell.
    typed_ahead: Vec<u8>,
    term: String,
    cols: u32,
    rows: u32,
    pw: u32,
    ph: u32,
    modes: Vec<(Pty, u32)>,
}

/// Order of replies owed to the client: `false` = the target's reply,
/// `true` = a local refusal queued behind earlier target replies.
type ReplyQueue = Arc<Mutex<VecDeque<bool>>>;

async fn local_refusal(q: &ReplyQueue, handle: &server::Handle, cid: ChannelId) {
    let now = {
        let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            true
        } else {
            q.push_back(true);
            false
        }
    };
    if now {
        let _ = handle.channel_failure(cid).await;
    }
}

async fn target_reply(q: &ReplyQueue, handle: &server::Handle, cid: ChannelId, ok: bool) {
    let mut replies = vec![ok];
    {
        let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
        q.pop_front();
        while q.front() == Some(&true) {
            q.pop_front();
            replies.push(false);
        }
    }
    for r in replies {
        let _ = if r {
            handle.channel_success(cid).await
        } else {
            handle.channel_failure(cid).await
        };
    }
}

async fn fail_channel(wr: &ChannelWriteHalf<Msg>, msg: &str) {
    let _ = wr
        .extended_data_bytes(1, Bytes::from(format!("postern: {msg}\r\n")))
        .await;
    let _ = wr.exit_status(255).await;
    let _ = wr.eof().await;
    let _ = wr.close().await;
}

/// A session channel from the client: pick the target, connect, relay.
pub(crate) async fn session_channel(shared: Arc<Shared>, channel: Channel<Msg>, handle: server::Handle) {
    let cid = channel.id();
    let (mut rd, wr) = channel.split();
    let Some((actor, login)) = shared.identity() else {
        return fail_channel(&wr, "not authenticated").await;
    };
    let (name, preface) = match login.target {
        Some(t) => (t, None),
        None => match picker(&shared, &actor, &mut rd, &wr, &handle, cid).await {
            Some(x) => x,
            None => return,
        },
    };
    let live = match shared.live(&name).await {
        Ok(l) => l,
        Err(msg) => return fail_channel(&wr, &msg).await,
    };
    relay(shared, live, cid, rd, wr, handle, preface).await;
}

async fn relay(
    shared: Arc<Shared>,
    live: Arc<Live>,
    cid: ChannelId,
    mut crd: ChannelReadHalf,
    cwr: ChannelWriteHalf<Msg>,
    handle: server::Handle,
    preface: Option<PtyParams>,
) {
    if let Some(why) = live.sink.failed() {
        return fail_channel(&cwr, &format!("session refused: {why}")).await;
    }
    let tch = match live.conn.handle.channel_open_session().await {
        Ok(c) => c,
        Err(e) => return fail_channel(&cwr, &format!("the target refused a new channel: {e}")).await,
    };
    let (mut trd, twr) = tch.split();
    if let Some(p) = preface {
        let _ = twr
            .request_pty(false, &p.term, p.cols, p.rows, p.pw, p.ph, &p.modes)
            .await;
        let _ = twr.request_shell(false).await;
        if !p.typed_ahead.is_empty() {
            let _ = twr.data_bytes(Bytes::from(p.typed_ahead)).await;
        }
    }
    live.notices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((handle.clone(), cid));
    let q: ReplyQueue = Arc::new(Mutex::new(VecDeque::new()));
    let ch = u32::from(cid);
    let sink = live.sink.clone();
    // File transfers (sftp, scp) are recorded as metadata (file markers), not their bytes.
    let tee = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let xfer: Transfers = Arc::new(Mutex::new(None));
    let up = {
        let (tee, xfer) = (tee.clone(), xfer.clone());
        let (q, handle, sink, shared, live) = (q.clone(), handle.clone(), sink.clone(), shared.clone(), live.clone());
        async move {
            let push = || q.lock().unwrap_or_else(|e| e.into_inner()).push_back(false);
            while let Some(msg) = crd.wait().await {
                shared.touch();
                let r = match msg {
                    // Once the recording failed nothing more reaches the target unrecorded; the
                    // other direction ends the channel with the message at the target's next word.
                    ChannelMsg::Data { .. } if sink.failed().is_some() => Ok(()),
                    ChannelMsg::Data { data } => {
                        if tee.load(std::sync::atomic::Ordering::Relaxed) {
                            sink.input(ch, &data);
                        } else {
                            // Parsed before it is forwarded, so the target's answer is never seen first.
                            let events = track(&xfer, true, &data);
                            file_events(&shared, &live, ch, events).await;
                        }
                        twr.data_bytes(data).await
                    }
                    ChannelMsg::ExtendedData { data, ext } => twr.extended_data_bytes(ext, data).await,
                    ChannelMsg::Eof => twr.eof().await,
                    ChannelMsg::Close => break,
                    ChannelMsg::RequestPty {
                        term,
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                        terminal_modes,
                        ..
                    } => {
                        push();
                        sink.event(ch, "pty", &format!("{term} {col_width}x{row_height}"));
                        twr.request_pty(
                            true,
                            &term,
                            col_width,
                            row_height,
                            pix_width,
                            pix_height,
                            &terminal_modes,
                        )
                        .await
                    }
                    ChannelMsg::RequestShell { .. } => {
                        push();
                        sink.event(ch, "shell", "");
                        twr.request_shell(true).await
                    }
                    ChannelMsg::Exec { command, .. } => {
                        let cmd = String::from_utf8_lossy(&command).into_owned();
                        if let Some(t) = Tracker::scp(&cmd) {
                            *xfer.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                            tee.store(false, std::sync::atomic::Ordering::Relaxed);
                        } else if cmd.starts_with("scp ") {
                            tee.store(false, std::sync::atomic::Ordering::Relaxed);
                        }
                        sink.event(ch, "exec", &cmd);
                        shared
                            .audit_live(&live, "session.exec", false, cmd.chars().take(1000).collect())
                            .await;
                        push();
                        twr.exec(true, command).await
                    }
                    ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => {
                        *xfer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Tracker::sftp());
                        tee.store(false, std::sync::atomic::Ordering::Relaxed);
                        sink.event(ch, "subsystem", &name);
                        shared
                            .audit_live(&live, "session.sftp", false, "sftp subsystem".into())
                            .await;
                        push();
                        twr.request_subsystem(true, name).await
                    }
                    ChannelMsg::SetEnv {
                        variable_name,
                        variable_value,
                        ..
                    } => twr.set_env(false, variable_name, variable_value).await,
                    ChannelMsg::WindowChange {
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                    } => {
                        sink.event(ch, "resize", &format!("{col_width}x{row_height}"));
                        twr.window_change(col_width, row_height, pix_width, pix_height).await
                    }
                    ChannelMsg::Signal { signal } => twr.signal(signal).await,
                    // OpenSSH asks for agent forwarding without wanting a reply, and russh answers
                    // (or not) itself: forward it where allowed, never reply from here.
                    ChannelMsg::AgentForward { .. } => {
                        if live.target.resource.allow_agent_forwarding {
                            shared
                                .audit_live(
                                    &live,
                                    "session.agent_forward",
                                    false,
                                    "agent forwarding requested".into(),
                                )
                                .await;
                            twr.agent_forward(false).await
                        } else {
                            shared
                                .audit_live(
                                    &live,
                                    "session.forward_denied",
                                    true,
                                    "agent forwarding: not allowed on this resource".into(),
                                )
                                .await;
                            Ok(())
                        }
                    }
                    ChannelMsg::RequestSubsystem { .. } | ChannelMsg::RequestX11 { .. } => {
                        local_refusal(&q, &handle, cid).await;
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if r.is_err() {
                    break;
                }
            }
            let _ = twr.eof().await;
            let _ = twr.close().await;
        }
    };
    let down = {
        let (q, handle, sink, xfer) = (q.clone(), handle.clone(), sink.clone(), xfer.clone());
        let (shared, live) = (shared.clone(), live.clone());
        async move {
            while let Some(msg) = trd.wait().await {
                if let Some(why) = sink.failed() {
                    warn!(%why, "the recording failed: ending the session");
                    fail_channel(&cwr, &format!("session ended: {why}")).await;
                    return;
                }
                let teeing = tee.load(std::sync::atomic::Ordering::Relaxed);
                if teeing {
                    if let Some(ready) = sink.writable() {
                        ready.await;
                    }
                }
                let r = match msg {
                    ChannelMsg::Data { data } => {
                        if teeing {
                            sink.output(ch, &data);
                        } else {
                            let events = track(&xfer, false, &data);
                            file_events(&shared, &live, ch, events).await;
                        }
                        cwr.data_bytes(data).await
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        sink.output(ch, &data);
                        cwr.extended_data_bytes(ext, data).await
                    }
                    ChannelMsg::Eof => cwr.eof().await,
                    ChannelMsg::ExitStatus { exit_status } => {
                        sink.event(ch, "exit", &exit_status.to_string());
                        cwr.exit_status(exit_status).await
                    }
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    } => {
                        sink.event(ch, "exit-signal", &format!("{signal_name:?}"));
                        let _ = handle
                            .exit_signal_request(cid, signal_name, core_dumped, error_message, lang_tag)
                            .await;
                        Ok(())
                    }
                    ChannelMsg::Success => {
                        target_reply(&q, &handle, cid, true).await;
                        Ok(())
                    }
                    ChannelMsg::Failure => {
                        target_reply(&q, &handle, cid, false).await;
                        Ok(())
                    }
                    ChannelMsg::Close => break,
                    _ => Ok(()),
                };
                if r.is_err() {
                    break;
                }
            }
            let _ = cwr.eof().await;
            let _ = cwr.close().await;
        }
    };
    let up = tokio::spawn(up);
    down.await;
    // The target is done; give the client a moment to acknowledge the close.
    if tokio::time::timeout(Duration::from_secs(5), up).await.is_err() {
        debug!("client did not close its channel after the target did");
    }
    // Files still open when the channel ended.
    let mut events = Vec::new();
    if let Some(mut t) = xfer.lock().unwrap_or_else(|e| e.into_inner()).take() {
        t.finish(&mut events);
    }
    file_events(&shared, &live, ch, events).await;
}

/// The account picker for a plain `USER` login: list, filter by typing, pick by number.
async fn picker(
    shared: &Shared,
    actor: &postern_vault::Actor,
    rd: &mut ChannelReadHalf,
    wr: &ChannelWriteHalf<Msg>,
    handle: &server::Handle,
    cid: ChannelId,
) -> Option<(TargetName, Option<PtyParams>)> {
    let mut pty = None;
    // Wait for the shell request; refuse commands (a plain USER must name a target for exec).
    loop {
        match rd.wait().await? {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = Some(PtyParams {
                    typed_ahead: Vec::new(),
                    term,
                    cols: col_width,
                    rows: row_height,
                    pw: pix_width,
                    ph: pix_height,
                    modes: terminal_modes,
                });
                let _ = handle.channel_success(cid).await;
            }
            ChannelMsg::RequestShell { .. } => {
                let _ = handle.channel_success(cid).await;
                break;
            }
            ChannelMsg::Exec { .. } | ChannelMsg::RequestSubsystem { .. } => {
                let _ = handle.channel_success(cid).await;
                fail_channel(
                    wr,
                    "name the target in the login: ssh 'USER#ACCOUNT@RESOURCE@gateway' (see the README)",
                )
                .await;
                return None;
            }
            ChannelMsg::Close | ChannelMsg::Eof => return None,
            _ => {}
        }
    }
    let accounts = match shared.vault().connectable_accounts(actor, &shared.ctx()).await {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "listing accounts for the picker failed");
            fail_channel(wr, "internal error while listing your accounts").await;
            return None;
        }
    };
    let names: Vec<TargetName> = accounts
        .iter()
        .map(|(r, a)| TargetName {
            account: a.login.clone(),
            resource: r.name.clone(),
        })
        .collect();
    if names.is_empty() {
        fail_channel(wr, "you have no accounts to connect to").await;
        return None;
    }
    let mut filter = String::new();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let shown: Vec<&TargetName> = names
            .iter()
            .filter(|n| filter.is_empty() || n.to_string().to_lowercase().contains(&filter.to_lowercase()))
            .collect();
        let mut text = String::from("\r\nAccounts you may use:\r\n");
        for (i, n) in shown.iter().enumerate() {
            text.push_str(&format!("  {:>3}) {n}\r\n", i + 1));
        }
        if shown.is_empty() {
            text.push_str("  (nothing matches)\r\n");
        }
        text.push_str("Type a number and Enter to connect, text and Enter to filter, Ctrl-D to quit: ");
        let _ = wr.data_bytes(Bytes::from(text)).await;
        let line = read_line(shared, rd, wr, &mut pending).await?;
        let line = line.trim();
        if let Ok(n) = line.parse::<usize>() {
            if let Some(t) = n.checked_sub(1).and_then(|i| shown.get(i)) {
                let _ = wr
                    .data_bytes(Bytes::from(format!("\r\nConnecting to {t}...\r\n")))
                    .await;
                info!(target = %t, "picked from the account list");
                let pty = pty.map(|mut p| {
                    p.typed_ahead = std::mem::take(&mut pending);
                    p
                });
                return Some(((*t).clone(), pty));
            }
        }
        filter = line.to_owned();
    }
}

/// Reads one line with local echo; bytes after the line end stay in `pending`.
async fn read_line(
    shared: &Shared,
    rd: &mut ChannelReadHalf,
    wr: &ChannelWriteHalf<Msg>,
    pending: &mut Vec<u8>,
) -> Option<String> {
    let mut line = String::new();
    loop {
        let data = if pending.is_empty() {
            match rd.wait().await? {
                ChannelMsg::Data { data } => {
                    shared.touch();
                    data.to_vec()
                }
                ChannelMsg::Close | ChannelMsg::Eof => return None,
                _ => continue,
            }
        } else {
            std::mem::take(pending)
        };
        {
            {
                for (i, &b) in data.iter().enumerate() {
                    match b {
                        b'\r' | b'\n' => {
                            let _ = wr.data_bytes(Bytes::from_static(b"\r\n")).await;
                            let mut rest = &data[i + 1..];
                            if b == b'\r' && rest.first() == Some(&b'\n') {
                                rest = &rest[1..];
                            }
                            *pending = rest.to_vec();
                            return Some(line);
                        }
                        3 | 4 => {
                            let _ = wr.exit_status(0).await;
                            let _ = wr.close().await;
                            return None;
                        }
                        0x7f | 8 if line.pop().is_some() => {
                            let _ = wr.data_bytes(Bytes::from_static(b"\x08 \x08")).await;
                        }
                        b if (0x20..0x7f).contains(&b) && line.len() < 200 => {
                            line.push(b as char);
                            let _ = wr.data_bytes(Bytes::copy_from_slice(&[b])).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// A local port forward (`ssh -L`): allowed per resource, audited with bytes.
pub(crate) async fn direct_tcpip(
    shared: Arc<Shared>,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    dest: (String, u32),
    origin: (String, u32),
) {
    let Some((actor, login)) = shared.identity() else {
        return reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
    };
    let Some(name) = login.target else {
        return reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
    };
    let Ok(live) = shared.live(&name).await else {
        return reply.reject(ChannelOpenFailure::ConnectFailed).await;
    };
    let to = format!("{}:{}", dest.0, dest.1);
    let account = Some((live.target.account.id.as_str(), live.label.as_str()));
    if !live.target.resource.allow_port_forwarding {
        let _ = shared
            .vault()
            .audit_gateway(
                &actor,
                "session.forward_denied",
                account,
                true,
                format!("local forward to {to}: not allowed on this resource"),
                &shared.ctx(),
            )
            .await;
        return reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
    }
    let tch = match live
        .conn
        .handle
        .channel_open_direct_tcpip(dest.0.clone(), dest.1, origin.0, origin.1)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = shared
                .vault()
                .audit_gateway(
                    &actor,
                    "session.forward",
                    account,
                    true,
                    format!("local forward to {to} failed: {e}"),
                    &shared.ctx(),
                )
                .await;
            return reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let _ = shared
        .vault()
        .audit_gateway(
            &actor,
            "session.forward",
            account,
            false,
            format!("local forward to {to} opened"),
            &shared.ctx(),
        )
        .await;
    let mut a = Touching {
        inner: channel.into_stream(),
        shared: shared.clone(),
    };
    let mut b = tch.into_stream();
    let (up, down) = tokio::io::copy_bidirectional(&mut a, &mut b).await.unwrap_or((0, 0));
    let _ = shared
        .vault()
        .audit_gateway(
            &actor,
            "session.forward",
            account,
            false,
            format!("local forward to {to} closed: {up} bytes up, {down} bytes down"),
            &shared.ctx(),
        )
        .await;
}

/// The client's side of a forward: reading from it counts as client input (not idle).
struct Touching<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Touching<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.shared.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Touching<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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
