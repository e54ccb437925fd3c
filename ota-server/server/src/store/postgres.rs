//! The PostgreSQL backend, for several server replicas sharing one database: the same tables and the same
//! transactional semantics as [`super::sqlite::SqliteStore`] (the schema steps are [`super::migrations`]).
//! Batches go in one statement over arrays (`UNNEST`), so a write-behind flush of thousands of devices is one
//! round trip.

use ota_protocol::admin::{DeviceIdentity, ReportRecord};
use ota_protocol::fleet::{DeviceLabels, GroupSettings};
use postgres::IsolationLevel;

use super::codec::{from_json, percent, status, to_json, version};
use super::{
    migrations, BundleRecord, DeviceRecord, MemberRecord, ReportCommit, RolloutRecord,
    SeenTelemetry, Snapshot, Store,
};
use crate::error::StoreError;
use rows::{
    bundle_from_row, device_from_row, members, rollout_from_row, write_members, write_rollout,
    BUNDLE_COLUMNS, DEVICE_COLUMNS, ROLLOUT_COLUMNS,
};

mod accounts;
mod alerts;
mod history;
mod identity;
mod outcomes;
mod pool;
mod rows;
mod sites;

/// Connections per server process: the store is called from blocking threads, one connection per call.
const POOL_SIZE: usize = 16;

/// Serialises schema migrations of replicas starting at once (`pg_advisory_xact_lock` key: "ota-migr").
const MIGRATION_LOCK: i64 = 0x6f74_612d_6d69_6772;

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    tables: Tables,
}

/// The store's work, called through [`off_runtime`].
struct Tables {
    pool: pool::Pool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database`; without a password in the URL,
    /// `PGPASSWORD` is used) and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config = connect_config(url, std::env::var("PGPASSWORD").ok())?;
        let tables = Tables {
            pool: pool::Pool::new(config, POOL_SIZE),
        };
        off_runtime(|| migrate(&mut *tables.pool.get()?))?;
        Ok(PostgresStore { tables })
    }
}

/// How to connect: `url`, with `pgpassword` (the `PGPASSWORD` variable, as libpq's tools read it) when the URL
/// has no password.
fn connect_config(url: &str, pgpassword: Option<String>) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config = url.parse()?;
    if let (None, Some(password)) = (config.get_password(), pgpassword) {
        config.password(password);
    }
    config.application_name("ota-server");
    Ok(config)
}

/// Runs `f` where a blocking `postgres` call may run. The sync client drives each connection with a runtime of
/// its own, which tokio refuses to start on a thread already running async tasks: the server calls the store
/// from `spawn_blocking` (fine as is), but opening it and a few start-up reads happen in async code (tests, the
/// kit's servers). On a multi-thread runtime's worker the call leaves the runtime in place
/// (`block_in_place`); on a current-thread runtime it runs on a scoped thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|scope| match scope.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// Each [`Store`] method of [`PostgresStore`], run through [`off_runtime`].
macro_rules! off_runtime_store {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store for PostgresStore {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret {
                off_runtime(|| self.tables.$name($($arg),*))
            })*
        }
    };
}

off_runtime_store! {
    fn load(&self) -> Result<Snapshot, StoreError>;
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    fn upsert_device(&self, device: &DeviceRecord) -> Result<(), StoreError>;
    fn delete_device(&self, device_id: &str) -> Result<bool, StoreError>;
    fn set_device_token(&self, device_id: &str, token_id: &str, token_hash: &[u8; 32], expires_at: Option<u64>) -> Result<bool, StoreError>;
    fn identity(&self, device_id: &str) -> Result<Option<DeviceIdentity>, StoreError>;
    fn identities(&self) -> Result<Vec<DeviceIdentity>, StoreError>;
    fn put_identity(&self, identity: &DeviceIdentity) -> Result<(), StoreError>;
    fn claim_challenge(&self, device_id: &str, issued_ms: u64) -> Result<bool, StoreError>;
    fn save_device_states(&self, batch: &[DeviceRecord]) -> Result<(), StoreError>;
    fn insert_bundle(&self, bundle: &BundleRecord) -> Result<bool, StoreError>;
    fn bundle_exists(&self, bundle_id: &str) -> Result<bool, StoreError>;
    fn create_rollout(&self, rollout: &RolloutRecord, members: &[MemberRecord]) -> Result<u64, StoreError>;
    fn update_rollout(&self, rollout: &RolloutRecord) -> Result<(), StoreError>;
    fn commit_report(&self, commit: &ReportCommit<'_>) -> Result<bool, StoreError>;
    fn set_labels(&self, device_id: &str, labels: &DeviceLabels) -> Result<bool, StoreError>;
    fn put_group(&self, name: &str, settings: &GroupSettings) -> Result<(), StoreError>;
    fn save_members(&self, rollout: &RolloutRecord, members: &[MemberRecord]) -> Result<(), StoreError>;
    fn reports(&self, device_id: &str, limit: usize) -> Result<Vec<ReportRecord>, StoreError>;
    fn save_history(&self, rows: &[crate::history::Row]) -> Result<(), StoreError>;
    fn history(&self, device_id: &str, metric: &str, since: u64) -> Result<Vec<crate::history::Bucket>, StoreError>;
    fn compact_history(&self, now: u64, retention_secs: u64) -> Result<u64, StoreError>;
    fn telemetry_since(&self, since: u64) -> Result<Vec<SeenTelemetry>, StoreError>;
    fn history_metrics(&self, device_id: &str, since: u64) -> Result<Vec<String>, StoreError>;
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    fn bundle(&self, bundle_id: &str) -> Result<Option<BundleRecord>, StoreError>;
    fn rollout(&self, rollout_id: u64) -> Result<Option<(RolloutRecord, Vec<MemberRecord>)>, StoreError>;
    fn group(&self, name: &str) -> Result<Option<GroupSettings>, StoreError>;
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing a connection blocks like any call: the last owner may be async code.
        let idle = self.tables.pool.take_idle();
        off_runtime(move || drop(idle));
    }
}

fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found: i64 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    let steps = migrations::pending(found, migrations::MIGRATIONS.len())?;
    for index in steps {
        tx.batch_execute(migrations::MIGRATIONS[index].postgres)?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&(index as i64 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl Store for Tables {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut client = self.pool.get()?;
        // One consistent view of every table.
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut snapshot = Snapshot::default();
        for row in tx.query(&format!("SELECT {DEVICE_COLUMNS} FROM devices"), &[])? {
            snapshot.devices.push(device_from_row(&row)?);
        }
        for row in tx.query(
            &format!("SELECT {BUNDLE_COLUMNS} FROM bundles ORDER BY uploaded_at, bundle_id"),
            &[],
        )? {
            snapshot.bundles.push(bundle_from_row(&row)?);
        }
        let mut members = members(&mut tx, None)?;
        for row in tx.query(
            &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY rollout_id"),
            &[],
        )? {
            let rollout = rollout_from_row(&row)?;
            let its = members.remove(&rollout.rollout_id).unwrap_or_default();
            snapshot.rollouts.push((rollout, its));
        }
        for row in tx.query(
            "SELECT name, settings FROM device_groups ORDER BY name",
            &[],
        )? {
            let settings = from_json("device_groups.settings", row.get(1))?;
            snapshot.groups.push((row.get(0), settings));
        }
        tx.commit()?;
        Ok(snapshot)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])?
            .map(|r| r.get(0)))
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.pool.get()?.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn upsert_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        // Like SQLite's INSERT OR REPLACE: a row holding the same token id goes too, and nothing of an older
        // row of this device is kept.
        tx.execute(
            "DELETE FROM devices WHERE token_id = $2 AND device_id <> $1",
            &[&d.device_id, &d.token_id],
        )?;
        tx.execute(
            "INSERT INTO devices (device_id, compatible, tags, token_id, token_hash, enrolled_at,
                 current_version, booted_slot, slots, last_seen, telemetry, last_status, labels, token_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (device_id) DO UPDATE SET compatible = EXCLUDED.compatible, tags = EXCLUDED.tags,
                 token_id = EXCLUDED.token_id, token_hash = EXCLUDED.token_hash, enrolled_at = EXCLUDED.enrolled_at,
                 current_version = EXCLUDED.current_version, booted_slot = EXCLUDED.booted_slot,
                 slots = EXCLUDED.slots, last_seen = EXCLUDED.last_seen, telemetry = EXCLUDED.telemetry,
                 last_status = EXCLUDED.last_status, labels = EXCLUDED.labels,
                 token_expires_at = EXCLUDED.token_expires_at,
                 waiting = NULL, staged = NULL, security_floor = NULL",
            &[
                &d.device_id,
                &d.compatible,
                &to_json(&d.tags),
                &d.token_id,
                &hex::encode(d.token_hash),
                &(d.enrolled_at as i64),
                &d.state.current_version.as_ref().map(|v| v.to_string()),
                &d.state.booted_slot,
                &to_json(&d.state.slots),
                &d.state.last_seen.map(|v| v as i64),
                &d.state.telemetry.as_ref().map(to_json),
                &d.state.last_status.as_ref().map(to_json),
                &to_json(&d.labels),
                &d.token_expires_at.map(|v| v as i64),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn delete_device(&self, device_id: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        tx.execute(
            "DELETE FROM device_identities WHERE device_id = $1",
            &[&device_id],
        )?;
        // Everything else held about it, so a robot enrolled later under the same id starts clean.
        for table in ["reports", "metric_history", "rollout_devices"] {
            tx.execute(
                format!("DELETE FROM {table} WHERE device_id = $1").as_str(),
                &[&device_id],
            )?;
        }

        let existed = tx.execute("DELETE FROM devices WHERE device_id = $1", &[&device_id])? > 0;
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
        let mut client = self.pool.get()?;
        identity::set_token(&mut *client, device_id, token_id, token_hash, expires_at)
    }

    fn identity(&self, device_id: &str) -> Result<Option<DeviceIdentity>, StoreError> {
        identity::one(&mut *self.pool.get()?, device_id)
    }

    fn identities(&self) -> Result<Vec<DeviceIdentity>, StoreError> {
        identity::all(&mut *self.pool.get()?)
    }

    fn put_identity(&self, i: &DeviceIdentity) -> Result<(), StoreError> {
        identity::put(&mut *self.pool.get()?, i)
    }

    fn claim_challenge(&self, device_id: &str, issued_ms: u64) -> Result<bool, StoreError> {
        identity::claim(&mut *self.pool.get()?, device_id, issued_ms)
    }

    fn save_device_states(&self, batch: &[DeviceRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let column = |f: &dyn Fn(&DeviceRecord) -> Option<String>| -> Vec<Option<String>> {
            batch.iter().map(f).collect()
        };
        let ids: Vec<&str> = batch.iter().map(|d| d.device_id.as_str()).collect();
        let versions = column(&|d| d.state.current_version.as_ref().map(|v| v.to_string()));
        let slots_booted = column(&|d| d.state.booted_slot.clone());
        let slots: Vec<String> = batch.iter().map(|d| to_json(&d.state.slots)).collect();
        let seen: Vec<Option<i64>> = batch
            .iter()
            .map(|d| d.state.last_seen.map(|v| v as i64))
            .collect();
        let telemetry = column(&|d| d.state.telemetry.as_ref().map(to_json));
        let compatible: Vec<&str> = batch.iter().map(|d| d.compatible.as_str()).collect();
        let waiting = column(&|d| d.state.waiting.as_ref().map(to_json));
        let staged = column(&|d| d.state.staged.clone());
        let floors = column(&|d| d.state.security_floor.as_ref().map(|v| v.to_string()));
        // One statement, so one transaction; devices that no longer exist match no row.
        self.pool.get()?.execute(
            "UPDATE devices SET current_version = u.v, booted_slot = u.b, slots = u.s, last_seen = u.l,
                 telemetry = u.t, compatible = u.c, waiting = u.w, staged = u.g, security_floor = u.f
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[],
                         $8::TEXT[], $9::TEXT[], $10::TEXT[]) AS u(id, v, b, s, l, t, c, w, g, f)
             WHERE devices.device_id = u.id",
            &[
                &ids,
                &versions,
                &slots_booted,
                &slots,
                &seen,
                &telemetry,
                &compatible,
                &waiting,
                &staged,
                &floors,
            ],
        )?;
        Ok(())
    }

    fn insert_bundle(&self, b: &BundleRecord) -> Result<bool, StoreError> {
        Ok(self.pool.get()?.execute(
            "INSERT INTO bundles (bundle_id, version, compatible, manifest_digest, size, description, uploaded_at,
                 images) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &b.bundle_id,
                &b.version.to_string(),
                &b.compatible,
                &b.manifest_digest,
                &(b.size as i64),
                &b.description,
                &(b.uploaded_at as i64),
                &to_json(&b.images),
            ],
        )? > 0)
    }

    fn bundle_exists(&self, bundle_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT 1 FROM bundles WHERE bundle_id = $1", &[&bundle_id])?
            .is_some())
    }

    fn create_rollout(
        &self,
        r: &RolloutRecord,
        members: &[MemberRecord],
    ) -> Result<u64, StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO rollouts (name, bundle_id, tags, stages, current_stage, state, pause_reason,
                     failure_threshold, bad_baseline, created_at, updated_at, aim, stage_started_at,
                     stage_completed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING rollout_id",
                &[
                    &r.name,
                    &r.bundle_id,
                    &to_json(&r.tags),
                    &to_json(&r.stages),
                    &(r.current_stage as i64),
                    &r.state.as_str(),
                    &r.pause_reason,
                    &r.failure_threshold,
                    &(r.bad_baseline as i64),
                    &(r.created_at as i64),
                    &(r.updated_at as i64),
                    &to_json(&r.aim),
                    &(r.stage_started_at as i64),
                    &r.stage_completed_at.map(|v| v as i64),
                ],
            )?
            .get(0);
        write_members(&mut tx, id as u64, members)?;
        tx.commit()?;
        Ok(id as u64)
    }

    fn update_rollout(&self, r: &RolloutRecord) -> Result<(), StoreError> {
        write_rollout(&mut *self.pool.get()?, r)
    }

    fn commit_report(&self, c: &ReportCommit<'_>) -> Result<bool, StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let r = c.report;
        // A replica committing the same report at the same moment waits on the unique key, then inserts
        // nothing: exactly one of them applies the effects.
        let inserted = tx.execute(
            "INSERT INTO reports (device_id, report_id, rollout_id, version, manifest_digest, status,
                 progress_percent, error, log_tail, reason, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (device_id, report_id) DO NOTHING",
            &[
                &c.device_id,
                &r.report_id,
                &r.rollout_id.map(|v| v as i64),
                &r.version.as_ref().map(|v| v.to_string()),
                &r.manifest_digest,
                &r.status.as_str(),
                &r.progress_percent.map(i64::from),
                &r.error,
                &r.log_tail,
                &r.reason,
                &(r.received_at as i64),
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE devices SET last_status = $2, last_seen = $3 WHERE device_id = $1",
            &[
                &c.device_id,
                &to_json(c.last_status),
                &(r.received_at as i64),
            ],
        )?;
        if let Some((rollout_id, status)) = c.member {
            tx.execute(
                "UPDATE rollout_devices SET status = $3, updated_at = $4 WHERE rollout_id = $1 AND device_id = $2",
                &[
                    &(rollout_id as i64),
                    &c.device_id,
                    &status.as_str(),
                    &(r.received_at as i64),
                ],
            )?;
        }
        if let Some(rollout) = c.rollout {
            write_rollout(&mut tx, rollout)?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn set_labels(&self, device_id: &str, labels: &DeviceLabels) -> Result<bool, StoreError> {
        Ok(self.pool.get()?.execute(
            "UPDATE devices SET labels = $2 WHERE device_id = $1",
            &[&device_id, &to_json(labels)],
        )? > 0)
    }

    fn put_group(&self, name: &str, settings: &GroupSettings) -> Result<(), StoreError> {
        self.pool.get()?.execute(
            "INSERT INTO device_groups (name, settings) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings",
            &[&name, &to_json(settings)],
        )?;
        Ok(())
    }

    fn save_members(&self, r: &RolloutRecord, members: &[MemberRecord]) -> Result<(), StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        write_members(&mut tx, r.rollout_id, members)?;
        write_rollout(&mut tx, r)?;
        tx.commit()?;
        Ok(())
    }

    fn reports(&self, device_id: &str, limit: usize) -> Result<Vec<ReportRecord>, StoreError> {
        self.pool
            .get()?
            .query(
                "SELECT report_id, rollout_id, version, manifest_digest, status, progress_percent, error, log_tail,
                        reason, received_at FROM reports WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
                &[&device_id, &(limit.min(i64::MAX as usize) as i64)],
            )?
            .iter()
            .map(|row| {
                Ok(ReportRecord {
                    report_id: row.get(0),
                    rollout_id: row.get::<_, Option<i64>>(1).map(|v| v as u64),
                    version: version("reports.version", row.get(2))?,
                    manifest_digest: row.get(3),
                    status: status("reports.status", row.get(4))?,
                    progress_percent: percent(row.get(5)),
                    error: row.get(6),
                    log_tail: row.get(7),
                    reason: row.get(8),
                    received_at: row.get::<_, i64>(9) as u64,
                })
            })
            .collect()
    }

    fn save_history(&self, rows: &[crate::history::Row]) -> Result<(), StoreError> {
        history::save(&mut *self.pool.get()?, rows)
    }

    fn history(
        &self,
        device_id: &str,
        metric: &str,
        since: u64,
    ) -> Result<Vec<crate::history::Bucket>, StoreError> {
        history::load(&mut *self.pool.get()?, device_id, metric, since)
    }

    fn compact_history(&self, now: u64, retention_secs: u64) -> Result<u64, StoreError> {
        history::compact(&mut *self.pool.get()?, now, retention_secs)
    }

    fn telemetry_since(&self, since: u64) -> Result<Vec<SeenTelemetry>, StoreError> {
        history::telemetry_since(&mut *self.pool.get()?, since)
    }

    fn history_metrics(&self, device_id: &str, since: u64) -> Result<Vec<String>, StoreError> {
        history::metrics(&mut *self.pool.get()?, device_id, since)
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.pool
            .get()?
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"),
                &[&device_id],
            )?
            .map(|row| device_from_row(&row))
            .transpose()
    }

    fn bundle(&self, bundle_id: &str) -> Result<Option<BundleRecord>, StoreError> {
        self.pool
            .get()?
            .query_opt(
                &format!("SELECT {BUNDLE_COLUMNS} FROM bundles WHERE bundle_id = $1"),
                &[&bundle_id],
            )?
            .map(|row| bundle_from_row(&row))
            .transpose()
    }

    fn rollout(
        &self,
        rollout_id: u64,
    ) -> Result<Option<(RolloutRecord, Vec<MemberRecord>)>, StoreError> {
        let mut client = self.pool.get()?;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let Some(row) = tx.query_opt(
            &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = $1"),
            &[&(rollout_id as i64)],
        )?
        else {
            return Ok(None);
        };
        let rollout = rollout_from_row(&row)?;
        let its = members(&mut tx, Some(rollout_id))?
            .remove(&rollout_id)
            .unwrap_or_default();
        tx.commit()?;
        Ok(Some((rollout, its)))
    }

    fn group(&self, name: &str) -> Result<Option<GroupSettings>, StoreError> {
        self.pool
            .get()?
            .query_opt(
                "SELECT settings FROM device_groups WHERE name = $1",
                &[&name],
            )?
            .map(|row| from_json("device_groups.settings", row.get(0)))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
