//! The `alerts` table (open and cleared alerts with their acknowledgements) and the retention queries:
//! report tallies for the maintenance score, pruning old reports and cleared alerts, deleting an unused
//! bundle's row.

use ota_protocol::alerts::Acknowledgement;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::alerts::track::{AlertRecord, Changes};
use crate::error::StoreError;
use crate::store::alerts::{AlertStore, BundleDeletion, ReportTally};
use crate::store::codec::alert_columns;

const COLUMNS: &str =
    "id, kind, target, severity, since, episode, message, cleared_at, acked_by, acked_at";

fn from_row(row: &Row<'_>) -> Result<AlertRecord, StoreError> {
    let (kind, target, severity) = alert_columns(
        &row.get::<_, String>(1)?,
        &row.get::<_, String>(2)?,
        &row.get::<_, String>(3)?,
    )?;
    let by: Option<String> = row.get(8)?;
    let at: Option<i64> = row.get(9)?;
    Ok(AlertRecord {
        id: row.get(0)?,
        kind,
        target,
        severity,
        since: row.get::<_, i64>(4)? as u64,
        episode: row.get::<_, i64>(5)? as u64,
        message: row.get(6)?,
        cleared_at: row.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        acknowledged: by
            .zip(at)
            .map(|(by, at)| Acknowledgement { by, at: at as u64 }),
    })
}

fn open(conn: &Connection) -> Result<Vec<AlertRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM alerts WHERE cleared_at IS NULL ORDER BY since, id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

fn save(conn: &mut Connection, c: &Changes) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for a in &c.opened {
        tx.execute(
            &format!(
                "INSERT INTO alerts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, NULL)
                 ON CONFLICT (id) DO NOTHING"
            ),
            params![
                a.id,
                a.kind.as_str(),
                a.target.path(),
                a.severity.as_str(),
                a.since as i64,
                a.episode as i64,
                a.message
            ],
        )?;
    }
    for a in c.updated.iter().chain(&c.cleared) {
        tx.execute(
            "UPDATE alerts SET severity = ?2, message = ?3, cleared_at = ?4 WHERE id = ?1",
            params![
                a.id,
                a.severity.as_str(),
                a.message,
                a.cleared_at.map(|v| v as i64)
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn ack(conn: &Connection, id: &str, by: &str, at: u64) -> Result<Option<AlertRecord>, StoreError> {
    conn.execute(
        "UPDATE alerts SET acked_by = ?2, acked_at = ?3
         WHERE id = ?1 AND cleared_at IS NULL AND acked_by IS NULL",
        params![id, by, at as i64],
    )?;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1 AND cleared_at IS NULL"),
        [id],
        |row| Ok(from_row(row)),
    )
    .optional()?
    .transpose()
}

fn prune(conn: &mut Connection, before: u64) -> Result<u64, StoreError> {
    let tx = conn.transaction()?;
    let reports = tx.execute(
        "DELETE FROM reports WHERE received_at < ?1",
        [before as i64],
    )?;
    let alerts = tx.execute(
        "DELETE FROM alerts WHERE cleared_at IS NOT NULL AND cleared_at < ?1",
        [before as i64],
    )?;
    tx.commit()?;
    Ok((reports + alerts) as u64)
}

fn tally(conn: &Connection, since: u64) -> Result<Vec<ReportTally>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, SUM(status = 'failure'), SUM(status = 'rolled_back') FROM reports
         WHERE received_at >= ?1 AND status IN ('failure', 'rolled_back')
         GROUP BY device_id ORDER BY device_id",
    )?;
    let mut rows = stmt.query([since as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(ReportTally {
            device_id: row.get(0)?,
            failures: row.get::<_, i64>(1)? as u64,
            rollbacks: row.get::<_, i64>(2)? as u64,
        });
    }
    Ok(out)
}

fn delete_bundle(conn: &mut Connection, bundle_id: &str) -> Result<BundleDeletion, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let used: i64 = tx.query_row(
        "SELECT COUNT(*) FROM rollouts WHERE bundle_id = ?1",
        [bundle_id],
        |r| r.get(0),
    )?;
    if used > 0 {
        return Ok(BundleDeletion::InUse);
    }
    let n = tx.execute("DELETE FROM bundles WHERE bundle_id = ?1", [bundle_id])?;
    tx.commit()?;
    Ok(if n > 0 {
        BundleDeletion::Deleted
    } else {
        BundleDeletion::Missing
    })
}

impl AlertStore for SqliteStore {
    fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        open(&self.conn())
    }

    fn save_alerts(&self, changes: &Changes) -> Result<(), StoreError> {
        save(&mut self.conn(), changes)
    }

    fn ack_alert(&self, id: &str, by: &str, at: u64) -> Result<Option<AlertRecord>, StoreError> {
        ack(&self.conn(), id, by, at)
    }

    fn prune_reports(&self, before: u64) -> Result<u64, StoreError> {
        prune(&mut self.conn(), before)
    }

    fn report_tally(&self, since: u64) -> Result<Vec<ReportTally>, StoreError> {
        tally(&self.conn(), since)
    }

    fn delete_bundle(&self, bundle_id: &str) -> Result<BundleDeletion, StoreError> {
        delete_bundle(&mut self.conn(), bundle_id)
    }
}
