//! Authentication primitives: argon2id password hashes, TOTP (RFC 6238),
//! API tokens. The policy (lockout, constant time) is applied in [`crate::Vault`].

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Authentication policy (from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Consecutive failures that lock an account.
    pub lockout_threshold: u32,
    /// How long a lockout lasts.
    pub lockout_duration: Duration,
    /// Lifetime of login tokens.
    pub token_ttl: Duration,
    /// Minimum length of a new password.
    pub min_password_length: usize,
    /// Refuse to make any further user a super administrator.
    pub deny_new_super_admins: bool,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            lockout_threshold: 5,
            lockout_duration: Duration::from_secs(15 * 60),
            token_ttl: Duration::from_secs(12 * 3600),
            min_password_length: 12,
            deny_new_super_admins: false,
        }
    }
}

/// Hashes a password with argon2id (PHC string).
pub fn hash_password(pw: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// A hash of a random password, verified against when the user does not exist
/// so that unknown users cost the same time as known ones.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut b = [0u8; 24];
        OsRng.fill_bytes(&mut b);
        hash_password(&hex::encode(b)).unwrap_or_default()
    })
}

/// Verifies `pw` against a PHC hash; `None` (no such user / no password) is
/// verified against a dummy hash and always fails.
pub fn verify_password(hash: Option<&str>, pw: &str) -> bool {
    verify_password_in(&HashMemory::default(), hash, pw)
}

/// Most argon2 work areas kept for reuse (one per concurrent check the vault allows).
const POOLED_WORK_AREAS: usize = 2;

/// Reusable argon2 working memory (19 MiB per check with the default parameters).
///
/// Allocating and freeing it per login makes glibc raise its mmap threshold and
/// then keep the freed 19 MiB in per-thread arenas: hundreds of logins left
/// hundreds of MiB resident. Reusing at most [`POOLED_WORK_AREAS`] areas keeps the
/// cost flat: that many areas once the first logins ran, whatever the login rate.
#[derive(Default)]
pub struct HashMemory {
    free: std::sync::Mutex<Vec<Vec<argon2::Block>>>,
}

impl std::fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashMemory").finish_non_exhaustive()
    }
}

impl HashMemory {
    fn take(&self, blocks: usize) -> Vec<argon2::Block> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(|v| v.len() == blocks) {
            Some(i) => free.swap_remove(i),
            None => vec![argon2::Block::default(); blocks],
        }
    }

    fn give(&self, area: Vec<argon2::Block>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_WORK_AREAS {
            free.push(area);
        }
    }

    /// Checks `pw` against a parsed PHC hash, in a reused work area.
    fn check(&self, parsed: &PasswordHash<'_>, pw: &str) -> bool {
        use argon2::{Algorithm, Params, Version};
        let (Ok(params), Ok(alg), Some(salt), Some(expected)) = (
            Params::try_from(parsed),
            Algorithm::try_from(parsed.algorithm),
            parsed.salt,
            parsed.hash,
        ) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let blocks = params.block_count();
        let argon = Argon2::new(alg, version, params);
        let mut out = vec![0u8; expected.len()];
        let mut area = self.take(blocks);
        let ok = argon
            .hash_password_into_with_memory(pw.as_bytes(), salt, &mut out, &mut area)
            .is_ok();
        self.give(area);
        // `Output`'s equality is constant-time.
        ok && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
    }
}

/// [`verify_password`] with a reusable work area.
pub fn verify_password_in(mem: &HashMemory, hash: Option<&str>, pw: &str) -> bool {
    let (h, real) = match hash {
        Some(h) => (h, true),
        None => (dummy_hash(), false),
    };
    let ok = match PasswordHash::new(h) {
        Ok(parsed) => mem.check(&parsed, pw),
        Err(_) => {
            // Corrupt stored hash: still spend the time, never authenticate.
            let _ = PasswordHash::new(dummy_hash()).map(|p| mem.check(&p, pw));
            false
        }
    };
    ok && real && !pw.is_empty()
}

/// Checks a new password against the policy.
pub fn check_new_password(policy: &AuthPolicy, username: &str, pw: &SecretString) -> Result<()> {
    let p = pw.expose();
    let n = p.chars().count();
    if n < policy.min_password_length {
        return Err(Error::invalid(
            "password",
            format!("must be at least {} characters", policy.min_password_length),
        ));
    }
    if n > 1024 {
        return Err(Error::invalid("password", "must be at most 1024 characters"));
    }
    if p.eq_ignore_ascii_case(username) {
        return Err(Error::invalid("password", "must not equal the user name"));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(Error::invalid("password", "must not contain control characters"));
    }
    Ok(())
}

/// Random password for generated accounts (the first admin): 24 characters
/// from an unambiguous alphabet, from the OS CSPRNG.
pub fn generate_password() -> SecretString {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut b = [0u8; 1];
        OsRng.fill_bytes(&mut b);
        // Rejection sampling keeps the distribution uniform.
        let limit = 256 - (256 % ALPHABET.len());
        if (b[0] as usize) < limit {
            out.push(ALPHABET[b[0] as usize % ALPHABET.len()] as char);
        }
    }
    SecretString::new(out)
}

/// The TOTP parameters Postern uses: SHA-1, 6 digits, 30 s, ±1 step.
pub(crate) const TOTP_STEP: u64 = 30;

pub(crate) fn totp(secret: &[u8], username: &str) -> Result<TOTP> {
    let label = username.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        TOTP_STEP,
        secret.to_vec(),
        Some("Postern".to_owned()),
        label,
    )
    .map_err(|e| Error::Internal(format!("totp: {e}")))
}

/// A new random TOTP secret (160 bits, as RFC 4226 recommends).
pub(crate) fn new_totp_secret() -> Vec<u8> {
    let mut b = vec![0u8; 20];
    OsRng.fill_bytes(&mut b);
    b
}

/// Returns the time step a code matches (now −1, now, now +1), if any.
pub(crate) fn totp_match(t: &TOTP, code: &str, unix_now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = unix_now / TOTP_STEP;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        let expected = t.generate(s * TOTP_STEP);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(s);
        }
    }
    found
}

/// Base32 (RFC 4648, no padding) of a TOTP secret, as authenticator apps and oathtool take it.
pub fn base32(secret: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in secret {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A new API token: the plaintext for the caller and the hash to store.
pub(crate) fn new_token() -> (SecretString, String) {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    let token = format!("pst_{}", hex::encode(b));
    let h = token_hash(&token);
    (SecretString::new(token), h)
}

/// SHA-256 of a token (tokens are 256-bit random, so a fast hash is enough).
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(&h), "correct horse battery"));
        assert!(!verify_password(Some(&h), "wrong"));
        assert!(!verify_password(None, "anything"));
        assert!(!verify_password(Some("not a phc string"), "x"));
    }

    #[test]
    fn pooled_work_areas_verify_like_argon2_and_stay_bounded() {
        use argon2::password_hash::PasswordVerifier;
        use argon2::{Algorithm, Params, Version};
        let mem = HashMemory::default();
        let default = hash_password("pooled pw").unwrap();
        // Other parameters (and argon2i) stored by another version still verify.
        let small = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(64, 2, 1, None).unwrap())
            .hash_password(b"pooled pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        for h in [&default, &small] {
            let parsed = PasswordHash::new(h).unwrap();
            assert!(Argon2::default().verify_password(b"pooled pw", &parsed).is_ok());
            for _ in 0..3 {
                assert!(verify_password_in(&mem, Some(h), "pooled pw"), "{h}");
                assert!(!verify_password_in(&mem, Some(h), "pooled pX"), "{h}");
            }
        }
        let pooled = mem.free.lock().unwrap();
        assert!(pooled.len() <= POOLED_WORK_AREAS);
        assert!(
            pooled.iter().any(|a| a.len() == Params::default().block_count()),
            "the default area is reused"
        );
        drop(pooled);
        // A damaged hash (flipped output) never verifies.
        let mut bad: Vec<char> = default.chars().collect();
        let i = bad.len() - 5; // inside the base64 output, not its padding bits
        bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
        let bad: String = bad.into_iter().collect();
        assert!(PasswordHash::new(&bad).is_ok());
        assert!(!verify_password_in(&mem, Some(&bad), "pooled pw"));
    }

    #[test]
    fn empty_password_never_authenticates() {
        let h = hash_password("").unwrap();
        assert!(!verify_password(Some(&h), ""));
    }

    #[test]
    fn policy() {
        let p = AuthPolicy::default();
        assert!(check_new_password(&p, "bob", &"short".into()).is_err());
        assert!(check_new_password(&p, "bobbobbobbob", &"BOBBOBBOBBOB".into()).is_err());
        assert!(check_new_password(&p, "bob", &"a long enough passphrase".into()).is_ok());
        let g = generate_password();
        assert_eq!(g.expose().len(), 24);
        assert!(check_new_password(&p, "admin", &g).is_ok());
    }

    #[test]
    fn totp_window_and_format() {
        let secret = new_totp_secret();
        let t = totp(&secret, "alice:x").unwrap();
        let now = 1_800_000_000u64;
        let code = t.generate(now);
        assert_eq!(totp_match(&t, &code, now), Some(now / 30));
        assert_eq!(totp_match(&t, &t.generate(now - 30), now), Some(now / 30 - 1));
        assert_eq!(totp_match(&t, &t.generate(now - 90), now), None);
        assert_eq!(totp_match(&t, "12345", now), None);
        assert_eq!(totp_match(&t, "abcdef", now), None);
    }

    #[test]
    fn base32_known_vector() {
        // RFC 4648 test vectors.
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(token_hash(a.expose()), ha);
        assert!(!ha.contains(a.expose()));
    }
}
