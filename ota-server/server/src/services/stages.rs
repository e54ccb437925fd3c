//! The stage side of rollouts over time: late joiners, deadlines, soak and start times (the periodic
//! [`RolloutService::tick`]), and the operator's `next` and `retry`. Decisions are [`crate::rollout`]'s; this
//! takes the writer lock, commits through the store and then applies to memory.

use ota_protocol::admin::{Event, RolloutInfo, RolloutState};

use crate::cluster::Subject;
use crate::error::{ServiceError, StoreError};
use crate::fleet::{lock, read, settle, unix_now, write, Shared};
use crate::rollout;
use crate::services::replicas::{refresh_rollout, retrying};
use crate::services::rollouts::RolloutService;
use crate::store::{MemberRecord, RolloutRecord};

/// A rollout change to commit: its new row and the members added or reset.
struct Change {
    id: u64,
    record: RolloutRecord,
    members: Vec<MemberRecord>,
}

fn no_rollout(id: u64) -> ServiceError {
    ServiceError::NotFound(format!("no rollout {id}"))
}

impl RolloutService {
    /// Adds devices whose facts changed to the rollouts they now match (at the next stage), and applies the
    /// transitions time brings (deadline, soak, scheduled start). Runs once a second on every replica (each adds
    /// the devices it saw change); the timed transitions only on the one holding the lease. Returns how many
    /// rollouts changed.
    pub async fn tick(&self) -> Result<usize, ServiceError> {
        let shared = &self.0;
        let leads = shared.leads();
        let _writer = shared.writer.lock().await;
        let candidates: Vec<String> = std::mem::take(&mut *lock(&shared.joins))
            .into_iter()
            .collect();
        let now = unix_now();
        let changes = {
            let fleet = read(&shared.fleet);
            let mut changes = Vec::new();
            let live: Vec<_> = fleet
                .rollouts
                .iter()
                .filter(|(_, r)| r.record.state != RolloutState::Aborted)
                .map(|(&id, r)| {
                    let plan = r.plan_at(now);
                    let stage = rollout::join_stage(&plan);
                    (id, r, plan, stage)
                })
                .collect();
            // Each candidate's facts once, against every rollout (`candidates` has no duplicates).
            let mut joiners: Vec<Vec<MemberRecord>> = vec![Vec::new(); live.len()];
            for device_id in &candidates {
                let Some(dev) = fleet.devices.get(device_id) else {
                    continue;
                };
                let dev = lock(dev);
                let facts = dev.facts();
                for ((_, r, plan, stage), new) in live.iter().zip(joiners.iter_mut()) {
                    if !r.index.contains_key(device_id) && rollout::selects(plan, &facts) {
                        new.push(MemberRecord {
                            device_id: device_id.clone(),
                            rank: (r.members.len() + new.len()) as u64,
                            status: None,
                            updated_at: now,
                            joined: Some(*stage),
                        });
                    }
                }
            }
            for ((id, r, _, stage), new) in live.into_iter().zip(joiners) {
                // Without joiners, only a deadline, a soak or a start time can change an active rollout.
                let aim = &r.record.aim;
                let timed = aim.rules.deadline_secs > 0
                    || aim.rules.soak_secs > 0
                    || aim.start_at.is_some();
                if new.is_empty() && (r.record.state != RolloutState::Active || !timed || !leads) {
                    continue;
                }
                let mut joined = r.joined.clone();
                joined.extend(new.iter().map(|_| stage));
                let mut statuses = r.statuses();
                statuses.extend(new.iter().map(|_| None));
                let mut record = r.record.clone();
                let settled = settle(&mut record, &r.bundle, &joined, &statuses, now);
                if settled || !new.is_empty() {
                    record.updated_at = now;
                    changes.push(Change {
                        id,
                        record,
                        members: new,
                    });
                }
            }
            changes
        };
        if changes.is_empty() {
            return Ok(0);
        }
        let count = changes.len();
        match self.commit(changes).await {
            Ok(()) => Ok(count),
            Err(e) => {
                // Not lost: the next tick tries these devices again (the members committed already are skipped).
                lock(&shared.joins).extend(candidates);
                if let ServiceError::Store(StoreError::Stale(id)) = e {
                    // Another replica changed that rollout: the next tick decides on the stored row.
                    drop(_writer);
                    refresh_rollout(shared, id).await?;
                    return Ok(0);
                }
                Err(e)
            }
        }
    }

    /// `next`: starts the rollout's next stage now, whatever the current one's completion or soak.
    pub async fn next(&self, id: u64) -> Result<RolloutInfo, ServiceError> {
        retrying(&self.0, || self.next_once(id)).await
    }

    async fn next_once(&self, id: u64) -> Result<RolloutInfo, ServiceError> {
        let _writer = self.0.writer.lock().await;
        let now = unix_now();
        let record = {
            let fleet = read(&self.0.fleet);
            let r = fleet.rollouts.get(&id).ok_or_else(|| no_rollout(id))?;
            let stage = rollout::next_stage(&r.plan_at(now)).map_err(|why| {
                ServiceError::Conflict(format!("cannot move rollout {id} to its next stage: {why}"))
            })?;
            let mut record = r.record.clone();
            record.current_stage = stage;
            record.stage_started_at = now;
            record.stage_completed_at = None;
            record.updated_at = now;
            record
        };
        self.commit(vec![Change {
            id,
            record,
            members: Vec::new(),
        }])
        .await?;
        self.info(id)
    }

    /// `retry`: failed and rolled-back members are offered again (their status resets to pending).
    pub async fn retry(&self, id: u64) -> Result<RolloutInfo, ServiceError> {
        retrying(&self.0, || self.retry_once(id)).await
    }

    async fn retry_once(&self, id: u64) -> Result<RolloutInfo, ServiceError> {
        let _writer = self.0.writer.lock().await;
        let now = unix_now();
        let change = {
            let fleet = read(&self.0.fleet);
            let r = fleet.rollouts.get(&id).ok_or_else(|| no_rollout(id))?;
            let (again, state) = rollout::retry(r.record.state, &r.statuses()).map_err(|why| {
                ServiceError::Conflict(format!("cannot retry rollout {id}: {why}"))
            })?;
            let members: Vec<MemberRecord> = again
                .into_iter()
                .map(|i| MemberRecord {
                    status: None,
                    updated_at: now,
                    ..r.members[i].clone()
                })
                .collect();
            let mut record = r.record.clone();
            record.state = state;
            record.updated_at = now;
            // The reset members no longer count against the failure threshold.
            record.bad_baseline = 0;
            let mut statuses = r.statuses();
            for m in &members {
                statuses[r.index[&m.device_id]] = None;
            }
            settle(&mut record, &r.bundle, &r.joined, &statuses, now);
            Change {
                id,
                record,
                members,
            }
        };
        self.commit(vec![change]).await?;
        self.info(id)
    }

    fn info(&self, id: u64) -> Result<RolloutInfo, ServiceError> {
        let fleet = read(&self.0.fleet);
        fleet
            .rollouts
            .get(&id)
            .map(|r| r.info_with(Some(&fleet.devices)))
            .ok_or_else(|| no_rollout(id))
    }

    /// Commits changes (each in its own transaction, compare-and-set on the rollout row), applies them to memory
    /// and tells the dashboard and the other replicas.
    async fn commit(&self, changes: Vec<Change>) -> Result<(), ServiceError> {
        let shared: &Shared = &self.0;
        for mut change in changes {
            let (record, members) = (change.record.clone(), change.members.clone());
            shared
                .blocking(move |s| s.save_members(&record, &members))
                .await?;
            change.record.revision += 1;
            let info = {
                let mut fleet = write(&shared.fleet);
                let fleet = &mut *fleet;
                let Some(r) = fleet.rollouts.get_mut(&change.id) else {
                    continue;
                };
                r.record = change.record;
                for m in change.members {
                    match r.index.get(&m.device_id) {
                        Some(&i) => r.members[i] = m,
                        None => {
                            if let Some(stage) = m.joined {
                                r.joined.push(stage);
                            }
                            r.index.insert(m.device_id.clone(), r.members.len());
                            r.members.push(m);
                        }
                    }
                }
                r.info_with(Some(&fleet.devices))
            };
            shared.emit(Event::RolloutUpdated(Box::new(info)));
            shared.announce(Subject::Rollout(change.id), true);
        }
        Ok(())
    }
}
