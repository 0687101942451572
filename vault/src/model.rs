//! Domain types. None of them holds a secret: they are safe to list and serialize.

use serde::{Deserialize, Serialize};

/// The five predefined roles of PMP's roles-and-permissions model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users, resources and passwords; sees audit. Sees only own and shared resources.
    Administrator,
    /// Manages resources and passwords. Sees only own and shared resources.
    PasswordAdministrator,
    /// Administrator plus the privacy and security controls.
    PrivilegedAdministrator,
    /// Sees (and, when the share allows, modifies) passwords shared with them.
    PasswordUser,
    /// Password user plus audit trails and reports.
    PasswordAuditor,
}

impl Role {
    /// Every role, in the seed's order.
    pub const ALL: [Role; 5] = [
        Role::Administrator,
        Role::PasswordAdministrator,
        Role::PrivilegedAdministrator,
        Role::PasswordUser,
        Role::PasswordAuditor,
    ];

    /// The stable id used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::PasswordAdministrator => "password_administrator",
            Role::PrivilegedAdministrator => "privileged_administrator",
            Role::PasswordUser => "password_user",
            Role::PasswordAuditor => "password_auditor",
        }
    }

    /// Parses a role id.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Roles that may be promoted to super admin (seed: administrator, password administrator, privileged administrator).
    pub fn may_be_super_admin(self) -> bool {
        matches!(
            self,
            Role::Administrator | Role::PasswordAdministrator | Role::PrivilegedAdministrator
        )
    }
}

/// Resource types, after PMP's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// Linux server (SSH).
    Linux,
    /// Other Unix (AIX, Solaris, BSD...; SSH).
    Unix,
    /// Windows server or desktop (RDP).
    Windows,
    /// Windows domain.
    WindowsDomain,
    /// Router, switch, firewall.
    NetworkDevice,
    /// Database server.
    Database,
    /// Web site or web application.
    WebSite,
    /// Hypervisor or VM platform.
    Virtualization,
    /// Anything else.
    Other,
}

impl ResourceType {
    /// Every type.
    pub const ALL: [ResourceType; 9] = [
        ResourceType::Linux,
        ResourceType::Unix,
        ResourceType::Windows,
        ResourceType::WindowsDomain,
        ResourceType::NetworkDevice,
        ResourceType::Database,
        ResourceType::WebSite,
        ResourceType::Virtualization,
        ResourceType::Other,
    ];
    /// Stable id.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Linux => "linux",
            ResourceType::Unix => "unix",
            ResourceType::Windows => "windows",
            ResourceType::WindowsDomain => "windows_domain",
            ResourceType::NetworkDevice => "network_device",
            ResourceType::Database => "database",
            ResourceType::WebSite => "web_site",
            ResourceType::Virtualization => "virtualization",
            ResourceType::Other => "other",
        }
    }
    /// Parses an id; also accepts PMP-style display names ("Linux", "Windows Domain", "Network Device").
    pub fn parse(s: &str) -> Option<ResourceType> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| {
                if c == ' ' || c == '-' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        ResourceType::ALL.into_iter().find(|t| t.as_str() == norm)
    }
    /// The usual port of the type's remote protocol.
    pub fn default_port(self) -> u16 {
        match self {
            ResourceType::Windows | ResourceType::WindowsDomain => 3389,
            ResourceType::WebSite => 443,
            _ => 22,
        }
    }
}

/// A Postern user (never includes the password hash or TOTP secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Role.
    pub role: Role,
    /// Super admin: sees and manages every resource.
    pub super_admin: bool,
    /// Disabled users cannot log in.
    pub enabled: bool,
    /// Locked out after too many failures until this time (RFC 3339), if any.
    pub locked_until: Option<String>,
    /// TOTP enrolled.
    pub totp_enabled: bool,
    /// Must change the password at next login.
    pub must_change_password: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The custom role that replaces `role`'s operations, if one is assigned.
    pub custom_role_id: Option<String>,
}

/// A resource (a server, device, database...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resource {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Host name or address.
    pub host: String,
    /// Port of the remote protocol.
    pub port: u16,
    /// Free text.
    pub description: Option<String>,
    /// Landing-server chain: account ids of the hops, in order, from the gateway.
    pub landing_chain: Vec<String>,
    /// Extra fields (free key/value strings).
    pub extra: std::collections::BTreeMap<String, String>,
    /// Owner user id.
    pub owner_id: Option<String>,
    /// Gateway sessions may open local/remote port forwards (each is audited).
    pub allow_port_forwarding: bool,
    /// Gateway sessions may forward the user's SSH agent.
    pub allow_agent_forwarding: bool,
    /// RDP sessions may use the clipboard (audited when used).
    pub allow_clipboard: bool,
    /// RDP sessions may redirect drives (audited when used).
    pub allow_drive: bool,
    /// Creation time.
    pub created_at: String,
}

/// An account on a resource (metadata only; the secret stays sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    /// Id.
    pub id: String,
    /// Resource id.
    pub resource_id: String,
    /// Login name on the target.
    pub login: String,
    /// Notes.
    pub notes: Option<String>,
    /// Owner user id.
    pub owner_id: Option<String>,
    /// A password is vaulted.
    pub has_password: bool,
    /// A private key is vaulted.
    pub has_private_key: bool,
    /// When the password was last set.
    pub password_changed_at: Option<String>,
    /// Creation time.
    pub created_at: String,
}

/// A user group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserGroup {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Member user ids.
    pub members: Vec<String>,
}

/// A static resource group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceGroup {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Owner.
    pub owner_id: Option<String>,
    /// Member resource ids.
    pub members: Vec<String>,
}

/// Who is acting. Built by authentication; `system` is the local CLI operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// User id (`system` for the CLI).
    pub id: String,
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Super admin.
    pub super_admin: bool,
    /// The actor must change their password before anything else.
    pub must_change_password: bool,
    /// The local operator at the server's console (CLI), not a network user.
    pub is_system: bool,
    /// The approved operations of the actor's custom role, which replace those of `role`.
    pub custom_ops: Option<crate::authz::OpSet>,
}

impl Actor {
    /// The local operator running CLI maintenance commands on the server.
    pub fn system() -> Actor {
        Actor {
            id: "system".into(),
            username: "system".into(),
            role: Role::PrivilegedAdministrator,
            super_admin: true,
            must_change_password: false,
            is_system: true,
            custom_ops: None,
        }
    }
}

/// Where a request comes from and why, recorded in the audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// Client address.
    pub client_ip: Option<std::net::IpAddr>,
    /// Stated reason, where one was given.
    pub reason: Option<String>,
}

impl RequestContext {
    /// A context for a client address.
    pub fn from_ip(ip: std::net::IpAddr) -> Self {
        RequestContext {
            client_ip: Some(ip),
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_roundtrip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn resource_type_parse_is_lenient_on_display_names() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ResourceType::parse("Network Device"), Some(ResourceType::NetworkDevice));
        assert_eq!(ResourceType::parse(" Linux "), Some(ResourceType::Linux));
        assert_eq!(ResourceType::parse("toaster"), None);
    }
}
