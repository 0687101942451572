//! Agentless password reset of Linux/Unix accounts over SSH (the vault's
//! [`Resetter`] for those resource types; the root registers it).
//!
//! * With the account's own password: log in as the account, run `passwd` on
//!   a pty and answer its prompts (current, new, retype).
//! * With an administrator account of the same resource (the resource's extra
//!   field `reset_with`): log in as it and run `chpasswd` (as root) or
//!   `sudo -S -p '' chpasswd` with `user:new` on STDIN — never in argv, so the
//!   new password never shows in a process list.
//!
//! Verification logs in as the account with the new password. The target's
//! host key must match the pinned one when a key is pinned.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use postern_vault::{Error, ResetStage, ResetTarget, Resetter, SecretString};
use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;

type Fut<'a> = Pin<Box<dyn Future<Output = postern_vault::Result<()>> + Send + 'a>>;

/// Resets passwords over SSH.
#[derive(Debug, Clone)]
pub struct SshResetter {
    /// Timeout to connect and log in, and for each command to finish.
    pub timeout: Duration,
}

impl Default for SshResetter {
    fn default() -> Self {
        SshResetter {
            timeout: Duration::from_secs(20),
        }
    }
}

fn fail(stage: ResetStage, detail: impl Into<String>) -> Error {
    Error::Reset {
        stage,
        detail: detail.into(),
    }
}

struct Pinned(Option<String>);

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        Ok(match &self.0 {
            None => true,
            Some(fp) => key.fingerprint(HashAlg::Sha256).to_string() == *fp,
        })
    }
}

impl SshResetter {
    async fn login(
        &self,
        t: &ResetTarget,
        login: &str,
        password: &SecretString,
        stage: ResetStage,
    ) -> postern_vault::Result<client::Handle<Pinned>> {
        if !t.resource.landing_chain.is_empty() {
            return Err(fail(
                ResetStage::Unsupported,
                "resources behind landing servers cannot be reset yet",
            ));
        }
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(self.timeout),
            ..Default::default()
        });
        let handler = Pinned(t.pinned_host_key.as_ref().map(|k| k.fingerprint.clone()));
        let addr = (t.resource.host.as_str(), t.resource.port);
        let mut h = match tokio::time::timeout(self.timeout, client::connect(config, addr, handler)).await {
            Err(_) => return Err(fail(ResetStage::Connecting, "no answer in time")),
            Ok(Err(russh::Error::UnknownKey)) => {
                return Err(fail(
                    ResetStage::Connecting,
                    "the target's host key does not match the pinned key",
                ))
            }
            Ok(Err(e)) => return Err(fail(ResetStage::Connecting, describe(&e))),
            Ok(Ok(h)) => h,
        };
        let auth = tokio::time::timeout(self.timeout, h.authenticate_password(login, password.expose())).await;
        match auth {
            Err(_) => Err(fail(stage, "the login did not complete in time")),
            Ok(Err(e)) => Err(fail(stage, describe(&e))),
            Ok(Ok(AuthResult::Success)) => Ok(h),
            Ok(Ok(_)) => Err(fail(stage, format!("the target refused the password of {login}"))),
        }
    }

    /// `passwd` as the account itself, answering the prompts on a pty.
    async fn with_passwd(&self, t: &ResetTarget, new: &SecretString) -> postern_vault::Result<()> {
        let current = t
            .current
            .as_ref()
            .ok_or_else(|| fail(ResetStage::Unsupported, "no current password is vaulted"))?;
        let h = self.login(t, &t.account.login, current, ResetStage::Connecting).await?;
        let changing = |d: String| fail(ResetStage::Changing, d);
        let mut ch = h.channel_open_session().await.map_err(|e| changing(describe(&e)))?;
        ch.request_pty(false, "dumb", 200, 24, 0, 0, &[])
            .await
            .map_err(|e| changing(describe(&e)))?;
        ch.exec(true, "LC_ALL=C passwd")
            .await
            .map_err(|e| changing(describe(&e)))?;
        let mut seen = String::new();
        let mut pending = String::new();
        let mut answers = 0;
        let dialogue = async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                        let text = String::from_utf8_lossy(&data);
                        seen.push_str(&text);
                        pending.push_str(&text);
                        let prompt = pending.trim_end().to_ascii_lowercase();
                        if prompt.ends_with(':') {
                            let answer = if prompt.contains("current") || prompt.contains("(unix) password") {
                                current
                            } else if prompt.contains("new") || prompt.contains("retype") {
                                new
                            } else {
                                return Err(changing(format!(
                                    "unexpected prompt: {}",
                                    last_line(&redact(&pending, &[current, new]))
                                )));
                            };
                            answers += 1;
                            if answers > 4 {
                                return Err(changing("passwd kept asking (the new password was refused?)".into()));
                            }
                            pending.clear();
                            let line = format!("{}\n", answer.expose());
                            ch.data_bytes(line.into_bytes())
                                .await
                                .map_err(|e| changing(describe(&e)))?;
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        return if exit_status == 0 {
                            Ok(())
                        } else {
                            Err(changing(format!(
                                "passwd exited with status {exit_status}: {}",
                                last_line(&redact(&seen, &[current, new]))
                            )))
                        };
                    }
                    ChannelMsg::Close | ChannelMsg::Eof if answers == 0 => {
                        return Err(changing("passwd ended without asking anything".into()));
                    }
                    _ => {}
                }
            }
            Err(changing("the channel closed before passwd finished".into()))
        };
        let r = tokio::time::timeout(self.timeout, dialogue)
            .await
            .unwrap_or_else(|_| Err(changing("passwd did not finish in time".into())));
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        r
    }

    /// `chpasswd` through an administrator account, `user:new` on STDIN.
    async fn with_chpasswd(
        &self,
        t: &ResetTarget,
        admin: &str,
        admin_pw: &SecretString,
        new: &SecretString,
    ) -> postern_vault::Result<()> {
        let h = self.login(t, admin, admin_pw, ResetStage::Connecting).await?;
        let changing = |d: String| fail(ResetStage::Changing, d);
        let mut ch = h.channel_open_session().await.map_err(|e| changing(describe(&e)))?;
        let (cmd, input) = if admin == "root" {
            ("chpasswd", format!("{}:{}\n", t.account.login, new.expose()))
        } else {
            (
                "sudo -S -p '' chpasswd",
                format!("{}\n{}:{}\n", admin_pw.expose(), t.account.login, new.expose()),
            )
        };
        ch.exec(true, cmd).await.map_err(|e| changing(describe(&e)))?;
        ch.data_bytes(input.into_bytes())
            .await
            .map_err(|e| changing(describe(&e)))?;
        ch.eof().await.map_err(|e| changing(describe(&e)))?;
        let mut errs = String::new();
        let run = async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::ExtendedData { data, .. } | ChannelMsg::Data { data } if errs.len() < 4096 => {
                        errs.push_str(&String::from_utf8_lossy(&data));
                    }
                    ChannelMsg::ExitStatus { exit_status: 0 } => return Ok(()),
                    ChannelMsg::ExitStatus { exit_status } => {
                        return Err(changing(format!(
                            "{cmd} exited with status {exit_status}: {}",
                            last_line(&redact(&errs, &[admin_pw, new]))
                        )))
                    }
                    _ => {}
                }
            }
            Err(changing(format!("the channel closed before {cmd} finished")))
        };
        let r = tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or_else(|_| Err(changing(format!("{cmd} did not finish in time"))));
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        r
    }
}

impl Resetter for SshResetter {
    fn reset<'a>(&'a self, t: &'a ResetTarget, new: &'a SecretString) -> Fut<'a> {
        Box::pin(async move {
            match &t.admin {
                Some((login, pw)) => self.with_chpasswd(t, login, pw, new).await,
                None => self.with_passwd(t, new).await,
            }
        })
    }

    fn verify<'a>(&'a self, t: &'a ResetTarget, password: &'a SecretString) -> Fut<'a> {
        Box::pin(async move {
            let h = self.login(t, &t.account.login, password, ResetStage::Verifying).await?;
            let _ = h.disconnect(russh::Disconnect::ByApplication, "", "en").await;
            Ok(())
        })
    }
}

/// `s` with every occurrence of the secrets replaced (a target that echoes must not leak them into errors).
fn redact(s: &str, secrets: &[&SecretString]) -> String {
    let mut out = s.to_owned();
    for sec in secrets {
        if !sec.is_empty() {
            out = out.replace(sec.expose(), "***");
        }
    }
    out
}

/// The last non-empty line of a command's output (prompts and messages only:
/// passwords are never echoed on the pty and never written by chpasswd).
fn last_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "connection timed out".into(),
            _ => format!("network error: {io}"),
        },
        russh::Error::Disconnect => "the target closed the connection".into(),
        other => format!("SSH error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_is_clean() {
        assert_eq!(
            last_line("a\npasswd: Authentication token manipulation error\r\n\n"),
            "passwd: Authentication token manipulation error"
        );
        assert_eq!(last_line(""), "");
        let pw = SecretString::from("s3cr3t");
        assert_eq!(
            last_line(&redact("Current password: s3cr3t\r\nbad s3cr3t", &[&pw])),
            "bad ***"
        );
        assert_eq!(last_line("x\x1b[0m\n"), "x[0m");
    }
}
