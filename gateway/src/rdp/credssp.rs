//! CredSSP (NLA) with NTLM, both ways:
//!
//! - as the **client towards targets** that select `PROTOCOL_HYBRID` (Windows): the vaulted account and password,
//!   through `ironrdp-connector`'s CredSSP sequence (sspi's NTLM client);
//! - as the **server towards clients** that offer NLA: sspi's NTLM server, whose identities are the one-time RDP
//!   tickets (NTLM needs the plaintext password on the server side, which a hashed Postern password is not).
//!
//! Both run inside the TLS session, bound to its certificate's public key (CredSSP's `pubKeyAuth`). NTLM needs no
//! network lookups: a generator that asks for one is an error.
//!
//! CredSSP comes from IronRDP's newer line (`ironrdp-connector` 0.12, `sspi` 0.23), whose `ironrdp-pdu` 0.11 and
//! `ironrdp-core` 0.3 are used here only (as `ironrdp_pdu_next`/`ironrdp_core_next`); the rest of the gateway
//! parses PDUs with `ironrdp-pdu` 0.9. CredSSP runs on bytes, so the two never meet.

use ironrdp_connector::credssp::CredsspSequence;
use ironrdp_connector::{Credentials, ServerName};
use ironrdp_core_next::WriteBuf;
use sspi::credssp::{ClientState, CredSspServer, CredentialsProxy, ServerMode, ServerState, TsRequest};
use sspi::generator::GeneratorState;
use sspi::{AuthIdentity, Username};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

/// The largest TSRequest accepted.
const MAX_TS_REQUEST: usize = 64 * 1024;

/// Why CredSSP failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredsspError {
    /// The peer refused the credentials (NTLM logon failure, or the peer closed the connection at that step).
    #[error("the credentials were refused (CredSSP/NTLM logon failure: {0})")]
    LogonFailure(String),
    /// The peer broke the protocol, or the socket failed.
    #[error("CredSSP: {0}")]
    Protocol(String),
}

/// Reads one DER-encoded TSRequest (a SEQUENCE) from `s`.
pub(crate) async fn read_ts_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, CredsspError> {
    let io = |e: std::io::Error| CredsspError::Protocol(format!("reading a TSRequest: {e}"));
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.map_err(io)?;
    if head[0] != 0x30 {
        return Err(CredsspError::Protocol(format!(
            "expected a TSRequest (DER SEQUENCE), got first byte {:#04x}",
            head[0]
        )));
    }
    let mut frame = head.to_vec();
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7f);
        if !(1..=3).contains(&n) {
            return Err(CredsspError::Protocol(format!("TSRequest length of {n} bytes")));
        }
        let mut l = [0u8; 3];
        s.read_exact(&mut l[..n]).await.map_err(io)?;
        frame.extend_from_slice(&l[..n]);
        l[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if len > MAX_TS_REQUEST {
        return Err(CredsspError::Protocol(format!("TSRequest of {len} bytes is too large")));
    }
    let start = frame.len();
    frame.resize(start + len, 0);
    s.read_exact(&mut frame[start..]).await.map_err(io)?;
    Ok(frame)
}

/// CredSSP as the client towards a target with `account`/`password` (NTLM). `server_public_key` is the
/// target's TLS certificate public key ([`public_key_of_certificate`]). Ends when the target has the
/// credentials; the RDP connection sequence goes on in the same TLS session.
pub(crate) async fn as_client<S>(
    stream: &mut S,
    account: &str,
    password: &str,
    server_public_key: Vec<u8>,
    server_name: &str,
) -> Result<(), CredsspError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let protocol = |e: ironrdp_connector::ConnectorError| CredsspError::Protocol(e.to_string());
    // `DOMAIN\user` and `user@domain` split as Windows does; a plain name has no domain.
    let (user, domain) = match account.split_once('\\') {
        Some((d, u)) => (u.to_owned(), Some(d.to_owned())),
        None => (account.to_owned(), None),
    };
    let creds = Credentials::UsernamePassword {
        username: user,
        password: password.to_owned(),
    };
    let (mut sequence, mut ts_request) = CredsspSequence::init(
        creds,
        domain.as_deref(),
        ironrdp_pdu_next::nego::SecurityProtocol::HYBRID,
        ServerName::new(server_name),
        server_public_key,
        None,
    )
    .map_err(protocol)?;
    let mut buf = WriteBuf::new();
    loop {
        let state = {
            let mut generator = sequence.process_ts_request(ts_request);
            match generator.start() {
                GeneratorState::Completed(r) => r,
                GeneratorState::Suspended(_) => {
                    return Err(CredsspError::Protocol(
                        "the NTLM client asked for a network lookup (Kerberos is not supported)".into(),
                    ))
                }
            }
        };
        let state = state.map_err(|e| classify(e.to_string()))?;
        let last = matches!(state, ClientState::FinalMessage(_));
        buf.clear();
        let written = sequence.handle_process_result(state, &mut buf).map_err(protocol)?;
        if let Some(n) = written.size() {
            let sent = stream.write_all(&buf[..n]).await;
            // The last message holds the (encrypted) credentials.
            buf.zeroize_filled();
            sent.map_err(|e| CredsspError::Protocol(format!("sending a TSRequest: {e}")))?;
        }
        if last && sequence.next_pdu_hint().is_none() {
            return Ok(());
        }
        let frame = match read_ts_request(stream).await {
            Ok(f) => f,
            // A target that refuses the NTLM response closes the connection (or sends an error code).
            Err(e) => return Err(CredsspError::LogonFailure(format!("the target ended CredSSP ({e})"))),
        };
        match sequence.decode_server_message(&frame).map_err(protocol)? {
            Some(next) => {
                if let Some(code) = next.error_code {
                    return Err(CredsspError::LogonFailure(format!("the target sent error {code:?}")));
                }
                ts_request = next;
            }
            None => return Ok(()),
        }
    }
}

/// NTLM logon failures are errors of the credentials, the rest protocol errors.
fn classify(detail: String) -> CredsspError {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("logon") || lower.contains("denied") || lower.contains("invalid token") {
        CredsspError::LogonFailure(detail)
    } else {
        CredsspError::Protocol(detail)
    }
}

/// Who may log on with NLA: the password of a user name, when it has one (a one-time ticket's secret).
pub(crate) trait NlaIdentities: Send {
    /// The password for `account` (the NTLM user name without its domain), or `None`.
    fn password_of(&mut self, account: &str) -> Option<String>;
}

struct Proxy<'a, I: NlaIdentities>(&'a mut I);

impl<I: NlaIdentities> CredentialsProxy for Proxy<'_, I> {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> std::io::Result<AuthIdentity> {
        let password = self
            .0
            .password_of(username.account_name())
            .ok_or_else(|| std::io::Error::other("unknown user name"))?;
        Ok(AuthIdentity {
            username: username.clone(),
            password: password.into(),
        })
    }

    fn auth_data(&mut self) -> std::io::Result<Vec<AuthIdentity>> {
        // Only needed by Kerberos/PKU2U servers, which are not offered.
        Ok(Vec::new())
    }
}

/// CredSSP as the server towards a client (NTLM), proving `gateway_public_key` (the gateway's TLS certificate
/// public key). Returns the user name (account part) the client authenticated as; the client's delegated
/// credentials (its copy of the same secret) are wiped.
pub(crate) async fn as_server<S, I>(
    stream: &mut S,
    gateway_public_key: Vec<u8>,
    identities: &mut I,
) -> Result<String, CredsspError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: NlaIdentities,
{
    let mut server = CredSspServer::new(
        gateway_public_key,
        Proxy(identities),
        ServerMode::Ntlm(sspi::ntlm::NtlmConfig::new("postern".into())),
    )
    .map_err(|e| CredsspError::Protocol(e.to_string()))?;
    loop {
        let frame = read_ts_request(stream).await?;
        let request = TsRequest::from_buffer(&frame).map_err(|e| CredsspError::Protocol(format!("TSRequest: {e}")))?;
        let result = {
            let mut generator = server.process(request);
            match generator.start() {
                GeneratorState::Completed(r) => r,
                GeneratorState::Suspended(_) => {
                    return Err(CredsspError::Protocol(
                        "the NTLM server asked for a network lookup".into(),
                    ))
                }
            }
        };
        match result {
            Ok(ServerState::ReplyNeeded(reply)) => write_ts_request(stream, &reply).await?,
            Ok(ServerState::Finished(identity)) => {
                let name = identity.username.account_name().to_owned();
                drop(identity);
                return Ok(name);
            }
            Err(e) => {
                // Tell the client (an error code in a TSRequest) before the caller closes the connection.
                if let Some(reply) = e.ts_request {
                    let _ = write_ts_request(stream, &reply).await;
                }
                return Err(CredsspError::LogonFailure(e.error.to_string()));
            }
        }
    }
}

async fn write_ts_request<S: AsyncWrite + Unpin>(stream: &mut S, request: &TsRequest) -> Result<(), CredsspError> {
    let len = request
        .buffer_len()
        .map_err(|e| CredsspError::Protocol(format!("sizing a TSRequest: {e}")))?;
    let mut out = vec![0u8; usize::from(len)];
    request
        .encode_ts_request(&mut out[..])
        .map_err(|e| CredsspError::Protocol(format!("encoding a TSRequest: {e}")))?;
    let sent = stream.write_all(&out).await;
    out.zeroize();
    sent.map_err(|e| CredsspError::Protocol(format!("sending a TSRequest: {e}")))
}

/// The `subjectPublicKey` of an X.509 certificate (DER), which CredSSP binds to: the bytes of the BIT STRING
/// without its unused-bits octet.
pub(crate) fn public_key_of_certificate(der: &[u8]) -> Result<Vec<u8>, String> {
    let (cert, _) = der_take(der, 0x30).map_err(|e| format!("certificate: {e}"))?;
    let (mut tbs, _) = der_take(cert, 0x30).map_err(|e| format!("tbsCertificate: {e}"))?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?; // version
    }
    for field in ["serialNumber", "signature", "issuer", "validity", "subject"] {
        tbs = der_skip(tbs).map_err(|e| format!("{field}: {e}"))?;
    }
    let (spki, _) = der_take(tbs, 0x30).map_err(|e| format!("subjectPublicKeyInfo: {e}"))?;
    let rest = der_skip(spki).map_err(|e| format!("algorithm: {e}"))?;
    let (bits, _) = der_take(rest, 0x03).map_err(|e| format!("subjectPublicKey: {e}"))?;
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err("subjectPublicKey is not a whole number of bytes".into()),
    }
}

/// The content of the DER element at the start of `b` (which must have tag `tag`) and what follows it.
fn der_take(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (t, content, rest) = der_element(b)?;
    if t != tag {
        return Err(format!("expected DER tag {tag:#04x}, got {t:#04x}"));
    }
    Ok((content, rest))
}

/// What follows the DER element at the start of `b`.
fn der_skip(b: &[u8]) -> Result<&[u8], String> {
    der_element(b).map(|(_, _, rest)| rest)
}

fn der_element(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, b) = b.split_first().ok_or("truncated DER")?;
    let (&first, b) = b.split_first().ok_or("truncated DER length")?;
    let (len, b) = if first < 0x80 {
        (usize::from(first), b)
    } else {
        let n = usize::from(first & 0x7f);
        if !(1..=3).contains(&n) || b.len() < n {
            return Err("bad DER length".into());
        }
        let len = b[..n].iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
        (len, &b[n..])
    };
    if b.len() < len {
        return Err("truncated DER element".into());
    }
    Ok((tag, &b[..len], &b[len..]))
}

/// `WriteBuf` has no zeroizing clear: overwrite what was written.
trait ZeroizeFilled {
    fn zeroize_filled(&mut self);
}

impl ZeroizeFilled for WriteBuf {
    fn zeroize_filled(&mut self) {
        self.filled_mut().fill(0);
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str, &'static str);

    impl NlaIdentities for One {
        fn password_of(&mut self, account: &str) -> Option<String> {
            (account == self.0).then(|| self.1.to_owned())
        }
    }

    fn test_key() -> Vec<u8> {
        vec![0x30, 0x03, 0x02, 0x01, 0x05]
    }

    /// The two halves against each other in memory: the right secret passes and names the user; a wrong one
    /// and an unknown user fail as a logon failure on both sides, with no hang.
    #[tokio::test]
    async fn client_and_server_agree_only_on_the_right_secret() {
        for (user, pw, ok) in [
            ("pt-abc", "one-time secret", true),
            ("pt-abc", "wrong secret", false),
            ("pt-other", "one-time secret", false),
        ] {
            let (mut c, mut s) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(async move {
                let mut ids = One("pt-abc", "one-time secret");
                as_server(&mut s, test_key(), &mut ids).await
            });
            let client = as_client(&mut c, user, pw, test_key(), "postern").await;
            drop(c);
            let server = tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("no hang")
                .unwrap();
            if ok {
                client.unwrap();
                assert_eq!(server.unwrap(), "pt-abc");
            } else {
                assert!(
                    matches!(server, Err(CredsspError::LogonFailure(_))),
                    "{user}/{pw}: server {server:?}"
                );
                assert!(client.is_err(), "{user}/{pw}: the client thinks it passed");
            }
        }
    }

    #[test]
    fn bad_der_is_an_error() {
        assert!(public_key_of_certificate(&[]).is_err());
        assert!(public_key_of_certificate(&[0x30, 0x82, 0xff]).is_err());
        assert!(public_key_of_certificate(&[0x30, 0x02, 0x30, 0x00]).is_err());
    }
}
