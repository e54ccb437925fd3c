//! The guard evaluator: on a periodic tick (and after each report of a rollout), every rollout the guards watch
//! (active, or completed less than `watch_secs` ago) is judged by [`crate::guards`] on its robots' recent
//! telemetry; a breach pauses it, names the rule, the metric, the values and the robots, stores the breach and
//! tells the dashboard. The scan takes read locks only; a breach is re-judged and applied under the writer lock,
//! so it takes effect exactly once.

use std::sync::{Arc, Mutex};

use ota_protocol::admin::{Event, RolloutState};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{GuardBreach, GuardRule};

use crate::cluster::Subject;
use crate::error::ServiceError;
use crate::fleet::{lock, read, write, Rollout, Shared};
use crate::guards::{self, Decision, Observed, Sides};
use crate::history::Recorder;
use crate::services::replicas::retrying;

mod peers;

/// The window a not-yet-updated robot's values are averaged over.
pub const BASELINE_WINDOW_SECS: u64 = 600;

/// Guard evaluation.
#[derive(Clone)]
pub struct WatchService(pub(crate) Arc<Shared>, PeersHeard);

/// When this replica last read the other replicas' polls ([`peers::read_since`]); `None` until it leads and reads.
#[derive(Clone, Default)]
struct PeersHeard(Arc<Mutex<Option<u64>>>);

impl WatchService {
    /// The evaluator over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        WatchService(shared, PeersHeard::default())
    }
}

/// The values of one rule over a rollout's members: each updated robot's samples taken on the new version
/// (since the last resume), each other member's over the last [`BASELINE_WINDOW_SECS`] (none for a revert: only a
/// fixed bound applies). `rollbacks` and `reboots` count events instead (see [`guards::ROLLBACKS`]).
fn sides(r: &Rollout, rule: &GuardRule, recorder: &Recorder, now: u64) -> Sides {
    let ack = r.record.aim.acknowledged_at.unwrap_or(0);
    let started = r.record.created_at.max(ack);
    let window = now.saturating_sub(BASELINE_WINDOW_SECS);
    let mut out = Sides::default();
    for m in &r.members {
        let dev = recorder.device(&m.device_id);
        let since = m.updated_at.max(ack);
        let updated = m.status == Some(ReportStatus::Success);
        let value = match rule.metric.as_str() {
            guards::ROLLBACKS => {
                let installed = matches!(
                    m.status,
                    Some(ReportStatus::Success | ReportStatus::RolledBack)
                );
                if installed && m.updated_at > ack {
                    let rolled_back = m.status == Some(ReportStatus::RolledBack);
                    out.updated.push(Observed {
                        device_id: m.device_id.clone(),
                        value: if rolled_back { 1.0 } else { 0.0 },
                    });
                }
                continue;
            }
            guards::REBOOTS if updated => dev
                .filter(|d| d.seen_since(since))
                .map(|d| d.boots_since(since) as f64),
            guards::REBOOTS => dev
                .filter(|d| d.seen_since(window))
                .map(|d| d.boots_since(started) as f64),
            metric if updated => dev.and_then(|d| d.mean_on(metric, &r.bundle.version, ack)),
            metric => dev.and_then(|d| d.mean_since(metric, window)),
        };
        let Some(value) = value else { continue };
        let side = if updated {
            &mut out.updated
        } else if r.record.aim.revert {
            continue;
        } else {
            &mut out.baseline
        };
        side.push(Observed {
            device_id: m.device_id.clone(),
            value,
        });
    }
    out
}

/// Whether the guards watch `r` at `now`, and the first breach if they do.
fn judge(r: &Rollout, recorder: &Recorder, now: u64) -> (bool, Option<GuardBreach>) {
    if !watched(r, now) {
        return (false, None);
    }
    let breach = guards::first_breach(
        &r.record.aim.guards,
        |rule| sides(r, rule, recorder, now),
        now,
    );
    (true, breach)
}

/// Whether the guards watch `r` at `now`.
fn watched(r: &Rollout, now: u64) -> bool {
    let aim = &r.record.aim;
    // A completed rollout not marked yet completed just now (the tick marks it).
    let completed_at = aim.completed_at.or(Some(now));
    !aim.guards.is_empty() && guards::watching(r.record.state, completed_at, aim.watch_secs, now)
}

impl WatchService {
    /// Judges every watched rollout; pauses the breached ones. Returns the ids it paused. Runs only on the replica
    /// holding the lease ([`crate::cluster::Lease`]).
    pub async fn tick(&self, now: u64) -> Result<Vec<u64>, ServiceError> {
        if !self.0.leads() {
            // Another replica judged meanwhile: on taking the lease back, hear the whole window again.
            *lock(&self.1 .0) = None;
            return Ok(Vec::new());
        }
        self.hear_peers(now).await?;
        let due: Vec<u64> = {
            let fleet = read(&self.0.fleet);
            let recorder = lock(&self.0.history);
            fleet
                .rollouts
                .values()
                .filter(|r| {
                    let unmarked = r.record.state == RolloutState::Completed
                        && r.record.aim.completed_at.is_none()
                        && !r.record.aim.guards.is_empty();
                    unmarked || judge(r, &recorder, now).1.is_some()
                })
                .map(|r| r.record.rollout_id)
                .collect()
        };
        let mut paused = Vec::new();
        for id in due {
            if self.apply(id, now).await? {
                paused.push(id);
            }
        }
        Ok(paused)
    }

    /// With other replicas, reads the polls they took into this replica's recorder before judging: the last
    /// stored telemetry of every robot seen within the baseline window (the write-behind flush stores it within
    /// a second), the whole window once and then only what is newer than the last read ([`peers::read_since`]).
    /// Without this the replica holding the lease would judge only the robots that polled it.
    async fn hear_peers(&self, now: u64) -> Result<(), ServiceError> {
        let shared = &self.0;
        if !shared.cluster().replicated
            || !read(&shared.fleet)
                .rollouts
                .values()
                .any(|r| watched(r, now))
        {
            return Ok(());
        }
        let last = *lock(&self.1 .0);
        let since = peers::read_since(last, now, BASELINE_WINDOW_SECS);
        let seen = shared.blocking(move |s| s.telemetry_since(since)).await?;
        let mut recorder = lock(&shared.history);
        for d in &seen {
            recorder.observe_peer(&d.device_id, d.last_seen, d.version.as_ref(), &d.telemetry);
        }
        // Advanced only after a read that succeeded: a failed one is read again at the next tick.
        *lock(&self.1 .0) = Some(now);
        Ok(())
    }

    /// Judges one rollout (after one of its robots reported). Returns whether it paused it. With other replicas
    /// only the one holding the lease judges, on the whole fleet's samples, at its next tick.
    pub async fn check(&self, id: u64, now: u64) -> Result<bool, ServiceError> {
        if self.0.cluster().replicated && !self.0.leads() {
            return Ok(false);
        }
        let breached = {
            let fleet = read(&self.0.fleet);
            let recorder = lock(&self.0.history);
            fleet
                .rollouts
                .get(&id)
                .is_some_and(|r| judge(r, &recorder, now).1.is_some())
        };
        if breached {
            self.apply(id, now).await
        } else {
            Ok(false)
        }
    }

    /// Judges one rollout in the background, e.g. after a report (whose answer does not wait for it).
    pub fn check_soon(&self, id: u64) {
        let watch = self.clone();
        tokio::spawn(async move {
            if let Err(e) = watch.check(id, crate::fleet::unix_now()).await {
                tracing::error!(rollout = id, "health guard evaluation failed: {e}");
            }
        });
    }

    /// Under the writer lock: judges the rollout again, marks when it completed, and pauses it on a breach
    /// (again on the stored row if another replica changed it first).
    async fn apply(&self, id: u64, now: u64) -> Result<bool, ServiceError> {
        retrying(&self.0, || self.apply_once(id, now)).await
    }

    async fn apply_once(&self, id: u64, now: u64) -> Result<bool, ServiceError> {
        let shared = &self.0;
        let _writer = shared.writer.lock().await;
        let (mut record, decision) = {
            let fleet = read(&shared.fleet);
            let Some(r) = fleet.rollouts.get(&id) else {
                return Ok(false);
            };
            let (watched, breach) = judge(r, &lock(&shared.history), now);
            (r.record.clone(), guards::decide(watched, breach))
        };
        let mut changed = false;
        if record.state == RolloutState::Completed && record.aim.completed_at.is_none() {
            record.aim.completed_at = Some(now);
            changed = true;
        }
        let paused = match decision {
            Decision::Keep => false,
            Decision::Pause { reason, breach } => {
                tracing::warn!(rollout = id, "{reason}");
                record.state = RolloutState::Paused;
                record.pause_reason = Some(reason);
                record.aim.breach = Some(breach);
                record.updated_at = now;
                changed = true;
                true
            }
        };
        if !changed {
            return Ok(false);
        }
        let rec = record.clone();
        shared.blocking(move |s| s.update_rollout(&rec)).await?;
        record.revision += 1;
        let info = {
            let mut fleet = write(&shared.fleet);
            let Some(r) = fleet.rollouts.get_mut(&id) else {
                return Ok(false);
            };
            r.record = record;
            r.info()
        };
        if paused {
            shared.emit(Event::RolloutUpdated(Box::new(info)));
        }
        shared.announce(Subject::Rollout(id), paused);
        Ok(paused)
    }
}

#[cfg(test)]
mod tests {
    use ota_protocol::device::Telemetry;

    use super::*;
    use crate::store::{BundleRecord, MemberRecord, RolloutAim, RolloutRecord};

    fn rollout(revert: bool, members: &[(&str, Option<ReportStatus>, u64)]) -> Rollout {
        let record = RolloutRecord {
            rollout_id: 1,
            name: "r".into(),
            bundle_id: "b".into(),
            tags: Default::default(),
            stages: vec![100],
            current_stage: 0,
            state: RolloutState::Active,
            pause_reason: None,
            failure_threshold: 1.0,
            bad_baseline: 0,
            created_at: 100,
            updated_at: 100,
            aim: RolloutAim {
                revert,
                acknowledged_at: Some(150),
                ..RolloutAim::default()
            },
            stage_started_at: 100,
            stage_completed_at: None,
            revision: 0,
        };
        let bundle = BundleRecord {
            bundle_id: "b".into(),
            version: "2.0.0".parse().unwrap(),
            compatible: "acme".into(),
            manifest_digest: "d".into(),
            size: 1,
            description: String::new(),
            uploaded_at: 0,
            images: Vec::new(),
        };
        let members = members
            .iter()
            .enumerate()
            .map(|(rank, (id, status, at))| MemberRecord {
                device_id: id.to_string(),
                rank: rank as u64,
                status: *status,
                updated_at: *at,
                joined: None,
            })
            .collect();
        Rollout::new(record, bundle, members)
    }

    fn latency(recorder: &mut Recorder, id: &str, t: u64, version: &str, value: f64) {
        let mut telemetry = Telemetry::default();
        telemetry.metrics.insert("lat".into(), value);
        recorder.observe(id, t, Some(&version.parse().unwrap()), &telemetry);
    }

    fn ids(side: &[Observed]) -> Vec<(&str, f64)> {
        side.iter()
            .map(|o| (o.device_id.as_str(), o.value))
            .collect()
    }

    #[test]
    fn updated_robots_count_samples_on_the_new_version_and_the_rest_form_the_baseline() {
        let mut rec = Recorder::default();
        latency(&mut rec, "up", 200, "1.0.0", 40.0);
        latency(&mut rec, "up", 300, "2.0.0", 90.0);
        latency(&mut rec, "back", 300, "1.0.0", 45.0); // reported success, then went back to 1.0.0
        latency(&mut rec, "old", 300, "1.0.0", 41.0);
        let members = [
            ("up", Some(ReportStatus::Success), 250),
            ("back", Some(ReportStatus::Success), 250),
            ("old", None, 100),
        ];
        let rule = crate::guards::parse_rule("lat>+10%").unwrap();
        let s = sides(&rollout(false, &members), &rule, &rec, 400);
        assert_eq!(ids(&s.updated), [("up", 90.0)]);
        assert_eq!(ids(&s.baseline), [("old", 41.0)]);
        let s = sides(&rollout(true, &members), &rule, &rec, 400);
        assert!(s.baseline.is_empty(), "a revert has no baseline");
        let s = sides(
            &rollout(false, &members),
            &rule,
            &rec,
            300 + BASELINE_WINDOW_SECS + 1,
        );
        assert!(s.baseline.is_empty(), "baseline samples are recent ones");
    }

    #[test]
    fn rollbacks_count_installs_since_the_last_resume() {
        let members = [
            ("ok", Some(ReportStatus::Success), 200),
            ("bad", Some(ReportStatus::RolledBack), 200),
            ("acked", Some(ReportStatus::RolledBack), 150),
            ("failed", Some(ReportStatus::Failure), 200),
        ];
        let rule = crate::guards::parse_rule("rollbacks:max>0").unwrap();
        let s = sides(&rollout(false, &members), &rule, &Recorder::default(), 300);
        assert_eq!(ids(&s.updated), [("ok", 0.0), ("bad", 1.0)]);
        assert!(s.baseline.is_empty());
    }
}
