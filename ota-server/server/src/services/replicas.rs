//! Hearing the other replicas ([`crate::cluster`]): a notice names a committed change; this reloads that entity
//! from the store into memory and tells this replica's dashboard clients. After a lost feed it reloads
//! everything. Also the retry of a rollout write that lost its compare-and-set.

use std::future::Future;
use std::sync::{Arc, Mutex};

use ota_protocol::admin::{DeviceDeletedEvent, DeviceInfo, Event, ReportEvent};

use crate::cluster::{Heard, Notice, Subject};
use crate::error::{ServiceError, StoreError};
use crate::fleet::{device_info, lock, write, Device, Fleet, Group, Rollout, Shared, TokenEntry};
use crate::store::DeviceRecord;

/// How often a decision is taken again after losing a compare-and-set before the request fails.
const CAS_ATTEMPTS: usize = 8;

/// Applies the other replicas' changes.
#[derive(Clone)]
pub struct ReplicaService(pub Arc<Shared>);

/// Runs `attempt` again while it loses a compare-and-set on a rollout row ([`StoreError::Stale`]), reloading
/// that rollout before each new attempt, so the decision is taken on what the database holds.
pub(crate) async fn retrying<T, F, Fut>(shared: &Shared, mut attempt: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let mut lost = 0;
    loop {
        match attempt().await {
            Err(ServiceError::Store(StoreError::Stale(id))) if lost < CAS_ATTEMPTS => {
                lost += 1;
                tracing::debug!(
                    rollout = id,
                    "another replica changed the rollout first; deciding again"
                );
                refresh_rollout(shared, id).await?;
            }
            other => return other,
        }
    }
}

/// Reloads a rollout that another replica changed (after a lost compare-and-set), under the writer lock.
pub(crate) async fn refresh_rollout(shared: &Shared, id: u64) -> Result<(), ServiceError> {
    let _writer = shared.writer.lock().await;
    reload_rollout(shared, id).await.map(drop)
}

/// Reloads a rollout (and its bundle) into memory (the caller holds the writer lock). Returns its new admin
/// view, `None` if it is gone.
async fn reload_rollout(shared: &Shared, id: u64) -> Result<Option<Event>, ServiceError> {
    let loaded = shared
        .blocking(move |s| {
            let Some((record, members)) = s.rollout(id)? else {
                return Ok(None);
            };
            let bundle = s.bundle(&record.bundle_id)?.ok_or_else(|| {
                StoreError::Missing(format!("bundle {} of rollout {id}", record.bundle_id))
            })?;
            Ok(Some((record, bundle, members)))
        })
        .await?;
    let mut fleet = write(&shared.fleet);
    let Some((record, bundle, members)) = loaded else {
        fleet.rollouts.remove(&id);
        return Ok(None);
    };
    fleet
        .bundles
        .entry(bundle.bundle_id.clone())
        .or_insert_with(|| bundle.clone());
    let rollout = Rollout::new(record, bundle, members);
    let event = Event::RolloutUpdated(Box::new(rollout.info_with(Some(&fleet.devices))));
    fleet.rollouts.insert(id, rollout);
    Ok(Some(event))
}

/// Puts a stored device into memory: identity, token, labels and last report from the store; the poll-driven
/// state too unless this replica saw a later poll (that one is flushed by this replica).
fn merge_device(fleet: &mut Fleet, stored: DeviceRecord) -> Event {
    let id = stored.device_id.clone();
    let slot = fleet.devices.entry(id.clone()).or_insert_with(|| {
        Arc::new(Mutex::new(Device {
            record: stored.clone(),
            last_poll: None,
            reports: Default::default(),
            committed: None,
            outcomes: Default::default(),
        }))
    });
    let mut dev = lock(slot);
    let old_token = std::mem::replace(&mut dev.record.token_id, stored.token_id.clone());
    // A report another replica took: the health rule hears of its outcome here.
    let heard = stored.state.last_status.clone();
    if heard.is_some() && heard != dev.record.state.last_status {
        if let Some(s) = &heard {
            dev.outcomes.push(s.status);
        }
    }
    let info_health = dev.outcomes.health();
    let r = &mut dev.record;
    if stored.state.last_seen >= r.state.last_seen {
        r.state = stored.state;
    } else {
        r.state.last_status = stored.state.last_status;
    }
    r.tags = stored.tags;
    r.token_hash = stored.token_hash;
    r.enrolled_at = stored.enrolled_at;
    r.labels = stored.labels;
    let event = Event::DeviceUpdated(Box::new(DeviceInfo {
        health: Some(info_health),
        ..device_info(r)
    }));
    let hash = r.token_hash;
    let expires_at = stored.token_expires_at;
    r.token_expires_at = expires_at;
    drop(dev);
    if old_token != stored.token_id {
        fleet.tokens.remove(&old_token);
    }
    fleet.tokens.insert(
        stored.token_id,
        TokenEntry {
            device_id: id,
            hash,
            expires_at,
        },
    );
    event
}

impl ReplicaService {
    /// Applies what another replica did (or everything, after a lost feed).
    pub async fn hear(&self, heard: Heard) -> Result<(), ServiceError> {
        match heard {
            Heard::Resync => {
                self.resync().await?;
                tracing::info!("reloaded the working set after a gap in the replicas' change feed");
                Ok(())
            }
            Heard::Notice(notice) => self.apply(notice).await,
        }
    }

    async fn apply(&self, notice: Notice) -> Result<(), ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let mut events = Vec::new();
        match notice.subject {
            Subject::All => {
                drop(_writer);
                return self.resync().await;
            }
            Subject::Device(id) => events.extend(self.reload_device(id).await?),
            Subject::DeviceDeleted(id) => {
                shared.forget_device(&id);
                events.push(Event::DeviceDeleted(DeviceDeletedEvent { device_id: id }));
            }
            Subject::Report {
                device_id,
                report_id,
                rollout_id,
            } => {
                let id = device_id.clone();
                let report = shared
                    .blocking(move |s| s.reports(&id, 16))
                    .await?
                    .into_iter()
                    .find(|r| r.report_id == report_id);
                if let Some(report) = report {
                    events.push(Event::Report(Box::new(ReportEvent {
                        device_id: device_id.clone(),
                        report,
                    })));
                }
                events.extend(self.reload_device(device_id).await?);
                if let Some(rid) = rollout_id {
                    events.extend(reload_rollout(shared, rid).await?);
                }
            }
            Subject::Bundle(id) => {
                let key = id.clone();
                let bundle = shared.blocking(move |s| s.bundle(&key)).await?;
                let mut fleet = write(&shared.fleet);
                match bundle {
                    Some(b) => fleet.bundles.insert(id, b),
                    None => fleet.bundles.remove(&id),
                };
            }
            Subject::Rollout(id) => events.extend(reload_rollout(shared, id).await?),
            Subject::Group(name) => {
                let key = name.clone();
                let settings = shared.blocking(move |s| s.group(&key)).await?;
                let mut fleet = write(&shared.fleet);
                match settings.map(Group::new) {
                    Some(Ok(group)) => {
                        fleet.groups.insert(name, group);
                    }
                    Some(Err(e)) => tracing::error!(group = name, "group settings ignored: {e}"),
                    None => {
                        fleet.groups.remove(&name);
                    }
                }
            }
        }
        if notice.event {
            for event in events {
                shared.emit(event);
            }
        }
        Ok(())
    }

    async fn reload_device(&self, id: String) -> Result<Option<Event>, ServiceError> {
        let shared = &self.0;
        let key = id.clone();
        let stored = shared.blocking(move |s| s.device(&key)).await?;
        let mut fleet = write(&shared.fleet);
        Ok(match stored {
            Some(record) => Some(merge_device(&mut fleet, record)),
            None => {
                if let Some(dev) = fleet.devices.remove(&id) {
                    let token_id = lock(&dev).record.token_id.clone();
                    fleet.tokens.remove(&token_id);
                }
                None
            }
        })
    }

    /// Reloads the whole working set, keeping this replica's poll times and its not yet flushed poll state.
    pub async fn resync(&self) -> Result<(), ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let mut fresh = shared.blocking(Fleet::load).await?;
        let dirty = lock(&shared.dirty).clone();
        let mut fleet = write(&shared.fleet);
        for (id, dev) in &mut fresh.devices {
            let Some(old) = fleet.devices.get(id) else {
                continue;
            };
            let old = lock(old);
            let mut new = lock(dev);
            new.last_poll = old.last_poll;
            new.committed = old.committed.clone();
            if dirty.contains(id) {
                let last_status = new.record.state.last_status.take();
                new.record.state = old.record.state.clone();
                new.record.state.last_status = last_status;
            }
        }
        *fleet = fresh;
        Ok(())
    }
}
