//! Envelope encryption under a master key.
//!
//! Every secret is sealed with its own random 256-bit data key (DEK) using
//! AES-256-GCM; the DEK is wrapped with the master key (KEK), also AES-256-GCM.
//! Both layers use the row's *owner* string (e.g. `account:<id>:password`) as
//! associated data, so a ciphertext copied to another row fails to decrypt.
//! Rotating the master key only re-wraps DEKs; secret ciphertexts never change.
//!
//! The master key lives in its own file (64 hex chars, mode 0600), never in the
//! database. The database stores a *key id* (a hash of the key) and a check
//! value so a wrong or missing key file is detected before anything is written.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, MasterKeyProblem, Result};

/// A 256-bit key-encryption key. Redacted `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.id)
    }
}

impl MasterKey {
    /// A fresh random key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut b = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(b.as_mut());
        Self::from_bytes(b)
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let mut h = Sha256::new();
        h.update(b"postern/master-key-id/v1");
        h.update(bytes.as_ref());
        let id = hex::encode(&h.finalize()[..8]);
        MasterKey { bytes, id }
    }

    /// The public key id (a truncated hash; reveals nothing about the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads a key file: 64 hex characters, optional trailing newline, mode 0600.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(|e| Error::io(path, e))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::MasterKey {
                    path: path.to_owned(),
                    problem: MasterKeyProblem::Permissions { mode },
                });
            }
        }
        let malformed = |why| Error::MasterKey {
            path: path.to_owned(),
            problem: MasterKeyProblem::Malformed(why),
        };
        let trimmed = text.trim();
        if trimmed.len() != 64 {
            return Err(malformed("expected 64 hexadecimal characters (a 256-bit key)"));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(trimmed, bytes.as_mut()).map_err(|_| malformed("not hexadecimal"))?;
        Ok(Some(Self::from_bytes(bytes)))
    }

    /// Writes the key to `path` with mode 0600, refusing to overwrite an existing file.
    /// The file is fsynced before this returns.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
        let mut text = Zeroizing::new(hex::encode(self.bytes.as_ref()));
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
        text.zeroize();
        Ok(())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.bytes.as_ref()))
    }

    /// A value stored in the database to recognise this key later.
    pub(crate) fn check_value(&self) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: b"postern",
                    aad: CHECK_AAD,
                },
            )
            .expect("AES-GCM encryption of a constant cannot fail");
        format!("{}:{}", hex::encode(nonce), hex::encode(ct))
    }

    /// True when `value` was made by [`Self::check_value`] with this key.
    pub(crate) fn verify_check_value(&self, value: &str) -> bool {
        let Some((n, c)) = value.split_once(':') else {
            return false;
        };
        let (Ok(n), Ok(c)) = (hex::decode(n), hex::decode(c)) else {
            return false;
        };
        if n.len() != 12 {
            return false;
        }
        self.cipher()
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: &c,
                    aad: CHECK_AAD,
                },
            )
            .is_ok()
    }
}

const CHECK_AAD: &[u8] = b"postern/master-key-check/v1";

/// The master keys the vault holds: normally one; two while a rotation is
/// under way (or was interrupted), so every row stays readable.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    others: HashMap<String, MasterKey>,
}

impl Keyring {
    /// A keyring sealing with `current`.
    pub fn new(current: MasterKey) -> Self {
        Keyring {
            current,
            others: HashMap::new(),
        }
    }
    /// Adds a key that can unwrap (but is not used to wrap).
    pub fn with_extra(mut self, key: MasterKey) -> Self {
        if key.id() != self.current.id() {
            self.others.insert(key.id().to_owned(), key);
        }
        self
    }
    /// The key new data keys are wrapped with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }
    fn by_id(&self, id: &str) -> Option<&MasterKey> {
        if self.current.id == id {
            Some(&self.current)
        } else {
            self.others.get(id)
        }
    }
    /// Every key held.
    pub fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(self.others.values())
    }
}

/// A sealed secret as stored: everything but the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key that wrapped the DEK.
    pub key_id: String,
    /// Nonce (12 bytes) || AES-GCM(DEK) under the master key.
    pub wrapped_dek: Vec<u8>,
    /// Nonce (12 bytes) || AES-GCM(plaintext) under the DEK.
    pub ciphertext: Vec<u8>,
}

fn aad(layer: &str, owner: &str) -> Vec<u8> {
    format!("postern/{layer}/v1|{owner}").into_bytes()
}

fn seal_with(cipher: &Aes256Gcm, msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(&nonce, Payload { msg, aad })
        .expect("AES-GCM encryption with a valid key cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, blob: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if blob.len() < 12 + 16 {
        return None;
    }
    let (n, c) = blob.split_at(12);
    cipher.decrypt(Nonce::from_slice(n), Payload { msg: c, aad }).ok()
}

impl Keyring {
    /// Seals `plaintext` for the row named `owner`.
    pub fn seal(&self, owner: &str, plaintext: &[u8]) -> Sealed {
        let mut dek = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(dek.as_mut());
        let data_cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(dek.as_ref()));
        let ciphertext = seal_with(&data_cipher, plaintext, &aad("secret", owner));
        let wrapped_dek = seal_with(&self.current.cipher(), dek.as_ref(), &aad("dek", owner));
        Sealed {
            key_id: self.current.id.clone(),
            wrapped_dek,
            ciphertext,
        }
    }

    fn unwrap_dek(&self, owner: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let tampered = || Error::Tampered {
            owner: owner.to_owned(),
        };
        let kek = self.by_id(&sealed.key_id).ok_or_else(tampered)?;
        let dek = open_with(&kek.cipher(), &sealed.wrapped_dek, &aad("dek", owner)).ok_or_else(tampered)?;
        if dek.len() != 32 {
            return Err(tampered());
        }
        Ok(Zeroizing::new(dek))
    }

    /// Opens a sealed secret of row `owner`. Fails with [`Error::Tampered`] when
    /// any byte was changed or the row was moved.
    pub fn open(&self, owner: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let dek = self.unwrap_dek(owner, sealed)?;
        let data_cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&dek));
        open_with(&data_cipher, &sealed.ciphertext, &aad("secret", owner))
            .map(Zeroizing::new)
            .ok_or_else(|| Error::Tampered {
                owner: owner.to_owned(),
            })
    }

    /// Re-wraps the DEK of `sealed` under the current key. The ciphertext is unchanged.
    pub fn rewrap(&self, owner: &str, sealed: &Sealed) -> Result<Sealed> {
        let dek = self.unwrap_dek(owner, sealed)?;
        Ok(Sealed {
            key_id: self.current.id.clone(),
            wrapped_dek: seal_with(&self.current.cipher(), &dek, &aad("dek", owner)),
            ciphertext: sealed.ciphertext.clone(),
        })
    }
}

/// Paths of the master key and of the next key during a rotation.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The master key file.
    pub current: PathBuf,
}

impl KeyFiles {
    /// The file a rotation writes its new key to before re-wrapping.
    pub fn next(&self) -> PathBuf {
        let mut p = self.current.clone().into_os_string();
        p.push(".next");
        PathBuf::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_aad_binding() {
        let ring = Keyring::new(MasterKey::generate());
        let s = ring.seal("account:a:password", b"s3cret");
        assert_eq!(&ring.open("account:a:password", &s).unwrap()[..], b"s3cret");
        // Moving the row to another owner fails.
        assert!(matches!(
            ring.open("account:b:password", &s),
            Err(Error::Tampered { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let ring = Keyring::new(MasterKey::generate());
        let s = ring.seal("o", b"payload");
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert!(ring.open("o", &t).is_err(), "ciphertext byte {i}");
        }
        for i in 0..s.wrapped_dek.len() {
            let mut t = s.clone();
            t.wrapped_dek[i] ^= 0x80;
            assert!(ring.open("o", &t).is_err(), "dek byte {i}");
        }
        let mut short = s.clone();
        short.ciphertext.truncate(5);
        assert!(ring.open("o", &short).is_err());
    }

    #[test]
    fn rewrap_keeps_plaintext_and_old_key_is_then_unneeded() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let s = Keyring::new(old.clone()).seal("o", b"x");
        let ring = Keyring::new(new.clone()).with_extra(old);
        let r = ring.rewrap("o", &s).unwrap();
        assert_eq!(r.key_id, new.id());
        assert_eq!(r.ciphertext, s.ciphertext);
        assert_eq!(&Keyring::new(new).open("o", &r).unwrap()[..], b"x");
    }

    #[test]
    fn wrong_key_is_detected() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let s = Keyring::new(a.clone()).seal("o", b"x");
        assert!(Keyring::new(b.clone()).open("o", &s).is_err());
        assert!(a.verify_check_value(&a.check_value()));
        assert!(!b.verify_check_value(&a.check_value()));
        assert!(!a.verify_check_value("garbage"));
    }

    #[test]
    fn key_file_roundtrip_mode_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/master.key");
        assert!(MasterKey::load(&p).unwrap().is_none());
        let k = MasterKey::generate();
        k.write_new(&p).unwrap();
        assert!(k.write_new(&p).is_err(), "never overwrites");
        assert_eq!(MasterKey::load(&p).unwrap().unwrap().id(), k.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let bad = dir.path().join("bad.key");
        fs::write(&bad, "zz").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = MasterKey::load(&bad).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
    }
}
