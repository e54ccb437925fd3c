//! The admin API: publishing bundles, inventory, rollouts and the event stream. Used by `ota-bundle publish`,
//! the `ota-server` CLI and the dashboard.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{GuardBreach, GuardRule, Schedule, StageRules, TargetFilter, Waiting};

use crate::device::{ReportStatus, Telemetry};

/// Answer to a bundle upload (`POST /api/bundles`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    /// SHA-256 of the bundle file.
    pub bundle_id: String,
    /// Version the bundle installs.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// The bundle's `compatible`.
    pub compatible: String,
    /// SHA-256 of the signed manifest.
    pub manifest_digest: String,
    /// File size in bytes.
    pub size: u64,
    /// The same file had been published before.
    pub deduplicated: bool,
}

/// One image of a published bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Slot class it installs into.
    pub slot_class: String,
    /// Uncompressed size.
    pub size: u64,
    /// SHA-256 of the uncompressed image.
    pub sha256: String,
    /// Payload kind: `full` or `chunked` (delta-capable, read by ranges).
    #[serde(default = "full_payload")]
    pub payload: String,
}

/// Records stored before payload kinds existed were all `full`.
fn full_payload() -> String {
    "full".into()
}

/// A published bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleInfo {
    /// SHA-256 of the bundle file.
    pub bundle_id: String,
    /// Version.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// Product / hardware string.
    pub compatible: String,
    /// SHA-256 of the signed manifest.
    pub manifest_digest: String,
    /// File size.
    pub size: u64,
    /// Release notes.
    pub description: String,
    /// Upload time (seconds since the epoch).
    pub uploaded_at: u64,
    /// The images.
    pub images: Vec<ImageInfo>,
}

/// The latest report of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastStatus {
    /// Status.
    pub status: ReportStatus,
    /// Rollout it was about.
    pub rollout_id: Option<u64>,
    /// Version it was about.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<semver::Version>,
    /// When it was received.
    pub at: u64,
    /// Error of a failure.
    pub error: Option<String>,
    /// Reason of a rollback.
    pub reason: Option<String>,
}

/// A device in the inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    /// Device id.
    pub device_id: String,
    /// Product / hardware string.
    pub compatible: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Running version.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub current_version: Option<semver::Version>,
    /// Booted slot.
    pub booted_slot: Option<String>,
    /// Version per slot.
    pub slots: BTreeMap<String, String>,
    /// Enrollment time.
    pub enrolled_at: u64,
    /// Time of the last poll or report.
    pub last_seen: Option<u64>,
    /// Latest report.
    pub last_status: Option<LastStatus>,
    /// Telemetry of the latest poll.
    pub telemetry: Option<Telemetry>,
    /// Operator tags (merged over the reported ones for targeting).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Group.
    #[serde(default)]
    pub group: Option<String>,
    /// Why it holds back an offered update, if it does.
    #[serde(default)]
    pub waiting: Option<Waiting>,
    /// Its committed security floor.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub security_floor: Option<semver::Version>,
    /// Its freeze alarm, from its last poll (docs/time-model.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_alarm: Option<crate::fleet::FreezeAlarm>,
    /// Its maintenance score, 0-100 (docs/maintenance.md); null until the server knows enough.
    #[serde(default)]
    pub maintenance_score: Option<f64>,
    /// How its recent updates went (the server's health rule); absent from servers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<DeviceHealth>,
}

/// The health rule's verdict on a robot: failures and roll-backs among its last outcome reports (success,
/// failure, rolled back; progress reports do not count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceHealth {
    /// `ok`, `warn` (only the latest outcome was bad) or `bad` (enough bad outcomes to flag it).
    pub level: HealthLevel,
    /// `failure` outcomes counted.
    pub failures: u8,
    /// `rolled_back` outcomes counted.
    pub rollbacks: u8,
    /// Outcomes looked at (at most the rule's window).
    pub outcomes: u8,
}

/// [`DeviceHealth::level`], ordered from good to bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Nothing to look at.
    Ok,
    /// The latest outcome was a failure or a roll-back.
    Warn,
    /// Failing repeatedly.
    Bad,
}

impl HealthLevel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Ok => "ok",
            HealthLevel::Warn => "warn",
            HealthLevel::Bad => "bad",
        }
    }
}

/// `GET /api/devices?page=...`: one page of the filtered, sorted inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevicePage {
    /// The devices of this page, in order.
    pub devices: Vec<DeviceInfo>,
    /// Devices matching the filter (all pages).
    pub total: u64,
    /// This page, from 1.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Counts over the whole fleet, whatever the filter (the console's summary line).
    pub fleet: FleetCounts,
}

/// Counts over the whole fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetCounts {
    /// Enrolled devices.
    pub devices: u64,
    /// Health `bad`.
    pub failing: u64,
    /// Health `warn`.
    pub last_failed: u64,
    /// With a freeze alarm.
    pub frozen: u64,
    /// Waiting before a phase of an offered update.
    pub waiting: u64,
}

/// A stored status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportRecord {
    /// The device's report id.
    pub report_id: String,
    /// Rollout.
    pub rollout_id: Option<u64>,
    /// Version.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<semver::Version>,
    /// Manifest digest.
    pub manifest_digest: Option<String>,
    /// Status.
    pub status: ReportStatus,
    /// Progress.
    pub progress_percent: Option<u8>,
    /// Error (failure).
    pub error: Option<String>,
    /// Log tail.
    pub log_tail: Option<String>,
    /// Reason (rolled back).
    pub reason: Option<String>,
    /// When the server received it.
    pub received_at: u64,
}

/// `GET /api/devices/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    /// The device.
    pub device: DeviceInfo,
    /// Its reports, newest first.
    pub reports: Vec<ReportRecord>,
}

/// `POST /api/rollouts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutRequest {
    /// The bundle to roll out.
    pub bundle_id: String,
    /// Devices must carry every one of these tags (empty: all devices).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Cumulative percentages of the target set, strictly increasing, last = 100. Default `[5, 25, 100]`.
    #[serde(default)]
    pub stages: Option<Vec<u8>>,
    /// Pause by itself when (failed + rolled back) / offered exceeds this. Default 0.2.
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Which devices it targets (replaces `tags`; give one or the other). Evaluated continuously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TargetFilter>,
    /// Soak time and stage deadline.
    #[serde(default)]
    pub rules: StageRules,
    /// When robots may install; default: each robot's group schedule, or any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Nothing is offered before this time (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<u64>,
    /// Health rules; a breach pauses the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardRule>,
    /// How long the guards keep watching after the rollout completed.
    #[serde(default)]
    pub watch_secs: u64,
    /// Robots wait for a local confirmation before rebooting.
    #[serde(default)]
    pub require_confirmation: bool,
    /// A fleet revert: the bundle may be older than what robots run (never below their security floor).
    #[serde(default)]
    pub revert: bool,
}

/// Life of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Offering to the current stage.
    Active,
    /// Offering nothing until resumed.
    Paused,
    /// Stopped for good.
    Aborted,
    /// Every stage done; still offers to target devices that have not updated.
    Completed,
}

impl RolloutState {
    /// All states.
    pub const ALL: [RolloutState; 4] = [
        RolloutState::Active,
        RolloutState::Paused,
        RolloutState::Aborted,
        RolloutState::Completed,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Aborted => "aborted",
            RolloutState::Completed => "completed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Per-rollout device counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutCounts {
    /// Devices in the target set.
    pub targeted: u64,
    /// Devices in the stages reached so far.
    pub offered: u64,
    /// Offered devices that have not reported yet.
    pub pending: u64,
    /// Downloading, installing or rebooting.
    pub in_progress: u64,
    /// Reported success.
    pub succeeded: u64,
    /// Reported failure.
    pub failed: u64,
    /// Reported rolled back.
    pub rolled_back: u64,
    /// Stopped blocking their stage at its deadline without finishing.
    #[serde(default)]
    pub timed_out: u64,
    /// Holding back the update (readiness check, window or confirmation).
    #[serde(default)]
    pub waiting: u64,
}

/// A rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutInfo {
    /// Id.
    pub rollout_id: u64,
    /// Display name.
    pub name: String,
    /// Bundle.
    pub bundle_id: String,
    /// Version of the bundle.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// `compatible` of the bundle.
    pub compatible: String,
    /// Manifest digest of the bundle.
    pub manifest_digest: String,
    /// Tag selector.
    pub tags: BTreeMap<String, String>,
    /// Stage percentages.
    pub stages: Vec<u8>,
    /// Index into `stages`.
    pub current_stage: usize,
    /// State.
    pub state: RolloutState,
    /// Why it paused (automatic pauses say which threshold was passed).
    pub pause_reason: Option<String>,
    /// Failure threshold.
    pub failure_threshold: f64,
    /// Creation time.
    pub created_at: u64,
    /// Last change.
    pub updated_at: u64,
    /// Moves with every change of the rollout or of a member's status: of two copies of the same rollout, the one
    /// with the greater revision is the newer (`updated_at` has only second resolution).
    #[serde(default)]
    pub revision: u64,
    /// Device counts.
    pub counts: RolloutCounts,
    /// Target filter (its `tags` equal `tags` above).
    #[serde(default)]
    pub filter: TargetFilter,
    /// Stage rules.
    #[serde(default)]
    pub rules: StageRules,
    /// Install schedule of the rollout itself (`None`: the groups' schedules).
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Scheduled start.
    #[serde(default)]
    pub start_at: Option<u64>,
    /// Health rules.
    #[serde(default)]
    pub guards: Vec<GuardRule>,
    /// Watch period after completion.
    #[serde(default)]
    pub watch_secs: u64,
    /// Robots wait for a local confirmation before rebooting.
    #[serde(default)]
    pub require_confirmation: bool,
    /// A fleet revert.
    #[serde(default)]
    pub revert: bool,
    /// The guard breach that paused it, if one did.
    #[serde(default)]
    pub breach: Option<GuardBreach>,
    /// When the current stage started (Unix seconds).
    #[serde(default)]
    pub stage_started_at: Option<u64>,
}

/// Status of one device within a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutDevice {
    /// Device id.
    pub device_id: String,
    /// Position in the staged order (stage k covers ranks below its share).
    pub rank: u64,
    /// `pending` or a [`ReportStatus`] wire name.
    pub status: String,
    /// Last change.
    pub updated_at: u64,
    /// Stopped blocking its stage at the deadline.
    #[serde(default)]
    pub timed_out: bool,
    /// Why it holds back, if it does.
    #[serde(default)]
    pub waiting: Option<Waiting>,
}

/// `GET /api/rollouts/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutDetail {
    /// The rollout.
    pub rollout: RolloutInfo,
    /// Its target devices in rank order.
    pub devices: Vec<RolloutDevice>,
}

/// Data of a `report` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportEvent {
    /// Reporting device.
    pub device_id: String,
    /// The report.
    pub report: ReportRecord,
}

/// Data of a `device_deleted` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDeletedEvent {
    /// The forgotten device.
    pub device_id: String,
}

/// A server-sent event of `GET /api/events`: [`Event::name`] is the SSE `event:` field, the payload its `data:`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `device_updated`.
    DeviceUpdated(Box<DeviceInfo>),
    /// `report`.
    Report(Box<ReportEvent>),
    /// `rollout_updated`.
    RolloutUpdated(Box<RolloutInfo>),
    /// `device_deleted`.
    DeviceDeleted(DeviceDeletedEvent),
    /// `alerts_changed`.
    AlertsChanged(crate::alerts::AlertsChanged),
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::DeviceUpdated(_) => "device_updated",
            Event::Report(_) => "report",
            Event::RolloutUpdated(_) => "rollout_updated",
            Event::DeviceDeleted(_) => "device_deleted",
            Event::AlertsChanged(_) => "alerts_changed",
        }
    }

    /// The payload as JSON text.
    pub fn data_json(&self) -> String {
        let result = match self {
            Event::DeviceUpdated(d) => serde_json::to_string(d),
            Event::Report(r) => serde_json::to_string(r),
            Event::RolloutUpdated(r) => serde_json::to_string(r),
            Event::DeviceDeleted(d) => serde_json::to_string(d),
            Event::AlertsChanged(a) => serde_json::to_string(a),
        };
        // These types contain only strings, numbers and maps with string keys: encoding cannot fail.
        result.unwrap_or_else(|e| format!("{{\"error\":\"cannot encode event: {e}\"}}"))
    }
}

/// Whether a robot's key may get tokens: an operator's decision (`ota-server devices admit|reject`), or the
/// server's under `admission = "auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Asked to be admitted; gets no token yet.
    Pending,
    /// Gets tokens while it proves its key.
    Accepted,
    /// Refused; its tokens stop working.
    Rejected,
}

impl Admission {
    /// All states.
    pub const ALL: [Admission; 3] = [Admission::Pending, Admission::Accepted, Admission::Rejected];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Pending => "pending",
            Admission::Accepted => "accepted",
            Admission::Rejected => "rejected",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A robot's identity as the server keeps it (`GET /api/admission`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceIdentity {
    /// Device id.
    pub device_id: String,
    /// Its ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Admission state.
    pub admission: Admission,
    /// When it first asked (or was pre-authorised).
    pub requested_at: u64,
    /// When the admission state last changed.
    pub decided_at: Option<u64>,
    /// Who changed it: `admin`, `auto` (admission = "auto") or `preauthorized`.
    pub decided_by: Option<String>,
}

/// `POST /api/devices/{device_id}/preauthorize`: accept this key on first contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreauthorizeRequest {
    /// The robot's ed25519 public key: 64 hex digits or an SPKI PEM.
    pub public_key: String,
}
