//! The web's TLS certificate: a self-signed one generated on first start
//! (rcgen), or the administrator's own files named in the config.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};

/// Ensures `cert` and `key` exist; generates a self-signed pair when both are
/// missing. Returns true when it generated them.
pub fn ensure_self_signed(cert: &Path, key: &Path, listen: SocketAddr) -> Result<bool> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) | (false, true) => anyhow::bail!(
            "TLS certificate {} and key {} must both exist (or both be absent to generate a self-signed pair)",
            cert.display(),
            key.display()
        ),
        (false, false) => {}
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names).context("certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Postern gateway (self-signed)");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Postern");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(825);
    let key_pair = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let certificate = params
        .self_signed(&key_pair)
        .context("self-signing the TLS certificate")?;
    for dir in [cert.parent(), key.parent()].into_iter().flatten() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    write_new(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(true)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_refuses_half_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls/cert.pem"), dir.path().join("tls/key.pem"));
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert!(ensure_self_signed(&c, &k, addr).unwrap());
        assert!(!ensure_self_signed(&c, &k, addr).unwrap());
        assert!(fs::read_to_string(&c)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        fs::remove_file(&k).unwrap();
        assert!(ensure_self_signed(&c, &k, addr).is_err());
    }
}
