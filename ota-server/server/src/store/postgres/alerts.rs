//! The `alerts` table and the retention queries on PostgreSQL: the same rows and semantics as on SQLite
//! (`store::sqlite::alerts`); deleting a bundle locks its row first, so a rollout created on another replica
//! meanwhile either sees the bundle gone or keeps it.

use ota_protocol::alerts::Acknowledgement;
use postgres::{GenericClient, Row};

use super::{off_runtime, PostgresStore};
use crate::alerts::track::{AlertRecord, Changes};
use crate::error::StoreError;
use crate::store::alerts::{AlertStore, BundleDeletion, ReportTally};
use crate::store::codec::alert_columns;

const COLUMNS: &str =
    "id, kind, target, severity, since, episode, message, cleared_at, acked_by, acked_at";

fn from_row(row: &Row) -> Result<AlertRecord, StoreError> {
    let (kind, target, severity) = alert_columns(row.get(1), row.get(2), row.get(3))?;
    let by: Option<String> = row.get(8);
    let at: Option<i64> = row.get(9);
    Ok(AlertRecord {
        id: row.get(0),
        kind,
        target,
        severity,
        since: row.get::<_, i64>(4) as u64,
        episode: row.get::<_, i64>(5) as u64,
        message: row.get(6),
        cleared_at: row.get::<_, Option<i64>>(7).map(|v| v as u64),
        acknowledged: by
            .zip(at)
            .map(|(by, at)| Acknowledgement { by, at: at as u64 }),
    })
}

fn open(client: &mut impl GenericClient) -> Result<Vec<AlertRecord>, StoreError> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM alerts WHERE cleared_at IS NULL ORDER BY since, id"),
            &[],
        )?
        .iter()
        .map(from_row)
        .collect()
}

fn save(client: &mut postgres::Client, c: &Changes) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    for a in &c.opened {
        tx.execute(
            &format!(
                "INSERT INTO alerts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL)
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &a.id,
                &a.kind.as_str(),
                &a.target.path(),
                &a.severity.as_str(),
                &(a.since as i64),
                &(a.episode as i64),
                &a.message,
            ],
        )?;
    }
    for a in c.updated.iter().chain(&c.cleared) {
        tx.execute(
            "UPDATE alerts SET severity = $2, message = $3, cleared_at = $4 WHERE id = $1",
            &[
                &a.id,
                &a.severity.as_str(),
                &a.message,
                &a.cleared_at.map(|v| v as i64),
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn ack(
    client: &mut impl GenericClient,
    id: &str,
    by: &str,
    at: u64,
) -> Result<Option<AlertRecord>, StoreError> {
    client.execute(
        "UPDATE alerts SET acked_by = $2, acked_at = $3
         WHERE id = $1 AND cleared_at IS NULL AND acked_by IS NULL",
        &[&id, &by, &(at as i64)],
    )?;
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM alerts WHERE id = $1 AND cleared_at IS NULL"),
            &[&id],
        )?
        .map(|row| from_row(&row))
        .transpose()
}

fn prune(client: &mut postgres::Client, before: u64) -> Result<u64, StoreError> {
    let before = before as i64;
    let mut tx = client.transaction()?;
    let reports = tx.execute("DELETE FROM reports WHERE received_at < $1", &[&before])?;
    let alerts = tx.execute(
        "DELETE FROM alerts WHERE cleared_at IS NOT NULL AND cleared_at < $1",
        &[&before],
    )?;
    tx.commit()?;
    Ok(reports + alerts)
}

fn tally(client: &mut impl GenericClient, since: u64) -> Result<Vec<ReportTally>, StoreError> {
    Ok(client
        .query(
            "SELECT device_id, COUNT(*) FILTER (WHERE status = 'failure'),
                    COUNT(*) FILTER (WHERE status = 'rolled_back') FROM reports
             WHERE received_at >= $1 AND status IN ('failure', 'rolled_back')
             GROUP BY device_id ORDER BY device_id",
            &[&(since as i64)],
        )?
        .iter()
        .map(|row| ReportTally {
            device_id: row.get(0),
            failures: row.get::<_, i64>(1) as u64,
            rollbacks: row.get::<_, i64>(2) as u64,
        })
        .collect())
}

fn delete_bundle(
    client: &mut postgres::Client,
    bundle_id: &str,
) -> Result<BundleDeletion, StoreError> {
    let mut tx = client.transaction()?;
    let exists = tx.query_opt(
        "SELECT bundle_id FROM bundles WHERE bundle_id = $1 FOR UPDATE",
        &[&bundle_id],
    )?;
    if exists.is_none() {
        return Ok(BundleDeletion::Missing);
    }
    let used: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM rollouts WHERE bundle_id = $1",
            &[&bundle_id],
        )?
        .get(0);
    if used > 0 {
        return Ok(BundleDeletion::InUse);
    }
    tx.execute("DELETE FROM bundles WHERE bundle_id = $1", &[&bundle_id])?;
    tx.commit()?;
    Ok(BundleDeletion::Deleted)
}

impl AlertStore for super::Tables {
    fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        open(&mut *self.pool.get()?)
    }

    fn save_alerts(&self, changes: &Changes) -> Result<(), StoreError> {
        save(&mut *self.pool.get()?, changes)
    }

    fn ack_alert(&self, id: &str, by: &str, at: u64) -> Result<Option<AlertRecord>, StoreError> {
        ack(&mut *self.pool.get()?, id, by, at)
    }

    fn prune_reports(&self, before: u64) -> Result<u64, StoreError> {
        prune(&mut *self.pool.get()?, before)
    }

    fn report_tally(&self, since: u64) -> Result<Vec<ReportTally>, StoreError> {
        tally(&mut *self.pool.get()?, since)
    }

    fn delete_bundle(&self, bundle_id: &str) -> Result<BundleDeletion, StoreError> {
        delete_bundle(&mut *self.pool.get()?, bundle_id)
    }
}

/// Each call through [`off_runtime`], like every store call.
impl AlertStore for PostgresStore {
    fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        off_runtime(|| self.tables.open_alerts())
    }

    fn save_alerts(&self, changes: &Changes) -> Result<(), StoreError> {
        off_runtime(|| self.tables.save_alerts(changes))
    }

    fn ack_alert(&self, id: &str, by: &str, at: u64) -> Result<Option<AlertRecord>, StoreError> {
        off_runtime(|| self.tables.ack_alert(id, by, at))
    }

    fn prune_reports(&self, before: u64) -> Result<u64, StoreError> {
        off_runtime(|| self.tables.prune_reports(before))
    }

    fn report_tally(&self, since: u64) -> Result<Vec<ReportTally>, StoreError> {
        off_runtime(|| self.tables.report_tally(since))
    }

    fn delete_bundle(&self, bundle_id: &str) -> Result<BundleDeletion, StoreError> {
        off_runtime(|| self.tables.delete_bundle(bundle_id))
    }
}
