//! The embedded SQLite backend: one file, WAL mode, versioned migrations (`PRAGMA user_version`).

use std::path::Path;
use std::sync::Mutex;

use ota_protocol::admin::{DeviceIdentity, ReportRecord};
use rusqlite::{params, Connection, OptionalExtension, Row};

use ota_protocol::fleet::{DeviceLabels, GroupSettings};

use super::codec::{
    from_json, hash_from_hex, opt_json, percent, required_version, rollout_state, status, to_json,
    version,
};
use super::{
    migrations, BundleRecord, DeviceRecord, DeviceState, MemberRecord, ReportCommit, RolloutRecord,
    SeenTelemetry, Snapshot, Store,
};
use crate::error::StoreError;

mod accounts;
mod alerts;
mod history;
mod identity;
mod outcomes;
mod sites;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Never through a link planted at the database's name (SQLite also opens its -wal and -shm files so).
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        migrations::latest()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied transaction (it rolls back on drop), so a
        // poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the SQLite side of the [`migrations`] steps this file has not run yet (`PRAGMA user_version` counts
/// them), each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for index in migrations::pending(current, migrations::MIGRATIONS.len())? {
        let tx = conn.transaction()?;
        tx.execute_batch(migrations::MIGRATIONS[index].sqlite)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn device_from_row(row: &Row<'_>) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device_id: row.get(0)?,
        compatible: row.get(1)?,
        tags: from_json("devices.tags", &row.get::<_, String>(2)?)?,
        token_id: row.get(3)?,
        token_hash: hash_from_hex(&row.get::<_, String>(4)?)?,
        token_expires_at: row.get::<_, Option<i64>>(16)?.map(|v| v as u64),
        enrolled_at: row.get::<_, i64>(5)? as u64,
        labels: from_json("devices.labels", &row.get::<_, String>(12)?)?,
        state: DeviceState {
            current_version: version("devices.current_version", row.get(6)?)?,
            booted_slot: row.get(7)?,
            slots: from_json("devices.slots", &row.get::<_, String>(8)?)?,
            last_seen: row.get::<_, Option<i64>>(9)?.map(|v| v as u64),
            telemetry: opt_json("devices.telemetry", row.get(10)?)?,
            last_status: opt_json("devices.last_status", row.get(11)?)?,
            waiting: opt_json("devices.waiting", row.get(13)?)?,
            staged: row.get(14)?,
            security_floor: version("devices.security_floor", row.get(15)?)?,
            freeze_alarm: None,
            maintenance_score: None,
        },
    })
}

fn report_from_row(row: &Row<'_>) -> Result<ReportRecord, StoreError> {
    Ok(ReportRecord {
        report_id: row.get(0)?,
        rollout_id: row.get::<_, Option<i64>>(1)?.map(|v| v as u64),
        version: version("reports.version", row.get(2)?)?,
        manifest_digest: row.get(3)?,
        status: status("reports.status", &row.get::<_, String>(4)?)?,
        progress_percent: percent(row.get(5)?),
        error: row.get(6)?,
        log_tail: row.get(7)?,
        reason: row.get(8)?,
        received_at: row.get::<_, i64>(9)? as u64,
    })
}

/// Compare-and-set on the revision ([`RolloutRecord::revision`]).
fn write_rollout(conn: &Connection, r: &RolloutRecord) -> Result<(), StoreError> {
    let changed = conn.execute(
        "UPDATE rollouts SET name = ?2, current_stage = ?3, state = ?4, pause_reason = ?5, failure_threshold = ?6,
             bad_baseline = ?7, updated_at = ?8, stage_started_at = ?9, stage_completed_at = ?10, aim = ?11,
             revision = revision + 1
             WHERE rollout_id = ?1 AND revision = ?12",
        params![
            r.rollout_id as i64,
            r.name,
            r.current_stage as i64,
            r.state.as_str(),
            r.pause_reason,
            r.failure_threshold,
            r.bad_baseline as i64,
            r.updated_at as i64,
            r.stage_started_at as i64,
            r.stage_completed_at.map(|v| v as i64),
            to_json(&r.aim),
            r.revision as i64
        ],
    )?;
    if changed == 0 {
        let exists = conn
            .query_row(
                "SELECT 1 FROM rollouts WHERE rollout_id = ?1",
                [r.rollout_id as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        return Err(if exists {
            StoreError::Stale(r.rollout_id)
        } else {
            StoreError::Missing(format!("rollout {}", r.rollout_id))
        });
    }
    Ok(())
}

fn write_members(
    conn: &Connection,
    rollout_id: u64,
    members: &[MemberRecord],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO rollout_devices (rollout_id, device_id, rank, status, updated_at, joined_stage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for m in members {
        stmt.execute(params![
            rollout_id as i64,
            m.device_id,
            m.rank as i64,
            m.status.map(|s| s.as_str()),
            m.updated_at as i64,
            m.joined.map(|v| v as i64)
        ])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let conn = self.conn();
        let mut snapshot = Snapshot::default();
        let mut stmt = conn.prepare(
            "SELECT device_id, compatible, tags, token_id, token_hash, enrolled_at, current_version, booted_slot,
                    slots, last_seen, telemetry, last_status, labels, waiting, staged, security_floor,
                    token_expires_at FROM devices",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snapshot.devices.push(device_from_row(row)?);
        }
        let mut stmt = conn.prepare(
            "SELECT bundle_id, version, compatible, manifest_digest, size, description, uploaded_at, images
             FROM bundles ORDER BY uploaded_at, bundle_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snapshot.bundles.push(BundleRecord {
                bundle_id: row.get(0)?,
                version: required_version("bundles.version", row.get(1)?)?,
                compatible: row.get(2)?,
                manifest_digest: row.get(3)?,
                size: row.get::<_, i64>(4)? as u64,
                description: row.get(5)?,
                uploaded_at: row.get::<_, i64>(6)? as u64,
                images: from_json("bundles.images", &row.get::<_, String>(7)?)?,
            });
        }
        let mut stmt = conn.prepare(
            "SELECT rollout_id, name, bundle_id, tags, stages, current_stage, state, pause_reason, failure_threshold,
                    bad_baseline, created_at, updated_at, aim, stage_started_at, stage_completed_at, revision
             FROM rollouts ORDER BY rollout_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut rollouts = Vec::new();
        while let Some(row) = rows.next()? {
            rollouts.push(RolloutRecord {
                rollout_id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                bundle_id: row.get(2)?,
                tags: from_json("rollouts.tags", &row.get::<_, String>(3)?)?,
                stages: from_json("rollouts.stages", &row.get::<_, String>(4)?)?,
                current_stage: row.get::<_, i64>(5)? as usize,
                state: rollout_state(&row.get::<_, String>(6)?)?,
                pause_reason: row.get(7)?,
                failure_threshold: row.get(8)?,
                bad_baseline: row.get::<_, i64>(9)? as u64,
                created_at: row.get::<_, i64>(10)? as u64,
                updated_at: row.get::<_, i64>(11)? as u64,
                aim: from_json("rollouts.aim", &row.get::<_, String>(12)?)?,
                stage_started_at: row.get::<_, i64>(13)? as u64,
                stage_completed_at: row.get::<_, Option<i64>>(14)?.map(|v| v as u64),
                revision: row.get::<_, i64>(15)? as u64,
            });
        }
        let mut stmt = conn.prepare(
            "SELECT device_id, rank, status, updated_at, joined_stage FROM rollout_devices WHERE rollout_id = ?1
             ORDER BY rank",
        )?;
        for rollout in rollouts {
            let mut members = Vec::new();
            let mut rows = stmt.query([rollout.rollout_id as i64])?;
            while let Some(row) = rows.next()? {
                members.push(MemberRecord {
                    device_id: row.get(0)?,
                    rank: row.get::<_, i64>(1)? as u64,
                    status: row
                        .get::<_, Option<String>>(2)?
                        .map(|s| status("rollout_devices.status", &s))
                        .transpose()?,
                    updated_at: row.get::<_, i64>(3)? as u64,
                    joined: row.get::<_, Option<i64>>(4)?.map(|v| v as usize),
                });
            }
            snapshot.rollouts.push((rollout, members));
        }
        let mut stmt = conn.prepare("SELECT name, settings FROM device_groups ORDER BY name")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let settings = from_json("device_groups.settings", &row.get::<_, String>(1)?)?;
            snapshot.groups.push((row.get(0)?, settings));
        }
        Ok(snapshot)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn upsert_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO devices (device_id, compatible, tags, token_id, token_hash, enrolled_at,
                 current_version, booted_slot, slots, last_seen, telemetry, last_status, labels, token_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                d.device_id,
                d.compatible,
                to_json(&d.tags),
                d.token_id,
                hex::encode(d.token_hash),
                d.enrolled_at as i64,
                d.state.current_version.as_ref().map(|v| v.to_string()),
                d.state.booted_slot,
                to_json(&d.state.slots),
                d.state.last_seen.map(|v| v as i64),
                d.state.telemetry.as_ref().map(to_json),
                d.state.last_status.as_ref().map(to_json),
                to_json(&d.labels),
                d.token_expires_at.map(|v| v as i64),
            ],
        )?;
        Ok(())
    }

    fn delete_device(&self, device_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM device_identities WHERE device_id = ?1",
            [device_id],
        )?;
        // Everything else held about it, so a robot enrolled later under the same id starts clean.
        for table in ["reports", "metric_history", "rollout_devices"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE device_id = ?1"),
                [device_id],
            )?;
        }

        let existed = tx.execute("DELETE FROM devices WHERE device_id = ?1", [device_id])? > 0;
        tx.commit()?;
        Ok(existed)
    }

    fn set_device_token(
        &self,
        device_id: &str,
        token_id: &str,
        token_hash: &[u8; 32],
        expires_at: Option<u64>,
    ) -> Result<bool, StoreError> {
        identity::set_token(&self.conn(), device_id, token_id, token_hash, expires_at)
    }

    fn identity(&self, device_id: &str) -> Result<Option<DeviceIdentity>, StoreError> {
        identity::one(&self.conn(), device_id)
    }

    fn identities(&self) -> Result<Vec<DeviceIdentity>, StoreError> {
        identity::all(&self.conn())
    }

    fn put_identity(&self, i: &DeviceIdentity) -> Result<(), StoreError> {
        identity::put(&self.conn(), i)
    }

    fn claim_challenge(&self, device_id: &str, issued_ms: u64) -> Result<bool, StoreError> {
        identity::claim(&self.conn(), device_id, issued_ms)
    }

    fn save_device_states(&self, batch: &[DeviceRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE devices SET current_version = ?2, booted_slot = ?3, slots = ?4, last_seen = ?5,
                     telemetry = ?6, compatible = ?7, waiting = ?8, staged = ?9, security_floor = ?10
                 WHERE device_id = ?1",
            )?;
            for d in batch {
                let s = &d.state;
                stmt.execute(params![
                    d.device_id,
                    s.current_version.as_ref().map(|v| v.to_string()),
                    s.booted_slot,
                    to_json(&s.slots),
                    s.last_seen.map(|v| v as i64),
                    s.telemetry.as_ref().map(to_json),
                    d.compatible,
                    s.waiting.as_ref().map(to_json),
                    s.staged,
                    s.security_floor.as_ref().map(|v| v.to_string()),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_bundle(&self, b: &BundleRecord) -> Result<bool, StoreError> {
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO bundles (bundle_id, version, compatible, manifest_digest, size, description,
                 uploaded_at, images) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                b.bundle_id,
                b.version.to_string(),
                b.compatible,
                b.manifest_digest,
                b.size as i64,
                b.description,
                b.uploaded_at as i64,
                to_json(&b.images)
            ],
        )?;
        Ok(inserted > 0)
    }

    fn bundle_exists(&self, bundle_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM bundles WHERE bundle_id = ?1",
                [bundle_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn create_rollout(
        &self,
        r: &RolloutRecord,
        members: &[MemberRecord],
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO rollouts (name, bundle_id, tags, stages, current_stage, state, pause_reason,
                 failure_threshold, bad_baseline, created_at, updated_at, aim, stage_started_at, stage_completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                r.name,
                r.bundle_id,
                to_json(&r.tags),
                to_json(&r.stages),
                r.current_stage as i64,
                r.state.as_str(),
                r.pause_reason,
                r.failure_threshold,
                r.bad_baseline as i64,
                r.created_at as i64,
                r.updated_at as i64,
                to_json(&r.aim),
                r.stage_started_at as i64,
                r.stage_completed_at.map(|v| v as i64)
            ],
        )?;
        let id = tx.last_insert_rowid();
        write_members(&tx, id as u64, members)?;
        tx.commit()?;
        Ok(id as u64)
    }

    fn set_labels(&self, device_id: &str, labels: &DeviceLabels) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE devices SET labels = ?2 WHERE device_id = ?1",
            params![device_id, to_json(labels)],
        )? > 0)
    }

    fn put_group(&self, name: &str, settings: &GroupSettings) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO device_groups (name, settings) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET settings = excluded.settings",
            params![name, to_json(settings)],
        )?;
        Ok(())
    }

    fn save_members(&self, r: &RolloutRecord, members: &[MemberRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        write_members(&tx, r.rollout_id, members)?;
        write_rollout(&tx, r)?;
        tx.commit()?;
        Ok(())
    }

    fn update_rollout(&self, r: &RolloutRecord) -> Result<(), StoreError> {
        write_rollout(&self.conn(), r)
    }

    fn commit_report(&self, c: &ReportCommit<'_>) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let r = c.report;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO reports (device_id, report_id, rollout_id, version, manifest_digest, status,
                 progress_percent, error, log_tail, reason, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                c.device_id,
                r.report_id,
                r.rollout_id.map(|v| v as i64),
                r.version.as_ref().map(|v| v.to_string()),
                r.manifest_digest,
                r.status.as_str(),
                r.progress_percent.map(i64::from),
                r.error,
                r.log_tail,
                r.reason,
                r.received_at as i64
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE devices SET last_status = ?2, last_seen = ?3 WHERE device_id = ?1",
            params![c.device_id, to_json(c.last_status), r.received_at as i64],
        )?;
        if let Some((rollout_id, status)) = c.member {
            tx.execute(
                "UPDATE rollout_devices SET status = ?3, updated_at = ?4 WHERE rollout_id = ?1 AND device_id = ?2",
                params![rollout_id as i64, c.device_id, status.as_str(), r.received_at as i64],
            )?;
        }
        if let Some(rollout) = c.rollout {
            write_rollout(&tx, rollout)?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn save_history(&self, rows: &[crate::history::Row]) -> Result<(), StoreError> {
        history::save(&mut self.conn(), rows)
    }

    fn history(
        &self,
        device_id: &str,
        metric: &str,
        since: u64,
    ) -> Result<Vec<crate::history::Bucket>, StoreError> {
        history::load(&self.conn(), device_id, metric, since)
    }

    fn compact_history(&self, now: u64, retention_secs: u64) -> Result<u64, StoreError> {
        history::compact(&mut self.conn(), now, retention_secs)
    }

    fn telemetry_since(&self, since: u64) -> Result<Vec<SeenTelemetry>, StoreError> {
        history::telemetry_since(&self.conn(), since)
    }

    fn history_metrics(&self, device_id: &str, since: u64) -> Result<Vec<String>, StoreError> {
        history::metrics(&self.conn(), device_id, since)
    }

    fn reports(&self, device_id: &str, limit: usize) -> Result<Vec<ReportRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT report_id, rollout_id, version, manifest_digest, status, progress_percent, error, log_tail,
                    reason, received_at FROM reports WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![device_id, limit as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(report_from_row(row)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
