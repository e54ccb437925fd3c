//! The in-memory working set the services share, and what they need to change it: the store, the writer lock,
//! the event channel and the counters.
//!
//! Locking: `fleet` is an `RwLock` taken for reading by polls (each device has its own `Mutex`, so polls of
//! different devices do not contend) and for writing only to apply committed changes. Every change that must be
//! committed synchronously (enrollment, report, rollout changes, deletion) runs under the async `writer` mutex:
//! decide under a read lock, commit through the store, then apply to memory. Polls mark devices dirty; the
//! write-behind flush (`DeviceService::flush`) persists them once a second in one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ota_protocol::admin::{
    BundleInfo, DeviceInfo, Event, RolloutCounts, RolloutDetail, RolloutDevice, RolloutInfo,
};
use ota_protocol::device::ReportStatus;
use tokio::sync::broadcast;

use crate::config::{Config, Secrets};
use crate::error::{ServiceError, StoreError};
use crate::metrics::Metrics;
use crate::rollout::{self, Membership, Plan};
use crate::store::{BundleRecord, DeviceRecord, MemberRecord, RolloutRecord, Store};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a lock. Writers only apply already-committed, self-contained changes; a panic mid-apply is not
/// expected, and the data stays usable if one happens.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Writes a lock (see [`read`] about poisoning).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Locks a mutex (see [`read`] about poisoning).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One enrolled device in memory.
#[derive(Debug)]
pub struct Device {
    /// Stored record (identity + state).
    pub record: DeviceRecord,
    /// When it last polled (for the minimum poll interval).
    pub last_poll: Option<Instant>,
}

/// A rollout in memory.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Its row.
    pub record: RolloutRecord,
    /// The bundle it rolls out.
    pub bundle: BundleRecord,
    /// Target devices in rank order.
    pub members: Vec<MemberRecord>,
    /// Device id to index in `members`.
    pub index: HashMap<String, usize>,
}

/// The decision inputs of a rollout row and its bundle.
pub fn plan<'a>(record: &'a RolloutRecord, bundle: &'a BundleRecord) -> Plan<'a> {
    Plan {
        state: record.state,
        stages: &record.stages,
        current_stage: record.current_stage,
        tags: &record.tags,
        compatible: &bundle.compatible,
        version: &bundle.version,
        failure_threshold: record.failure_threshold,
        bad_baseline: record.bad_baseline,
    }
}

/// Applies a rollout's automatic transitions ([`rollout::settle`]) to its row; returns whether it changed.
pub fn settle(
    record: &mut RolloutRecord,
    bundle: &BundleRecord,
    statuses: &[Option<ReportStatus>],
    now: u64,
) -> bool {
    let Some(settled) = rollout::settle(&plan(record, bundle), statuses) else {
        return false;
    };
    if let Some(reason) = &settled.pause_reason {
        tracing::warn!(rollout = record.rollout_id, "{reason}");
        record.pause_reason = settled.pause_reason;
    }
    record.state = settled.state;
    record.current_stage = settled.current_stage;
    record.updated_at = now;
    true
}

impl Rollout {
    /// A rollout with its members in rank order.
    pub fn new(record: RolloutRecord, bundle: BundleRecord, members: Vec<MemberRecord>) -> Self {
        let index = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.device_id.clone(), i))
            .collect();
        Rollout {
            record,
            bundle,
            members,
            index,
        }
    }

    /// The decision inputs.
    pub fn plan(&self) -> Plan<'_> {
        plan(&self.record, &self.bundle)
    }

    /// A device's place in it.
    pub fn membership(&self, device_id: &str) -> Option<Membership> {
        self.index.get(device_id).map(|&i| Membership {
            rank: self.members[i].rank,
            status: self.members[i].status,
        })
    }

    /// Member statuses in rank order.
    pub fn statuses(&self) -> Vec<Option<ReportStatus>> {
        self.members.iter().map(|m| m.status).collect()
    }

    /// The admin view.
    pub fn info(&self) -> RolloutInfo {
        let plan = self.plan();
        let targeted = self.members.len() as u64;
        let offered = rollout::offered(&plan, targeted);
        let mut counts = RolloutCounts {
            targeted,
            offered,
            ..RolloutCounts::default()
        };
        for m in self.members.iter().take(offered as usize) {
            match m.status {
                None => counts.pending += 1,
                Some(ReportStatus::Success) => counts.succeeded += 1,
                Some(ReportStatus::Failure) => counts.failed += 1,
                Some(ReportStatus::RolledBack) => counts.rolled_back += 1,
                Some(_) => counts.in_progress += 1,
            }
        }
        let r = &self.record;
        RolloutInfo {
            rollout_id: r.rollout_id,
            name: r.name.clone(),
            bundle_id: r.bundle_id.clone(),
            version: self.bundle.version.clone(),
            compatible: self.bundle.compatible.clone(),
            manifest_digest: self.bundle.manifest_digest.clone(),
            tags: r.tags.clone(),
            stages: r.stages.clone(),
            current_stage: r.current_stage,
            state: r.state,
            pause_reason: r.pause_reason.clone(),
            failure_threshold: r.failure_threshold,
            created_at: r.created_at,
            updated_at: r.updated_at,
            counts,
            filter: ota_protocol::fleet::TargetFilter {
                tags: r.tags.clone(),
                ..Default::default()
            },
            rules: Default::default(),
            schedule: None,
            start_at: None,
            guards: Vec::new(),
            watch_secs: 0,
            require_confirmation: false,
            revert: false,
            breach: None,
            stage_started_at: None,
        }
    }

    /// The admin view with every member.
    pub fn detail(&self) -> RolloutDetail {
        RolloutDetail {
            rollout: self.info(),
            devices: self
                .members
                .iter()
                .map(|m| RolloutDevice {
                    device_id: m.device_id.clone(),
                    rank: m.rank,
                    status: m.status.map_or("pending", ReportStatus::as_str).to_string(),
                    updated_at: m.updated_at,
                    timed_out: false,
                    waiting: None,
                })
                .collect(),
        }
    }
}

/// A device token's entry in the token map.
pub struct TokenEntry {
    /// Whose token.
    pub device_id: String,
    /// SHA-256 of the whole token.
    pub hash: [u8; 32],
}

/// The in-memory working set.
#[derive(Default)]
pub struct Fleet {
    /// Devices by id.
    pub devices: HashMap<String, Arc<Mutex<Device>>>,
    /// Device tokens by public token id.
    pub tokens: HashMap<String, TokenEntry>,
    /// Bundles by id.
    pub bundles: BTreeMap<String, BundleRecord>,
    /// Rollouts by id.
    pub rollouts: BTreeMap<u64, Rollout>,
}

impl Fleet {
    /// Loads the working set from the store.
    fn load(store: &dyn Store) -> Result<Fleet, StoreError> {
        let snapshot = store.load()?;
        let mut fleet = Fleet::default();
        for bundle in snapshot.bundles {
            fleet.bundles.insert(bundle.bundle_id.clone(), bundle);
        }
        for record in snapshot.devices {
            fleet.tokens.insert(
                record.token_id.clone(),
                TokenEntry {
                    device_id: record.device_id.clone(),
                    hash: record.token_hash,
                },
            );
            fleet.devices.insert(
                record.device_id.clone(),
                Arc::new(Mutex::new(Device {
                    record,
                    last_poll: None,
                })),
            );
        }
        for (record, members) in snapshot.rollouts {
            let bundle = fleet
                .bundles
                .get(&record.bundle_id)
                .cloned()
                .ok_or_else(|| {
                    StoreError::Missing(format!(
                        "bundle {} of rollout {}",
                        record.bundle_id, record.rollout_id
                    ))
                })?;
            fleet
                .rollouts
                .insert(record.rollout_id, Rollout::new(record, bundle, members));
        }
        Ok(fleet)
    }
}

/// What every service works on.
pub struct Shared {
    /// Settings.
    pub config: Config,
    /// Secrets.
    pub secrets: Secrets,
    /// Persistent storage.
    pub store: Arc<dyn Store>,
    /// The working set.
    pub fleet: RwLock<Fleet>,
    /// Devices whose poll state awaits the write-behind flush.
    pub dirty: Mutex<HashSet<String>>,
    /// Serialises synchronous commits (decide, commit, apply).
    pub writer: tokio::sync::Mutex<()>,
    /// Events for the dashboard.
    pub events: broadcast::Sender<Arc<Event>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Shared {
    /// Loads the working set from the store.
    pub fn load(
        config: Config,
        secrets: Secrets,
        store: Arc<dyn Store>,
    ) -> Result<Shared, StoreError> {
        let fleet = Fleet::load(store.as_ref())?;
        let (events, _) = broadcast::channel(1024);
        Ok(Shared {
            config,
            secrets,
            store,
            fleet: RwLock::new(fleet),
            dirty: Mutex::new(HashSet::new()),
            writer: tokio::sync::Mutex::new(()),
            events,
            metrics: Metrics::default(),
        })
    }

    /// Sends an event to whoever listens (no subscribers is fine).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(Arc::new(event));
    }

    /// Runs a store call on the blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| ServiceError::internal("running a database task", e))??)
    }
}

/// Checks a device's or a selector's tags.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if tags.len() > 64 {
        return Err(ServiceError::Invalid("at most 64 tags".into()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 64 || v.len() > 256 || k.contains('=') {
            return Err(ServiceError::Invalid(format!(
                "tag {k:?}: keys must be 1-64 characters without '=', values at most 256"
            )));
        }
    }
    Ok(())
}

/// The admin view of a device.
pub fn device_info(r: &DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        device_id: r.device_id.clone(),
        compatible: r.compatible.clone(),
        tags: r.tags.clone(),
        current_version: r.state.current_version.clone(),
        booted_slot: r.state.booted_slot.clone(),
        slots: r.state.slots.clone(),
        enrolled_at: r.enrolled_at,
        last_seen: r.state.last_seen,
        last_status: r.state.last_status.clone(),
        telemetry: r.state.telemetry.clone(),
        labels: Default::default(),
        group: None,
        waiting: None,
        security_floor: None,
    }
}

/// The admin view of a bundle.
pub fn bundle_info(b: &BundleRecord) -> BundleInfo {
    BundleInfo {
        bundle_id: b.bundle_id.clone(),
        version: b.version.clone(),
        compatible: b.compatible.clone(),
        manifest_digest: b.manifest_digest.clone(),
        size: b.size,
        description: b.description.clone(),
        uploaded_at: b.uploaded_at,
        images: b.images.clone(),
    }
}
