//! What the store keeps about people: users (name, role, password hash), their sessions and API tokens (only
//! a SHA-256 of each secret), and the audit trail. Every [`super::Store`] is an [`AccountStore`]; each backend
//! implements it in its `accounts.rs`.

use crate::error::StoreError;
use crate::tokens::Role;

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string ([`crate::accounts::password`]).
    pub password_hash: String,
    /// When the user was added.
    pub created_at: u64,
}

/// A signed-in session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session token.
    pub token_hash: [u8; 32],
    /// Whose.
    pub user: String,
    /// Sign-in time.
    pub created_at: u64,
    /// Last stored use (written at most once per touch interval).
    pub last_used: u64,
}

/// A user's API token (for the CLI and CI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Public id (the first 16 hex digits of the token's hash): what lists show and revoke takes.
    pub id: String,
    /// Whose.
    pub user: String,
    /// What the user called it ("ci", "laptop").
    pub name: String,
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// Creation time.
    pub created_at: u64,
    /// Last stored use.
    pub last_used: Option<u64>,
    /// When it stops working (`None`: until revoked).
    pub expires_at: Option<u64>,
}

/// One row of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store, increasing.
    pub id: u64,
    /// When.
    pub at: u64,
    /// Who (user name; `admin-token` for the bootstrap token).
    pub user: String,
    /// What: method and route template, or `login` / `login refused`.
    pub action: String,
    /// On what: the route's parameters (`rollout_id=3`) or the user name signing in.
    pub target: String,
    /// From where: the client's address.
    pub address: String,
    /// The answer's HTTP status.
    pub status: u16,
}

/// Users, sessions, API tokens and the audit trail.
pub trait AccountStore {
    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// One user.
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Whether any user exists (the bootstrap admin token works only while none does).
    fn has_users(&self) -> Result<bool, StoreError>;
    /// Adds a user; false (and nothing changes) when the name is taken.
    fn add_user(&self, user: &UserRecord) -> Result<bool, StoreError>;
    /// Changes a user's role; false when there is no such user.
    fn set_role(&self, name: &str, role: Role) -> Result<bool, StoreError>;
    /// Replaces a user's password hash and ends their sessions; false when there is no such user.
    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    /// Removes a user with their sessions and API tokens; false when there was no such user.
    fn remove_user(&self, name: &str) -> Result<bool, StoreError>;
    /// Records a new session, and deletes sessions last used before `stale_before` or created before
    /// `old_before` (ended ones).
    fn create_session(
        &self,
        session: &SessionRecord,
        stale_before: u64,
        old_before: u64,
    ) -> Result<(), StoreError>;
    /// A session by token hash, with its user's current role.
    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, Role)>, StoreError>;
    /// Stores a session's last use.
    fn touch_session(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError>;
    /// Ends a session; false when there was none.
    fn end_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Records a new API token.
    fn create_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;
    /// An API token by hash, with its user's current role.
    fn api_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(ApiTokenRecord, Role)>, StoreError>;
    /// A user's API tokens, oldest first.
    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// Stores an API token's last use.
    fn touch_api_token(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError>;
    /// Revokes a user's API token by id; false when the user has no such token.
    fn revoke_api_token(&self, user: &str, id: &str) -> Result<bool, StoreError>;
    /// Appends to the audit trail; returns the row's id.
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError>;
    /// Audit rows newest first: at most `limit`, with ids below `before` when given (the next page).
    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

/// A stored role name.
pub(crate) fn role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt {
        what: "users.role",
        detail: format!("unknown role {text:?}"),
    })
}
