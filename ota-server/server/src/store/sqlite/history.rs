//! The `metric_history` table: one row per device, metric and bucket. Buckets merge through
//! [`Bucket::merge`] (a bucket stored twice, e.g. at shutdown and again after a restart in the same minute,
//! adds up); downsampling and retention are [`crate::history::compact`]'s.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::StoreError;
use crate::history::{self, Bucket, HOUR, MINUTE};
use crate::store::codec::{from_json, version};
use crate::store::SeenTelemetry;

fn bucket(row: &Row<'_>, first: usize) -> Result<Bucket, rusqlite::Error> {
    Ok(Bucket {
        width: row.get::<_, i64>(first)? as u64,
        at: row.get::<_, i64>(first + 1)? as u64,
        count: row.get::<_, i64>(first + 2)? as u64,
        min: row.get(first + 3)?,
        max: row.get(first + 4)?,
        sum: row.get(first + 5)?,
    })
}

/// Writes a bucket; with `replace`, over the stored one of the same device, metric and start. Returns whether
/// it was written.
fn write(
    conn: &Connection,
    device_id: &str,
    metric: &str,
    b: &Bucket,
    replace: bool,
) -> Result<bool, StoreError> {
    let verb = if replace { "REPLACE" } else { "IGNORE" };
    let written = conn
        .prepare_cached(&format!(
            "INSERT OR {verb} INTO metric_history (device_id, metric, width, at, count, min, max, sum)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?
        .execute(params![
            device_id,
            metric,
            b.width as i64,
            b.at as i64,
            b.count as i64,
            b.min,
            b.max,
            b.sum
        ])?;
    Ok(written > 0)
}

/// Stores a bucket, merging it into one already stored for the same device, metric and start (rare: a bucket
/// stored at shutdown and again after a restart within its minute, or an hour folded into twice).
fn put(conn: &Connection, device_id: &str, metric: &str, b: &Bucket) -> Result<(), StoreError> {
    if write(conn, device_id, metric, b, false)? {
        return Ok(());
    }
    let existing = conn
        .prepare_cached(
            "SELECT width, at, count, min, max, sum FROM metric_history
             WHERE device_id = ?1 AND metric = ?2 AND at = ?3 AND width = ?4",
        )?
        .query_row(
            params![device_id, metric, b.at as i64, b.width as i64],
            |r| bucket(r, 0),
        )
        .optional()?;
    let merged = existing.map_or(*b, |mut e| {
        e.merge(b);
        e
    });
    write(conn, device_id, metric, &merged, true)?;
    Ok(())
}

/// Stores closed buckets in one transaction.
pub fn save(conn: &mut Connection, rows: &[history::Row]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for r in rows {
        put(&tx, &r.device_id, &r.metric, &r.bucket)?;
    }
    tx.commit()?;
    Ok(())
}

/// A device's buckets of a metric that end after `since`, oldest first.
pub fn load(
    conn: &Connection,
    device_id: &str,
    metric: &str,
    since: u64,
) -> Result<Vec<Bucket>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT width, at, count, min, max, sum FROM metric_history
         WHERE device_id = ?1 AND metric = ?2 AND at + width > ?3 ORDER BY at, width",
    )?;
    let rows = stmt.query_map(params![device_id, metric, since as i64], |r| bucket(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Folds minute buckets more than a day old into hours and deletes buckets past the retention, in one
/// transaction. Returns how many rows went.
pub fn compact(conn: &mut Connection, now: u64, retention_secs: u64) -> Result<u64, StoreError> {
    let oldest = now.saturating_sub(retention_secs);
    let coarse_before = history::align(now.saturating_sub(history::FINE_SPAN), HOUR);
    let tx = conn.transaction()?;
    let mut removed = tx.execute(
        "DELETE FROM metric_history WHERE at + width <= ?1",
        [oldest as i64],
    )? as u64;
    let mut old: BTreeMap<(String, String), Vec<Bucket>> = BTreeMap::new();
    {
        let mut stmt = tx.prepare(
            "SELECT device_id, metric, width, at, count, min, max, sum FROM metric_history
             WHERE width = ?1 AND at < ?2",
        )?;
        let mut rows = stmt.query(params![MINUTE as i64, coarse_before as i64])?;
        while let Some(row) = rows.next()? {
            old.entry((row.get(0)?, row.get(1)?))
                .or_default()
                .push(bucket(row, 2)?);
        }
    }
    removed += tx.execute(
        "DELETE FROM metric_history WHERE width = ?1 AND at < ?2",
        params![MINUTE as i64, coarse_before as i64],
    )? as u64;
    for ((device_id, metric), buckets) in &old {
        for b in history::compact(buckets, now, retention_secs) {
            put(&tx, device_id, metric, &b)?;
        }
    }
    tx.commit()?;
    Ok(removed)
}

/// The metrics a device has buckets of that end after `since`, sorted.
pub fn metrics(conn: &Connection, device_id: &str, since: u64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT metric FROM metric_history WHERE device_id = ?1 AND at + width > ?2
         ORDER BY metric",
    )?;
    let rows = stmt.query_map(params![device_id, since as i64], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last poll telemetry of the devices seen at or after `since`.
pub fn telemetry_since(conn: &Connection, since: u64) -> Result<Vec<SeenTelemetry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, last_seen, current_version, telemetry FROM devices
         WHERE last_seen >= ?1 AND telemetry IS NOT NULL",
    )?;
    let mut rows = stmt.query(params![since as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(SeenTelemetry {
            device_id: row.get(0)?,
            last_seen: row.get::<_, i64>(1)? as u64,
            version: version("devices.current_version", row.get(2)?)?,
            telemetry: from_json("devices.telemetry", &row.get::<_, String>(3)?)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        // The table's step of the schema history.
        let step = crate::store::migrations::MIGRATIONS
            .iter()
            .find(|m| m.what == "telemetry history")
            .unwrap();
        conn.execute_batch(step.sqlite).unwrap();
        conn
    }

    fn row(at: u64, v: f64) -> history::Row {
        history::Row {
            device_id: "r1".into(),
            metric: "latency".into(),
            bucket: Bucket::sample(at, v),
        }
    }

    #[test]
    fn a_bucket_stored_twice_merges() {
        let mut c = conn();
        save(&mut c, &[row(600, 10.0), row(660, 1.0)]).unwrap();
        save(&mut c, &[row(610, 30.0)]).unwrap();
        let got = load(&c, "r1", "latency", 0).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].count, got[0].mean(), got[0].max), (2, 20.0, 30.0));
        assert_eq!(load(&c, "r1", "latency", 660).unwrap().len(), 1);
        assert!(load(&c, "r1", "other", 0).unwrap().is_empty());
    }

    #[test]
    fn compaction_rolls_old_minutes_into_hours_and_drops_expired_rows() {
        let mut c = conn();
        let now = 50 * 86_400;
        let day_ago = now - history::FINE_SPAN - 2 * HOUR;
        save(
            &mut c,
            &[
                row(now - 120, 1.0),
                row(day_ago, 2.0),
                row(day_ago + 60, 4.0),
                row(now - 40 * 86_400, 9.0),
            ],
        )
        .unwrap();
        assert_eq!(compact(&mut c, now, 30 * 86_400).unwrap(), 3);
        let got = load(&c, "r1", "latency", 0).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].width, got[0].count, got[0].mean()), (HOUR, 2, 3.0));
        assert_eq!(got[1].width, MINUTE);
        assert_eq!(compact(&mut c, now, 30 * 86_400).unwrap(), 0, "idempotent");
    }
}
