//! Authorization: one pure decision function for every caller.
//!
//! [`authorize`] takes the actor, the action and an [`Object`] describing the
//! target *with the facts needed to decide* (owner, the actor's share level).
//! The vault loads those facts and then calls it; the CLI, the web and the
//! gateway all go through the vault, so they all get the same answer.
//!
//! Roles grant [`Operation`]s (the seed's table). Visibility of resources and
//! accounts comes from ownership, super admin, or a share (the share level is
//! the seam the sharing workflows fill in).

use crate::model::{Actor, Role};

/// The operations of the seed's roles table (plus remote access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Add, edit, delete users; change roles.
    ManageUsers,
    /// Add, edit, delete resources.
    ManageResources,
    /// Add, edit, delete accounts and their passwords.
    ManagePasswords,
    /// Retrieve passwords the actor can see.
    ViewPasswords,
    /// Personal passwords (always the user's own).
    PersonalPasswords,
    /// Audit trails and reports.
    ViewAudit,
    /// Privacy and security controls, IP restrictions, emergency measures.
    PrivacySecurity,
    /// Open gateway sessions to accounts the actor can use.
    RemoteAccess,
    /// Terminate other people's live sessions.
    SessionControl,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 9] = [
        Operation::ManageUsers,
        Operation::ManageResources,
        Operation::ManagePasswords,
        Operation::ViewPasswords,
        Operation::PersonalPasswords,
        Operation::ViewAudit,
        Operation::PrivacySecurity,
        Operation::RemoteAccess,
        Operation::SessionControl,
    ];
}

impl Operation {
    /// The stable id used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ManageUsers => "manage_users",
            Operation::ManageResources => "manage_resources",
            Operation::ManagePasswords => "manage_passwords",
            Operation::ViewPasswords => "view_passwords",
            Operation::PersonalPasswords => "personal_passwords",
            Operation::ViewAudit => "view_audit",
            Operation::PrivacySecurity => "privacy_security",
            Operation::RemoteAccess => "remote_access",
            Operation::SessionControl => "session_control",
        }
    }

    /// Parses an operation id.
    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The seed's category of the operation (Users, Password, Reports, Settings, Remote access).
    pub fn category(self) -> &'static str {
        match self {
            Operation::ManageUsers => "users",
            Operation::ManageResources
            | Operation::ManagePasswords
            | Operation::ViewPasswords
            | Operation::PersonalPasswords => "password",
            Operation::ViewAudit => "reports",
            Operation::PrivacySecurity => "settings",
            Operation::RemoteAccess | Operation::SessionControl => "remote_access",
        }
    }
}

/// A set of operations (a custom role's grant). Small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpSet(u16);

impl OpSet {
    /// No operation.
    pub const EMPTY: OpSet = OpSet(0);

    fn bit(op: Operation) -> u16 {
        1 << Operation::ALL.iter().position(|o| *o == op).unwrap_or(15)
    }

    /// The set of `ops`.
    pub fn of(ops: &[Operation]) -> OpSet {
        OpSet(ops.iter().fold(0, |m, o| m | Self::bit(*o)))
    }

    /// The operations a built-in role grants.
    pub fn of_role(role: Role) -> OpSet {
        OpSet::of(
            &Operation::ALL
                .into_iter()
                .filter(|o| role_grants(role, *o))
                .collect::<Vec<_>>(),
        )
    }

    /// Is `op` in the set?
    pub fn contains(self, op: Operation) -> bool {
        self.0 & Self::bit(op) != 0
    }

    /// Every operation of `self` is in `other`.
    pub fn is_subset(self, other: OpSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The operations, in catalogue order.
    pub fn ops(self) -> Vec<Operation> {
        Operation::ALL.into_iter().filter(|o| self.contains(*o)).collect()
    }

    /// A JSON list of operation ids.
    pub fn to_json(self) -> String {
        serde_json::to_string(&self.ops().iter().map(|o| o.as_str()).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into())
    }

    /// Parses a JSON list of operation ids (None on anything else).
    pub fn from_json(s: &str) -> Option<OpSet> {
        let ids: Vec<String> = serde_json::from_str(s).ok()?;
        let ops: Option<Vec<Operation>> = ids.iter().map(|i| Operation::parse(i)).collect();
        ops.map(|o| OpSet::of(&o))
    }
}

/// Does `role` include `op`? This is the seed's table.
pub fn role_grants(role: Role, op: Operation) -> bool {
    use Operation::*;
    use Role::*;
    match op {
        ManageUsers => matches!(role, Administrator | PrivilegedAdministrator),
        ManageResources | ManagePasswords => {
            matches!(role, Administrator | PasswordAdministrator | PrivilegedAdministrator)
        }
        ViewPasswords | PersonalPasswords | RemoteAccess => true,
        ViewAudit => matches!(role, Administrator | PrivilegedAdministrator | PasswordAuditor),
        PrivacySecurity => matches!(role, PrivilegedAdministrator),
        SessionControl => matches!(role, Administrator | PrivilegedAdministrator),
    }
}

/// How much of a resource or account has been shared with the actor
/// (filled in by the sharing workflows; `None` until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareLevel {
    /// May open gateway sessions, never see the password.
    Connect,
    /// May also retrieve the password.
    View,
    /// May also change the account and its password.
    Modify,
    /// May also delete and re-share.
    Full,
}

impl ShareLevel {
    /// Every level, lowest first.
    pub const ALL: [ShareLevel; 4] = [
        ShareLevel::Connect,
        ShareLevel::View,
        ShareLevel::Modify,
        ShareLevel::Full,
    ];

    /// The stable id used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareLevel::Connect => "connect",
            ShareLevel::View => "view",
            ShareLevel::Modify => "modify",
            ShareLevel::Full => "full",
        }
    }

    /// Parses a level id.
    pub fn parse(s: &str) -> Option<ShareLevel> {
        ShareLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// Whether an account's access-control policy lets the actor in right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The account needs no access request.
    Free,
    /// The account needs a request and the actor holds a checked-out one whose window is open.
    Open,
    /// The account needs a request and the actor has no open window.
    Closed,
}

/// What is acted on, with the facts the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// The system as a whole (create things, read the audit, settings).
    System,
    /// A user.
    User {
        /// The user's id.
        id: &'a str,
        /// The user's current role.
        role: Role,
    },
    /// A resource or an account on one.
    Owned {
        /// Owner user id.
        owner_id: Option<&'a str>,
        /// The actor's share level on it, if any.
        share: Option<ShareLevel>,
        /// The access-request window (only `Connect` and `RetrieveSecret` look at it).
        access: Access,
    },
}

/// Actions every caller asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List or read users (object: System or User).
    ViewUser,
    /// Create a user (object: System).
    CreateUser,
    /// Change a user's e-mail, password, enabled flag (object: User).
    UpdateUser,
    /// Give a user a role (object: User; `role` is the *new* role).
    AssignRole(Role),
    /// Make a user super admin, or take it away (object: User).
    SetSuperAdmin,
    /// Delete a user (object: User).
    DeleteUser,
    /// Create a resource (object: System).
    CreateResource,
    /// See a resource or account's metadata (object: Owned).
    ViewObject,
    /// Change a resource (object: Owned).
    UpdateResource,
    /// Delete a resource (object: Owned).
    DeleteResource,
    /// Add an account to a resource (object: Owned = the resource).
    CreateAccount,
    /// Change an account or its secret (object: Owned).
    UpdateAccount,
    /// Delete an account (object: Owned).
    DeleteAccount,
    /// Retrieve the plaintext password (object: Owned).
    RetrieveSecret,
    /// Open a gateway session with auto-logon (object: Owned).
    Connect,
    /// Import resources from CSV (object: System).
    Import,
    /// Read the audit trail (object: System).
    ViewAudit,
    /// Change privacy/security settings (object: System).
    ManageSettings,
    /// Create an API token for another user (object: User).
    CreateTokenFor,
    /// List and watch live sessions, read recordings (object: System).
    ViewSessions,
    /// Terminate a live session (object: System).
    TerminateSession,
    /// Share or revoke a share of a resource, account or resource group (object: Owned).
    Share,
    /// Manage user groups and their members (object: System).
    ManageUserGroups,
    /// Create a resource group (object: System).
    CreateResourceGroup,
    /// Ask for access to an account under access control (object: Owned).
    RequestAccess,
    /// Approve or deny someone's access request (object: Owned = the account).
    ApproveAccess,
    /// Propose or edit a custom role with these operations (object: System).
    ProposeRole(OpSet),
    /// Approve a custom role (with these operations) proposed by `author` (object: User = the author).
    ApproveRole(OpSet),
    /// Give users a custom role with these operations (object: User, or System for the role itself).
    AssignCustomRole(OpSet),
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with a reason safe to show.
    Deny(&'static str),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

fn has(actor: &Actor, op: Operation) -> bool {
    actor.is_system
        || match actor.custom_ops {
            Some(ops) => ops.contains(op),
            None => role_grants(actor.role, op),
        }
}

/// The actor's operations (its custom role's, else its role's).
fn actor_ops(actor: &Actor) -> OpSet {
    if actor.is_system {
        OpSet::of(&Operation::ALL)
    } else {
        actor.custom_ops.unwrap_or_else(|| OpSet::of_role(actor.role))
    }
}

/// The single authorization decision used by CLI, web and gateway.
pub fn authorize(actor: &Actor, action: Action, object: Object<'_>) -> Decision {
    use Action::*;
    use Decision::*;
    if actor.must_change_password && !actor.is_system {
        return Deny("the password must be changed first");
    }
    let need = |op: Operation, why: &'static str| if has(actor, op) { Allow } else { Deny(why) };
    match (action, object) {
        (ViewUser, Object::User { id, .. }) if id == actor.id => Allow,
        (ViewUser, _) => need(Operation::ManageUsers, "viewing users needs the Manage users operation"),
        (CreateUser, _) => need(
            Operation::ManageUsers,
            "creating users needs the Manage users operation",
        ),
        (UpdateUser, Object::User { role, .. }) => {
            if !has(actor, Operation::ManageUsers) {
                return Deny("changing users needs the Manage users operation");
            }
            may_manage_role(actor, role)
        }
        (AssignRole(new), Object::User { role, id }) => {
            if !has(actor, Operation::ManageUsers) {
                return Deny("changing roles needs the Manage users operation");
            }
            if id == actor.id && !actor.is_system {
                return Deny("users cannot change their own role");
            }
            match may_manage_role(actor, role) {
                Allow => may_manage_role(actor, new),
                d => d,
            }
        }
        (AssignRole(new), Object::System) => {
            // Creating a user with a role.
            if !has(actor, Operation::ManageUsers) {
                return Deny("assigning roles needs the Manage users operation");
            }
            may_manage_role(actor, new)
        }
        (SetSuperAdmin, Object::User { role, id }) => {
            if !(actor.is_system || (actor.role.may_be_super_admin() && has(actor, Operation::ManageUsers))) {
                return Deny("only an administrator can make a super admin");
            }
            if id == actor.id && !actor.is_system {
                return Deny("a super admin can only be made by another administrator");
            }
            if !role.may_be_super_admin() {
                return Deny("only administrator roles can be super admins");
            }
            Allow
        }
        (DeleteUser, Object::User { id, role }) => {
            if id == actor.id && !actor.is_system {
                return Deny("users cannot delete themselves");
            }
            if !has(actor, Operation::ManageUsers) {
                return Deny("deleting users needs the Manage users operation");
            }
            may_manage_role(actor, role)
        }
        (CreateTokenFor, Object::User { id, .. }) if id == actor.id => Allow,
        (CreateTokenFor, _) => need(
            Operation::ManageUsers,
            "tokens for other users need the Manage users operation",
        ),
        (CreateResource, _) => need(
            Operation::ManageResources,
            "adding resources needs the Manage resources operation",
        ),
        (Import, _) => {
            if has(actor, Operation::ManageResources) && has(actor, Operation::ManagePasswords) {
                Allow
            } else {
                Deny("importing needs the Manage resources and Manage passwords operations")
            }
        }
        (ViewAudit, _) => need(Operation::ViewAudit, "the audit trail needs the View audit operation"),
        (ManageSettings, _) => need(
            Operation::PrivacySecurity,
            "settings need the Privacy and security operation",
        ),
        (ViewSessions, _) => need(
            Operation::ViewAudit,
            "live sessions and recordings need the View audit operation",
        ),
        (TerminateSession, _) => need(
            Operation::SessionControl,
            "terminating sessions needs the Session control operation",
        ),
        (ManageUserGroups, _) => need(Operation::ManageUsers, "user groups need the Manage users operation"),
        (CreateResourceGroup, _) => need(
            Operation::ManageResources,
            "resource groups need the Manage resources operation",
        ),
        (ProposeRole(ops), _) => {
            if !has(actor, Operation::ManageUsers) {
                Deny("roles need the Manage users operation")
            } else if !ops.is_subset(actor_ops(actor)) {
                Deny("a role cannot grant operations you do not have")
            } else {
                Allow
            }
        }
        (ApproveRole(ops), Object::User { id, .. }) => {
            if !has(actor, Operation::ManageUsers) {
                return Deny("approving roles needs the Manage users operation");
            }
            if id == actor.id && !actor.is_system {
                return Deny("a role change must be approved by another administrator");
            }
            if !ops.is_subset(actor_ops(actor)) {
                return Deny("a role cannot grant operations you do not have");
            }
            Allow
        }
        (AssignCustomRole(ops), object) => {
            if !has(actor, Operation::ManageUsers) {
                return Deny("changing roles needs the Manage users operation");
            }
            if let Object::User { id, role } = object {
                if id == actor.id && !actor.is_system {
                    return Deny("users cannot change their own role");
                }
                if let Decision::Deny(d) = may_manage_role(actor, role) {
                    return Deny(d);
                }
            }
            if !ops.is_subset(actor_ops(actor)) {
                return Deny("cannot give a role with operations you do not have");
            }
            Allow
        }
        (
            action,
            Object::Owned {
                owner_id,
                share,
                access,
            },
        ) => owned(actor, action, owner_id, share, access),
        _ => Deny("this action does not apply to that object"),
    }
}

/// An actor may manage users of a role only if the actor's role grants at
/// least every operation of that role (no privilege escalation).
fn may_manage_role(actor: &Actor, role: Role) -> Decision {
    if actor.is_system || OpSet::of_role(role).is_subset(actor_ops(actor)) {
        Decision::Allow
    } else {
        Decision::Deny("cannot manage a user whose role has more rights than yours")
    }
}

fn owned(actor: &Actor, action: Action, owner_id: Option<&str>, share: Option<ShareLevel>, access: Access) -> Decision {
    use Action::*;
    use Decision::*;
    let is_owner = owner_id == Some(actor.id.as_str());
    let full_control = actor.is_system || actor.super_admin || is_owner;
    // Access control binds everyone but the owner and the local operator.
    let window_shut = access == Access::Closed && !(actor.is_system || is_owner);
    let at_least = |lvl: ShareLevel| share.is_some_and(|s| s >= lvl);
    if !full_control && share.is_none() {
        // Not visible at all: same answer as a missing object.
        return Deny("not found");
    }
    match action {
        ViewObject => Allow,
        Connect => {
            if !has(actor, Operation::RemoteAccess) {
                Deny("remote access is not part of your role")
            } else if !(full_control || at_least(ShareLevel::Connect)) {
                Deny("not shared for sessions")
            } else if window_shut {
                Deny("this account needs an approved access request that is checked out now")
            } else {
                Allow
            }
        }
        RetrieveSecret => {
            if !has(actor, Operation::ViewPasswords) {
                Deny("viewing passwords is not part of your role")
            } else if !(full_control || at_least(ShareLevel::View)) {
                Deny("shared for sessions only: the password cannot be retrieved")
            } else if window_shut {
                Deny("this account needs an approved access request that is checked out now")
            } else {
                Allow
            }
        }
        UpdateAccount | CreateAccount => {
            if (full_control && has(actor, Operation::ManagePasswords)) || at_least(ShareLevel::Modify) {
                Allow
            } else {
                Deny("changing accounts needs the Manage passwords operation or a modify share")
            }
        }
        DeleteAccount => {
            if (full_control && has(actor, Operation::ManagePasswords)) || at_least(ShareLevel::Full) {
                Allow
            } else {
                Deny("deleting accounts needs the Manage passwords operation or a full share")
            }
        }
        UpdateResource => {
            if (full_control && has(actor, Operation::ManageResources)) || at_least(ShareLevel::Modify) {
                Allow
            } else {
                Deny("changing resources needs the Manage resources operation or a modify share")
            }
        }
        DeleteResource => {
            if (full_control && has(actor, Operation::ManageResources)) || at_least(ShareLevel::Full) {
                Allow
            } else {
                Deny("deleting resources needs the Manage resources operation or a full share")
            }
        }
        Share => {
            if full_control || at_least(ShareLevel::Full) {
                Allow
            } else {
                Deny("sharing needs ownership or a full share")
            }
        }
        RequestAccess => {
            if has(actor, Operation::RemoteAccess) || has(actor, Operation::ViewPasswords) {
                Allow
            } else {
                Deny("access requests need the Remote access or View passwords operation")
            }
        }
        ApproveAccess => {
            if (full_control && has(actor, Operation::ManagePasswords)) || at_least(ShareLevel::Full) {
                Allow
            } else {
                Deny("approving access needs ownership with the Manage passwords operation, or a full share")
            }
        }
        _ => Deny("this action does not apply to that object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    fn actor(role: Role) -> Actor {
        Actor {
            id: "me".into(),
            username: "me".into(),
            role,
            super_admin: false,
            must_change_password: false,
            is_system: false,
            custom_ops: None,
        }
    }

    /// The seed's table, row by row: ManageUsers, ManageResources, ManagePasswords,
    /// ViewPasswords, PersonalPasswords, ViewAudit, PrivacySecurity.
    #[test]
    fn seed_role_operation_table() {
        use Operation::*;
        let ops = [
            ManageUsers,
            ManageResources,
            ManagePasswords,
            ViewPasswords,
            PersonalPasswords,
            ViewAudit,
            PrivacySecurity,
        ];
        let table: [(Role, [bool; 7]); 5] = [
            (Administrator, [true, true, true, true, true, true, false]),
            (PasswordAdministrator, [false, true, true, true, true, false, false]),
            (PrivilegedAdministrator, [true, true, true, true, true, true, true]),
            (PasswordUser, [false, false, false, true, true, false, false]),
            (PasswordAuditor, [false, false, false, true, true, true, false]),
        ];
        for (role, row) in table {
            for (op, want) in ops.iter().zip(row) {
                assert_eq!(role_grants(role, *op), want, "{role:?} × {op:?}");
            }
        }
    }

    /// Every role × every action on the objects the action applies to.
    #[test]
    fn role_action_matrix() {
        use Action::*;
        let other_user = Object::User {
            id: "u2",
            role: PasswordUser,
        };
        let own = Object::Owned {
            owner_id: Some("me"),
            share: None,
            access: Access::Free,
        };
        let foreign = Object::Owned {
            owner_id: Some("x"),
            share: None,
            access: Access::Free,
        };
        // (action, object, [Admin, PwdAdmin, PrivAdmin, PwdUser, Auditor])
        let rows: Vec<(Action, Object, [bool; 5])> = vec![
            (ViewUser, Object::System, [true, false, true, false, false]),
            (
                ViewUser,
                Object::User {
                    id: "me",
                    role: PasswordUser,
                },
                [true; 5],
            ),
            (CreateUser, Object::System, [true, false, true, false, false]),
            (UpdateUser, other_user, [true, false, true, false, false]),
            (DeleteUser, other_user, [true, false, true, false, false]),
            (
                AssignRole(PasswordAuditor),
                other_user,
                [true, false, true, false, false],
            ),
            (
                AssignRole(PrivilegedAdministrator),
                other_user,
                [false, false, true, false, false],
            ),
            (
                SetSuperAdmin,
                Object::User {
                    id: "u2",
                    role: Administrator,
                },
                [true, false, true, false, false],
            ),
            (
                SetSuperAdmin,
                Object::User {
                    id: "u2",
                    role: PasswordUser,
                },
                [false; 5],
            ),
            (CreateResource, Object::System, [true, true, true, false, false]),
            (Import, Object::System, [true, true, true, false, false]),
            (ViewAudit, Object::System, [true, false, true, false, true]),
            (ManageSettings, Object::System, [false, false, true, false, false]),
            (ViewSessions, Object::System, [true, false, true, false, true]),
            (TerminateSession, Object::System, [true, false, true, false, false]),
            (ViewObject, own, [true; 5]),
            (UpdateResource, own, [true, true, true, false, false]),
            (DeleteResource, own, [true, true, true, false, false]),
            (CreateAccount, own, [true, true, true, false, false]),
            (UpdateAccount, own, [true, true, true, false, false]),
            (DeleteAccount, own, [true, true, true, false, false]),
            (RetrieveSecret, own, [true; 5]),
            (Connect, own, [true; 5]),
            // Admins see only what they own or what is shared with them.
            (ViewObject, foreign, [false; 5]),
            (RetrieveSecret, foreign, [false; 5]),
            (Connect, foreign, [false; 5]),
            (UpdateAccount, foreign, [false; 5]),
        ];
        for (action, object, want) in rows {
            for (role, w) in Role::ALL.into_iter().zip(want) {
                let d = authorize(&actor(role), action, object);
                assert_eq!(d.is_allowed(), w, "{role:?} {action:?} {object:?}: {d:?}");
            }
        }
    }

    #[test]
    fn super_admin_sees_everything_but_only_within_role_operations() {
        let mut a = actor(Administrator);
        a.super_admin = true;
        let foreign = Object::Owned {
            owner_id: Some("x"),
            share: None,
            access: Access::Free,
        };
        for action in [
            Action::ViewObject,
            Action::RetrieveSecret,
            Action::Connect,
            Action::UpdateAccount,
            Action::DeleteResource,
        ] {
            assert!(authorize(&a, action, foreign).is_allowed(), "{action:?}");
        }
    }

    #[test]
    fn share_levels_seam() {
        let u = actor(PasswordUser);
        let shared = |l| Object::Owned {
            owner_id: Some("x"),
            share: Some(l),
            access: Access::Free,
        };
        use ShareLevel::*;
        assert!(authorize(&u, Action::Connect, shared(Connect)).is_allowed());
        assert!(!authorize(&u, Action::RetrieveSecret, shared(Connect)).is_allowed());
        assert!(authorize(&u, Action::RetrieveSecret, shared(View)).is_allowed());
        assert!(!authorize(&u, Action::UpdateAccount, shared(View)).is_allowed());
        assert!(authorize(&u, Action::UpdateAccount, shared(Modify)).is_allowed());
        assert!(!authorize(&u, Action::DeleteAccount, shared(Modify)).is_allowed());
        assert!(authorize(&u, Action::DeleteAccount, shared(Full)).is_allowed());
    }

    /// Share level × action: what each level allows a password user on a foreign account,
    /// and what a shut access window takes away.
    #[test]
    fn share_level_action_matrix() {
        use Action::*;
        use ShareLevel as L;
        let u = actor(PasswordUser);
        // (action, [none, connect, view, modify, full])
        let rows: [(Action, [bool; 5]); 10] = [
            (ViewObject, [false, true, true, true, true]),
            (Connect, [false, true, true, true, true]),
            (RetrieveSecret, [false, false, true, true, true]),
            (UpdateAccount, [false, false, false, true, true]),
            (CreateAccount, [false, false, false, true, true]),
            (UpdateResource, [false, false, false, true, true]),
            (DeleteAccount, [false, false, false, false, true]),
            (DeleteResource, [false, false, false, false, true]),
            (Share, [false, false, false, false, true]),
            (ApproveAccess, [false, false, false, false, true]),
        ];
        let levels = [None, Some(L::Connect), Some(L::View), Some(L::Modify), Some(L::Full)];
        for (action, want) in rows {
            for (level, w) in levels.into_iter().zip(want) {
                let o = Object::Owned {
                    owner_id: Some("x"),
                    share: level,
                    access: Access::Free,
                };
                assert_eq!(authorize(&u, action, o).is_allowed(), w, "{action:?} with {level:?}");
                // A shut window refuses sessions and retrievals, nothing else.
                let shut = Object::Owned {
                    owner_id: Some("x"),
                    share: level,
                    access: Access::Closed,
                };
                let w_shut = w && !matches!(action, Connect | RetrieveSecret);
                assert_eq!(
                    authorize(&u, action, shut).is_allowed(),
                    w_shut,
                    "{action:?} shut {level:?}"
                );
                let open = Object::Owned {
                    owner_id: Some("x"),
                    share: level,
                    access: Access::Open,
                };
                assert_eq!(authorize(&u, action, open).is_allowed(), w, "{action:?} open {level:?}");
            }
        }
        // The owner is never bound by the window.
        let own_shut = Object::Owned {
            owner_id: Some("me"),
            share: None,
            access: Access::Closed,
        };
        assert!(authorize(&u, Connect, own_shut).is_allowed());
        // Nor is the local operator; a super admin is.
        assert!(authorize(&Actor::system(), RetrieveSecret, own_shut).is_allowed());
        let mut sa = actor(Administrator);
        sa.super_admin = true;
        let foreign_shut = Object::Owned {
            owner_id: Some("x"),
            share: None,
            access: Access::Closed,
        };
        assert!(!authorize(&sa, Connect, foreign_shut).is_allowed());
        assert!(authorize(&sa, ViewObject, foreign_shut).is_allowed());
    }

    #[test]
    fn role_approval_needs_another_administrator() {
        let a = actor(Administrator);
        let author_me = Object::User {
            id: "me",
            role: Administrator,
        };
        let author_other = Object::User {
            id: "u2",
            role: Administrator,
        };
        let small = OpSet::of(&[Operation::ViewAudit]);
        let big = OpSet::of(&[Operation::PrivacySecurity]);
        assert!(!authorize(&a, Action::ApproveRole(small), author_me).is_allowed());
        assert!(authorize(&a, Action::ApproveRole(small), author_other).is_allowed());
        // Nobody approves or proposes operations they lack (administrator lacks privacy & security).
        assert!(!authorize(&a, Action::ApproveRole(big), author_other).is_allowed());
        assert!(!authorize(&a, Action::ProposeRole(big), Object::System).is_allowed());
        assert!(authorize(&a, Action::ProposeRole(small), Object::System).is_allowed());
        assert!(!authorize(&actor(PasswordAdministrator), Action::ApproveRole(small), author_other).is_allowed());
        // A custom role replaces the built-in role's operations.
        let mut c = actor(PasswordUser);
        c.custom_ops = Some(OpSet::of(&[Operation::ViewAudit, Operation::ViewPasswords]));
        assert!(authorize(&c, Action::ViewAudit, Object::System).is_allowed());
        let own = Object::Owned {
            owner_id: Some("me"),
            share: None,
            access: Access::Free,
        };
        assert!(!authorize(&c, Action::Connect, own).is_allowed());
        c.custom_ops = Some(OpSet::EMPTY);
        assert!(!authorize(&c, Action::ViewAudit, Object::System).is_allowed());
        assert_eq!(
            OpSet::from_json(&OpSet::of(&Operation::ALL).to_json()),
            Some(OpSet::of(&Operation::ALL))
        );
        assert_eq!(OpSet::from_json("[\"root\"]"), None);
    }

    #[test]
    fn nobody_escalates_themselves() {
        for role in Role::ALL {
            let a = actor(role);
            let me = Object::User { id: "me", role };
            assert!(!authorize(&a, Action::SetSuperAdmin, me).is_allowed());
            assert!(!authorize(&a, Action::AssignRole(PrivilegedAdministrator), me).is_allowed());
            assert!(!authorize(&a, Action::DeleteUser, me).is_allowed());
        }
    }

    #[test]
    fn must_change_password_blocks_everything() {
        let mut a = actor(PrivilegedAdministrator);
        a.must_change_password = true;
        assert!(!authorize(&a, Action::ViewAudit, Object::System).is_allowed());
        assert!(!authorize(
            &a,
            Action::ViewObject,
            Object::Owned {
                owner_id: Some("me"),
                share: None,
                access: Access::Free
            }
        )
        .is_allowed());
    }
}
