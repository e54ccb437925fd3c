//! The in-memory working set the services share, and what they need to change it: the store, the writer lock,
//! the event channel and the counters.
//!
//! Locking: `fleet` is an `RwLock` taken for reading by polls (each device has its own `Mutex`, so polls of
//! different devices do not contend) and for writing only to apply committed changes. Every change that must be
//! committed synchronously (enrollment, report, rollout changes, deletion) runs under the async `writer` mutex:
//! decide under a read lock, commit through the store, then apply to memory. Polls mark devices dirty; the
//! write-behind flush (`DeviceService::flush`) persists them once a second in one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ota_protocol::admin::{
    BundleInfo, DeviceInfo, Event, RolloutCounts, RolloutDetail, RolloutDevice, RolloutInfo,
};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{GroupSettings, TargetFilter};
use tokio::sync::broadcast;

use crate::cluster::{Cluster, Subject};
use crate::config::{Config, Secrets};
use crate::error::{ServiceError, StoreError};
use crate::metrics::Metrics;
use crate::rollout::{self, Membership, Plan};
use crate::schedule::CompiledSchedule;
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
    /// The version a success report said it committed since its last poll ([`rollout::runs_after_report`]);
    /// the next poll says what it runs again. Not stored: a restart waits for that poll.
    pub committed: Option<semver::Version>,
    /// Its report allowance ([`crate::limits`]); not stored: a restart refills it.
    pub reports: crate::limits::ReportBucket,
    /// Its last outcome reports, for the health rule ([`crate::device_health`]); read from the store at start.
    pub outcomes: crate::device_health::Outcomes,
}

impl Device {
    /// The decision facts of the device, running what it last committed if it has not polled since.
    pub fn facts(&self) -> rollout::DeviceFacts<'_> {
        let mut facts = facts(&self.record);
        if let Some(v) = &self.committed {
            facts.current_version = Some(v);
        }
        facts
    }

    /// The admin view of the device, with its health.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            health: Some(self.outcomes.health()),
            ..device_info(&self.record)
        }
    }
}

/// A rollout in memory.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Its row.
    pub record: RolloutRecord,
    /// The bundle it rolls out.
    pub bundle: BundleRecord,
    /// Target devices in rank order: the initial members, then those that joined later.
    pub members: Vec<MemberRecord>,
    /// Device id to index in `members`.
    pub index: HashMap<String, usize>,
    /// Join stage of each late member, in rank order (the decision input [`Plan::joined`]).
    pub joined: Vec<usize>,
    /// Its own maintenance windows, compiled once (the poll path asks them per offer).
    pub schedule: Option<Arc<CompiledSchedule>>,
}

/// The decision inputs of a rollout row and its bundle at `now`; `joined` as in [`Plan::joined`].
pub fn plan<'a>(
    record: &'a RolloutRecord,
    bundle: &'a BundleRecord,
    joined: &'a [usize],
    now: u64,
) -> Plan<'a> {
    let aim = &record.aim;
    Plan {
        state: record.state,
        stages: &record.stages,
        current_stage: record.current_stage,
        tags: &record.tags,
        compatible: &bundle.compatible,
        version: &bundle.version,
        failure_threshold: record.failure_threshold,
        bad_baseline: record.bad_baseline,
        group: aim.group.as_deref(),
        versions: aim.versions.as_ref(),
        joined,
        soak_secs: aim.rules.soak_secs,
        deadline_secs: aim.rules.deadline_secs,
        start_at: aim.start_at,
        stage_started_at: record.stage_started_at,
        stage_completed_at: record.stage_completed_at,
        now,
    }
}

/// Applies a rollout's automatic transitions ([`rollout::settle`]) to its row; returns whether it changed.
pub fn settle(
    record: &mut RolloutRecord,
    bundle: &BundleRecord,
    joined: &[usize],
    statuses: &[Option<ReportStatus>],
    now: u64,
) -> bool {
    let Some(settled) = rollout::settle(&plan(record, bundle, joined, now), statuses) else {
        return false;
    };
    if let Some(reason) = &settled.pause_reason {
        tracing::warn!(rollout = record.rollout_id, "{reason}");
        record.pause_reason = settled.pause_reason;
    }
    record.state = settled.state;
    record.current_stage = settled.current_stage;
    record.stage_started_at = settled.stage_started_at;
    record.stage_completed_at = settled.stage_completed_at;
    record.updated_at = now;
    true
}

/// A device group in memory: its settings and their compiled windows.
#[derive(Debug, Clone)]
pub struct Group {
    /// Settings as set.
    pub settings: GroupSettings,
    /// Windows, compiled once.
    pub schedule: Arc<CompiledSchedule>,
}

impl Group {
    /// Compiles a group's settings.
    pub fn new(settings: GroupSettings) -> Result<Group, String> {
        let schedule = Arc::new(CompiledSchedule::compile(&settings.schedule)?);
        Ok(Group { settings, schedule })
    }
}

impl Rollout {
    /// A rollout with its members in rank order. Its schedule was checked at creation; one that no longer
    /// compiles (a time zone gone from the database) allows any time rather than blocking the fleet.
    pub fn new(record: RolloutRecord, bundle: BundleRecord, members: Vec<MemberRecord>) -> Self {
        let index = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.device_id.clone(), i))
            .collect();
        let joined = members.iter().filter_map(|m| m.joined).collect();
        let schedule = record.aim.schedule.as_ref().and_then(|s| {
            CompiledSchedule::compile(s)
                .map_err(|e| tracing::error!(rollout = record.rollout_id, "schedule ignored: {e}"))
                .ok()
                .map(Arc::new)
        });
        Rollout {
            record,
            bundle,
            members,
            index,
            joined,
            schedule,
        }
    }

    /// The decision inputs at `now`.
    pub fn plan_at(&self, now: u64) -> Plan<'_> {
        plan(&self.record, &self.bundle, &self.joined, now)
    }

    /// The decision inputs now.
    pub fn plan(&self) -> Plan<'_> {
        self.plan_at(unix_now())
    }

    /// Number of initial members (ranked at creation).
    pub fn initial(&self) -> u64 {
        (self.members.len() - self.joined.len()) as u64
    }

    /// A device's place in it.
    pub fn membership(&self, device_id: &str) -> Option<Membership> {
        self.index.get(device_id).map(|&i| Membership {
            rank: self.members[i].rank,
            status: self.members[i].status,
            joined: self.members[i].joined,
        })
    }

    /// Member statuses in rank order.
    pub fn statuses(&self) -> Vec<Option<ReportStatus>> {
        self.members.iter().map(|m| m.status).collect()
    }

    /// The admin view (without what the robots say while waiting: see [`Rollout::info_with`]).
    pub fn info(&self) -> RolloutInfo {
        self.info_with(None)
    }

    /// The admin view; with the fleet's devices, it counts the offered robots that say they are waiting.
    pub fn info_with(&self, devices: Option<&HashMap<String, Arc<Mutex<Device>>>>) -> RolloutInfo {
        let plan = self.plan();
        let initial = self.initial();
        let mut counts = RolloutCounts {
            targeted: self.members.len() as u64,
            ..RolloutCounts::default()
        };
        for m in &self.members {
            let membership = Membership {
                rank: m.rank,
                status: m.status,
                joined: m.joined,
            };
            if !rollout::reached(&plan, initial, membership) {
                continue;
            }
            counts.offered += 1;
            counts.timed_out += u64::from(rollout::timed_out(&plan, initial, membership));
            match m.status {
                None => counts.pending += 1,
                Some(ReportStatus::Success) => counts.succeeded += 1,
                Some(ReportStatus::Failure) => counts.failed += 1,
                Some(ReportStatus::RolledBack) => counts.rolled_back += 1,
                Some(_) => counts.in_progress += 1,
            }
            if !m.status.is_some_and(ReportStatus::is_terminal)
                && devices.is_some_and(|d| waiting(d, &m.device_id).is_some())
            {
                counts.waiting += 1;
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
            revision: r.revision,
            counts,
            filter: TargetFilter {
                tags: r.tags.clone(),
                group: r.aim.group.clone(),
                versions: r.aim.versions.clone(),
            },
            rules: r.aim.rules.clone(),
            schedule: r.aim.schedule.clone(),
            start_at: r.aim.start_at,
            guards: r.aim.guards.clone(),
            watch_secs: r.aim.watch_secs,
            require_confirmation: r.aim.require_confirmation,
            revert: r.aim.revert,
            breach: r.aim.breach.clone(),
            stage_started_at: Some(r.stage_started_at),
        }
    }

    /// The admin view with every member and what each waiting robot says.
    pub fn detail(&self, devices: &HashMap<String, Arc<Mutex<Device>>>) -> RolloutDetail {
        let plan = self.plan();
        let initial = self.initial();
        RolloutDetail {
            rollout: self.info_with(Some(devices)),
            devices: self
                .members
                .iter()
                .map(|m| {
                    let membership = Membership {
                        rank: m.rank,
                        status: m.status,
                        joined: m.joined,
                    };
                    let finished = m.status.is_some_and(ReportStatus::is_terminal);
                    RolloutDevice {
                        device_id: m.device_id.clone(),
                        rank: m.rank,
                        status: m.status.map_or("pending", ReportStatus::as_str).to_string(),
                        updated_at: m.updated_at,
                        timed_out: rollout::timed_out(&plan, initial, membership),
                        waiting: (!finished)
                            .then(|| waiting(devices, &m.device_id))
                            .flatten(),
                    }
                })
                .collect(),
        }
    }
}

/// What a device last said it waits for.
fn waiting(
    devices: &HashMap<String, Arc<Mutex<Device>>>,
    device_id: &str,
) -> Option<ota_protocol::fleet::Waiting> {
    devices
        .get(device_id)
        .and_then(|d| lock(d).record.state.waiting.clone())
}

/// A device token's entry in the token map.
pub struct TokenEntry {
    /// Whose token.
    pub device_id: String,
    /// SHA-256 of the whole token.
    pub hash: [u8; 32],
    /// When it stops working (`None`: never, a keyless robot's token).
    pub expires_at: Option<u64>,
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
    /// Device groups with settings, by name.
    pub groups: BTreeMap<String, Group>,
}

impl Fleet {
    /// Loads the working set from the store.
    pub(crate) fn load(store: &dyn Store) -> Result<Fleet, StoreError> {
        let snapshot = store.load()?;
        let mut outcomes: HashMap<String, Vec<ReportStatus>> = store
            .recent_outcomes(crate::device_health::WINDOW)?
            .into_iter()
            .collect();
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
                    expires_at: record.token_expires_at,
                },
            );
            let seen = crate::device_health::Outcomes::from_newest_first(
                outcomes.remove(&record.device_id).unwrap_or_default(),
            );
            fleet.devices.insert(
                record.device_id.clone(),
                Arc::new(Mutex::new(Device {
                    record,
                    last_poll: None,
                    reports: Default::default(),
                    committed: None,
                    outcomes: seen,
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
        for (name, settings) in snapshot.groups {
            match Group::new(settings) {
                Ok(group) => {
                    fleet.groups.insert(name, group);
                }
                Err(e) => tracing::error!(group = name, "group settings ignored: {e}"),
            }
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
    /// Devices whose facts changed (enrolled, relabelled, another version): the rollout tick checks whether
    /// they join rollouts.
    pub joins: Mutex<HashSet<String>>,
    /// Telemetry the write-behind flush saw: open history buckets and recent samples (for the guards).
    pub history: Mutex<crate::history::Recorder>,
    /// Serialises synchronous commits (decide, commit, apply).
    pub writer: tokio::sync::Mutex<()>,
    /// Events for the dashboard.
    pub events: broadcast::Sender<Arc<Event>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Robots asking to be admitted with the fleet secret ([`crate::admission::ASK_LIMIT`]), on a monotonic
    /// clock started with the process.
    pub asks: Mutex<(Instant, crate::admission::Limiter)>,
    /// The newest published trust root version polls announce (`settings::trust::ChainCache`).
    pub trust_chain: crate::settings::trust::ChainCache,
    /// The other replicas ([`Shared::cluster`]; alone until [`Shared::join`]).
    cluster: OnceLock<Cluster>,
}

impl Shared {
    /// Forgets what memory holds about a decommissioned device (its store rows are gone already): the device,
    /// its token, its rollout memberships, pending writes and joins, its telemetry history and guard samples.
    pub fn forget_device(&self, device_id: &str) {
        {
            let mut fleet = write(&self.fleet);
            if let Some(dev) = fleet.devices.remove(device_id) {
                let token_id = lock(&dev).record.token_id.clone();
                fleet.tokens.remove(&token_id);
            }
            for r in fleet.rollouts.values_mut() {
                if r.index.contains_key(device_id) {
                    let members = r.members.iter().filter(|m| m.device_id != device_id);
                    *r = Rollout::new(
                        r.record.clone(),
                        r.bundle.clone(),
                        members.cloned().collect(),
                    );
                }
            }
        }
        lock(&self.dirty).remove(device_id);
        lock(&self.joins).remove(device_id);
        lock(&self.history).forget(device_id);
    }

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
            joins: Mutex::new(HashSet::new()),
            history: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
            events,
            metrics: Metrics::default(),
            asks: Mutex::new((Instant::now(), Default::default())),
            trust_chain: Default::default(),
            cluster: OnceLock::new(),
        })
    }

    /// Joins other replicas (before serving: a change made before is not announced). Gives the cluster back if
    /// this replica already works alone or joined.
    pub fn join(&self, cluster: Cluster) -> Result<(), Cluster> {
        self.cluster.set(cluster)
    }

    /// This replica's place among the others.
    pub fn cluster(&self) -> &Cluster {
        self.cluster.get_or_init(Cluster::local)
    }

    /// Tells the other replicas about a committed change; with `event`, their dashboards hear of it too (this
    /// replica's were told by [`Shared::emit`]).
    pub fn announce(&self, subject: Subject, event: bool) {
        let cluster = self.cluster();
        cluster.feed.announce(cluster.notice(subject, event));
    }

    /// Whether this replica runs the once-only periodic jobs now.
    pub fn leads(&self) -> bool {
        self.cluster().lease.held()
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
    ota_protocol::validate::tags(tags).map_err(ServiceError::Invalid)
}

/// The decision facts of a device (reported tags, operator labels and group, version).
pub fn facts(r: &DeviceRecord) -> rollout::DeviceFacts<'_> {
    rollout::DeviceFacts {
        compatible: &r.compatible,
        tags: &r.tags,
        current_version: r.state.current_version.as_ref(),
        labels: &r.labels.tags,
        group: r.labels.group.as_deref(),
    }
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
        labels: r.labels.tags.clone(),
        group: r.labels.group.clone(),
        waiting: r.state.waiting.clone(),
        security_floor: r.state.security_floor.clone(),
        freeze_alarm: r.state.freeze_alarm.clone(),
        maintenance_score: r.state.maintenance_score,
        health: None,
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
