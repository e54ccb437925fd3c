//! Operator accounts on the wire: sign-in, the caller, users and their roles, per-user API tokens, the audit
//! trail. The console and the CLI send bearer tokens (never cookies, so there is no CSRF surface).

use serde::{Deserialize, Serialize};

/// What a person may do, each level including the ones below it: a viewer reads, an operator also acts on
/// rollouts, robots, bundles, groups and sites, an admin also manages users, keys, trust, admission and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything an operator sees.
    Viewer,
    /// Also changes rollouts, robots, bundles, groups and sites.
    Operator,
    /// Also manages users, keys, trust, admission and settings.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its name in the API, the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Who a token belongs to (`GET /api/me`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// User name (`admin-token` for the bootstrap admin token).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// A new session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// The session's bearer token.
    pub token: String,
    /// Who signed in.
    pub user: Me,
    /// When the session ends unless used again (Unix seconds; each use moves it, up to the absolute limit).
    pub expires_at: u64,
}

/// A user (`GET /api/users`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When the user was added (Unix seconds).
    pub created_at: u64,
}

/// `POST /api/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// User name: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Password (at least 12 characters).
    pub password: String,
}

/// `PUT /api/users/{name}/role`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetRoleRequest {
    /// The new role.
    pub role: Role,
}

/// `PUT /api/users/{name}/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPasswordRequest {
    /// The new password (at least 12 characters); the user's sessions end.
    pub password: String,
}

/// `PUT /api/me/password`: the caller changes their own password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePasswordRequest {
    /// The password now: a stolen session alone cannot change it.
    pub current: String,
    /// The new password (at least 12 characters); every session of the user ends and the answer is a new one.
    pub password: String,
}

/// One of a user's API tokens (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenInfo {
    /// Public id: what revoking takes.
    pub id: String,
    /// What the user called it.
    pub name: String,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Last use (Unix seconds, to within a minute).
    #[serde(default)]
    pub last_used: Option<u64>,
    /// When it stops working (Unix seconds; none: until revoked).
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// `POST /api/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// A name to tell it by ("ci", "laptop").
    pub name: String,
    /// Lifetime in seconds (none: until revoked).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A new API token: the secret is shown this once; the server keeps only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its description.
    pub info: ApiTokenInfo,
}

/// One change in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing id (`before` pages with it).
    pub id: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// Who (`admin-token` for the bootstrap admin token).
    pub user: String,
    /// What: method and route, or `login`.
    pub action: String,
    /// On what: the route's parameters (`rollout_id=3`), or the user signing in.
    pub target: String,
    /// From where: the client's address.
    pub address: String,
    /// The answer's HTTP status.
    pub status: u16,
}

/// `GET /api/audit`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; none: this is the last.
    #[serde(default)]
    pub next_before: Option<u64>,
}
