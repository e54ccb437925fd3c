//! Rows of the PostgreSQL backend: the column lists and row decoders of devices, bundles and rollouts, and the
//! rollout and member writes the store's transactions share.

use std::collections::BTreeMap;

use postgres::{GenericClient, Row};

use super::super::codec::{
    from_json, hash_from_hex, opt_json, required_version, rollout_state, status, to_json, version,
};
use super::super::{BundleRecord, DeviceRecord, DeviceState, MemberRecord, RolloutRecord};
use crate::error::StoreError;

pub(super) const DEVICE_COLUMNS: &str =
    "device_id, compatible, tags, token_id, token_hash, enrolled_at, current_version,
    booted_slot, slots, last_seen, telemetry, last_status, labels, waiting, staged, security_floor, token_expires_at";

pub(super) fn device_from_row(row: &Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device_id: row.get(0),
        compatible: row.get(1),
        tags: from_json("devices.tags", row.get(2))?,
        token_id: row.get(3),
        token_hash: hash_from_hex(row.get(4))?,
        token_expires_at: row.get::<_, Option<i64>>(16).map(|v| v as u64),
        enrolled_at: row.get::<_, i64>(5) as u64,
        labels: from_json("devices.labels", row.get(12))?,
        state: DeviceState {
            current_version: version("devices.current_version", row.get(6))?,
            booted_slot: row.get(7),
            slots: from_json("devices.slots", row.get(8))?,
            last_seen: row.get::<_, Option<i64>>(9).map(|v| v as u64),
            telemetry: opt_json("devices.telemetry", row.get(10))?,
            last_status: opt_json("devices.last_status", row.get(11))?,
            waiting: opt_json("devices.waiting", row.get(13))?,
            staged: row.get(14),
            security_floor: version("devices.security_floor", row.get(15))?,
            freeze_alarm: None,
            maintenance_score: None,
        },
    })
}

pub(super) const BUNDLE_COLUMNS: &str =
    "bundle_id, version, compatible, manifest_digest, size, description, uploaded_at, images";

pub(super) fn bundle_from_row(row: &Row) -> Result<BundleRecord, StoreError> {
    Ok(BundleRecord {
        bundle_id: row.get(0),
        version: required_version("bundles.version", row.get(1))?,
        compatible: row.get(2),
        manifest_digest: row.get(3),
        size: row.get::<_, i64>(4) as u64,
        description: row.get(5),
        uploaded_at: row.get::<_, i64>(6) as u64,
        images: from_json("bundles.images", row.get(7))?,
    })
}

pub(super) const ROLLOUT_COLUMNS: &str = "rollout_id, name, bundle_id, tags, stages, current_stage, state, pause_reason,
    failure_threshold, bad_baseline, created_at, updated_at, aim, stage_started_at, stage_completed_at, revision";

pub(super) fn rollout_from_row(row: &Row) -> Result<RolloutRecord, StoreError> {
    Ok(RolloutRecord {
        rollout_id: row.get::<_, i64>(0) as u64,
        name: row.get(1),
        bundle_id: row.get(2),
        tags: from_json("rollouts.tags", row.get(3))?,
        stages: from_json("rollouts.stages", row.get(4))?,
        current_stage: row.get::<_, i64>(5) as usize,
        state: rollout_state(row.get(6))?,
        pause_reason: row.get(7),
        failure_threshold: row.get(8),
        bad_baseline: row.get::<_, i64>(9) as u64,
        created_at: row.get::<_, i64>(10) as u64,
        updated_at: row.get::<_, i64>(11) as u64,
        aim: from_json("rollouts.aim", row.get(12))?,
        stage_started_at: row.get::<_, i64>(13) as u64,
        stage_completed_at: row.get::<_, Option<i64>>(14).map(|v| v as u64),
        revision: row.get::<_, i64>(15) as u64,
    })
}

/// Members of the rollouts `ids` (all when `None`), by rollout in rank order.
pub(super) fn members(
    client: &mut impl GenericClient,
    id: Option<u64>,
) -> Result<BTreeMap<u64, Vec<MemberRecord>>, StoreError> {
    let rows = client.query(
        "SELECT rollout_id, device_id, rank, status, updated_at, joined_stage FROM rollout_devices
         WHERE $1::BIGINT IS NULL OR rollout_id = $1 ORDER BY rollout_id, rank",
        &[&id.map(|v| v as i64)],
    )?;
    let mut out: BTreeMap<u64, Vec<MemberRecord>> = BTreeMap::new();
    for row in rows {
        out.entry(row.get::<_, i64>(0) as u64)
            .or_default()
            .push(MemberRecord {
                device_id: row.get(1),
                rank: row.get::<_, i64>(2) as u64,
                status: row
                    .get::<_, Option<&str>>(3)
                    .map(|s| status("rollout_devices.status", s))
                    .transpose()?,
                updated_at: row.get::<_, i64>(4) as u64,
                joined: row.get::<_, Option<i64>>(5).map(|v| v as usize),
            });
    }
    Ok(out)
}

/// Compare-and-set on the revision ([`RolloutRecord::revision`]); under READ COMMITTED a concurrent writer of
/// the same row waits for the first, then finds the revision moved and writes nothing.
pub(super) fn write_rollout(
    client: &mut impl GenericClient,
    r: &RolloutRecord,
) -> Result<(), StoreError> {
    let changed = client.execute(
        "UPDATE rollouts SET name = $2, current_stage = $3, state = $4, pause_reason = $5, failure_threshold = $6,
             bad_baseline = $7, updated_at = $8, stage_started_at = $9, stage_completed_at = $10, aim = $11,
             revision = revision + 1
         WHERE rollout_id = $1 AND revision = $12",
        &[
            &(r.rollout_id as i64),
            &r.name,
            &(r.current_stage as i64),
            &r.state.as_str(),
            &r.pause_reason,
            &r.failure_threshold,
            &(r.bad_baseline as i64),
            &(r.updated_at as i64),
            &(r.stage_started_at as i64),
            &r.stage_completed_at.map(|v| v as i64),
            &to_json(&r.aim),
            &(r.revision as i64),
        ],
    )?;
    if changed == 0 {
        let exists = client
            .query_opt(
                "SELECT 1 FROM rollouts WHERE rollout_id = $1",
                &[&(r.rollout_id as i64)],
            )?
            .is_some();
        return Err(if exists {
            StoreError::Stale(r.rollout_id)
        } else {
            StoreError::Missing(format!("rollout {}", r.rollout_id))
        });
    }
    Ok(())
}

/// Inserts or replaces members, in one statement.
pub(super) fn write_members(
    client: &mut impl GenericClient,
    rollout_id: u64,
    members: &[MemberRecord],
) -> Result<(), StoreError> {
    if members.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = members.iter().map(|m| m.device_id.as_str()).collect();
    let ranks: Vec<i64> = members.iter().map(|m| m.rank as i64).collect();
    let statuses: Vec<Option<&str>> = members
        .iter()
        .map(|m| m.status.map(|s| s.as_str()))
        .collect();
    let updated: Vec<i64> = members.iter().map(|m| m.updated_at as i64).collect();
    let joined: Vec<Option<i64>> = members.iter().map(|m| m.joined.map(|v| v as i64)).collect();
    client.execute(
        "INSERT INTO rollout_devices (rollout_id, device_id, rank, status, updated_at, joined_stage)
         SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[])
         ON CONFLICT (rollout_id, device_id) DO UPDATE SET rank = EXCLUDED.rank, status = EXCLUDED.status,
             updated_at = EXCLUDED.updated_at, joined_stage = EXCLUDED.joined_stage",
        &[&(rollout_id as i64), &ids, &ranks, &statuses, &updated, &joined],
    )?;
    Ok(())
}
