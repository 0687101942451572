//! The gateway login syntax: `USER#ACCOUNT@RESOURCE` (the product's contract).
//!
//! The SSH (and RDP) user name is split at the **first** `#`, then the rest at
//! the **last** `@`: so `alice@corp.example#root@web1` is user
//! `alice@corp.example`, account `root`, resource `web1`. OpenSSH, scp and sftp
//! take the host at the last `@` of `USER#ACCOUNT@RESOURCE@gateway`, so the
//! whole user part reaches the gateway intact. A plain `USER` asks for the picker.

use std::fmt;

/// A parsed gateway login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The Postern user name.
    pub user: String,
    /// The target, when one is named.
    pub target: Option<TargetName>,
}

/// `ACCOUNT@RESOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetName {
    /// Account login on the target.
    pub account: String,
    /// Resource name.
    pub resource: String,
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.account, self.resource)
    }
}

/// Why a login name is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Empty, too long or with control characters.
    #[error("the login name is empty, too long or contains control characters")]
    Malformed,
    /// `USER#` with nothing usable after the `#`.
    #[error("expected USER#ACCOUNT@RESOURCE")]
    MissingTarget,
}

/// Parses a gateway login name.
pub fn parse(s: &str) -> Result<Login, LoginError> {
    if s.is_empty() || s.len() > 512 || s.chars().any(char::is_control) {
        return Err(LoginError::Malformed);
    }
    let Some((user, target)) = s.split_once('#') else {
        return Ok(Login {
            user: s.to_owned(),
            target: None,
        });
    };
    let (account, resource) = target.rsplit_once('@').ok_or(LoginError::MissingTarget)?;
    if user.is_empty() || account.is_empty() || resource.is_empty() {
        return Err(LoginError::MissingTarget);
    }
    Ok(Login {
        user: user.to_owned(),
        target: Some(TargetName {
            account: account.to_owned(),
            resource: resource.to_owned(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(a: &str, r: &str) -> Option<TargetName> {
        Some(TargetName {
            account: a.into(),
            resource: r.into(),
        })
    }

    #[test]
    fn contract_examples() {
        assert_eq!(
            parse("alice").unwrap(),
            Login {
                user: "alice".into(),
                target: None
            }
        );
        assert_eq!(
            parse("alice#root@web1").unwrap(),
            Login {
                user: "alice".into(),
                target: t("root", "web1")
            }
        );
        assert_eq!(
            parse("alice@corp.example#root@web1").unwrap(),
            Login {
                user: "alice@corp.example".into(),
                target: t("root", "web1")
            }
        );
        // Split at the first '#', then the last '@'.
        assert_eq!(
            parse("a#b#c@d@e").unwrap(),
            Login {
                user: "a".into(),
                target: t("b#c@d", "e")
            }
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "alice#",
            "alice#root",
            "alice#@web1",
            "alice#root@",
            "#root@web1",
            "a\u{0}b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"x".repeat(600)).is_err());
    }
}
