//! The `device_identities` table: each robot's key and admission, and the issue time of the last enrollment
//! challenge it used (so a challenge works once).

use ota_protocol::admin::DeviceIdentity;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::StoreError;
use crate::store::codec::admission;

const COLUMNS: &str = "device_id, public_key, admission, requested_at, decided_at, decided_by";

fn from_row(row: &Row<'_>) -> Result<DeviceIdentity, StoreError> {
    Ok(DeviceIdentity {
        device_id: row.get(0)?,
        public_key: row.get(1)?,
        admission: admission(&row.get::<_, String>(2)?)?,
        requested_at: row.get::<_, i64>(3)? as u64,
        decided_at: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        decided_by: row.get(5)?,
    })
}

pub(super) fn one(
    conn: &Connection,
    device_id: &str,
) -> Result<Option<DeviceIdentity>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM device_identities WHERE device_id = ?1"),
        [device_id],
        |row| Ok(from_row(row)),
    )
    .optional()?
    .transpose()
}

pub(super) fn all(conn: &Connection) -> Result<Vec<DeviceIdentity>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM device_identities ORDER BY device_id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

pub(super) fn put(conn: &Connection, i: &DeviceIdentity) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO device_identities (device_id, public_key, admission, requested_at, decided_at, decided_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key,
             admission = excluded.admission, requested_at = excluded.requested_at,
             decided_at = excluded.decided_at, decided_by = excluded.decided_by",
        params![
            i.device_id,
            i.public_key,
            i.admission.as_str(),
            i.requested_at as i64,
            i.decided_at.map(|v| v as i64),
            i.decided_by
        ],
    )?;
    Ok(())
}

pub(super) fn claim(
    conn: &Connection,
    device_id: &str,
    issued_ms: u64,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE device_identities SET last_challenge = ?2 WHERE device_id = ?1 AND last_challenge < ?2",
        params![device_id, issued_ms as i64],
    )? > 0)
}

pub(super) fn set_token(
    conn: &Connection,
    device_id: &str,
    token_id: &str,
    token_hash: &[u8; 32],
    expires_at: Option<u64>,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE devices SET token_id = ?2, token_hash = ?3, token_expires_at = ?4 WHERE device_id = ?1",
        params![
            device_id,
            token_id,
            hex::encode(token_hash),
            expires_at.map(|v| v as i64)
        ],
    )? > 0)
}
