//! What the console's history charts show, pure: a robot's update events (from its stored reports) to mark on
//! its time axis, and a rollout's guard metrics over time, updated robots against not-yet-updated ones, from
//! the members' history buckets, compared exactly as the guards compare them ([`guards::compare`]). No I/O: the
//! history service (`services::history`) reads the buckets and reports.

use std::collections::BTreeMap;

use ota_protocol::admin::ReportRecord;
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{GuardPoint, GuardRule, UpdateEvent};

use crate::guards::{self, Observed, Sides};
use crate::history::Bucket;

/// Whether a report status is an update event worth a marker: an install began, succeeded, failed or rolled
/// back (progress reports are not).
pub fn is_update_event(status: ReportStatus) -> bool {
    matches!(
        status,
        ReportStatus::Installing
            | ReportStatus::Success
            | ReportStatus::Failure
            | ReportStatus::RolledBack
    )
}

/// A robot's update events received at or after `since`, oldest first, from its reports newest first (as
/// [`crate::store::Store::reports`] gives them; reports received in the same second keep their order).
pub fn update_events(reports: &[ReportRecord], since: u64) -> Vec<UpdateEvent> {
    let mut events: Vec<UpdateEvent> = reports
        .iter()
        .rev()
        .filter(|r| r.received_at >= since && is_update_event(r.status))
        .map(|r| UpdateEvent {
            at: r.received_at,
            status: r.status,
            version: r.version.clone(),
            rollout_id: r.rollout_id,
        })
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

/// One rollout member as the guard history sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Device id.
    pub device_id: String,
    /// Its status in the rollout (`None`: pending).
    pub status: Option<ReportStatus>,
    /// When that status was reported.
    pub changed_at: u64,
    /// Its history buckets of the rule's metric (any order; same start and width merge).
    pub buckets: Vec<Bucket>,
}

impl Member {
    /// Updated in the bucket `[at, at + width)`: it reported success in the rollout before the bucket ended (the
    /// bucket the update happened in counts as updated: buckets do not say which version a sample ran).
    fn updated_in(&self, at: u64, width: u64) -> bool {
        self.status == Some(ReportStatus::Success) && self.changed_at < at + width
    }
}

fn point(rule: &GuardRule, at: u64, sides: &Sides) -> GuardPoint {
    let c = guards::compare(rule, sides);
    let count = |s: &[Observed]| s.iter().filter(|o| o.value.is_finite()).count() as u32;
    GuardPoint {
        at,
        updated: c.updated,
        baseline: c.baseline,
        limit: c.limit,
        updated_robots: count(&sides.updated),
        baseline_robots: count(&sides.baseline),
    }
}

/// A guard rule's history over a rollout's members: one point per bucket start, the members that reported
/// success by the bucket's end on the updated side, the others on the baseline side (none for a revert: only its fixed
/// bound applies), each with the bucket's mean. For [`guards::ROLLBACKS`], one point per install instead (1 for
/// a robot that rolled back). [`guards::REBOOTS`] has no history (boots are not bucketed): no points.
pub fn guard_points(rule: &GuardRule, members: &[Member], revert: bool) -> Vec<GuardPoint> {
    match rule.metric.as_str() {
        guards::ROLLBACKS => rollback_points(rule, members),
        guards::REBOOTS => Vec::new(),
        _ => metric_points(rule, members, revert),
    }
}

fn metric_points(rule: &GuardRule, members: &[Member], revert: bool) -> Vec<GuardPoint> {
    let mut by_bucket: BTreeMap<(u64, u64), Sides> = BTreeMap::new();
    for m in members {
        let mut merged: BTreeMap<(u64, u64), Bucket> = BTreeMap::new();
        for b in m.buckets.iter().filter(|b| b.count > 0) {
            merged
                .entry((b.at, b.width))
                .and_modify(|o| o.merge(b))
                .or_insert(*b);
        }
        for ((at, width), b) in merged {
            let updated = m.updated_in(at, width);
            if revert && !updated {
                continue;
            }
            let sides = by_bucket.entry((at, width)).or_default();
            let side = if updated {
                &mut sides.updated
            } else {
                &mut sides.baseline
            };
            side.push(Observed {
                device_id: m.device_id.clone(),
                value: b.mean(),
            });
        }
    }
    by_bucket
        .iter()
        .map(|(&(at, _), sides)| point(rule, at, sides))
        .collect()
}

fn rollback_points(rule: &GuardRule, members: &[Member]) -> Vec<GuardPoint> {
    let installed: Vec<&Member> = members
        .iter()
        .filter(|m| {
            matches!(
                m.status,
                Some(ReportStatus::Success | ReportStatus::RolledBack)
            )
        })
        .collect();
    let mut times: Vec<u64> = installed.iter().map(|m| m.changed_at).collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .map(|t| {
            let updated = installed
                .iter()
                .filter(|m| m.changed_at <= t)
                .map(|m| Observed {
                    device_id: m.device_id.clone(),
                    value: f64::from(u8::from(m.status == Some(ReportStatus::RolledBack))),
                })
                .collect();
            point(
                rule,
                t,
                &Sides {
                    updated,
                    baseline: Vec::new(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
