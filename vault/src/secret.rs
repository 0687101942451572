//! Secret-holding types.
//!
//! * [`SecretString`] carries a secret *into* the vault (a new password, a private
//!   key, a login password to check). Redacted `Debug`, zeroized on drop, never
//!   serialized (it implements `Deserialize` only, so the web layer can accept it).
//! * [`Lease`] is the only way plaintext *leaves* the vault: short-lived, redacted,
//!   zeroized on drop, not `Serialize`, not `Clone`.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret string. `Debug` prints `SecretString(***)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The plaintext. Keep the borrow short.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString(s.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// What kind of credential a lease holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// A password.
    Password,
    /// An SSH private key in OpenSSH format.
    PrivateKey,
}

impl SecretKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::PrivateKey => "private_key",
        }
    }
}

/// Plaintext credential leased out of the vault for one use.
///
/// Not `Clone`, not `Serialize`; `Debug` is redacted; the bytes are zeroized
/// when the lease is dropped.
pub struct Lease {
    account_id: String,
    login: String,
    kind: SecretKind,
    plaintext: zeroize::Zeroizing<Vec<u8>>,
}

impl Lease {
    pub(crate) fn new(account_id: String, login: String, kind: SecretKind, plaintext: Vec<u8>) -> Self {
        Lease {
            account_id,
            login,
            kind,
            plaintext: zeroize::Zeroizing::new(plaintext),
        }
    }
    /// The account the secret belongs to.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }
    /// The login name on the target.
    pub fn login(&self) -> &str {
        &self.login
    }
    /// Password or private key.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }
    /// The plaintext bytes. Keep the borrow short; never log it.
    pub fn expose(&self) -> &[u8] {
        &self.plaintext
    }
    /// The plaintext as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.plaintext).ok()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("account_id", &self.account_id)
            .field("login", &self.login)
            .field("kind", &self.kind)
            .field("plaintext", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2-canary");
        assert!(!format!("{s:?}").contains("hunter2"));
        let l = Lease::new(
            "a".into(),
            "root".into(),
            SecretKind::Password,
            b"hunter2-canary".to_vec(),
        );
        let d = format!("{l:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("root"));
    }

    #[test]
    fn deserializes_but_is_not_serialize() {
        let s: SecretString = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
        // `SecretString: !Serialize` is enforced by the type system: there is no impl.
    }
}
