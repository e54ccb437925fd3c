//! Rollout decisions, pure: no I/O, no clocks, no locks. Given a rollout, the state of its target devices and
//! the facts of one device, these functions say whether to offer the update, whether the rollout advances a
//! stage, completes, or pauses itself. The server calls them under its locks and persists what they decide.
//!
//! Model: the initial target set is chosen when the rollout is created ([`selects`] + [`rank_key`] order).
//! Stage `k` covers the first [`stage_size`]`(N, stages[k])` initial devices in rank order. A device that
//! matches later joins with the stage after the current one ([`join_stage`]); it never enters the stage under
//! way. A device is offered the update when the rollout is active (or completed) and started, the device is in
//! a reached stage, it still matches the filter ([`matches_filter`]) and `compatible`, it does not run the
//! version already, and it has not finished (success, failure, rollback) within this rollout.
//!
//! Stage rules: a stage is done when every reached member finished or stopped blocking (its stage's deadline
//! passed, or an operator moved on with `next`); the next stage starts `soak_secs` after that.

use std::collections::BTreeMap;

use ota_protocol::admin::RolloutState;
use ota_protocol::device::ReportStatus;
use sha2::{Digest, Sha256};

/// Default stages.
pub const DEFAULT_STAGES: [u8; 3] = [5, 25, 100];
/// Default failure threshold.
pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.2;

/// The parts of a rollout the decisions need.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan<'a> {
    /// State.
    pub state: RolloutState,
    /// Stage percentages (validated by [`validate_stages`]).
    pub stages: &'a [u8],
    /// Index into `stages`.
    pub current_stage: usize,
    /// Tag selector.
    pub tags: &'a BTreeMap<String, String>,
    /// The bundle's `compatible`.
    pub compatible: &'a str,
    /// The bundle's version.
    pub version: &'a semver::Version,
    /// Failure threshold in `[0, 1]`.
    pub failure_threshold: f64,
    /// Bad outcomes already acknowledged by a resume.
    pub bad_baseline: u64,
    /// Group the filter requires.
    pub group: Option<&'a str>,
    /// Versions the filter requires the device to run.
    pub versions: Option<&'a semver::VersionReq>,
    /// Join stage of each member added after creation, in rank order (they rank after the initial members).
    pub joined: &'a [usize],
    /// Seconds a complete stage soaks before the next starts.
    pub soak_secs: u64,
    /// Seconds after a stage's start when unfinished members stop blocking it; 0: never.
    pub deadline_secs: u64,
    /// Nothing is offered before this instant.
    pub start_at: Option<u64>,
    /// When the current stage started.
    pub stage_started_at: u64,
    /// When the current stage became complete (soak running), if it is.
    pub stage_completed_at: Option<u64>,
    /// The instant the decision is made for (Unix seconds).
    pub now: u64,
}

impl Plan<'_> {
    /// Number of members in the initial target set (`statuses.len()` minus the late joiners).
    fn initial(&self, members: usize) -> u64 {
        members.saturating_sub(self.joined.len()) as u64
    }

    /// Whether the rollout has started (`start_at` passed).
    pub fn started(&self) -> bool {
        self.start_at.is_none_or(|t| self.now >= t)
    }

    /// Whether the current stage's deadline has passed.
    pub fn deadline_passed(&self) -> bool {
        self.deadline_secs > 0
            && self.now >= self.stage_started_at.saturating_add(self.deadline_secs)
    }
}

/// What the server knows about one device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceFacts<'a> {
    /// Product string.
    pub compatible: &'a str,
    /// Tags.
    pub tags: &'a BTreeMap<String, String>,
    /// Running version.
    pub current_version: Option<&'a semver::Version>,
    /// Operator tags (override `tags` of the same name).
    pub labels: &'a BTreeMap<String, String>,
    /// Operator group.
    pub group: Option<&'a str>,
}

static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();

impl Default for DeviceFacts<'_> {
    fn default() -> Self {
        DeviceFacts {
            compatible: "",
            tags: &NO_TAGS,
            current_version: None,
            labels: &NO_TAGS,
            group: None,
        }
    }
}

/// A device's place in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Position in the staged order.
    pub rank: u64,
    /// Latest report in this rollout (`None`: nothing reported yet).
    pub status: Option<ReportStatus>,
    /// The stage it joined at, for a member added after creation.
    pub joined: Option<usize>,
}

/// Why nothing is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoOffer {
    /// Paused or aborted.
    NotActive,
    /// Not in the target set.
    NotTargeted,
    /// Tags no longer match the selector.
    TagsDoNotMatch,
    /// `compatible` differs from the bundle's.
    Incompatible,
    /// In a later stage than the current one.
    LaterStage,
    /// Already runs the version.
    AlreadyOnVersion,
    /// Finished within this rollout (success, failure or rolled back).
    Finished,
}

/// Number of devices in the first stages up to `percent` of `targeted`: `ceil(targeted * percent / 100)`.
pub fn stage_size(targeted: u64, percent: u8) -> u64 {
    let p = u64::from(percent.min(100));
    (targeted * p).div_ceil(100)
}

/// Whether a device carries every tag of the selector.
pub fn tags_match(selector: &BTreeMap<String, String>, tags: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| tags.get(k) == Some(v))
}

/// Whether a device's effective tags (reported facts overlaid by operator labels) carry every tag of the
/// selector. Allocation-free: the poll path calls it.
pub fn effective_tags_match(
    selector: &BTreeMap<String, String>,
    reported: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).or_else(|| reported.get(k)) == Some(v))
}

/// Whether a device matches the rollout's filter: tags, group and version range.
pub fn matches_filter(plan: &Plan<'_>, device: &DeviceFacts<'_>) -> bool {
    effective_tags_match(plan.tags, device.tags, device.labels)
        && plan.group.is_none_or(|g| device.group == Some(g))
        && plan
            .versions
            .is_none_or(|req| device.current_version.is_some_and(|v| req.matches(v)))
}

/// The version a report says the device runs from now on: a success means the release is committed and
/// booted, before the device's next poll says so (a revert created in between must take it back).
pub fn runs_after_report(
    status: ReportStatus,
    version: Option<&semver::Version>,
) -> Option<&semver::Version> {
    version.filter(|_| status == ReportStatus::Success)
}

/// Whether a device belongs in the target set: it matches the filter and `compatible` and does not run the
/// version already.
pub fn selects(plan: &Plan<'_>, device: &DeviceFacts<'_>) -> bool {
    matches_filter(plan, device)
        && device.compatible == plan.compatible
        && device.current_version != Some(plan.version)
}

/// The stage a device that starts matching now joins: the one after the current stage, or the last stage
/// itself when the rollout is already there (it has no later one).
pub fn join_stage(plan: &Plan<'_>) -> usize {
    (plan.current_stage + 1).min(plan.stages.len().saturating_sub(1))
}

/// Whether a member's stage has been reached. `initial` = size of the initial target set.
pub fn reached(plan: &Plan<'_>, initial: u64, member: Membership) -> bool {
    match member.joined {
        Some(stage) => plan.current_stage >= stage,
        None => member.rank < initial && member.rank < offered(plan, initial),
    }
}

/// The stage index an initial member of rank `rank` belongs to (the first stage that covers it).
fn stage_of(plan: &Plan<'_>, initial: u64, rank: u64) -> usize {
    plan.stages
        .iter()
        .position(|&p| rank < stage_size(initial, p))
        .unwrap_or(plan.stages.len())
}

/// The stable pseudo-random key that orders a rollout's targets (so stage 1 is a sample, not the alphabetically
/// first robots). Sort by `(rank_key, device_id)`.
pub fn rank_key(seed: &str, device_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(device_id.as_bytes());
    h.finalize().into()
}

/// Orders device ids into ranks for a rollout seeded with `seed` (e.g. the bundle id and creation time).
pub fn order_targets(seed: &str, mut device_ids: Vec<String>) -> Vec<String> {
    device_ids.sort_by_cached_key(|id| (rank_key(seed, id), id.clone()));
    device_ids
}

/// Number of devices offered the update in the current stage (cumulative).
pub fn offered(plan: &Plan<'_>, targeted: u64) -> u64 {
    plan.stages
        .get(plan.current_stage)
        .map_or(0, |&p| stage_size(targeted, p))
}

/// Whether to offer the update to a device.
pub fn offer(
    plan: &Plan<'_>,
    targeted: u64,
    membership: Option<Membership>,
    device: &DeviceFacts<'_>,
) -> Result<(), NoOffer> {
    if !matches!(plan.state, RolloutState::Active | RolloutState::Completed) || !plan.started() {
        return Err(NoOffer::NotActive);
    }
    let member = membership.ok_or(NoOffer::NotTargeted)?;
    if member.joined.is_none() && member.rank >= targeted {
        return Err(NoOffer::NotTargeted);
    }
    if !matches_filter(plan, device) {
        return Err(NoOffer::TagsDoNotMatch);
    }
    if device.compatible != plan.compatible {
        return Err(NoOffer::Incompatible);
    }
    if !reached(plan, targeted, member) {
        return Err(NoOffer::LaterStage);
    }
    if device.current_version == Some(plan.version) {
        return Err(NoOffer::AlreadyOnVersion);
    }
    if member.status.is_some_and(ReportStatus::is_terminal) {
        return Err(NoOffer::Finished);
    }
    Ok(())
}

/// Whether a device may download the rollout's bundle: it is in a reached stage of a rollout that is not
/// aborted (a pause stops new offers, not downloads already under way).
pub fn may_download(plan: &Plan<'_>, targeted: u64, membership: Option<Membership>) -> bool {
    plan.state != RolloutState::Aborted && membership.is_some_and(|m| reached(plan, targeted, m))
}

/// A change the rollout makes by itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Move to this stage index.
    Advance(usize),
    /// The last stage is done.
    Complete,
    /// Too many failures: pause with this reason.
    AutoPause(String),
    /// Every reached member is done: the current stage starts soaking now.
    Soak,
    /// A member blocks the stage again (a retry, a late joiner in the last stage): the soak restarts later.
    Reopen,
}

/// Counts over the offered devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTally {
    /// Devices in reached stages.
    pub offered: u64,
    /// Of them, finished.
    pub terminal: u64,
    /// Of them, failed or rolled back.
    pub bad: u64,
    /// Of them, unfinished but no longer blocking (deadline passed, or passed over by `next`).
    pub timed_out: u64,
}

/// Whether an unfinished member in a reached stage has stopped blocking: the current stage's deadline passed,
/// or it belongs to an earlier stage that was left without it (`next`, or an earlier deadline).
pub fn timed_out(plan: &Plan<'_>, initial: u64, member: Membership) -> bool {
    if member.status.is_some_and(ReportStatus::is_terminal) || !reached(plan, initial, member) {
        return false;
    }
    let stage = member
        .joined
        .unwrap_or_else(|| stage_of(plan, initial, member.rank));
    plan.deadline_passed() || stage < plan.current_stage
}

/// Tallies the reached members. `statuses` is indexed by rank: the initial members, then the late joiners of
/// `plan.joined`.
pub fn tally(plan: &Plan<'_>, statuses: &[Option<ReportStatus>]) -> StageTally {
    let initial = plan.initial(statuses.len());
    let mut t = StageTally::default();
    for (rank, &status) in statuses.iter().enumerate() {
        let joined = (rank as u64)
            .checked_sub(initial)
            .and_then(|i| plan.joined.get(i as usize).copied());
        let m = Membership {
            rank: rank as u64,
            status,
            joined,
        };
        if !reached(plan, initial, m) {
            continue;
        }
        t.offered += 1;
        if let Some(status) = status {
            t.terminal += u64::from(status.is_terminal());
            t.bad += u64::from(status.is_bad());
        }
        t.timed_out += u64::from(timed_out(plan, initial, m));
    }
    t
}

/// The next automatic transition, if any. Apply it and call again until `None` (a stage whose devices all
/// finished already advances at once).
pub fn evaluate(plan: &Plan<'_>, statuses: &[Option<ReportStatus>]) -> Option<Transition> {
    if plan.state != RolloutState::Active || !plan.started() {
        return None;
    }
    let t = tally(plan, statuses);
    let new_bad = t.bad.saturating_sub(plan.bad_baseline);
    if t.offered > 0 && new_bad as f64 / t.offered as f64 > plan.failure_threshold {
        return Some(Transition::AutoPause(format!(
            "automatic pause: {new_bad} of {} offered devices failed or rolled back ({:.0}% > threshold {:.0}%)",
            t.offered,
            100.0 * new_bad as f64 / t.offered as f64,
            100.0 * plan.failure_threshold
        )));
    }
    if t.terminal + t.timed_out < t.offered {
        return plan
            .stage_completed_at
            .is_some()
            .then_some(Transition::Reopen);
    }
    // The soak gates the next stage only: a finished last stage completes at once, and the guards' watch period
    // (not a soak) keeps judging the fleet after that.
    if plan.current_stage + 1 >= plan.stages.len() {
        return Some(Transition::Complete);
    }
    match plan.stage_completed_at {
        _ if plan.soak_secs == 0 => {}
        None => return Some(Transition::Soak),
        Some(at) if plan.now < at.saturating_add(plan.soak_secs) => return None,
        Some(_) => {}
    }
    Some(Transition::Advance(plan.current_stage + 1))
}

/// A device's status in a rollout after it reports `reported`: a finished device may only move to another final
/// status (a success that later rolls back); late progress reports do not reopen it.
pub fn member_status_after(
    old: Option<ReportStatus>,
    reported: ReportStatus,
) -> Option<ReportStatus> {
    if old.is_some_and(ReportStatus::is_terminal) && !reported.is_terminal() {
        old
    } else {
        Some(reported)
    }
}

/// What a rollout looks like after its automatic transitions ([`settle`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// State.
    pub state: RolloutState,
    /// Stage index.
    pub current_stage: usize,
    /// Set when the rollout paused itself.
    pub pause_reason: Option<String>,
    /// When the current stage started.
    pub stage_started_at: u64,
    /// When the current stage became complete (soaking).
    pub stage_completed_at: Option<u64>,
}

/// Applies [`evaluate`] until nothing changes. `None`: the rollout stays as it is.
pub fn settle(plan: &Plan<'_>, statuses: &[Option<ReportStatus>]) -> Option<Settled> {
    let mut plan = plan.clone();
    let mut pause_reason = None;
    let mut changed = false;
    while let Some(transition) = evaluate(&plan, statuses) {
        match transition {
            Transition::Advance(stage) => {
                plan.current_stage = stage;
                plan.stage_started_at = plan.now;
                plan.stage_completed_at = None;
            }
            Transition::Complete => plan.state = RolloutState::Completed,
            Transition::AutoPause(reason) => {
                plan.state = RolloutState::Paused;
                pause_reason = Some(reason);
            }
            Transition::Soak => plan.stage_completed_at = Some(plan.now),
            Transition::Reopen => plan.stage_completed_at = None,
        }
        changed = true;
    }
    changed.then_some(Settled {
        state: plan.state,
        current_stage: plan.current_stage,
        pause_reason,
        stage_started_at: plan.stage_started_at,
        stage_completed_at: plan.stage_completed_at,
    })
}

/// `next`: the stage after the current one starts now, whatever its completion or soak. Refused unless the
/// rollout is active or paused and has a later stage.
pub fn next_stage(plan: &Plan<'_>) -> Result<usize, String> {
    if !matches!(plan.state, RolloutState::Active | RolloutState::Paused) {
        return Err(format!(
            "it is {}; only an active or paused rollout moves to its next stage",
            plan.state.as_str()
        ));
    }
    if plan.current_stage + 1 >= plan.stages.len() {
        return Err("it is already in its last stage".into());
    }
    Ok(plan.current_stage + 1)
}

/// `retry`: which members are offered again (their status resets to pending): the failed and rolled-back
/// ones. Refused for an aborted rollout. A completed rollout with members to retry becomes active again.
pub fn retry(
    state: RolloutState,
    statuses: &[Option<ReportStatus>],
) -> Result<(Vec<usize>, RolloutState), String> {
    if state == RolloutState::Aborted {
        return Err("it is aborted".into());
    }
    let again: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_some_and(ReportStatus::is_bad))
        .map(|(i, _)| i)
        .collect();
    let next = if state == RolloutState::Completed && !again.is_empty() {
        RolloutState::Active
    } else {
        state
    };
    Ok((again, next))
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

/// What a manual action does to a rollout in `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Already in the wanted state: nothing to do.
    Unchanged,
    /// Move to this state with this pause reason. A resume also acknowledges the failures so far (the caller
    /// resets the baseline with [`tally`]) and re-evaluates the rollout ([`settle`]).
    Become(RolloutState, Option<String>),
    /// Not possible from this state (a finished rollout stays finished).
    Refused,
}

/// The manual transitions: pause an active rollout, resume a paused one, abort any that is not aborted.
pub fn control(action: RolloutAction, state: RolloutState) -> Control {
    use RolloutState::*;
    match (action, state) {
        (RolloutAction::Pause, Paused)
        | (RolloutAction::Resume, Active)
        | (RolloutAction::Abort, Aborted) => Control::Unchanged,
        (RolloutAction::Pause, Active) => {
            Control::Become(Paused, Some("paused by an operator".into()))
        }
        (RolloutAction::Resume, Paused) => Control::Become(Active, None),
        (RolloutAction::Abort, _) => Control::Become(Aborted, None),
        _ => Control::Refused,
    }
}

/// Checks stage percentages: non-empty, strictly increasing, within 1..=100, ending at 100.
pub fn validate_stages(stages: &[u8]) -> Result<(), String> {
    if stages.is_empty() {
        return Err("stages must list at least one percentage, e.g. [5, 25, 100]".into());
    }
    if stages.iter().any(|&p| p == 0 || p > 100) {
        return Err("every stage must be a percentage between 1 and 100".into());
    }
    if stages.windows(2).any(|w| w[0] >= w[1]) {
        return Err(
            "stages must be strictly increasing cumulative percentages, e.g. [5, 25, 100]".into(),
        );
    }
    if stages.last() != Some(&100) {
        return Err("the last stage must be 100 so the rollout can complete".into());
    }
    Ok(())
}

/// Checks a failure threshold.
pub fn validate_threshold(threshold: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&threshold) {
        Ok(())
    } else {
        Err(format!(
            "failure_threshold must be between 0 and 1 (got {threshold})"
        ))
    }
}

#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
