//! The server's state: configuration, secrets, the store, and the in-memory working set that answers polls
//! without touching the database (token map, devices, bundles, rollouts with their members).
//!
//! Locking: `fleet` is an `RwLock` taken for reading by polls (each device has its own `Mutex`, so polls of
//! different devices do not contend) and for writing only to apply committed changes. Every change that must be
//! committed synchronously (enrollment, report, rollout changes, deletion) runs under the async `writer` mutex:
//! decide under a read lock, commit through the store, then apply to memory. Polls mark devices dirty; the
//! write-behind task ([`AppState::flush`]) persists them once a second in one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use ota_keys::TrustRoot;
use ota_protocol::admin::{
    BundleInfo, DeviceDeletedEvent, DeviceInfo, Event, LastStatus, ReportEvent, ReportRecord,
    RolloutCounts, RolloutDetail, RolloutDevice, RolloutInfo, RolloutState,
};
use ota_protocol::device::{
    PollRequest, PollResponse, ReportRequest, ReportResponse, ReportStatus, UpdateOffer,
};
use tokio::sync::{broadcast, watch};

use crate::auth::{self, Caller};
use crate::error::{ApiError, StoreError};
use crate::metrics::Metrics;
use crate::rollout::{self, DeviceFacts, Membership, Plan, Transition};
use crate::store::{BundleRecord, DeviceRecord, MemberRecord, ReportCommit, RolloutRecord, Store};

/// Runtime settings of a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory (database, blobs, tmp).
    pub data_dir: PathBuf,
    /// Trust root uploads are checked against.
    pub trust: TrustRoot,
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// If non-empty, only bundles with one of these `compatible` strings are accepted.
    pub allowed_compatible: Vec<String>,
    /// Suggested poll interval.
    pub poll_interval_secs: u32,
    /// Suggested poll jitter.
    pub poll_jitter_secs: u32,
    /// Polls faster than this get 429 (zero: no limit).
    pub min_poll_interval: Duration,
    /// Concurrent device requests above this get 503.
    pub max_inflight_device_requests: usize,
    /// Largest JSON body.
    pub max_json_bytes: usize,
}

/// Secrets the server checks callers against.
#[derive(Clone)]
pub struct Secrets {
    /// SHA-256 of each admin token.
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// The fleet enrollment secret.
    pub enrollment_secret: String,
    /// HMAC key device tokens are derived with.
    pub token_key: Vec<u8>,
}

/// One enrolled device in memory.
#[derive(Debug)]
pub struct Device {
    /// Stored record (identity + state).
    pub record: DeviceRecord,
    last_poll: Option<Instant>,
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
    index: HashMap<String, usize>,
}

impl Rollout {
    fn new(record: RolloutRecord, bundle: BundleRecord, members: Vec<MemberRecord>) -> Self {
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

    fn plan(&self) -> Plan<'_> {
        Plan {
            state: self.record.state,
            stages: &self.record.stages,
            current_stage: self.record.current_stage,
            tags: &self.record.tags,
            compatible: &self.bundle.compatible,
            version: &self.bundle.version,
            failure_threshold: self.record.failure_threshold,
            bad_baseline: self.record.bad_baseline,
        }
    }

    fn membership(&self, device_id: &str) -> Option<Membership> {
        self.index.get(device_id).map(|&i| Membership {
            rank: self.members[i].rank,
            status: self.members[i].status,
        })
    }

    fn statuses(&self) -> Vec<Option<ReportStatus>> {
        self.members.iter().map(|m| m.status).collect()
    }

    /// Applies automatic transitions to `record` given member statuses; returns whether anything changed.
    fn settle(
        record: &mut RolloutRecord,
        bundle: &BundleRecord,
        statuses: &[Option<ReportStatus>],
        now: u64,
    ) -> bool {
        let mut changed = false;
        loop {
            let plan = Plan {
                state: record.state,
                stages: &record.stages,
                current_stage: record.current_stage,
                tags: &record.tags,
                compatible: &bundle.compatible,
                version: &bundle.version,
                failure_threshold: record.failure_threshold,
                bad_baseline: record.bad_baseline,
            };
            match rollout::evaluate(&plan, statuses) {
                None => break,
                Some(Transition::Advance(stage)) => record.current_stage = stage,
                Some(Transition::Complete) => record.state = RolloutState::Completed,
                Some(Transition::AutoPause(reason)) => {
                    tracing::warn!(rollout = record.rollout_id, "{reason}");
                    record.state = RolloutState::Paused;
                    record.pause_reason = Some(reason);
                }
            }
            changed = true;
            record.updated_at = now;
        }
        changed
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
        }
    }
}

struct TokenEntry {
    device_id: String,
    hash: [u8; 32],
}

/// The in-memory working set.
#[derive(Default)]
struct Fleet {
    devices: HashMap<String, Arc<Mutex<Device>>>,
    tokens: HashMap<String, TokenEntry>,
    bundles: BTreeMap<String, BundleRecord>,
    rollouts: BTreeMap<u64, Rollout>,
}

/// Everything a request handler needs.
pub struct AppState {
    /// Settings.
    pub config: Config,
    secrets: Secrets,
    /// Persistent storage.
    pub store: Arc<dyn Store>,
    fleet: RwLock<Fleet>,
    dirty: Mutex<HashSet<String>>,
    writer: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Arc<Event>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    inflight: AtomicUsize,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Writers only apply already-committed, self-contained changes; a panic mid-apply is not expected, and the
    // data stays usable if one happens.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a store call on the blocking pool.
pub async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| ApiError::internal("running a database task", e))?
        .map_err(ApiError::from)
}

/// Holds one slot of the device-request concurrency limit.
pub struct InflightGuard<'a>(&'a AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Builds the state from a loaded store.
    pub fn new(
        config: Config,
        secrets: Secrets,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, StoreError> {
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
        let (events, _) = broadcast::channel(1024);
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(AppState {
            config,
            secrets,
            store,
            fleet: RwLock::new(fleet),
            dirty: Mutex::new(HashSet::new()),
            writer: tokio::sync::Mutex::new(()),
            events,
            metrics: Metrics::default(),
            shutdown,
            inflight: AtomicUsize::new(0),
        }))
    }

    /// Where blobs live.
    pub fn blob_dir(&self) -> PathBuf {
        self.config.data_dir.join("blobs")
    }

    /// Where uploads are staged.
    pub fn tmp_dir(&self) -> PathBuf {
        self.config.data_dir.join("tmp")
    }

    /// Subscribes to events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived responses (event streams) to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(Arc::new(event));
    }

    /// Takes a slot of the device-request limit, or says to back off.
    pub fn enter_device_request(&self) -> Result<InflightGuard<'_>, ApiError> {
        let now = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = InflightGuard(&self.inflight);
        if now > self.config.max_inflight_device_requests {
            self.metrics.backoff_503.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::back_off(
                StatusCode::SERVICE_UNAVAILABLE,
                u64::from(self.config.poll_jitter_secs.max(1)),
                "server busy; retry after the Retry-After delay",
            ));
        }
        Ok(guard)
    }

    /// Identifies the caller of a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let hash = auth::hash_token(token);
        if let Some(token_id) = auth::device_token_id(token) {
            let fleet = read(&self.fleet);
            if let Some(entry) = fleet.tokens.get(token_id) {
                if auth::hashes_equal(&entry.hash, &hash) {
                    return Ok(Caller::Device(entry.device_id.clone()));
                }
            }
        }
        // Every admin hash is compared (no early exit), each in constant time.
        let mut ok = false;
        for admin in &self.secrets.admin_token_hashes {
            ok |= auth::hashes_equal(admin, &hash);
        }
        if ok {
            return Ok(Caller::Admin);
        }
        Err(ApiError::unauthorized("unknown or revoked token"))
    }

    /// Number of enrolled devices.
    pub fn device_count(&self) -> usize {
        read(&self.fleet).devices.len()
    }

    /// Number of bundles.
    pub fn bundle_count(&self) -> usize {
        read(&self.fleet).bundles.len()
    }

    /// Rollouts per state.
    pub fn rollout_states(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> =
            RolloutState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for r in read(&self.fleet).rollouts.values() {
            *out.entry(r.record.state.as_str()).or_default() += 1;
        }
        out
    }

    /// Devices waiting for the write-behind flush.
    pub fn pending_writes(&self) -> usize {
        lock(&self.dirty).len()
    }

    // ----- enrollment -------------------------------------------------------------------------------------

    /// Enrolls a device (idempotent per `request_id`).
    pub async fn enroll(
        &self,
        req: ota_protocol::device::EnrollRequest,
    ) -> Result<ota_protocol::device::EnrollResponse, ApiError> {
        if !auth::secrets_equal(&req.enrollment_secret, &self.secrets.enrollment_secret) {
            return Err(ApiError::unauthorized("wrong enrollment secret"));
        }
        ota_protocol::validate_device_id(&req.device_id).map_err(ApiError::bad_request)?;
        ota_bundle_format::manifest::validate_compatible(&req.compatible)
            .map_err(|e| ApiError::bad_request(format!("compatible: {e}")))?;
        if req.request_id.len() < 8 || req.request_id.len() > 128 {
            return Err(ApiError::bad_request(
                "request_id must be 8-128 characters (a random string)",
            ));
        }
        validate_tags(&req.tags)?;
        let token =
            auth::derive_device_token(&self.secrets.token_key, &req.device_id, &req.request_id);
        let token_hash = auth::hash_token(&token);
        let token_id = auth::device_token_id(&token)
            .unwrap_or_default()
            .to_string();

        let _writer = self.writer.lock().await;
        let existing = read(&self.fleet).devices.get(&req.device_id).map(|d| {
            let d = lock(d);
            (d.record.token_hash, d.record.clone())
        });
        let record = match existing {
            Some((hash, _)) if !auth::hashes_equal(&hash, &token_hash) => {
                return Err(ApiError::conflict(format!(
                    "device '{}' is already enrolled; to enroll it again, an operator must first \
                     DELETE /api/devices/{}",
                    req.device_id, req.device_id
                )));
            }
            Some((_, mut record)) => {
                record.compatible = req.compatible.clone();
                record.tags = req.tags.clone();
                record
            }
            None => DeviceRecord {
                device_id: req.device_id.clone(),
                compatible: req.compatible.clone(),
                tags: req.tags.clone(),
                token_id: token_id.clone(),
                token_hash,
                enrolled_at: unix_now(),
                state: Default::default(),
            },
        };
        let stored = record.clone();
        blocking(&self.store, move |s| s.upsert_device(&stored)).await?;
        let info = {
            let mut fleet = write(&self.fleet);
            fleet.tokens.insert(
                token_id,
                TokenEntry {
                    device_id: record.device_id.clone(),
                    hash: token_hash,
                },
            );
            let slot = fleet
                .devices
                .entry(record.device_id.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Device {
                        record: record.clone(),
                        last_poll: None,
                    }))
                });
            let mut dev = lock(slot);
            dev.record.compatible = record.compatible.clone();
            dev.record.tags = record.tags.clone();
            device_info(&dev.record)
        };
        self.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::DeviceUpdated(Box::new(info)));
        Ok(ota_protocol::device::EnrollResponse {
            device_id: req.device_id,
            token,
            poll_interval_secs: self.config.poll_interval_secs,
            poll_jitter_secs: self.config.poll_jitter_secs,
        })
    }

    /// Forgets a device and revokes its token.
    pub async fn delete_device(&self, device_id: &str) -> Result<(), ApiError> {
        let _writer = self.writer.lock().await;
        let id = device_id.to_string();
        if !blocking(&self.store, move |s| s.delete_device(&id)).await? {
            return Err(ApiError::not_found(format!("no device '{device_id}'")));
        }
        {
            let mut fleet = write(&self.fleet);
            if let Some(dev) = fleet.devices.remove(device_id) {
                let token_id = lock(&dev).record.token_id.clone();
                fleet.tokens.remove(&token_id);
            }
        }
        lock(&self.dirty).remove(device_id);
        self.emit(Event::DeviceDeleted(DeviceDeletedEvent {
            device_id: device_id.to_string(),
        }));
        Ok(())
    }

    // ----- polls ------------------------------------------------------------------------------------------

    /// Answers a poll from memory; the device state is persisted by the next write-behind flush.
    pub fn poll(&self, device_id: &str, req: PollRequest) -> Result<PollResponse, ApiError> {
        self.metrics.polls.fetch_add(1, Ordering::Relaxed);
        let fleet = read(&self.fleet);
        let slot = fleet
            .devices
            .get(device_id)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        let mut dev = lock(slot);
        let now_instant = Instant::now();
        if let Some(last) = dev.last_poll {
            let min = self.config.min_poll_interval;
            if !min.is_zero() && now_instant.duration_since(last) < min {
                self.metrics.backoff_429.fetch_add(1, Ordering::Relaxed);
                let wait = (min - now_instant.duration_since(last)).as_secs().max(1);
                return Err(ApiError::back_off(
                    StatusCode::TOO_MANY_REQUESTS,
                    wait,
                    format!(
                        "polling too fast; poll at most every {} ms",
                        min.as_millis()
                    ),
                ));
            }
        }
        dev.last_poll = Some(now_instant);
        let rec = &mut dev.record;
        let changed = rec.compatible != req.compatible
            || rec.state.current_version != req.current_version
            || rec.state.booted_slot != req.booted_slot
            || rec.state.slots != req.slots
            || rec.state.last_seen.is_none();
        rec.compatible = req.compatible;
        rec.state.current_version = req.current_version;
        rec.state.booted_slot = req.booted_slot;
        rec.state.slots = req.slots;
        rec.state.telemetry = Some(req.telemetry);
        rec.state.last_seen = Some(unix_now());

        let facts = DeviceFacts {
            compatible: &rec.compatible,
            tags: &rec.tags,
            current_version: rec.state.current_version.as_ref(),
        };
        let mut update = None;
        for r in fleet.rollouts.values().rev() {
            if !matches!(
                r.record.state,
                RolloutState::Active | RolloutState::Completed
            ) {
                continue;
            }
            let membership = r.membership(device_id);
            if membership.is_none() {
                continue;
            }
            if rollout::offer(&r.plan(), r.members.len() as u64, membership, &facts).is_ok() {
                update = Some(UpdateOffer {
                    rollout_id: r.record.rollout_id,
                    bundle_id: r.bundle.bundle_id.clone(),
                    version: r.bundle.version.clone(),
                    compatible: r.bundle.compatible.clone(),
                    manifest_digest: r.bundle.manifest_digest.clone(),
                    size: r.bundle.size,
                    download_url: ota_protocol::paths::bundle_download(&r.bundle.bundle_id),
                });
                break;
            }
        }
        let info = changed.then(|| device_info(&dev.record));
        drop(dev);
        drop(fleet);
        lock(&self.dirty).insert(device_id.to_string());
        if update.is_some() {
            self.metrics.offers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(info) = info {
            self.emit(Event::DeviceUpdated(Box::new(info)));
        }
        Ok(PollResponse {
            poll_interval_secs: self.config.poll_interval_secs,
            poll_jitter_secs: self.config.poll_jitter_secs,
            update,
        })
    }

    /// Persists the devices polled since the last flush, in one transaction.
    pub async fn flush(&self) -> Result<usize, ApiError> {
        let ids: Vec<String> = std::mem::take(&mut *lock(&self.dirty))
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let batch: Vec<DeviceRecord> = {
            let fleet = read(&self.fleet);
            ids.iter()
                .filter_map(|id| fleet.devices.get(id).map(|d| lock(d).record.clone()))
                .collect()
        };
        let count = batch.len();
        if let Err(err) = blocking(&self.store, move |s| s.save_device_states(&batch)).await {
            // Keep them dirty so the next flush retries.
            lock(&self.dirty).extend(ids);
            return Err(err);
        }
        self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(count)
    }

    // ----- reports ----------------------------------------------------------------------------------------

    /// Commits a report and its effects on the rollout.
    pub async fn report(
        &self,
        device_id: &str,
        req: ReportRequest,
    ) -> Result<ReportResponse, ApiError> {
        req.validate().map_err(ApiError::unprocessable)?;
        let _writer = self.writer.lock().await;
        let now = unix_now();
        let record = ReportRecord {
            report_id: req.report_id.clone(),
            rollout_id: req.rollout_id,
            version: req.version.clone(),
            manifest_digest: req.manifest_digest.clone(),
            status: req.status,
            progress_percent: req.progress_percent,
            error: req.error.clone(),
            log_tail: req.log_tail.clone(),
            reason: req.reason.clone(),
            received_at: now,
        };
        let last_status = LastStatus {
            status: req.status,
            rollout_id: req.rollout_id,
            version: req.version.clone(),
            at: now,
            error: req.error.clone(),
            reason: req.reason.clone(),
        };
        // Decide under the read lock.
        let (member, new_rollout) = {
            let fleet = read(&self.fleet);
            if !fleet.devices.contains_key(device_id) {
                return Err(ApiError::unauthorized("unknown or revoked token"));
            }
            match req.rollout_id {
                None => (None, None),
                Some(id) => {
                    let r = fleet
                        .rollouts
                        .get(&id)
                        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
                    let &i = r.index.get(device_id).ok_or_else(|| {
                        ApiError::forbidden(format!(
                            "device '{device_id}' is not a target of rollout {id}"
                        ))
                    })?;
                    let old = r.members[i].status;
                    // A finished device may only move to another final status (a success that later rolls
                    // back); late progress reports do not reopen it.
                    let new = if old.is_some_and(ReportStatus::is_terminal)
                        && !req.status.is_terminal()
                    {
                        old
                    } else {
                        Some(req.status)
                    };
                    let mut statuses = r.statuses();
                    statuses[i] = new;
                    let mut rec = r.record.clone();
                    let changed = Rollout::settle(&mut rec, &r.bundle, &statuses, now);
                    (new.map(|s| (id, s)), changed.then_some(rec))
                }
            }
        };
        let commit_report = record.clone();
        let commit_last = last_status.clone();
        let commit_rollout = new_rollout.clone();
        let id = device_id.to_string();
        let fresh = blocking(&self.store, move |s| {
            s.commit_report(&ReportCommit {
                device_id: &id,
                report: &commit_report,
                last_status: &commit_last,
                member,
                rollout: commit_rollout.as_ref(),
            })
        })
        .await?;
        if !fresh {
            return Ok(ReportResponse {
                accepted: true,
                duplicate: true,
            });
        }
        self.metrics.report(req.status);
        // Apply.
        let (device, rollout_info) = {
            let mut fleet = write(&self.fleet);
            let mut rollout_info = None;
            if let Some((rid, status)) = member {
                if let Some(r) = fleet.rollouts.get_mut(&rid) {
                    if let Some(&i) = r.index.get(device_id) {
                        r.members[i].status = Some(status);
                        r.members[i].updated_at = now;
                    }
                    if let Some(rec) = new_rollout {
                        r.record = rec;
                    }
                    rollout_info = Some(r.info());
                }
            }
            let device = fleet.devices.get(device_id).map(|d| {
                let mut d = lock(d);
                d.record.state.last_status = Some(last_status);
                d.record.state.last_seen = Some(now);
                device_info(&d.record)
            });
            (device, rollout_info)
        };
        self.emit(Event::Report(Box::new(ReportEvent {
            device_id: device_id.to_string(),
            report: record,
        })));
        if let Some(device) = device {
            self.emit(Event::DeviceUpdated(Box::new(device)));
        }
        if let Some(info) = rollout_info {
            self.emit(Event::RolloutUpdated(Box::new(info)));
        }
        Ok(ReportResponse {
            accepted: true,
            duplicate: false,
        })
    }

    // ----- bundles ----------------------------------------------------------------------------------------

    /// A bundle by id.
    pub fn bundle(&self, bundle_id: &str) -> Option<BundleRecord> {
        read(&self.fleet).bundles.get(bundle_id).cloned()
    }

    /// All bundles, newest first.
    pub fn bundles(&self) -> Vec<BundleInfo> {
        let mut out: Vec<BundleInfo> = read(&self.fleet)
            .bundles
            .values()
            .map(bundle_info)
            .collect();
        out.sort_by(|a, b| {
            b.uploaded_at
                .cmp(&a.uploaded_at)
                .then(a.bundle_id.cmp(&b.bundle_id))
        });
        out
    }

    /// Makes a stored bundle visible.
    pub fn add_bundle(&self, bundle: BundleRecord) {
        write(&self.fleet)
            .bundles
            .insert(bundle.bundle_id.clone(), bundle);
    }

    /// Whether a caller may download a bundle.
    pub fn may_download(&self, caller: &Caller, bundle_id: &str) -> bool {
        match caller {
            Caller::Admin => true,
            Caller::Device(id) => read(&self.fleet).rollouts.values().any(|r| {
                r.bundle.bundle_id == bundle_id
                    && rollout::may_download(&r.plan(), r.members.len() as u64, r.membership(id))
            }),
        }
    }

    // ----- devices ----------------------------------------------------------------------------------------

    /// Inventory, sorted by id.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let fleet = read(&self.fleet);
        let mut out: Vec<DeviceInfo> = fleet
            .devices
            .values()
            .map(|d| device_info(&lock(d).record))
            .collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }

    /// One device.
    pub fn device(&self, device_id: &str) -> Option<DeviceInfo> {
        read(&self.fleet)
            .devices
            .get(device_id)
            .map(|d| device_info(&lock(d).record))
    }

    // ----- rollouts ---------------------------------------------------------------------------------------

    /// All rollouts, newest first.
    pub fn rollouts(&self) -> Vec<RolloutInfo> {
        read(&self.fleet)
            .rollouts
            .values()
            .rev()
            .map(Rollout::info)
            .collect()
    }

    /// One rollout with its devices.
    pub fn rollout(&self, id: u64) -> Option<RolloutDetail> {
        read(&self.fleet).rollouts.get(&id).map(|r| RolloutDetail {
            rollout: r.info(),
            devices: r
                .members
                .iter()
                .map(|m| RolloutDevice {
                    device_id: m.device_id.clone(),
                    rank: m.rank,
                    status: m.status.map_or("pending", ReportStatus::as_str).to_string(),
                    updated_at: m.updated_at,
                })
                .collect(),
        })
    }

    /// Creates a rollout over the devices that match now.
    pub async fn create_rollout(
        &self,
        req: ota_protocol::admin::CreateRolloutRequest,
    ) -> Result<RolloutInfo, ApiError> {
        let stages = req
            .stages
            .unwrap_or_else(|| rollout::DEFAULT_STAGES.to_vec());
        rollout::validate_stages(&stages).map_err(ApiError::unprocessable)?;
        let threshold = req
            .failure_threshold
            .unwrap_or(rollout::DEFAULT_FAILURE_THRESHOLD);
        rollout::validate_threshold(threshold).map_err(ApiError::unprocessable)?;
        validate_tags(&req.tags)?;
        let _writer = self.writer.lock().await;
        let now = unix_now();
        let bundle = self.bundle(&req.bundle_id).ok_or_else(|| {
            ApiError::unprocessable(format!("no bundle '{}'; publish it first", req.bundle_id))
        })?;
        let mut record = RolloutRecord {
            rollout_id: 0,
            name: req
                .name
                .unwrap_or_else(|| format!("{} {}", bundle.compatible, bundle.version)),
            bundle_id: bundle.bundle_id.clone(),
            tags: req.tags,
            stages,
            current_stage: 0,
            state: RolloutState::Active,
            pause_reason: None,
            failure_threshold: threshold,
            bad_baseline: 0,
            created_at: now,
            updated_at: now,
        };
        let targets = {
            let fleet = read(&self.fleet);
            let plan = Plan {
                state: record.state,
                stages: &record.stages,
                current_stage: 0,
                tags: &record.tags,
                compatible: &bundle.compatible,
                version: &bundle.version,
                failure_threshold: threshold,
                bad_baseline: 0,
            };
            let ids = fleet
                .devices
                .values()
                .filter_map(|d| {
                    let d = lock(d);
                    let facts = DeviceFacts {
                        compatible: &d.record.compatible,
                        tags: &d.record.tags,
                        current_version: d.record.state.current_version.as_ref(),
                    };
                    rollout::selects(&plan, &facts).then(|| d.record.device_id.clone())
                })
                .collect();
            let seed = format!("{}:{}:{}", bundle.bundle_id, now, fleet.rollouts.len());
            rollout::order_targets(&seed, ids)
        };
        let members: Vec<MemberRecord> = targets
            .into_iter()
            .enumerate()
            .map(|(rank, device_id)| MemberRecord {
                device_id,
                rank: rank as u64,
                status: None,
                updated_at: now,
            })
            .collect();
        let statuses = vec![None; members.len()];
        Rollout::settle(&mut record, &bundle, &statuses, now);
        let (rec, mem) = (record.clone(), members.clone());
        let id = blocking(&self.store, move |s| s.create_rollout(&rec, &mem)).await?;
        record.rollout_id = id;
        let rollout = Rollout::new(record, bundle, members);
        let info = rollout.info();
        write(&self.fleet).rollouts.insert(id, rollout);
        self.emit(Event::RolloutUpdated(Box::new(info.clone())));
        Ok(info)
    }

    /// Pause, resume or abort by hand.
    pub async fn control_rollout(
        &self,
        id: u64,
        action: RolloutAction,
    ) -> Result<RolloutInfo, ApiError> {
        let _writer = self.writer.lock().await;
        let now = unix_now();
        let mut record = {
            let fleet = read(&self.fleet);
            let r = fleet
                .rollouts
                .get(&id)
                .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
            let mut rec = r.record.clone();
            use RolloutState::*;
            match (action, rec.state) {
                (RolloutAction::Pause, Paused)
                | (RolloutAction::Resume, Active)
                | (RolloutAction::Abort, Aborted) => {
                    return Ok(r.info());
                }
                (RolloutAction::Pause, Active) => {
                    rec.state = Paused;
                    rec.pause_reason = Some("paused by an operator".into());
                }
                (RolloutAction::Resume, Paused) => {
                    rec.state = Active;
                    rec.pause_reason = None;
                    rec.bad_baseline = rollout::tally(&r.plan(), &r.statuses()).bad;
                    rec.updated_at = now;
                    Rollout::settle(&mut rec, &r.bundle, &r.statuses(), now);
                }
                (RolloutAction::Abort, _) => {
                    rec.state = Aborted;
                    rec.pause_reason = None;
                }
                (action, state) => {
                    return Err(ApiError::conflict(format!(
                        "cannot {} rollout {id}: it is {}",
                        action.as_str(),
                        state.as_str()
                    )));
                }
            }
            rec
        };
        record.updated_at = now;
        let rec = record.clone();
        blocking(&self.store, move |s| s.update_rollout(&rec)).await?;
        let info = {
            let mut fleet = write(&self.fleet);
            let r = fleet
                .rollouts
                .get_mut(&id)
                .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
            r.record = record;
            r.info()
        };
        self.emit(Event::RolloutUpdated(Box::new(info.clone())));
        Ok(info)
    }
}

/// A manual rollout action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Stop offering.
    Pause,
    /// Offer again (acknowledging failures so far).
    Resume,
    /// Stop for good.
    Abort,
}

impl RolloutAction {
    /// Verb.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > 64 {
        return Err(ApiError::bad_request("at most 64 tags"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 64 || v.len() > 256 || k.contains('=') {
            return Err(ApiError::bad_request(format!(
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
