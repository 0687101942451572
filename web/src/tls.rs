//! TLS termination and the accept loop.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::{router, AppState, Error};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads a PEM certificate chain and private key into a rustls server
/// configuration using the ring provider, offering ALPN `h2` and `http/1.1`.
pub fn load_tls(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, Error> {
    let cert_err = |source| Error::TlsCertificate {
        path: cert_pem.to_owned(),
        source,
    };
    let mut rd = BufReader::new(File::open(cert_pem).map_err(cert_err)?);
    let certs = rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(Error::TlsNoCertificate {
            path: cert_pem.to_owned(),
        });
    }
    let key_err = |source| Error::TlsKey {
        path: key_pem.to_owned(),
        source,
    };
    let mut rd = BufReader::new(File::open(key_pem).map_err(key_err)?);
    let key = rustls_pemfile::private_key(&mut rd)
        .map_err(key_err)?
        .ok_or_else(|| Error::TlsNoKey {
            path: key_pem.to_owned(),
        })?;
    let config_err = |source| Error::TlsConfig {
        cert: cert_pem.to_owned(),
        key: key_pem.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves [`router`] over TLS on `listener` until `shutdown` is cancelled.
///
/// Each connection is a task of a [`TaskTracker`]: TLS handshake (at most
/// [`HANDSHAKE_TIMEOUT`]), then HTTP/1.1 or HTTP/2 (hyper-util auto), with the
/// peer address in the request extensions as `ConnectInfo<SocketAddr>`. On
/// cancellation the loop stops accepting, handshakes in progress are dropped,
/// every connection is told to shut down gracefully (idle ones close, in-flight
/// requests finish), and the function returns once all connections have
/// closed. The caller bounds that wait with its own grace timeout.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let app = router(state);
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "web listener ready");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Usually transient (out of file descriptors, connection reset
                // before accept): back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracing::info!(
        connections = tracker.len(),
        "web listener closed; waiting for open connections"
    );
    tracker.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn write_cert(
        dir: &Path,
    ) -> (
        std::path::PathBuf,
        std::path::PathBuf,
        rustls::pki_types::CertificateDer<'static>,
    ) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (cert, key, ck.cert.der().clone())
    }

    #[test]
    fn load_tls_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = load_tls(&missing, &missing).unwrap_err();
        assert!(
            matches!(e, Error::TlsCertificate { .. }) && e.to_string().contains("nope.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = load_tls(&empty, &empty).unwrap_err();
        assert!(
            matches!(e, Error::TlsNoCertificate { .. }) && e.to_string().contains("empty.pem"),
            "{e}"
        );
        let (cert, key, _) = write_cert(dir.path());
        let e = load_tls(&cert, &empty).unwrap_err();
        assert!(
            matches!(e, Error::TlsNoKey { .. }) && e.to_string().contains("empty.pem"),
            "{e}"
        );
        // A key that does not match the certificate.
        let other = rcgen::KeyPair::generate().unwrap();
        let other_key = dir.path().join("other.pem");
        std::fs::write(&other_key, other.serialize_pem()).unwrap();
        let e = load_tls(&cert, &other_key).unwrap_err();
        assert!(
            matches!(e, Error::TlsConfig { .. }) && e.to_string().contains("other.pem"),
            "{e}"
        );
        let cfg = load_tls(&cert, &key).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    async fn test_state(dir: &Path) -> AppState {
        let (vault, _) = postern_vault::Vault::open(postern_vault::VaultOptions {
            database_url: format!("sqlite://{}", dir.join("v.db").display()),
            master_key_file: dir.join("master.key"),
            auth: postern_vault::AuthPolicy::default(),
            initial_admin_password_file: None,
        })
        .await
        .unwrap();
        AppState::new(vault)
    }

    fn connector(ca: rustls::pki_types::CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    #[tokio::test]
    async fn serves_https_and_shuts_down_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = write_cert(dir.path());
        let tls = load_tls(&cert, &key).unwrap();
        let state = test_state(dir.path()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, tls, state, shutdown.clone()));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

        // HTTP/1.1 request.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = connector(der.clone(), &[b"http/1.1"])
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
        assert!(
            buf.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "{buf}"
        );
        assert!(buf.ends_with("ok"), "{buf}");

        // ALPN offers h2.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let s = connector(der.clone(), &[b"h2", b"http/1.1"])
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(s);

        // An idle keep-alive connection does not hold up shutdown.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut idle = connector(der.clone(), &[b"http/1.1"])
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
        // New connections are refused once the listener is closed.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
