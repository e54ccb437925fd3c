//! The `device_identities` table on PostgreSQL: the same rows and the same once-only challenge claim
//! (compare-and-set in one statement) as on SQLite.

use ota_protocol::admin::DeviceIdentity;
use postgres::{GenericClient, Row};

use crate::error::StoreError;
use crate::store::codec::admission;

const COLUMNS: &str = "device_id, public_key, admission, requested_at, decided_at, decided_by";

fn from_row(row: &Row) -> Result<DeviceIdentity, StoreError> {
    Ok(DeviceIdentity {
        device_id: row.get(0),
        public_key: row.get(1),
        admission: admission(row.get(2))?,
        requested_at: row.get::<_, i64>(3) as u64,
        decided_at: row.get::<_, Option<i64>>(4).map(|v| v as u64),
        decided_by: row.get(5),
    })
}

pub(super) fn one(
    client: &mut impl GenericClient,
    device_id: &str,
) -> Result<Option<DeviceIdentity>, StoreError> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM device_identities WHERE device_id = $1"),
            &[&device_id],
        )?
        .map(|row| from_row(&row))
        .transpose()
}

pub(super) fn all(client: &mut impl GenericClient) -> Result<Vec<DeviceIdentity>, StoreError> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM device_identities ORDER BY device_id"),
            &[],
        )?
        .iter()
        .map(from_row)
        .collect()
}

pub(super) fn put(client: &mut impl GenericClient, i: &DeviceIdentity) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO device_identities (device_id, public_key, admission, requested_at, decided_at, decided_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (device_id) DO UPDATE SET public_key = EXCLUDED.public_key,
             admission = EXCLUDED.admission, requested_at = EXCLUDED.requested_at,
             decided_at = EXCLUDED.decided_at, decided_by = EXCLUDED.decided_by",
        &[
            &i.device_id,
            &i.public_key,
            &i.admission.as_str(),
            &(i.requested_at as i64),
            &i.decided_at.map(|v| v as i64),
            &i.decided_by,
        ],
    )?;
    Ok(())
}

pub(super) fn claim(
    client: &mut impl GenericClient,
    device_id: &str,
    issued_ms: u64,
) -> Result<bool, StoreError> {
    Ok(client.execute(
        "UPDATE device_identities SET last_challenge = $2 WHERE device_id = $1 AND last_challenge < $2",
        &[&device_id, &(issued_ms as i64)],
    )? > 0)
}

pub(super) fn set_token(
    client: &mut impl GenericClient,
    device_id: &str,
    token_id: &str,
    token_hash: &[u8; 32],
    expires_at: Option<u64>,
) -> Result<bool, StoreError> {
    Ok(client.execute(
        "UPDATE devices SET token_id = $2, token_hash = $3, token_expires_at = $4 WHERE device_id = $1",
        &[
            &device_id,
            &token_id,
            &hex::encode(token_hash),
            &expires_at.map(|v| v as i64),
        ],
    )? > 0)
}
