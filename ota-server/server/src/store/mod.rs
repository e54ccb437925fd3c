//! Persistent storage behind a small trait: the embedded SQLite default ([`sqlite::SqliteStore`], nothing to
//! install) or PostgreSQL for several replicas ([`postgres::PostgresStore`]), chosen by a URL ([`open`]), with
//! one schema history for both ([`migrations`]) and one conformance suite run against both. The server keeps
//! its working set in memory ([`crate::fleet`]) and uses the store to load it at start, to commit
//! enrollments, uploads, rollouts and reports synchronously, and to persist poll state (last seen, telemetry,
//! versions) write-behind in batches.
//!
//! Methods are synchronous; the server calls them from `spawn_blocking`.

pub mod accounts;
pub mod alerts;
pub mod codec;
#[cfg(test)]
mod conformance;
pub mod migrations;
pub mod outcomes;
pub mod postgres;
mod select;
pub mod sites;
pub mod sqlite;

pub use select::{open, redact, Backend};

use std::collections::BTreeMap;

use ota_protocol::admin::{DeviceIdentity, ImageInfo, LastStatus, ReportRecord, RolloutState};
use ota_protocol::device::{ReportStatus, Telemetry};
use ota_protocol::fleet::{
    DeviceLabels, GroupSettings, GuardBreach, GuardRule, Schedule, StageRules, Waiting,
};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// An enrolled device as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    /// Device id.
    pub device_id: String,
    /// Product / hardware string.
    pub compatible: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Public half of the token: what the token-hash map is keyed by.
    pub token_id: String,
    /// SHA-256 of the whole token.
    pub token_hash: [u8; 32],
    /// When the token stops working (`None`: a token of an older robot without a key, which does not expire).
    pub token_expires_at: Option<u64>,
    /// Enrollment time.
    pub enrolled_at: u64,
    /// Operator tags and group.
    pub labels: DeviceLabels,
    /// State reported by polls and reports.
    pub state: DeviceState,
}

/// What polls and reports tell about a device (persisted write-behind, except `last_status`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceState {
    /// Running version.
    pub current_version: Option<semver::Version>,
    /// Booted slot.
    pub booted_slot: Option<String>,
    /// Version per slot.
    pub slots: BTreeMap<String, String>,
    /// Last poll or report.
    pub last_seen: Option<u64>,
    /// Telemetry of the last poll.
    pub telemetry: Option<Telemetry>,
    /// Latest report.
    pub last_status: Option<LastStatus>,
    /// Why the robot holds back an offered update, from its last poll.
    pub waiting: Option<Waiting>,
    /// Digest of a bundle written to its standby slot but not armed, from its last poll.
    pub staged: Option<String>,
    /// The lowest version the robot will still run, from its last poll.
    pub security_floor: Option<semver::Version>,
    /// Its freeze alarm, from its last poll. Not stored: every poll repeats it while it lasts.
    pub freeze_alarm: Option<ota_protocol::fleet::FreezeAlarm>,
    /// Its maintenance score ([`crate::maintenance`]), computed by the alerts tick. Not stored.
    pub maintenance_score: Option<f64>,
}

/// A device's last stored poll telemetry ([`Store::telemetry_since`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SeenTelemetry {
    /// Device id.
    pub device_id: String,
    /// When it polled.
    pub last_seen: u64,
    /// The version it ran.
    pub version: Option<semver::Version>,
    /// What it reported.
    pub telemetry: Telemetry,
}

/// A published bundle as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRecord {
    /// SHA-256 of the file; also its blob name.
    pub bundle_id: String,
    /// Version.
    pub version: semver::Version,
    /// Product string.
    pub compatible: String,
    /// SHA-256 of the signed manifest.
    pub manifest_digest: String,
    /// File size.
    pub size: u64,
    /// Release notes.
    pub description: String,
    /// Upload time.
    pub uploaded_at: u64,
    /// Images.
    pub images: Vec<ImageInfo>,
}

/// A rollout's own row (not its devices).
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRecord {
    /// Id (assigned by the store).
    pub rollout_id: u64,
    /// Display name.
    pub name: String,
    /// Bundle.
    pub bundle_id: String,
    /// Tag selector.
    pub tags: BTreeMap<String, String>,
    /// Stage percentages.
    pub stages: Vec<u8>,
    /// Index into `stages`.
    pub current_stage: usize,
    /// State.
    pub state: RolloutState,
    /// Why it is paused.
    pub pause_reason: Option<String>,
    /// Failure threshold.
    pub failure_threshold: f64,
    /// Failed + rolled-back count at the last resume (they no longer count against the threshold).
    pub bad_baseline: u64,
    /// Creation time.
    pub created_at: u64,
    /// Last change.
    pub updated_at: u64,
    /// Filter beyond tags, stage rules, schedule and offer flags.
    pub aim: RolloutAim,
    /// When the current stage started.
    pub stage_started_at: u64,
    /// When the current stage became complete (its soak started).
    pub stage_completed_at: Option<u64>,
    /// The row's revision when it was read. Every write of the row is compare-and-set on it: it succeeds only if
    /// the stored row still has this revision and stores the next one, else fails with
    /// [`StoreError::Stale`] (another replica changed the rollout meanwhile).
    pub revision: u64,
}

/// What a rollout targets and when, besides its tags, and how its guards watch it (stored as one JSON column).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutAim {
    /// Group the filter requires.
    pub group: Option<String>,
    /// Versions the filter requires.
    pub versions: Option<semver::VersionReq>,
    /// Soak and deadline.
    pub rules: StageRules,
    /// Maintenance windows of the rollout (else the group's).
    pub schedule: Option<Schedule>,
    /// Nothing is offered before this instant.
    pub start_at: Option<u64>,
    /// Robots wait for a local confirmation before rebooting.
    pub require_confirmation: bool,
    /// A revert to an older release.
    pub revert: bool,
    /// Health guards (evaluated by [`crate::services::watch`]).
    pub guards: Vec<GuardRule>,
    /// Seconds the guards keep watching after the rollout completed.
    pub watch_secs: u64,
    /// The guard breach that paused it, if one did.
    pub breach: Option<GuardBreach>,
    /// When it completed (the watch period runs from there).
    pub completed_at: Option<u64>,
    /// When an operator last resumed it: the guards judge only what robots did since.
    pub acknowledged_at: Option<u64>,
}

/// One target device of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// Device id.
    pub device_id: String,
    /// Position in the staged order.
    pub rank: u64,
    /// Latest report within this rollout (`None`: pending).
    pub status: Option<ReportStatus>,
    /// Last change.
    pub updated_at: u64,
    /// For a device that matched after creation: the stage it joined at.
    pub joined: Option<usize>,
}

/// Everything the server loads at start.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Enrolled devices.
    pub devices: Vec<DeviceRecord>,
    /// Published bundles.
    pub bundles: Vec<BundleRecord>,
    /// Rollouts with their members in rank order.
    pub rollouts: Vec<(RolloutRecord, Vec<MemberRecord>)>,
    /// Device groups with settings.
    pub groups: Vec<(String, GroupSettings)>,
}

/// A report to commit, with the effects it has.
#[derive(Clone, Debug)]
pub struct ReportCommit<'a> {
    /// Reporting device.
    pub device_id: &'a str,
    /// The report.
    pub report: &'a ReportRecord,
    /// The device's new `last_status`.
    pub last_status: &'a LastStatus,
    /// The member status change within a rollout, if the report is about one.
    pub member: Option<(u64, ReportStatus)>,
    /// The rollout row after the report's effect (stage advance, automatic pause), whenever `member` is set:
    /// written compare-and-set like every rollout row, so two replicas never both count on a stale tally.
    pub rollout: Option<&'a RolloutRecord>,
}

/// Storage backend.
pub trait Store:
    accounts::AccountStore
    + alerts::AlertStore
    + outcomes::OutcomeStore
    + sites::SiteStore
    + Send
    + Sync
    + 'static
{
    /// Loads everything the server keeps in memory.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Reads a setting.
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes a setting.
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Inserts or replaces an enrolled device (identity, tags, token; keeps nothing of an older row).
    fn upsert_device(&self, device: &DeviceRecord) -> Result<(), StoreError>;
    /// Forgets a device and its identity (key and admission). Returns whether the device existed.
    fn delete_device(&self, device_id: &str) -> Result<bool, StoreError>;
    /// Replaces a device's token (a renewal, or a revocation: a token no one holds). Returns whether the device
    /// exists.
    fn set_device_token(
        &self,
        device_id: &str,
        token_id: &str,
        token_hash: &[u8; 32],
        expires_at: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// A robot's identity: its key and admission.
    fn identity(&self, device_id: &str) -> Result<Option<DeviceIdentity>, StoreError>;
    /// Every robot identity, by id.
    fn identities(&self) -> Result<Vec<DeviceIdentity>, StoreError>;
    /// Inserts or updates an identity (its last used challenge stays).
    fn put_identity(&self, identity: &DeviceIdentity) -> Result<(), StoreError>;
    /// Uses an enrollment challenge issued at `issued_ms`: true only when it is later than every challenge the
    /// identity used before, in one compare-and-set, so a replayed enrollment fails on every replica.
    fn claim_challenge(&self, device_id: &str, issued_ms: u64) -> Result<bool, StoreError>;
    /// Persists the poll-driven state (and `compatible`) of several devices in one transaction (write-behind
    /// flush). Devices that no longer exist are skipped.
    fn save_device_states(&self, batch: &[DeviceRecord]) -> Result<(), StoreError>;
    /// Records a published bundle. Returns false if it was already there.
    fn insert_bundle(&self, bundle: &BundleRecord) -> Result<bool, StoreError>;
    /// Whether a bundle row exists.
    fn bundle_exists(&self, bundle_id: &str) -> Result<bool, StoreError>;
    /// Creates a rollout with its members; returns the new id (`rollout.rollout_id` is ignored).
    fn create_rollout(
        &self,
        rollout: &RolloutRecord,
        members: &[MemberRecord],
    ) -> Result<u64, StoreError>;
    /// Updates a rollout's row (compare-and-set on its revision).
    fn update_rollout(&self, rollout: &RolloutRecord) -> Result<(), StoreError>;
    /// Commits a report and its effects in one transaction. Returns false (and changes nothing) when this
    /// device already sent a report with the same `report_id`.
    fn commit_report(&self, commit: &ReportCommit<'_>) -> Result<bool, StoreError>;
    /// Sets a device's operator tags and group. Returns whether the device exists.
    fn set_labels(&self, device_id: &str, labels: &DeviceLabels) -> Result<bool, StoreError>;
    /// Creates or replaces a group's settings.
    fn put_group(&self, name: &str, settings: &GroupSettings) -> Result<(), StoreError>;
    /// Inserts or updates members of a rollout (late joiners, retried members) and its row, in one
    /// transaction.
    fn save_members(
        &self,
        rollout: &RolloutRecord,
        members: &[MemberRecord],
    ) -> Result<(), StoreError>;
    /// A device's reports, newest first.
    fn reports(&self, device_id: &str, limit: usize) -> Result<Vec<ReportRecord>, StoreError>;
    /// Stores closed telemetry buckets ([`crate::history::Recorder::take_closed`]), merging each into a stored
    /// bucket of the same device, metric and start.
    fn save_history(&self, rows: &[crate::history::Row]) -> Result<(), StoreError>;
    /// A device's stored buckets of a metric that end after `since`, oldest first.
    fn history(
        &self,
        device_id: &str,
        metric: &str,
        since: u64,
    ) -> Result<Vec<crate::history::Bucket>, StoreError>;
    /// Downsamples the history ([`crate::history::compact`]: minutes older than a day into hours) and deletes
    /// buckets older than `retention_secs`. Returns the rows removed.
    fn compact_history(&self, now: u64, retention_secs: u64) -> Result<u64, StoreError>;
    /// The last stored poll telemetry of each device seen at or after `since`: how the replica that judges the
    /// health guards sees the polls the other replicas took.
    fn telemetry_since(&self, since: u64) -> Result<Vec<SeenTelemetry>, StoreError>;
    /// The metrics a device has stored buckets of that end after `since`, sorted (what its charts list).
    fn history_metrics(&self, device_id: &str, since: u64) -> Result<Vec<String>, StoreError>;

    // One entity, for a replica that heard another one changed it (`crate::cluster`). The defaults read
    // everything; a backend serving several replicas answers them with one query each.

    /// One device.
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self
            .load()?
            .devices
            .into_iter()
            .find(|d| d.device_id == device_id))
    }
    /// One bundle.
    fn bundle(&self, bundle_id: &str) -> Result<Option<BundleRecord>, StoreError> {
        Ok(self
            .load()?
            .bundles
            .into_iter()
            .find(|b| b.bundle_id == bundle_id))
    }
    /// One rollout with its members in rank order.
    fn rollout(
        &self,
        rollout_id: u64,
    ) -> Result<Option<(RolloutRecord, Vec<MemberRecord>)>, StoreError> {
        Ok(self
            .load()?
            .rollouts
            .into_iter()
            .find(|(r, _)| r.rollout_id == rollout_id))
    }
    /// One group's settings.
    fn group(&self, name: &str) -> Result<Option<GroupSettings>, StoreError> {
        Ok(self
            .load()?
            .groups
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s))
    }
}
