//! Wire types of fleet operations: device labels and groups, rollout targets, stage rules, maintenance windows,
//! health guards, telemetry history, and what a robot says while it waits.
//!
//! Every field added to an older type is optional with a default, so robots and tools of the previous release
//! keep working against this server and the other way round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which devices a rollout targets. A device matches when every present criterion holds; the bundle's
/// `compatible` always has to match too. Evaluated continuously: a device that matches later (newly enrolled,
/// relabelled, updated to a version in range) joins the rollout's next stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TargetFilter {
    /// The device must carry every one of these tags (its reported facts merged with the operator's labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The device must be in this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The device's running version must satisfy this requirement (e.g. `>=2.0, <2.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub versions: Option<semver::VersionReq>,
}

/// Day of the week, Monday first (ISO 8601).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A recurring maintenance window in local time: on each of `days`, from `start` to `end` (`"HH:MM"`). An `end`
/// at or before `start` runs past midnight into the next day (the window belongs to the day it starts on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days the window opens on; empty means every day.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Opening time, `"HH:MM"`.
    pub start: String,
    /// Closing time, `"HH:MM"`.
    pub end: String,
}

/// When installs may happen: a list of windows in an IANA time zone (e.g. `Europe/Berlin`). No windows means
/// any time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Windows; empty: any time.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Time zone of the windows; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// The statistic a guard computes over a set of robots' recent values of a metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GuardStat {
    /// 95th percentile.
    #[default]
    P95,
    /// Arithmetic mean.
    Mean,
    /// Largest value.
    Max,
}

/// A health rule on what robots report. `metric` is a telemetry metric name (`inference_latency_ms`,
/// `error_rate`, `cpu_percent`, `battery_percent`...) or one of the event rates `rollbacks` and `reboots`
/// (per updated robot). The rule is breached when the statistic over updated robots exceeds `max`, or exceeds
/// the same statistic over not-yet-updated robots by more than `max_increase_percent`. Until `min_robots`
/// updated robots (and, for the comparison, as many not-yet-updated ones) have reported the metric, the rule
/// is not evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuardRule {
    /// Metric name.
    pub metric: String,
    /// Statistic; default p95.
    #[serde(default)]
    pub stat: GuardStat,
    /// Fixed upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Largest allowed rise over the not-yet-updated robots, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase_percent: Option<f64>,
    /// Robots needed on each side before the rule is evaluated; default 1.
    #[serde(default = "one")]
    pub min_robots: u32,
}

fn one() -> u32 {
    1
}

/// A guard that fired: which rule, the values compared and the updated robots that were worst.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardBreach {
    /// The rule, as configured.
    pub rule: GuardRule,
    /// The statistic over the updated robots.
    pub updated: f64,
    /// The same statistic over the not-yet-updated robots, when there were enough of them.
    pub baseline: Option<f64>,
    /// Updated robots above the bound or the baseline, worst first (at most 20).
    pub robots: Vec<String>,
    /// When it fired (Unix seconds).
    pub at: u64,
}

/// Stage rules of a rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageRules {
    /// Time a stage must have been complete (and healthy) before the next starts.
    #[serde(default)]
    pub soak_secs: u64,
    /// After this long in a stage, robots that have not finished stop blocking it (counted as timed out). 0: no
    /// deadline.
    #[serde(default)]
    pub deadline_secs: u64,
}

/// Why a robot holds back an offered update, as it reports in its polls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Waiting {
    /// The step it waits before.
    pub phase: WaitPhase,
    /// Why, in the robot's words (the readiness check's first output line, or "waiting for confirmation").
    pub reason: String,
    /// How long it has been waiting, in seconds.
    #[serde(default)]
    pub for_secs: u64,
}

/// A robot's freeze alarm, sent with each poll while it lasts (docs/time-model.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FreezeAlarm {
    /// Why.
    pub reason: FreezeReason,
    /// The robot's own uptime, in seconds (accumulated across restarts), since it last verified a new
    /// timestamp.
    pub stale_secs: u64,
    /// The newest timestamp version it verified; absent: none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_version: Option<u64>,
}

/// Why a robot raises its freeze alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FreezeReason {
    /// No new signed timestamp for longer than its `max_metadata_age_secs` of uptime: the server, or something
    /// between, withholds fresh metadata (or the server has no timestamp key the robot trusts).
    Stale,
    /// It was sent a timestamp that expired before its time floor: old metadata replayed (or a server clock far
    /// behind).
    Replayed,
    /// It was sent a timestamp its trust root's timestamp keys did not sign.
    Invalid,
}

impl FreezeReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FreezeReason::Stale => "stale",
            FreezeReason::Replayed => "replayed",
            FreezeReason::Invalid => "invalid",
        }
    }
}

/// The steps a robot gates separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WaitPhase {
    /// Before downloading.
    Download,
    /// Before writing the standby slot and arming it.
    Install,
    /// Before rebooting into the armed slot.
    Reboot,
}

impl WaitPhase {
    /// All phases, in the order an update passes them.
    pub const ALL: [WaitPhase; 3] = [WaitPhase::Download, WaitPhase::Install, WaitPhase::Reboot];

    /// The wire name (also the readiness command's argument).
    pub fn as_str(self) -> &'static str {
        match self {
            WaitPhase::Download => "download",
            WaitPhase::Install => "install",
            WaitPhase::Reboot => "reboot",
        }
    }
}

impl std::fmt::Display for WaitPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `PUT /api/devices/{id}/labels`: the operator's tags and group of a device. Operator tags override the
/// device's reported facts of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceLabels {
    /// Operator tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Group; `None` removes the device from its group.
    #[serde(default)]
    pub group: Option<String>,
}

/// `PUT /api/groups/{name}`: settings shared by a group's devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    /// When the group's robots may install, unless a rollout sets its own schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

/// A group as listed by `GET /api/groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Its settings.
    pub settings: GroupSettings,
    /// Devices in it.
    pub devices: u64,
}

/// One downsampled point of a metric's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// Start of the bucket (Unix seconds).
    pub at: u64,
    /// Samples in the bucket.
    pub count: u64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean of the samples.
    pub mean: f64,
}

/// `GET /api/devices/{id}/history?metric=NAME[&since=UNIX]`: a metric's history, oldest first (the device's
/// update events to mark on its time axis are in [`DeviceTimeline`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricHistory {
    /// Device.
    pub device_id: String,
    /// Metric name.
    pub metric: String,
    /// Points, oldest first.
    pub points: Vec<HistoryPoint>,
}

/// One update event of a robot, from its stored reports: an install started, succeeded, failed or rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateEvent {
    /// When the server received the report (Unix seconds).
    pub at: u64,
    /// `installing`, `success`, `failure` or `rolled_back`.
    pub status: crate::device::ReportStatus,
    /// The version the report is about.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<semver::Version>,
    /// The rollout it belongs to.
    pub rollout_id: Option<u64>,
}

/// `GET /api/devices/{id}/timeline[?since=UNIX]`: what a robot's history charts need besides the points: the
/// metrics it has history of, and its update events, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceTimeline {
    /// Device.
    pub device_id: String,
    /// Start of the span (Unix seconds).
    pub since: u64,
    /// Metric names with history in the span, sorted (each one's points: `GET .../history?metric=`).
    pub metrics: Vec<String>,
    /// Update events in the span, oldest first.
    pub events: Vec<UpdateEvent>,
}

/// One time bucket of a guard's history: the rule's statistic over the robots updated by then and over the
/// others, and the limit the guard compares against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardPoint {
    /// Start of the bucket (Unix seconds).
    pub at: u64,
    /// The statistic over the updated robots with a value (`None`: fewer than `min_robots`).
    pub updated: Option<f64>,
    /// The statistic over the not-yet-updated robots with a value (`None`: fewer than `min_robots`).
    pub baseline: Option<f64>,
    /// The bound the updated side must stay under (the fixed one, or the rise over the baseline; the lower).
    pub limit: Option<f64>,
    /// Updated robots with a value.
    pub updated_robots: u32,
    /// Not-yet-updated robots with a value.
    pub baseline_robots: u32,
}

/// One guard rule's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardSeries {
    /// The rule.
    pub rule: GuardRule,
    /// The rule as written on the command line, e.g. `inference_latency_ms:p95>+20%`.
    pub text: String,
    /// Points, oldest first.
    pub points: Vec<GuardPoint>,
}

/// `GET /api/rollouts/{id}/guards/history[?since=UNIX]`: each guard's metric over updated against
/// not-yet-updated robots, from the members' stored history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardHistory {
    /// Rollout.
    pub rollout_id: u64,
    /// Start of the span (Unix seconds).
    pub since: u64,
    /// One series per guard, in the rollout's order.
    pub guards: Vec<GuardSeries>,
}
