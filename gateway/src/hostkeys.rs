//! The gateway's SSH host keys: ed25519 and RSA (served with rsa-sha2 signatures only).
//!
//! Generated on first start into a directory, in OpenSSH format with mode 0600,
//! and loaded from there afterwards.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

use crate::error::Error;

/// The loaded host keys.
#[derive(Debug, Clone)]
pub struct HostKeys {
    /// The ed25519 key.
    pub ed25519: PrivateKey,
    /// The RSA key (3072 bits or more).
    pub rsa: PrivateKey,
    /// Files created by this call (first start).
    pub created: Vec<PathBuf>,
}

impl HostKeys {
    /// SHA-256 fingerprints, as `ssh-keygen -l` prints them.
    pub fn fingerprints(&self) -> Vec<String> {
        [&self.ed25519, &self.rsa]
            .iter()
            .map(|k| k.public_key().fingerprint(HashAlg::Sha256).to_string())
            .collect()
    }
}

/// Loads `ssh_host_ed25519_key` and `ssh_host_rsa_key` from `dir`, generating
/// each one that is missing.
pub fn ensure(dir: &Path) -> Result<HostKeys, Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut created = Vec::new();
    let ed25519 = load_or_generate(&dir.join("ssh_host_ed25519_key"), Algorithm::Ed25519, &mut created)?;
    let rsa = load_or_generate(
        &dir.join("ssh_host_rsa_key"),
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        &mut created,
    )?;
    Ok(HostKeys { ed25519, rsa, created })
}

fn load_or_generate(path: &Path, alg: Algorithm, created: &mut Vec<PathBuf>) -> Result<PrivateKey, Error> {
    let err = |detail: String| Error::HostKey {
        path: path.to_owned(),
        detail,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let key =
                PrivateKey::from_openssh(text.trim()).map_err(|e| err(format!("not an OpenSSH private key: {e}")))?;
            if key.algorithm().clone().is_rsa() != alg.clone().is_rsa() {
                return Err(err(format!(
                    "expected a {} key, found {}",
                    alg.as_str(),
                    key.algorithm().as_str()
                )));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key =
                PrivateKey::random(&mut rand010::rng(), alg).map_err(|e| err(format!("generation failed: {e}")))?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| err(format!("encoding failed: {e}")))?;
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            f.write_all(pem.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|source| Error::Io {
                    path: path.to_owned(),
                    source,
                })?;
            let pub_path = path.with_extension("pub");
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| err(format!("encoding failed: {e}")))?;
            fs::write(&pub_path, format!("{public}\n")).map_err(|source| Error::Io { path: pub_path, source })?;
            created.push(path.to_owned());
            Ok(key)
        }
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path()).unwrap();
        assert_eq!(a.created.len(), 2);
        assert!(a.rsa.algorithm().is_rsa());
        assert_eq!(a.ed25519.algorithm(), Algorithm::Ed25519);
        let b = ensure(dir.path()).unwrap();
        assert!(b.created.is_empty());
        assert_eq!(a.fingerprints(), b.fingerprints());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(dir.path().join("ssh_host_ed25519_key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ssh_host_ed25519_key"), "garbage").unwrap();
        let e = ensure(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("ssh_host_ed25519_key") && e.contains("not an OpenSSH private key"),
            "{e}"
        );
    }
}
