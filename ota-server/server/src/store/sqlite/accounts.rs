//! Users, sessions, API tokens and the audit trail on SQLite (the tables of the "operator accounts" schema
//! step; a user's sessions and tokens go with it by `ON DELETE CASCADE`).

use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use crate::error::StoreError;
use crate::store::accounts::{
    role, AccountStore, ApiTokenRecord, AuditRecord, SessionRecord, UserRecord,
};
use crate::store::codec::hash_from_hex;
use crate::tokens::Role;

const TOKEN_COLUMNS: &str =
    "t.token_id, t.user_name, t.name, t.token_hash, t.created_at, t.last_used, t.expires_at, u.role";

fn user_from_row(row: &Row<'_>) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: row.get(0)?,
        role: role(&row.get::<_, String>(1)?)?,
        password_hash: row.get(2)?,
        created_at: row.get::<_, i64>(3)? as u64,
    })
}

fn token_from_row(row: &Row<'_>) -> Result<(ApiTokenRecord, Role), StoreError> {
    Ok((
        ApiTokenRecord {
            id: row.get(0)?,
            user: row.get(1)?,
            name: row.get(2)?,
            token_hash: hash_from_hex(&row.get::<_, String>(3)?)?,
            created_at: row.get::<_, i64>(4)? as u64,
            last_used: row.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            expires_at: row.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        },
        role(&row.get::<_, String>(7)?)?,
    ))
}

fn audit_from_row(row: &Row<'_>) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.get::<_, i64>(0)? as u64,
        at: row.get::<_, i64>(1)? as u64,
        user: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        address: row.get(5)?,
        status: row.get::<_, i64>(6)? as u16,
    })
}

impl AccountStore for SqliteStore {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, role, password_hash, created_at FROM users ORDER BY name")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(user_from_row(row)?);
        }
        Ok(out)
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name, role, password_hash, created_at FROM users WHERE name = ?1",
                [name],
                |row| Ok(user_from_row(row)),
            )
            .optional()?
            .transpose()
    }

    fn has_users(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?)
    }

    fn add_user(&self, u: &UserRecord) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![
                u.name,
                u.role.as_str(),
                u.password_hash,
                u.created_at as i64
            ],
        )?;
        Ok(n == 1)
    }

    fn set_role(&self, name: &str, role: Role) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE users SET role = ?2 WHERE name = ?1",
            params![name, role.as_str()],
        )?;
        Ok(n == 1)
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, password_hash],
        )?;
        tx.execute("DELETE FROM user_sessions WHERE user_name = ?1", [name])?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?
            == 1)
    }

    fn create_session(
        &self,
        s: &SessionRecord,
        stale_before: u64,
        old_before: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM user_sessions WHERE last_used < ?1 OR created_at < ?2",
            params![stale_before as i64, old_before as i64],
        )?;
        tx.execute(
            "INSERT INTO user_sessions (token_hash, user_name, created_at, last_used) VALUES (?1, ?2, ?3, ?4)",
            params![
                hex::encode(s.token_hash),
                s.user,
                s.created_at as i64,
                s.last_used as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, Role)>, StoreError> {
        let found = self
            .conn()
            .query_row(
                "SELECT s.user_name, s.created_at, s.last_used, u.role
                 FROM user_sessions s JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?1",
                [hex::encode(token_hash)],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        found
            .map(|(user, created, last, r)| {
                Ok((
                    SessionRecord {
                        token_hash: *token_hash,
                        user,
                        created_at: created as u64,
                        last_used: last as u64,
                    },
                    role(&r)?,
                ))
            })
            .transpose()
    }

    fn touch_session(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE user_sessions SET last_used = MAX(last_used, ?2) WHERE token_hash = ?1",
            params![hex::encode(token_hash), now as i64],
        )?;
        Ok(())
    }

    fn end_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM user_sessions WHERE token_hash = ?1",
            [hex::encode(token_hash)],
        )? == 1)
    }

    fn create_api_token(&self, t: &ApiTokenRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO api_tokens (token_id, token_hash, user_name, name, created_at, last_used, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                t.id,
                hex::encode(t.token_hash),
                t.user,
                t.name,
                t.created_at as i64,
                t.last_used.map(|v| v as i64),
                t.expires_at.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    fn api_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(ApiTokenRecord, Role)>, StoreError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.name = t.user_name
                     WHERE t.token_hash = ?1"
                ),
                [hex::encode(token_hash)],
                |row| Ok(token_from_row(row)),
            )
            .optional()?
            .transpose()
    }

    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.name = t.user_name
             WHERE t.user_name = ?1 ORDER BY t.created_at, t.token_id"
        ))?;
        let mut rows = stmt.query([user])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(token_from_row(row)?.0);
        }
        Ok(out)
    }

    fn touch_api_token(&self, token_hash: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE api_tokens SET last_used = MAX(COALESCE(last_used, 0), ?2) WHERE token_hash = ?1",
            params![hex::encode(token_hash), now as i64],
        )?;
        Ok(())
    }

    fn revoke_api_token(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM api_tokens WHERE user_name = ?1 AND token_id = ?2",
            params![user, id],
        )? == 1)
    }

    fn append_audit(&self, e: &AuditRecord) -> Result<u64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (at, user_name, action, target, address, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.at as i64,
                e.user,
                e.action,
                e.target,
                e.address,
                i64::from(e.status)
            ],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT audit_id, at, user_name, action, target, address, status FROM audit
             WHERE audit_id < ?1 ORDER BY audit_id DESC LIMIT ?2",
        )?;
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let mut rows = stmt.query(params![before, limit.min(i64::MAX as usize) as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(audit_from_row(row)?);
        }
        Ok(out)
    }
}
