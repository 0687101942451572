//! TLS for the RDP front end: the gateway's own certificate towards clients; towards targets, trust on first use
//! per resource, like SSH host keys.
//!
//! RDP targets present self-signed certificates (xrdp's, Windows' own "Remote Desktop" certificate), so no CA
//! can vouch for them. The first certificate a resource presents is pinned in the vault's host-key table
//! ([`postern_vault::RDP_CERTIFICATE_PIN`]): its `SHA256:<hex>` fingerprint of the whole DER certificate, which is
//! what `openssl x509 -fingerprint -sha256` and the `session.start` audit event show. Afterwards a different
//! certificate fails the TLS handshake itself ([`TargetPin`] is the rustls verifier), before anything is sent to
//! the target. Pinning the whole certificate rather than its public key means a target that renews its
//! certificate with the same key needs an administrator to clear the pin too; it is the stricter choice and the
//! fingerprint people compare by hand. `[rdp.dangerous] accept_any_target_certificate` accepts a changed one
//! (the pin stays; the session's audit says so).

use std::path::Path;
use std::sync::{Arc, Mutex};

use postern_vault::{PinnedHostKey, RDP_CERTIFICATE_PIN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::Error;

fn cert_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Certificate {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// The server side: the PEM certificate chain and key.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| Error::Io {
            path: p.to_owned(),
            source: e,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err(cert, "no certificate in the file"));
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| cert_err(key, e.to_string()))?
        .ok_or_else(|| cert_err(key, "no private key in the file"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| cert_err(cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `SHA256:<hex>` of a DER certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// What the target presented, as seen by [`TargetPin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No handshake got as far as the certificate.
    Nothing,
    /// Nothing was pinned: this certificate is to be pinned once the session starts.
    FirstUse(PinnedHostKey),
    /// The pinned certificate.
    Pinned(String),
    /// A certificate other than the pinned one, refused.
    Changed {
        /// The pinned fingerprint.
        pinned: String,
        /// The presented fingerprint.
        presented: String,
    },
    /// A certificate other than the pinned one, accepted because of `accept_any_target_certificate`.
    ChangedAccepted {
        /// The pinned fingerprint.
        pinned: String,
        /// The presented fingerprint.
        presented: String,
    },
}

impl Seen {
    /// The words for the audit (`session.start`) and the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Seen::Nothing => "target certificate unknown".into(),
            Seen::FirstUse(p) => format!("target certificate {}, pinned on this first use", p.fingerprint),
            Seen::Pinned(fp) => format!("target certificate {fp}, as pinned"),
            Seen::Changed { pinned, presented } => format!(
                "its TLS certificate changed (pinned {pinned}, presented {presented}); refusing to connect. An administrator must confirm the new certificate (clear the pin: DELETE /api/v1/resources/{{id}}/host-key)."
            ),
            Seen::ChangedAccepted { pinned, presented } => format!(
                "target certificate {presented}, NOT the pinned {pinned}: accepted because [rdp.dangerous] accept_any_target_certificate is on"
            ),
        }
    }
}

/// The certificate check towards one target connection: pinned fingerprint (if any), the dangerous override,
/// and what was seen. One per connection; its [`TargetPin::connector`] refuses a changed certificate during
/// the handshake.
#[derive(Debug)]
pub(crate) struct TargetPin {
    provider: Arc<CryptoProvider>,
    pinned: Option<String>,
    accept_any: bool,
    seen: Mutex<Seen>,
}

impl TargetPin {
    /// A check against `pinned` (the resource's pinned certificate, if any).
    pub(crate) fn new(pinned: Option<&PinnedHostKey>, accept_any: bool) -> Arc<TargetPin> {
        Arc::new(TargetPin {
            provider: provider(),
            pinned: pinned.map(|p| p.fingerprint.clone()),
            accept_any,
            seen: Mutex::new(Seen::Nothing),
        })
    }

    /// A TLS connector that checks the target's certificate with this pin (signatures are still checked).
    pub(crate) fn connector(self: &Arc<Self>) -> TlsConnector {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// What the handshake saw.
    pub(crate) fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces what was seen (a concurrent first use pinned another certificate).
    pub(crate) fn set_seen(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// Judges a presented certificate (DER); `true` when the handshake may go on.
    fn judge(&self, der: &[u8]) -> bool {
        let presented = fingerprint(der);
        let (seen, ok) = match &self.pinned {
            None => (
                Seen::FirstUse(PinnedHostKey {
                    algorithm: RDP_CERTIFICATE_PIN.into(),
                    public_key: hex::encode(der),
                    fingerprint: presented,
                }),
                true,
            ),
            Some(p) if *p == presented => (Seen::Pinned(presented), true),
            Some(p) if self.accept_any => (
                Seen::ChangedAccepted {
                    pinned: p.clone(),
                    presented,
                },
                true,
            ),
            Some(p) => (
                Seen::Changed {
                    pinned: p.clone(),
                    presented,
                },
                false,
            ),
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        ok
    }
}

impl ServerCertVerifier for TargetPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.judge(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(fp: &str) -> PinnedHostKey {
        PinnedHostKey {
            algorithm: RDP_CERTIFICATE_PIN.into(),
            public_key: String::new(),
            fingerprint: fp.into(),
        }
    }

    #[test]
    fn first_use_pins_the_same_certificate_passes_a_changed_one_is_refused_unless_dangerous() {
        let (a, b) = (b"certificate a".as_slice(), b"certificate b".as_slice());
        let fa = fingerprint(a);
        assert!(fa.starts_with("SHA256:") && fa.len() == 7 + 64, "{fa}");

        let first = TargetPin::new(None, false);
        assert_eq!(first.seen(), Seen::Nothing);
        assert!(first.judge(a));
        match first.seen() {
            Seen::FirstUse(p) => {
                assert_eq!(p.algorithm, RDP_CERTIFICATE_PIN);
                assert_eq!(p.fingerprint, fa);
                assert_eq!(p.public_key, hex::encode(a));
            }
            other => panic!("{other:?}"),
        }

        let same = TargetPin::new(Some(&pin(&fa)), false);
        assert!(same.judge(a));
        assert_eq!(same.seen(), Seen::Pinned(fa.clone()));

        let changed = TargetPin::new(Some(&pin(&fa)), false);
        assert!(!changed.judge(b));
        let seen = changed.seen();
        assert_eq!(
            seen,
            Seen::Changed {
                pinned: fa.clone(),
                presented: fingerprint(b)
            }
        );
        let words = seen.describe();
        assert!(
            words.contains("changed") && words.contains(&fa) && words.contains(&fingerprint(b)),
            "{words}"
        );

        let dangerous = TargetPin::new(Some(&pin(&fa)), true);
        assert!(dangerous.judge(b));
        assert!(matches!(dangerous.seen(), Seen::ChangedAccepted { .. }));
        assert!(dangerous.seen().describe().contains("accept_any_target_certificate"));
    }
}
