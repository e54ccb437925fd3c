//! Pure decisions of the fleet gauges: which versions and which rollouts get a series of their own, so a
//! scrape stays small however many versions or rollouts the fleet has seen.

use std::collections::BTreeMap;

use ota_protocol::admin::{RolloutInfo, RolloutState};
use ota_protocol::fleet::{FreezeAlarm, FreezeReason};

/// Versions with a series of their own in `ota_devices_by_version`; the rest are summed as `other`.
pub const MAX_VERSIONS: usize = 16;

/// Finished (completed or aborted) rollouts kept in `ota_rollout_devices` beside every active or paused one.
pub const RECENT_FINISHED_ROLLOUTS: usize = 5;

/// Devices per version label, at most [`MAX_VERSIONS`] versions plus `other` and `unknown`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceVersions(pub BTreeMap<String, u64>);

/// Counts devices by the version they run: the [`MAX_VERSIONS`] most common versions (ties broken by the
/// newer version) by name, the rest as `other`, devices that have not reported a version as `unknown`.
pub fn devices_by_version<'a>(
    versions: impl IntoIterator<Item = Option<&'a semver::Version>>,
) -> DeviceVersions {
    let mut counts: BTreeMap<&semver::Version, u64> = BTreeMap::new();
    let mut unknown = 0;
    for v in versions {
        match v {
            Some(v) => *counts.entry(v).or_default() += 1,
            None => unknown += 1,
        }
    }
    let mut ranked: Vec<(&semver::Version, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)));
    let mut out = BTreeMap::new();
    let rest: u64 = ranked.iter().skip(MAX_VERSIONS).map(|(_, n)| n).sum();
    for (v, n) in ranked.into_iter().take(MAX_VERSIONS) {
        out.insert(v.to_string(), n);
    }
    if rest > 0 {
        out.insert("other".into(), rest);
    }
    if unknown > 0 {
        out.insert("unknown".into(), unknown);
    }
    DeviceVersions(out)
}

/// Devices whose last poll carried a freeze alarm, per reason; every reason has a series (0 when none), so an
/// alert on `ota_devices_freeze_alarm > 0` needs no "absent" case.
pub fn freeze_alarms<'a>(
    alarms: impl IntoIterator<Item = Option<&'a FreezeAlarm>>,
) -> BTreeMap<&'static str, u64> {
    let mut out: BTreeMap<&'static str, u64> = [
        FreezeReason::Stale,
        FreezeReason::Replayed,
        FreezeReason::Invalid,
    ]
    .into_iter()
    .map(|r| (r.as_str(), 0))
    .collect();
    for alarm in alarms.into_iter().flatten() {
        *out.entry(alarm.reason.as_str()).or_default() += 1;
    }
    out
}

/// One rollout's series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutProgress {
    /// Rollout id.
    pub rollout_id: u64,
    /// Its state.
    pub state: RolloutState,
    /// Devices in its target set.
    pub targeted: u64,
    /// Devices that reported success.
    pub updated: u64,
    /// Devices that reported failure.
    pub failed: u64,
    /// Devices that rolled back.
    pub rolled_back: u64,
}

impl RolloutProgress {
    /// `(outcome label, devices)`.
    pub fn outcomes(&self) -> [(&'static str, u64); 4] {
        [
            ("targeted", self.targeted),
            ("updated", self.updated),
            ("failed", self.failed),
            ("rolled_back", self.rolled_back),
        ]
    }
}

/// The rollouts with series: every active or paused one, and the [`RECENT_FINISHED_ROLLOUTS`] finished ones
/// with the highest ids (the most recent), ordered by id.
pub fn rollout_progress(rollouts: &[RolloutInfo]) -> Vec<RolloutProgress> {
    let running = |r: &&RolloutInfo| matches!(r.state, RolloutState::Active | RolloutState::Paused);
    let mut finished: Vec<&RolloutInfo> = rollouts.iter().filter(|r| !running(r)).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.rollout_id));
    finished.truncate(RECENT_FINISHED_ROLLOUTS);
    let mut out: Vec<RolloutProgress> = rollouts
        .iter()
        .filter(running)
        .chain(finished)
        .map(|r| RolloutProgress {
            rollout_id: r.rollout_id,
            state: r.state,
            targeted: r.counts.targeted,
            updated: r.counts.succeeded,
            failed: r.counts.failed,
            rolled_back: r.counts.rolled_back,
        })
        .collect();
    out.sort_by_key(|p| p.rollout_id);
    out
}
