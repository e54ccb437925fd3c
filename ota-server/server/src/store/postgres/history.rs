//! The `metric_history` table on PostgreSQL: the same merge ([`Bucket::merge`]) and compaction
//! ([`crate::history::compact`]) as on SQLite; only the SQL differs.

use std::collections::BTreeMap;

use postgres::{GenericClient, Row};

use crate::error::StoreError;
use crate::history::{self, Bucket, HOUR, MINUTE};
use crate::store::codec::{from_json, version};
use crate::store::SeenTelemetry;

fn bucket(row: &Row, first: usize) -> Bucket {
    Bucket {
        width: row.get::<_, i64>(first) as u64,
        at: row.get::<_, i64>(first + 1) as u64,
        count: row.get::<_, i64>(first + 2) as u64,
        min: row.get(first + 3),
        max: row.get(first + 4),
        sum: row.get(first + 5),
    }
}

/// Stores a bucket, merging it into one already stored for the same device, metric and start.
fn put(
    tx: &mut impl GenericClient,
    device_id: &str,
    metric: &str,
    b: &Bucket,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT INTO metric_history (device_id, metric, width, at, count, min, max, sum)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &[
            &device_id,
            &metric,
            &(b.width as i64),
            &(b.at as i64),
            &(b.count as i64),
            &b.min,
            &b.max,
            &b.sum,
        ],
    )?;
    if inserted > 0 {
        return Ok(());
    }
    let existing = tx.query_opt(
        "SELECT width, at, count, min, max, sum FROM metric_history
         WHERE device_id = $1 AND metric = $2 AND at = $3 AND width = $4 FOR UPDATE",
        &[&device_id, &metric, &(b.at as i64), &(b.width as i64)],
    )?;
    let merged = existing.map_or(*b, |row| {
        let mut e = bucket(&row, 0);
        e.merge(b);
        e
    });
    tx.execute(
        "INSERT INTO metric_history (device_id, metric, width, at, count, min, max, sum)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (device_id, metric, at, width) DO UPDATE
         SET count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum",
        &[
            &device_id,
            &metric,
            &(merged.width as i64),
            &(merged.at as i64),
            &(merged.count as i64),
            &merged.min,
            &merged.max,
            &merged.sum,
        ],
    )?;
    Ok(())
}

/// Stores closed buckets in one transaction.
pub fn save(client: &mut postgres::Client, rows: &[history::Row]) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    for r in rows {
        put(&mut tx, &r.device_id, &r.metric, &r.bucket)?;
    }
    tx.commit()?;
    Ok(())
}

/// A device's buckets of a metric that end after `since`, oldest first.
pub fn load(
    client: &mut postgres::Client,
    device_id: &str,
    metric: &str,
    since: u64,
) -> Result<Vec<Bucket>, StoreError> {
    Ok(client
        .query(
            "SELECT width, at, count, min, max, sum FROM metric_history
             WHERE device_id = $1 AND metric = $2 AND at + width > $3 ORDER BY at, width",
            &[&device_id, &metric, &(since as i64)],
        )?
        .iter()
        .map(|r| bucket(r, 0))
        .collect())
}

/// Folds minute buckets more than a day old into hours and deletes buckets past the retention, in one
/// transaction. Returns how many rows went.
pub fn compact(
    client: &mut postgres::Client,
    now: u64,
    retention_secs: u64,
) -> Result<u64, StoreError> {
    let oldest = now.saturating_sub(retention_secs) as i64;
    let coarse_before = history::align(now.saturating_sub(history::FINE_SPAN), HOUR) as i64;
    let minute = MINUTE as i64;
    let mut tx = client.transaction()?;
    let mut removed = tx.execute(
        "DELETE FROM metric_history WHERE at + width <= $1",
        &[&oldest],
    )?;
    let mut old: BTreeMap<(String, String), Vec<Bucket>> = BTreeMap::new();
    for row in tx.query(
        "SELECT device_id, metric, width, at, count, min, max, sum FROM metric_history
         WHERE width = $1 AND at < $2",
        &[&minute, &coarse_before],
    )? {
        old.entry((row.get(0), row.get(1)))
            .or_default()
            .push(bucket(&row, 2));
    }
    removed += tx.execute(
        "DELETE FROM metric_history WHERE width = $1 AND at < $2",
        &[&minute, &coarse_before],
    )?;
    for ((device_id, metric), buckets) in &old {
        for b in history::compact(buckets, now, retention_secs) {
            put(&mut tx, device_id, metric, &b)?;
        }
    }
    tx.commit()?;
    Ok(removed)
}

/// The metrics a device has buckets of that end after `since`, sorted.
pub fn metrics(
    client: &mut postgres::Client,
    device_id: &str,
    since: u64,
) -> Result<Vec<String>, StoreError> {
    // Sorted here, not by the database's collation, so both backends agree.
    let mut names: Vec<String> = client
        .query(
            "SELECT DISTINCT metric FROM metric_history WHERE device_id = $1 AND at + width > $2",
            &[&device_id, &(since as i64)],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    names.sort();
    Ok(names)
}

/// The last poll telemetry of the devices seen at or after `since`.
pub fn telemetry_since(
    client: &mut impl GenericClient,
    since: u64,
) -> Result<Vec<SeenTelemetry>, StoreError> {
    client
        .query(
            "SELECT device_id, last_seen, current_version, telemetry FROM devices
             WHERE last_seen >= $1 AND telemetry IS NOT NULL",
            &[&(since as i64)],
        )?
        .iter()
        .map(|row| {
            Ok(SeenTelemetry {
                device_id: row.get(0),
                last_seen: row.get::<_, i64>(1) as u64,
                version: version("devices.current_version", row.get(2))?,
                telemetry: from_json("devices.telemetry", row.get(3))?,
            })
        })
        .collect()
}
