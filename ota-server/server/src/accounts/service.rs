//! The account operations against the store: sign-in and sign-out, recognising session and API tokens (with a
//! short cache, so a page's requests do not each read the database), users, API tokens and the audit trail.
//! Another replica's revocation reaches this one within [`CACHE_TTL`]; this replica's own changes at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_protocol::accounts::{
    ApiTokenInfo, AuditEntry, AuditPage, ChangePasswordRequest, CreateTokenRequest,
    CreateUserRequest, CreatedToken, LoginRequest, LoginResponse, Me, UserInfo,
};

use super::{
    limiter::LoginLimiter, new_secret, password, token_id, valid_user_name, API_TOKEN_PREFIX,
    SESSION_PREFIX, USER_NAME_RULE,
};
use crate::error::{ServiceError, StoreError};
use crate::fleet::{lock, unix_now, Shared};
use crate::store::accounts::{ApiTokenRecord, AuditRecord, SessionRecord, UserRecord};
use crate::tokens::{hash_token, Caller, Role, User, BOOTSTRAP_USER};

/// How long a recognised token (or "users exist") is believed without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Tokens remembered at most (the cache starts over beyond it).
const CACHE_MAX: usize = 10_000;

/// An API token's last use is written at most this often.
const TOKEN_TOUCH_SECS: u64 = 60;

/// Largest audit page.
pub const MAX_AUDIT_PAGE: usize = 1000;

const WRONG_LOGIN: &str = "wrong user name or password";

#[derive(Clone, Debug)]
enum Kind {
    Session {
        created_at: u64,
        last_used: u64,
    },
    Api {
        expires_at: Option<u64>,
        last_used: Option<u64>,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    user: User,
    kind: Kind,
    fetched: Instant,
}

#[derive(Default)]
struct Cache {
    tokens: HashMap<[u8; 32], Entry>,
    has_users: Option<(Instant, bool)>,
}

/// Accounts, sessions, API tokens, audit.
pub struct AccountService {
    shared: Arc<Shared>,
    cache: Mutex<Cache>,
    limiter: Mutex<LoginLimiter>,
    started: Instant,
}

/// What a sign-in attempt leaves in the audit trail: the user it named, when that user exists.
pub struct LoginOutcome {
    /// The session, or why not.
    pub result: Result<LoginResponse, ServiceError>,
    /// The user name to audit the attempt under (`None`: no such user, nothing to audit).
    pub audit_as: Option<String>,
}

fn user_info(u: &UserRecord) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        role: u.role,
        created_at: u.created_at,
    }
}

fn token_info(t: &ApiTokenRecord) -> ApiTokenInfo {
    ApiTokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: t.created_at,
        last_used: t.last_used,
        expires_at: t.expires_at,
    }
}

/// Whether `users` still has an admin after `name` gets `role` (`None`: is removed).
pub fn keeps_an_admin(users: &[UserRecord], name: &str, role: Option<Role>) -> bool {
    users.iter().any(|u| {
        let r = if u.name == name { role } else { Some(u.role) };
        r == Some(Role::Admin)
    })
}

impl AccountService {
    /// The service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        AccountService {
            shared,
            cache: Mutex::new(Cache::default()),
            limiter: Mutex::new(LoginLimiter::default()),
            started: Instant::now(),
        }
    }

    fn store_sync<T>(
        &self,
        what: &'static str,
        r: Result<T, StoreError>,
    ) -> Result<T, ServiceError> {
        r.map_err(|e| {
            tracing::error!("{what}: {e}");
            ServiceError::Store(e)
        })
    }

    /// Whether the bootstrap admin token still works: only while no user exists.
    pub fn bootstrap_allowed(&self) -> Result<(), ServiceError> {
        let cached = lock(&self.cache)
            .has_users
            .filter(|(at, _)| at.elapsed() < CACHE_TTL);
        let has_users = match cached {
            Some((_, v)) => v,
            None => {
                let v = self.store_sync("reading the users", self.shared.store.has_users())?;
                lock(&self.cache).has_users = Some((Instant::now(), v));
                v
            }
        };
        if has_users {
            return Err(ServiceError::Unauthenticated(
                "the bootstrap admin token stopped working when the first user was added (`ota-server users add`); sign in as a user or use a user's API token".into(),
            ));
        }
        Ok(())
    }

    /// Identifies the holder of a session (`ota-s.`) or API (`ota-u.`) token.
    pub fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        let hash = hash_token(token);
        let now = unix_now();
        let cached = lock(&self.cache)
            .tokens
            .get(&hash)
            .filter(|e| e.fetched.elapsed() < CACHE_TTL)
            .cloned();
        let entry = match cached {
            Some(e) => e,
            None => {
                let e = self.load(token, &hash)?;
                let mut cache = lock(&self.cache);
                if cache.tokens.len() >= CACHE_MAX {
                    cache.tokens.clear();
                }
                cache.tokens.insert(hash, e.clone());
                e
            }
        };
        let policy = self.shared.config.accounts.sessions;
        match entry.kind {
            Kind::Session {
                created_at,
                last_used,
            } => {
                if let Err(end) = policy.check(created_at, last_used, now) {
                    lock(&self.cache).tokens.remove(&hash);
                    return Err(ServiceError::Unauthenticated(end.to_string()));
                }
                if policy.needs_touch(last_used, now) {
                    self.store_sync(
                        "recording a session's use",
                        self.shared.store.touch_session(&hash, now),
                    )?;
                    self.set_last_used(&hash, now);
                }
            }
            Kind::Api {
                expires_at,
                last_used,
            } => {
                if !crate::admission::token_live(expires_at, now) {
                    return Err(ServiceError::Unauthenticated(
                        "this API token expired; create a new one (`ota-server users token create`)"
                            .into(),
                    ));
                }
                if last_used.is_none_or(|at| now.saturating_sub(at) >= TOKEN_TOUCH_SECS) {
                    self.store_sync(
                        "recording an API token's use",
                        self.shared.store.touch_api_token(&hash, now),
                    )?;
                    self.set_last_used(&hash, now);
                }
            }
        }
        Ok(Caller::User(entry.user))
    }

    fn set_last_used(&self, hash: &[u8; 32], now: u64) {
        if let Some(e) = lock(&self.cache).tokens.get_mut(hash) {
            match &mut e.kind {
                Kind::Session { last_used, .. } => *last_used = now,
                Kind::Api { last_used, .. } => *last_used = Some(now),
            }
        }
    }

    fn load(&self, token: &str, hash: &[u8; 32]) -> Result<Entry, ServiceError> {
        let store = &self.shared.store;
        let found = if token.starts_with(SESSION_PREFIX) {
            self.store_sync("reading a session", store.session(hash))?
                .map(|(s, role)| {
                    let kind = Kind::Session {
                        created_at: s.created_at,
                        last_used: s.last_used,
                    };
                    (s.user, role, kind)
                })
        } else if token.starts_with(API_TOKEN_PREFIX) {
            self.store_sync("reading an API token", store.api_token(hash))?
                .map(|(t, role)| {
                    let kind = Kind::Api {
                        expires_at: t.expires_at,
                        last_used: t.last_used,
                    };
                    (t.user, role, kind)
                })
        } else {
            None
        };
        let (name, role, kind) = found.ok_or_else(|| {
            ServiceError::Unauthenticated(
                "unknown, revoked or signed-out token; sign in again".into(),
            )
        })?;
        Ok(Entry {
            user: User { name, role },
            kind,
            fetched: Instant::now(),
        })
    }

    /// Forgets every cached token and whether users exist (after a change to users or tokens).
    fn forget(&self) {
        *lock(&self.cache) = Cache::default();
    }

    /// `POST /api/login` from `address`.
    pub async fn login(&self, req: LoginRequest, address: String) -> LoginOutcome {
        let name = req.username.clone();
        let now_ms = self.started.elapsed().as_millis() as u64;
        if let Err(e) = self.not_limited("failed sign-ins as", &name, &address, now_ms) {
            return LoginOutcome {
                result: Err(e),
                audit_as: None,
            };
        }
        let checked = self.check_password(name.clone(), req.password).await;
        let (user, ok) = match checked {
            Ok(v) => v,
            Err(e) => {
                return LoginOutcome {
                    result: Err(e),
                    audit_as: None,
                }
            }
        };
        let audit_as = user.as_ref().map(|u| u.name.clone());
        let user = match (user, ok) {
            (Some(u), true) => u,
            _ => {
                lock(&self.limiter).failed(&name, &address, now_ms);
                return LoginOutcome {
                    result: Err(ServiceError::Unauthenticated(WRONG_LOGIN.into())),
                    audit_as,
                };
            }
        };
        lock(&self.limiter).succeeded(&name, &address);
        LoginOutcome {
            result: self.start_session(user).await,
            audit_as,
        }
    }

    /// Whether `name` may try a password from `address` now; else `429` saying "too many {what} '{name}'".
    fn not_limited(
        &self,
        what: &str,
        name: &str,
        address: &str,
        now_ms: u64,
    ) -> Result<(), ServiceError> {
        lock(&self.limiter)
            .check(name, address, now_ms)
            .map_err(|wait| {
                let secs = wait.as_secs().max(1);
                ServiceError::TooFast {
                    retry_after_secs: secs,
                    message: format!(
                        "too many {what} '{name}' from {address}; try again in {secs} s"
                    ),
                }
            })
    }

    /// The user named, and whether `password` is theirs (as long to answer for a name that does not exist).
    async fn check_password(
        &self,
        name: String,
        password: String,
    ) -> Result<(Option<UserRecord>, bool), ServiceError> {
        self.shared
            .blocking(move |s| {
                let user = if valid_user_name(&name) {
                    s.user(&name)?
                } else {
                    None
                };
                Ok(match user {
                    Some(u) => {
                        let ok = password::verify(&password, &u.password_hash);
                        (Some(u), ok)
                    }
                    None => {
                        password::verify_nobody(&password);
                        (None, false)
                    }
                })
            })
            .await
    }

    /// `PUT /api/me/password` from `address`: the caller proves the current password (failures count against
    /// sign-ins, so this is no way around their limit), every session of theirs ends, and the answer is a new one.
    pub async fn change_own_password(
        &self,
        user: &User,
        req: ChangePasswordRequest,
        address: String,
    ) -> Result<LoginResponse, ServiceError> {
        if user.name == BOOTSTRAP_USER {
            return Err(ServiceError::Conflict(
                "the bootstrap admin token has no password; add a user first (`ota-server users add`)"
                    .into(),
            ));
        }
        let name = user.name.clone();
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.not_limited("wrong passwords for", &name, &address, now_ms)?;
        password::acceptable(&req.password).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let (record, ok) = self.check_password(name.clone(), req.current).await?;
        let record = match (record, ok) {
            (Some(record), true) => record,
            (Some(_), false) => {
                lock(&self.limiter).failed(&name, &address, now_ms);
                // 403, not 401: the caller's token is fine, and a console signs out on 401.
                return Err(ServiceError::Forbidden(
                    "the current password is wrong; nothing changed".into(),
                ));
            }
            (None, _) => return Err(ServiceError::NotFound(format!("no user '{name}'"))),
        };
        lock(&self.limiter).succeeded(&name, &address);
        self.set_password(&name, req.password).await?;
        self.start_session(record).await
    }

    async fn start_session(&self, user: UserRecord) -> Result<LoginResponse, ServiceError> {
        let policy = self.shared.config.accounts.sessions;
        let now = unix_now();
        let (token, token_hash) = new_secret(SESSION_PREFIX);
        let record = SessionRecord {
            token_hash,
            user: user.name.clone(),
            created_at: now,
            last_used: now,
        };
        let (stale, old) = (
            now.saturating_sub(policy.idle_secs),
            now.saturating_sub(policy.absolute_secs),
        );
        self.shared
            .blocking(move |s| s.create_session(&record, stale, old))
            .await?;
        Ok(LoginResponse {
            token,
            user: Me {
                name: user.name,
                role: user.role,
            },
            expires_at: policy.expires_at(now, now),
        })
    }

    /// `POST /api/logout`: ends the session `token` is.
    pub async fn logout(&self, token: &str) -> Result<(), ServiceError> {
        if !token.starts_with(SESSION_PREFIX) {
            return Err(ServiceError::Conflict(
                "only a session signs out; revoke an API token with DELETE /api/tokens/{id}".into(),
            ));
        }
        let hash = hash_token(token);
        lock(&self.cache).tokens.remove(&hash);
        self.shared.blocking(move |s| s.end_session(&hash)).await?;
        Ok(())
    }

    /// `GET /api/users`.
    pub async fn users(&self) -> Result<Vec<UserInfo>, ServiceError> {
        let users = self.shared.blocking(|s| s.users()).await?;
        Ok(users.iter().map(user_info).collect())
    }

    /// `POST /api/users`.
    pub async fn add_user(&self, req: CreateUserRequest) -> Result<UserInfo, ServiceError> {
        if !valid_user_name(&req.name) {
            return Err(ServiceError::Invalid(USER_NAME_RULE.into()));
        }
        password::acceptable(&req.password).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let record = self
            .shared
            .blocking(move |s| {
                let password_hash =
                    password::hash(&req.password).map_err(|e| StoreError::Corrupt {
                        what: "password hash",
                        detail: e.to_string(),
                    })?;
                let record = UserRecord {
                    name: req.name,
                    role: req.role,
                    password_hash,
                    created_at: unix_now(),
                };
                Ok(s.add_user(&record)?.then_some(record))
            })
            .await?;
        self.forget();
        let record =
            record.ok_or_else(|| ServiceError::Conflict("this user name is taken".into()))?;
        Ok(user_info(&record))
    }

    /// `DELETE /api/users/{name}`: the user, their sessions and API tokens.
    pub async fn remove_user(&self, name: &str) -> Result<(), ServiceError> {
        self.change_user(name, None).await
    }

    /// `PUT /api/users/{name}/role`.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<UserInfo, ServiceError> {
        self.change_user(name, Some(role)).await?;
        Ok(UserInfo {
            name: name.to_string(),
            role,
            created_at: self
                .shared
                .blocking({
                    let name = name.to_string();
                    move |s| s.user(&name)
                })
                .await?
                .map_or(0, |u| u.created_at),
        })
    }

    async fn change_user(&self, name: &str, role: Option<Role>) -> Result<(), ServiceError> {
        let target = name.to_string();
        let outcome = self
            .shared
            .blocking(move |s| {
                let users = s.users()?;
                if !users.iter().any(|u| u.name == target) {
                    return Ok(Err(ServiceError::NotFound(format!("no user '{target}'"))));
                }
                if !keeps_an_admin(&users, &target, role) {
                    return Ok(Err(ServiceError::Conflict(format!(
                        "'{target}' is the last admin; make another user admin first"
                    ))));
                }
                match role {
                    Some(r) => s.set_role(&target, r)?,
                    None => s.remove_user(&target)?,
                };
                Ok(Ok(()))
            })
            .await?;
        self.forget();
        outcome
    }

    /// `PUT /api/users/{name}/password`: the user's sessions end.
    pub async fn set_password(&self, name: &str, new: String) -> Result<(), ServiceError> {
        password::acceptable(&new).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let target = name.to_string();
        let found = self
            .shared
            .blocking(move |s| {
                let hash = password::hash(&new).map_err(|e| StoreError::Corrupt {
                    what: "password hash",
                    detail: e.to_string(),
                })?;
                s.set_password(&target, &hash)
            })
            .await?;
        self.forget();
        found
            .then_some(())
            .ok_or_else(|| ServiceError::NotFound(format!("no user '{name}'")))
    }

    fn real_user(user: &User) -> Result<(), ServiceError> {
        if user.name == BOOTSTRAP_USER {
            return Err(ServiceError::Conflict(
                "the bootstrap admin token has no API tokens; add a user first (`ota-server users add`)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `GET /api/tokens`: the caller's API tokens.
    pub async fn tokens(&self, user: &User) -> Result<Vec<ApiTokenInfo>, ServiceError> {
        Self::real_user(user)?;
        let name = user.name.clone();
        let list = self.shared.blocking(move |s| s.api_tokens(&name)).await?;
        Ok(list.iter().map(token_info).collect())
    }

    /// `POST /api/tokens`: a new API token of the caller, shown this once.
    pub async fn create_token(
        &self,
        user: &User,
        req: CreateTokenRequest,
    ) -> Result<CreatedToken, ServiceError> {
        Self::real_user(user)?;
        let name = req.name.trim().to_string();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid(
                "a token name is 1-64 printable characters".into(),
            ));
        }
        let now = unix_now();
        let (token, token_hash) = new_secret(API_TOKEN_PREFIX);
        let record = ApiTokenRecord {
            id: token_id(&token_hash),
            user: user.name.clone(),
            name,
            token_hash,
            created_at: now,
            last_used: None,
            expires_at: req.expires_in_secs.map(|s| now.saturating_add(s)),
        };
        let info = token_info(&record);
        self.shared
            .blocking(move |s| s.create_api_token(&record))
            .await?;
        Ok(CreatedToken { token, info })
    }

    /// `DELETE /api/tokens/{id}`: revokes one of the caller's API tokens.
    pub async fn revoke_token(&self, user: &User, id: &str) -> Result<(), ServiceError> {
        Self::real_user(user)?;
        let (name, token) = (user.name.clone(), id.to_string());
        let found = self
            .shared
            .blocking(move |s| s.revoke_api_token(&name, &token))
            .await?;
        self.forget();
        found
            .then_some(())
            .ok_or_else(|| ServiceError::NotFound(format!("you have no API token '{id}'")))
    }

    /// Appends one row to the audit trail (a failure is logged, never refuses the request it records).
    pub async fn record(&self, entry: AuditRecord) {
        if let Err(e) = self.shared.blocking(move |s| s.append_audit(&entry)).await {
            tracing::error!(target: "ota_server::audit", "cannot store an audit row: {e}");
        }
    }

    /// `GET /api/audit`: newest first, `limit` (at most [`MAX_AUDIT_PAGE`]) rows below `before`.
    pub async fn audit(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, ServiceError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let rows = self
            .shared
            .blocking(move |s| s.audit(before, limit))
            .await?;
        let next_before = (rows.len() == limit)
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        Ok(AuditPage {
            entries: rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at: r.at,
                    user: r.user,
                    action: r.action,
                    target: r.target,
                    address: r.address,
                    status: r.status,
                })
                .collect(),
            next_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str, role: Role) -> UserRecord {
        UserRecord {
            name: name.into(),
            role,
            password_hash: String::new(),
            created_at: 0,
        }
    }

    proptest! {
        #[test]
        fn an_admin_always_remains(roles in prop::collection::vec(0usize..3, 1..6), who in 0usize..6, to in prop::option::of(0usize..3)) {
            let users: Vec<UserRecord> = roles.iter().enumerate().map(|(i, r)| user(&format!("u{i}"), Role::ALL[*r])).collect();
            let name = format!("u{}", who % users.len());
            let role = to.map(|r| Role::ALL[r]);
            let admins_after = users.iter().filter(|u| {
                let r = if u.name == name { role } else { Some(u.role) };
                r == Some(Role::Admin)
            }).count();
            prop_assert_eq!(keeps_an_admin(&users, &name, role), admins_after > 0);
        }
    }
}
