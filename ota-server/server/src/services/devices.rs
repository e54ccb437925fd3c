//! Devices and their telemetry: enrollment, authentication, polls (answered from memory, persisted
//! write-behind), status reports and the inventory.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ota_bundle_format::manifest::validate_compatible;
use ota_protocol::admin::{
    DeviceDeletedEvent, DeviceInfo, Event, FleetCounts, LastStatus, ReportEvent, ReportRecord,
    RolloutState,
};
use ota_protocol::device::{
    EnrollRequest, EnrollResponse, PollRequest, PollResponse, ReportRequest, ReportResponse,
    UpdateOffer,
};

use crate::admission;
use crate::cluster::Subject;
use crate::device_query::{self, DeviceQuery};
use crate::error::ServiceError;
use crate::fleet::{facts, lock, read, settle, unix_now, write, Device, Shared, TokenEntry};
use crate::rollout;
use crate::schedule;
use crate::services::replicas::retrying;
use crate::store::{DeviceRecord, ReportCommit};
use crate::tokens::{self, Caller};

const UNKNOWN_TOKEN: &str = "unknown or revoked token";

/// Enrollment, authentication, polls, reports, inventory.
#[derive(Clone)]
pub struct DeviceService(pub(crate) Arc<Shared>);

impl DeviceService {
    /// Identifies the caller of a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        let hash = tokens::hash_token(token);
        if let Some(token_id) = tokens::device_token_id(token) {
            let fleet = read(&self.0.fleet);
            if let Some(entry) = fleet.tokens.get(token_id) {
                if tokens::hashes_equal(&entry.hash, &hash) {
                    if !admission::token_live(entry.expires_at, unix_now()) {
                        return Err(ServiceError::Unauthenticated(
                            "device token expired; the robot renews it by proving its key".into(),
                        ));
                    }
                    return Ok(Caller::Device(entry.device_id.clone()));
                }
            }
        }
        if tokens::is_admin(&self.0.secrets.admin_token_hashes, &hash) {
            return Ok(Caller::bootstrap());
        }
        Err(ServiceError::Unauthenticated(UNKNOWN_TOKEN.into()))
    }

    /// Number of enrolled devices.
    pub fn count(&self) -> usize {
        read(&self.0.fleet).devices.len()
    }

    /// Devices waiting for the write-behind flush.
    pub fn pending_writes(&self) -> usize {
        lock(&self.0.dirty).len()
    }

    /// Inventory, sorted by id.
    pub fn list(&self) -> Vec<DeviceInfo> {
        let fleet = read(&self.0.fleet);
        let mut out: Vec<DeviceInfo> = fleet.devices.values().map(|d| lock(d).info()).collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }

    /// The inventory filtered, sorted and paged ([`crate::device_query`]): the page (the whole list without
    /// one), how many matched, and the counts over the whole fleet.
    pub fn query(
        &self,
        q: &DeviceQuery,
    ) -> Result<(Vec<DeviceInfo>, u64, FleetCounts), ServiceError> {
        let (all, members) = {
            let fleet = read(&self.0.fleet);
            let members = match q.rollout {
                None => None,
                Some(id) => Some(
                    fleet
                        .rollouts
                        .get(&id)
                        .ok_or_else(|| ServiceError::NotFound(format!("no rollout {id}")))?
                        .index
                        .keys()
                        .cloned()
                        .collect::<HashSet<String>>(),
                ),
            };
            let all: Vec<DeviceInfo> = fleet.devices.values().map(|d| lock(d).info()).collect();
            (all, members)
        };
        let counts = device_query::counts(&all);
        let (page, total) = device_query::select(all, q, members.as_ref());
        Ok((page, total, counts))
    }

    /// One device.
    pub fn get(&self, device_id: &str) -> Result<DeviceInfo, ServiceError> {
        read(&self.0.fleet)
            .devices
            .get(device_id)
            .map(|d| lock(d).info())
            .ok_or_else(|| ServiceError::NotFound(format!("no device '{device_id}'")))
    }

    /// A device's latest reports, newest first.
    pub async fn reports(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<ReportRecord>, ServiceError> {
        let id = device_id.to_string();
        self.0.blocking(move |s| s.reports(&id, limit)).await
    }

    /// Enrolls a device (idempotent per `request_id`). A robot that presents a key proves it and gets a token
    /// only when admitted ([`DeviceService::admit_key`]); one without a key (an older robot) only under
    /// `admission = "auto"`.
    pub async fn enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, ServiceError> {
        let shared = &self.0;
        let secret_ok =
            tokens::secrets_equal(&req.enrollment_secret, &shared.secrets.enrollment_secret);
        if req.public_key.is_none() && !secret_ok {
            return Err(ServiceError::Unauthenticated(
                "wrong enrollment secret".into(),
            ));
        }
        ota_protocol::validate::enroll(&req, validate_compatible).map_err(ServiceError::Invalid)?;
        let _writer = shared.writer.lock().await;
        let expires_at = match &req.public_key {
            Some(key) => Some(self.admit_key(&req, key, secret_ok).await?),
            None => {
                self.keyless_allowed(&req.device_id).await?;
                None
            }
        };
        self.issue(req, expires_at).await
    }

    /// Derives the token of an enrollment and records it (the writer lock held). A robot that proved its key
    /// (`expires_at` set) replaces its older token; a keyless one keeps its first.
    async fn issue(
        &self,
        req: EnrollRequest,
        expires_at: Option<u64>,
    ) -> Result<EnrollResponse, ServiceError> {
        let shared = &self.0;
        let token =
            tokens::derive_device_token(&shared.secrets.token_key, &req.device_id, &req.request_id);
        let token_hash = tokens::hash_token(&token);
        let token_id = tokens::device_token_id(&token)
            .unwrap_or_default()
            .to_string();
        let renews = expires_at.is_some();
        let existing = read(&shared.fleet)
            .devices
            .get(&req.device_id)
            .map(|d| lock(d).record.clone());
        let old_token_id = existing.as_ref().map(|r| r.token_id.clone());
        let record = match existing {
            Some(r) if !renews && !tokens::hashes_equal(&r.token_hash, &token_hash) => {
                return Err(ServiceError::Conflict(format!(
                    "device '{}' is already enrolled; to enroll it again, an operator must first \
                     DELETE /api/devices/{}",
                    req.device_id, req.device_id
                )));
            }
            Some(mut record) => {
                record.compatible = req.compatible.clone();
                record.tags = req.tags.clone();
                record.token_id = token_id.clone();
                record.token_hash = token_hash;
                record.token_expires_at = expires_at;
                record
            }
            None => DeviceRecord {
                device_id: req.device_id.clone(),
                compatible: req.compatible.clone(),
                tags: req.tags.clone(),
                token_id: token_id.clone(),
                token_hash,
                token_expires_at: expires_at,
                enrolled_at: unix_now(),
                labels: Default::default(),
                state: Default::default(),
            },
        };
        let stored = record.clone();
        shared.blocking(move |s| s.upsert_device(&stored)).await?;
        let info = {
            let mut fleet = write(&shared.fleet);
            if let Some(old) = old_token_id.filter(|old| *old != token_id) {
                fleet.tokens.remove(&old);
            }
            fleet.tokens.insert(
                token_id,
                TokenEntry {
                    device_id: record.device_id.clone(),
                    hash: token_hash,
                    expires_at,
                },
            );
            let slot = fleet
                .devices
                .entry(record.device_id.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Device {
                        record: record.clone(),
                        last_poll: None,
                        reports: Default::default(),
                        committed: None,
                        outcomes: Default::default(),
                    }))
                });
            let mut dev = lock(slot);
            dev.record.compatible = record.compatible.clone();
            dev.record.tags = record.tags.clone();
            dev.record.token_id = record.token_id.clone();
            dev.record.token_hash = token_hash;
            dev.record.token_expires_at = expires_at;
            dev.info()
        };
        if renews {
            // The row was written whole: the next flush puts back what polls said since the last one.
            lock(&shared.dirty).insert(req.device_id.clone());
        }
        lock(&shared.joins).insert(req.device_id.clone());
        shared.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
        shared.emit(Event::DeviceUpdated(Box::new(info)));
        shared.announce(Subject::Device(req.device_id.clone()), true);
        Ok(EnrollResponse {
            device_id: req.device_id,
            token,
            poll_interval_secs: shared.config.poll_interval_secs,
            poll_jitter_secs: shared.config.poll_jitter_secs,
        })
    }

    /// Forgets a device and revokes its token.
    pub async fn delete(&self, device_id: &str) -> Result<(), ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let id = device_id.to_string();
        if !shared.blocking(move |s| s.delete_device(&id)).await? {
            return Err(ServiceError::NotFound(format!("no device '{device_id}'")));
        }
        shared.forget_device(device_id);
        shared.emit(Event::DeviceDeleted(DeviceDeletedEvent {
            device_id: device_id.to_string(),
        }));
        shared.announce(Subject::DeviceDeleted(device_id.to_string()), true);
        Ok(())
    }

    /// Answers a poll from memory; the device state is persisted by the next write-behind flush.
    pub fn poll(&self, device_id: &str, req: PollRequest) -> Result<PollResponse, ServiceError> {
        let shared = &self.0;
        shared.metrics.polls.fetch_add(1, Ordering::Relaxed);
        ota_protocol::validate::poll(&req, validate_compatible).map_err(ServiceError::Invalid)?;
        crate::limits::telemetry(&req.telemetry)?;
        let fleet = read(&shared.fleet);
        let slot = fleet
            .devices
            .get(device_id)
            .ok_or_else(|| ServiceError::Unauthenticated(UNKNOWN_TOKEN.into()))?;
        let mut dev = lock(slot);
        let now_instant = Instant::now();
        if let Some(last) = dev.last_poll {
            let min = shared.config.min_poll_interval;
            if !min.is_zero() && now_instant.duration_since(last) < min {
                shared.metrics.backoff_429.fetch_add(1, Ordering::Relaxed);
                let wait = (min - now_instant.duration_since(last)).as_secs().max(1);
                return Err(ServiceError::TooFast {
                    retry_after_secs: wait,
                    message: format!(
                        "polling too fast; poll at most every {} ms",
                        min.as_millis()
                    ),
                });
            }
        }
        dev.last_poll = Some(now_instant);
        dev.committed = None;
        let rec = &mut dev.record;
        let facts_changed =
            rec.compatible != req.compatible || rec.state.current_version != req.current_version;
        let changed = facts_changed
            || rec.state.booted_slot != req.booted_slot
            || rec.state.slots != req.slots
            || rec.state.waiting.as_ref().map(|w| (w.phase, &w.reason))
                != req.waiting.as_ref().map(|w| (w.phase, &w.reason))
            || rec.state.security_floor != req.security_floor
            || rec.state.freeze_alarm.as_ref().map(|a| a.reason)
                != req.freeze_alarm.as_ref().map(|a| a.reason)
            || rec.state.last_seen.is_none()
            || crate::sites::moved(
                rec.state
                    .telemetry
                    .as_ref()
                    .and_then(|t| t.position.as_ref()),
                req.telemetry.position.as_ref(),
            );
        rec.compatible = req.compatible;
        rec.state.current_version = req.current_version;
        rec.state.booted_slot = req.booted_slot;
        rec.state.slots = req.slots;
        rec.state.telemetry = Some(req.telemetry);
        rec.state.waiting = req.waiting;
        rec.state.staged = req.staged;
        rec.state.security_floor = req.security_floor;
        rec.state.freeze_alarm = req.freeze_alarm;
        let now = unix_now();
        rec.state.last_seen = Some(now);

        let facts = facts(rec);
        let group = facts.group.and_then(|g| fleet.groups.get(g));
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
            if rollout::offer(&r.plan_at(now), r.initial(), membership, &facts).is_ok() {
                update = Some(UpdateOffer {
                    rollout_id: r.record.rollout_id,
                    bundle_id: r.bundle.bundle_id.clone(),
                    version: r.bundle.version.clone(),
                    compatible: r.bundle.compatible.clone(),
                    manifest_digest: r.bundle.manifest_digest.clone(),
                    size: r.bundle.size,
                    download_url: ota_protocol::paths::bundle_download(&r.bundle.bundle_id),
                    install_allowed: schedule::install_allowed(
                        r.schedule.as_deref(),
                        group.map(|g| &*g.schedule),
                        now,
                    ),
                    revert: r.record.aim.revert,
                    require_confirmation: r.record.aim.require_confirmation,
                    chunked: r.bundle.images.iter().all(|i| i.payload == "chunked"),
                });
                break;
            }
        }
        let info = changed.then(|| dev.info());
        drop(dev);
        drop(fleet);
        lock(&shared.dirty).insert(device_id.to_string());
        if facts_changed {
            lock(&shared.joins).insert(device_id.to_string());
        }
        if update.is_some() {
            shared.metrics.offers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(info) = info {
            shared.emit(Event::DeviceUpdated(Box::new(info)));
        }
        Ok(PollResponse {
            poll_interval_secs: shared.config.poll_interval_secs,
            poll_jitter_secs: shared.config.poll_jitter_secs,
            update,
            trust_version: crate::services::trust::poll_version(shared),
            // Signed by the API layer, which holds the timestamp key (`AppState::timestamp`).
            timestamp: None,
        })
    }

    /// Persists the devices polled since the last flush, in one transaction.
    pub async fn flush(&self) -> Result<usize, ServiceError> {
        let shared = &self.0;
        let ids: Vec<String> = std::mem::take(&mut *lock(&shared.dirty))
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let batch: Vec<DeviceRecord> = {
            let fleet = read(&shared.fleet);
            ids.iter()
                .filter_map(|id| fleet.devices.get(id).map(|d| lock(d).record.clone()))
                .collect()
        };
        let count = batch.len();
        super::history::observe(shared, &batch);
        if let Err(err) = shared.blocking(move |s| s.save_device_states(&batch)).await {
            // Keep them dirty so the next flush retries.
            lock(&shared.dirty).extend(ids);
            return Err(err);
        }
        shared.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(count)
    }

    /// Commits a report and its effects on the rollout (decided again on the stored rollout if another replica
    /// changed it meanwhile).
    pub async fn report(
        &self,
        device_id: &str,
        req: ReportRequest,
    ) -> Result<ReportResponse, ServiceError> {
        ota_protocol::validate::report(&req).map_err(ServiceError::Rejected)?;
        if let Some(device) = read(&self.0.fleet).devices.get(device_id) {
            lock(device).reports.take(unix_now() * 1000)?;
        }
        retrying(&self.0, || self.report_once(device_id, &req)).await
    }

    async fn report_once(
        &self,
        device_id: &str,
        req: &ReportRequest,
    ) -> Result<ReportResponse, ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
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
            let fleet = read(&shared.fleet);
            if !fleet.devices.contains_key(device_id) {
                return Err(ServiceError::Unauthenticated(UNKNOWN_TOKEN.into()));
            }
            match req.rollout_id {
                None => (None, None),
                Some(id) => {
                    let r = fleet
                        .rollouts
                        .get(&id)
                        .ok_or_else(|| ServiceError::NotFound(format!("no rollout {id}")))?;
                    let &i = r.index.get(device_id).ok_or_else(|| {
                        ServiceError::Forbidden(format!(
                            "device '{device_id}' is not a target of rollout {id}"
                        ))
                    })?;
                    let new = rollout::member_status_after(r.members[i].status, req.status);
                    let mut statuses = r.statuses();
                    statuses[i] = new;
                    let mut rec = r.record.clone();
                    settle(&mut rec, &r.bundle, &r.joined, &statuses, now);
                    // Written even unchanged: the revision moves with every member change, so a replica
                    // deciding on an older tally loses its compare-and-set.
                    let member = new.map(|s| (id, s));
                    (member, member.map(|_| rec))
                }
            }
        };
        let commit_report = record.clone();
        let commit_last = last_status.clone();
        let commit_rollout = new_rollout.clone();
        let id = device_id.to_string();
        let fresh = shared
            .blocking(move |s| {
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
        shared.metrics.report(req.status);
        let new_rollout = new_rollout.map(|mut rec| {
            rec.revision += 1;
            rec
        });
        // Apply.
        let mut joined = false;
        let (device, rollout_info) = {
            let mut fleet = write(&shared.fleet);
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
                d.outcomes.push(req.status);
                d.record.state.last_seen = Some(now);
                if let Some(v) = rollout::runs_after_report(req.status, req.version.as_ref()) {
                    if d.facts().current_version != Some(v) {
                        // A rollout created before its next poll (a revert) must already see what it runs.
                        d.committed = Some(v.clone());
                        joined = true;
                    }
                }
                d.info()
            });
            (device, rollout_info)
        };
        if joined {
            lock(&shared.joins).insert(device_id.to_string());
        }
        shared.emit(Event::Report(Box::new(ReportEvent {
            device_id: device_id.to_string(),
            report: record,
        })));
        if let Some(device) = device {
            shared.emit(Event::DeviceUpdated(Box::new(device)));
        }
        if let Some(info) = rollout_info {
            shared.emit(Event::RolloutUpdated(Box::new(info)));
        }
        shared.announce(
            Subject::Report {
                device_id: device_id.to_string(),
                report_id: req.report_id.clone(),
                rollout_id: member.map(|(id, _)| id),
            },
            true,
        );
        Ok(ReportResponse {
            accepted: true,
            duplicate: false,
        })
    }
}
