//! Users, sessions, API tokens and the audit trail on PostgreSQL: the same rows and answers as on SQLite.
//! Each call of [`PostgresStore`] runs through [`super::off_runtime`] like every other store call.

use postgres::Row;

use super::{off_runtime, PostgresStore, Tables};
use crate::error::StoreError;
use crate::store::accounts::{
    role, AccountStore, ApiTokenRecord, AuditRecord, SessionRecord, UserRecord,
};
use crate::store::codec::hash_from_hex;
use crate::tokens::Role;

const TOKEN_COLUMNS: &str =
    "t.token_id, t.user_name, t.name, t.token_hash, t.created_at, t.last_used, t.expires_at, u.role";

fn user_from_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: row.get(0),
        role: role(row.get(1))?,
        password_hash: row.get(2),
        created_at: row.get::<_, i64>(3) as u64,
    })
}

fn token_from_row(row: &Row) -> Result<(ApiTokenRecord, Role), StoreError> {
    Ok((
        ApiTokenRecord {
            id: row.get(0),
            user: row.get(1),
            name: row.get(2),
            token_hash: hash_from_hex(row.get(3))?,
            created_at: row.get::<_, i64>(4) as u64,
            last_used: row.get::<_, Option<i64>>(5).map(|v| v as u64),
            expires_at: row.get::<_, Option<i64>>(6).map(|v| v as u64),
        },
        role(row.get(7))?,
    ))
}

impl Tables {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get()?;
        f(&mut client)
    }
}

/// Each [`AccountStore`] method of [`PostgresStore`], run through [`off_runtime`] (as `off_runtime_store!` does
/// for the [`crate::store::Store`] methods).
macro_rules! off_runtime_accounts {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl AccountStore for PostgresStore {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret {
                off_runtime(|| self.tables.$name($($arg),*))
            })*
        }
    };
}

off_runtime_accounts! {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    fn has_users(&self) -> Result<bool, StoreError>;
    fn add_user(&self, user: &UserRecord) -> Result<bool, StoreError>;
    fn set_role(&self, name: &str, role: Role) -> Result<bool, StoreError>;
    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    fn remove_user(&self, name: &str) -> Result<bool, StoreError>;
    fn create_session(&self, session: &SessionRecord, stale_before: u64, old_before: u64) -> Result<(), StoreError>;
    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, Role)>, StoreError>;
    fn touch_session(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError>;
    fn end_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError>;
    fn create_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;
    fn api_token(&self, token_hash: &[u8; 32]) -> Result<Option<(ApiTokenRecord, Role)>, StoreError>;
    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StoreError>;
    fn touch_api_token(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError>;
    fn revoke_api_token(&self, user: &str, id: &str) -> Result<bool, StoreError>;
    fn append_audit(&self, entry: &AuditRecord) -> Result<u64, StoreError>;
    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

impl AccountStore for Tables {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT name, role, password_hash, created_at FROM users ORDER BY name",
                &[],
            )?
            .iter()
            .map(user_from_row)
            .collect()
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT name, role, password_hash, created_at FROM users WHERE name = $1",
                &[&name],
            )?
            .map(|r| user_from_row(&r))
            .transpose()
        })
    }

    fn has_users(&self) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM users)", &[])?
                .get(0))
        })
    }

    fn add_user(&self, u: &UserRecord) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                &[
                    &u.name,
                    &u.role.as_str(),
                    &u.password_hash,
                    &(u.created_at as i64),
                ],
            )? == 1)
        })
    }

    fn set_role(&self, name: &str, role: Role) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE users SET role = $2 WHERE name = $1",
                &[&name, &role.as_str()],
            )? == 1)
        })
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE users SET password_hash = $2 WHERE name = $1",
                &[&name, &password_hash],
            )?;
            tx.execute("DELETE FROM user_sessions WHERE user_name = $1", &[&name])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| Ok(c.execute("DELETE FROM users WHERE name = $1", &[&name])? == 1))
    }

    fn create_session(
        &self,
        s: &SessionRecord,
        stale_before: u64,
        old_before: u64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM user_sessions WHERE last_used < $1 OR created_at < $2",
                &[&(stale_before as i64), &(old_before as i64)],
            )?;
            tx.execute(
                "INSERT INTO user_sessions (token_hash, user_name, created_at, last_used) VALUES ($1, $2, $3, $4)",
                &[
                    &hex::encode(s.token_hash),
                    &s.user,
                    &(s.created_at as i64),
                    &(s.last_used as i64),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, Role)>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT s.user_name, s.created_at, s.last_used, u.role
                 FROM user_sessions s JOIN users u ON u.name = s.user_name WHERE s.token_hash = $1",
                &[&hex::encode(token_hash)],
            )?
            .map(|row| {
                Ok((
                    SessionRecord {
                        token_hash: *token_hash,
                        user: row.get(0),
                        created_at: row.get::<_, i64>(1) as u64,
                        last_used: row.get::<_, i64>(2) as u64,
                    },
                    role(row.get(3))?,
                ))
            })
            .transpose()
        })
    }

    fn touch_session(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE user_sessions SET last_used = GREATEST(last_used, $2) WHERE token_hash = $1",
                &[&hex::encode(token_hash), &(now as i64)],
            )?;
            Ok(())
        })
    }

    fn end_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM user_sessions WHERE token_hash = $1",
                &[&hex::encode(token_hash)],
            )? == 1)
        })
    }

    fn create_api_token(&self, t: &ApiTokenRecord) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO api_tokens (token_id, token_hash, user_name, name, created_at, last_used, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &t.id,
                    &hex::encode(t.token_hash),
                    &t.user,
                    &t.name,
                    &(t.created_at as i64),
                    &t.last_used.map(|v| v as i64),
                    &t.expires_at.map(|v| v as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn api_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(ApiTokenRecord, Role)>, StoreError> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.name = t.user_name
                     WHERE t.token_hash = $1"
                ),
                &[&hex::encode(token_hash)],
            )?
            .map(|r| token_from_row(&r))
            .transpose()
        })
    }

    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StoreError> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.name = t.user_name
                     WHERE t.user_name = $1 ORDER BY t.created_at, t.token_id"
                ),
                &[&user],
            )?
            .iter()
            .map(|r| token_from_row(r).map(|(t, _)| t))
            .collect()
        })
    }

    fn touch_api_token(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE api_tokens SET last_used = GREATEST(COALESCE(last_used, 0), $2) WHERE token_hash = $1",
                &[&hex::encode(token_hash), &(now as i64)],
            )?;
            Ok(())
        })
    }

    fn revoke_api_token(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM api_tokens WHERE user_name = $1 AND token_id = $2",
                &[&user, &id],
            )? == 1)
        })
    }

    fn append_audit(&self, e: &AuditRecord) -> Result<u64, StoreError> {
        self.with(|c| {
            let row = c.query_one(
                "INSERT INTO audit (at, user_name, action, target, address, status)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING audit_id",
                &[
                    &(e.at as i64),
                    &e.user,
                    &e.action,
                    &e.target,
                    &e.address,
                    &i64::from(e.status),
                ],
            )?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with(move |c| {
            Ok(c.query(
                "SELECT audit_id, at, user_name, action, target, address, status FROM audit
                 WHERE audit_id < $1 ORDER BY audit_id DESC LIMIT $2",
                &[&before, &limit],
            )?
            .iter()
            .map(|row| AuditRecord {
                id: row.get::<_, i64>(0) as u64,
                at: row.get::<_, i64>(1) as u64,
                user: row.get(2),
                action: row.get(3),
                target: row.get(4),
                address: row.get(5),
                status: row.get::<_, i64>(6) as u16,
            })
            .collect())
        })
    }
}
