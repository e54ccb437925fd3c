//! Staged rollouts: creation over the devices that match now, the admin views, and the manual actions. The
//! decisions are [`crate::rollout`]'s; this service takes the locks, commits and emits events.

use std::collections::BTreeMap;
use std::sync::Arc;

use ota_protocol::admin::{CreateRolloutRequest, Event, RolloutDetail, RolloutInfo, RolloutState};

use crate::cluster::Subject;
use crate::error::ServiceError;
use crate::fleet::{lock, plan, read, settle, unix_now, validate_tags, write, Rollout, Shared};
use crate::rollout::{self, Control, RolloutAction};
use crate::schedule::CompiledSchedule;
use crate::services::replicas::{retrying, ReplicaService};
use crate::store::{MemberRecord, RolloutAim, RolloutRecord};

/// Rollouts.
#[derive(Clone)]
pub struct RolloutService(pub(crate) Arc<Shared>);

fn no_rollout(id: u64) -> ServiceError {
    ServiceError::NotFound(format!("no rollout {id}"))
}

impl RolloutService {
    /// All rollouts, newest first.
    pub fn list(&self) -> Vec<RolloutInfo> {
        let fleet = read(&self.0.fleet);
        fleet
            .rollouts
            .values()
            .rev()
            .map(|r| r.info_with(Some(&fleet.devices)))
            .collect()
    }

    /// One rollout with its devices.
    pub fn get(&self, id: u64) -> Result<RolloutDetail, ServiceError> {
        let fleet = read(&self.0.fleet);
        fleet
            .rollouts
            .get(&id)
            .map(|r| r.detail(&fleet.devices))
            .ok_or_else(|| no_rollout(id))
    }

    /// Rollouts per state.
    pub fn count_by_state(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> =
            RolloutState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for r in read(&self.0.fleet).rollouts.values() {
            *out.entry(r.record.state.as_str()).or_default() += 1;
        }
        out
    }

    /// Creates a rollout over the devices that match now.
    pub async fn create(&self, req: CreateRolloutRequest) -> Result<RolloutInfo, ServiceError> {
        let shared = &self.0;
        let stages = req
            .stages
            .unwrap_or_else(|| rollout::DEFAULT_STAGES.to_vec());
        rollout::validate_stages(&stages).map_err(ServiceError::Rejected)?;
        let threshold = req
            .failure_threshold
            .unwrap_or(rollout::DEFAULT_FAILURE_THRESHOLD);
        rollout::validate_threshold(threshold).map_err(ServiceError::Rejected)?;
        let filter = req.filter.unwrap_or_default();
        let tags = if filter.tags.is_empty() {
            req.tags
        } else {
            filter.tags
        };
        validate_tags(&tags)?;
        if let Some(schedule) = &req.schedule {
            CompiledSchedule::compile(schedule).map_err(ServiceError::Rejected)?;
        }
        crate::guards::validate(&req.guards).map_err(ServiceError::Rejected)?;
        // Target what the database holds, not this replica's memory: robots enrolled through another replica a
        // moment ago may not have been heard of yet, and would otherwise miss the first stage.
        ReplicaService(Arc::clone(shared)).resync().await?;
        let aim = RolloutAim {
            guards: req.guards,
            watch_secs: req.watch_secs,
            group: filter.group,
            versions: filter.versions,
            rules: req.rules,
            schedule: req.schedule,
            start_at: req.start_at,
            require_confirmation: req.require_confirmation,
            revert: req.revert,
            ..RolloutAim::default()
        };
        let _writer = shared.writer.lock().await;
        let now = unix_now();
        let known = read(&shared.fleet).bundles.get(&req.bundle_id).cloned();
        let bundle = match known {
            Some(bundle) => Some(bundle),
            // Published through another replica a moment ago, before its notice arrived.
            None => {
                let id = req.bundle_id.clone();
                shared.blocking(move |s| s.bundle(&id)).await?
            }
        }
        .ok_or_else(|| {
            ServiceError::Rejected(format!("no bundle '{}'; publish it first", req.bundle_id))
        })?;
        let mut record = RolloutRecord {
            rollout_id: 0,
            name: req
                .name
                .unwrap_or_else(|| format!("{} {}", bundle.compatible, bundle.version)),
            bundle_id: bundle.bundle_id.clone(),
            tags,
            stages,
            current_stage: 0,
            state: RolloutState::Active,
            pause_reason: None,
            failure_threshold: threshold,
            bad_baseline: 0,
            created_at: now,
            updated_at: now,
            stage_started_at: aim.start_at.map_or(now, |t| t.max(now)),
            stage_completed_at: None,
            aim,
            revision: 0,
        };
        let targets = {
            let fleet = read(&shared.fleet);
            let plan = plan(&record, &bundle, &[], now);
            let ids = fleet
                .devices
                .values()
                .filter_map(|d| {
                    let d = lock(d);
                    let facts = d.facts();
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
                joined: None,
            })
            .collect();
        let statuses = vec![None; members.len()];
        settle(&mut record, &bundle, &[], &statuses, now);
        let (rec, mem) = (record.clone(), members.clone());
        let id = shared
            .blocking(move |s| s.create_rollout(&rec, &mem))
            .await?;
        record.rollout_id = id;
        let rollout = Rollout::new(record, bundle, members);
        let info = rollout.info();
        write(&shared.fleet).rollouts.insert(id, rollout);
        shared.emit(Event::RolloutUpdated(Box::new(info.clone())));
        shared.announce(Subject::Rollout(id), true);
        Ok(info)
    }

    /// Pause, resume or abort by hand.
    pub async fn control(
        &self,
        id: u64,
        action: RolloutAction,
    ) -> Result<RolloutInfo, ServiceError> {
        retrying(&self.0, || self.control_once(id, action)).await
    }

    async fn control_once(
        &self,
        id: u64,
        action: RolloutAction,
    ) -> Result<RolloutInfo, ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let now = unix_now();
        let mut record = {
            let fleet = read(&shared.fleet);
            let r = fleet.rollouts.get(&id).ok_or_else(|| no_rollout(id))?;
            let mut rec = r.record.clone();
            match rollout::control(action, rec.state) {
                Control::Unchanged => return Ok(r.info()),
                Control::Refused => {
                    return Err(ServiceError::Conflict(format!(
                        "cannot {} rollout {id}: it is {}",
                        action.as_str(),
                        rec.state.as_str()
                    )));
                }
                Control::Become(state, pause_reason) => {
                    rec.state = state;
                    rec.pause_reason = pause_reason;
                    if action == RolloutAction::Resume {
                        // The breach is acknowledged; the guards judge only what robots do from now on.
                        rec.aim.acknowledged_at = Some(now);
                        rec.aim.breach = None;
                        let statuses = r.statuses();
                        rec.bad_baseline = rollout::tally(&r.plan_at(now), &statuses).bad;
                        settle(&mut rec, &r.bundle, &r.joined, &statuses, now);
                    }
                }
            }
            rec
        };
        record.updated_at = now;
        let rec = record.clone();
        shared.blocking(move |s| s.update_rollout(&rec)).await?;
        record.revision += 1;
        let info = {
            let mut fleet = write(&shared.fleet);
            let r = fleet.rollouts.get_mut(&id).ok_or_else(|| no_rollout(id))?;
            r.record = record;
            r.info()
        };
        shared.emit(Event::RolloutUpdated(Box::new(info.clone())));
        shared.announce(Subject::Rollout(id), true);
        Ok(info)
    }
}
