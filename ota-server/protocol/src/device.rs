//! The device protocol: enroll once, then poll and report. Every call is idempotent and safe to retry.
//!
//! 1. `POST /api/devices/challenge` ([`ChallengeRequest`] → [`ChallengeResponse`]), then
//!    `POST /api/devices/enroll` ([`EnrollRequest`] → [`EnrollResponse`]) with the robot's public key, its
//!    signature over the challenge ([`enroll_message`]) and the fleet's enrollment secret. An admitted robot gets
//!    a short-lived bearer token (renewed the same way after a 401); one waiting for an operator's admission
//!    gets `425` with `Retry-After`, a rejected one `403`.
//! 2. `POST /api/device/poll` ([`PollRequest`] → [`PollResponse`]) reports state and telemetry and returns either
//!    nothing or an [`UpdateOffer`]. Wait [`PollResponse::next_poll_delay`] before the next poll.
//! 3. While installing an offer, `POST /api/device/report` ([`ReportRequest`] → [`ReportResponse`]) at every
//!    [`ReportStatus`] change. Retry a report with the same `report_id` until it is answered.
//!
//! On `429` or `503` the device waits at least the `Retry-After` seconds ([`parse_retry_after`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Maximum length of a report's `log_tail`, in bytes.
pub const MAX_LOG_TAIL: usize = 64 * 1024;

/// Enrollment request (`POST /api/devices/enroll`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The fleet enrollment secret.
    pub enrollment_secret: String,
    /// The device's stable id (1-64 of `[A-Za-z0-9._-]`).
    pub device_id: String,
    /// Product / hardware string; must equal a bundle's `compatible` for the device to be offered it.
    pub compatible: String,
    /// Tags rollouts select on, e.g. `site=warehouse-3`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Random string generated once per enrollment attempt and reused for every retry of it: a retry with the
    /// same id returns the same token.
    pub request_id: String,
    /// The robot's ed25519 public key, 64 hex digits (raw 32 bytes). Without it (an older robot) only a server
    /// with `admission = "auto"` enrolls the robot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// A challenge from `POST /api/devices/challenge`, used once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// The robot's ed25519 signature (128 hex digits) over [`enroll_message`]: proves it holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a robot signs to enroll: every field that decides its token, so a captured signature cannot be moved
/// to another id, key, challenge or request.
pub fn enroll_message(
    device_id: &str,
    public_key: &str,
    challenge: &str,
    request_id: &str,
) -> Vec<u8> {
    let mut m = b"ota-enroll-v1\0".to_vec();
    for part in [device_id, public_key, challenge, request_id] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m
}

/// Challenge request (`POST /api/devices/challenge`): the first step of a key-proving enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The id the robot will enroll as.
    pub device_id: String,
}

/// A one-time challenge for [`EnrollRequest::challenge`], valid for `expires_in_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeResponse {
    /// Opaque; sign it (inside [`enroll_message`]) and send it back once.
    pub challenge: String,
    /// How long the server accepts it.
    pub expires_in_secs: u64,
}

/// Enrollment answer. The token is shown only here; the server stores a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// The enrolled device id.
    pub device_id: String,
    /// Bearer token for the device endpoints.
    pub token: String,
    /// Suggested poll interval.
    pub poll_interval_secs: u32,
    /// Suggested maximum random extra delay added to each poll interval.
    pub poll_jitter_secs: u32,
}

/// A robot's position (its own map frame or WGS84, as `frame` says).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Position {
    /// X (metres) or longitude.
    pub x: f64,
    /// Y (metres) or latitude.
    pub y: f64,
    /// Heading in radians.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta: Option<f64>,
    /// Reference frame, e.g. `map` or `wgs84`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

/// Telemetry sent with each poll. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Telemetry {
    /// Battery charge, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<f64>,
    /// Current position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// CPU use, 0-100 (all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Total memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Disk space in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    /// Total disk space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// Seconds since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Free-form numeric metrics, e.g. `inference_latency_ms`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Poll request (`POST /api/device/poll`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// Product / hardware string.
    pub compatible: String,
    /// Version of the running system; `None` when unknown.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub current_version: Option<semver::Version>,
    /// Slot the system booted from, e.g. `A`.
    #[serde(default)]
    pub booted_slot: Option<String>,
    /// Version installed in each slot (slot name → version).
    #[serde(default)]
    pub slots: BTreeMap<String, String>,
    /// Telemetry.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Why the robot holds back the offered update, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<crate::fleet::Waiting>,
    /// Manifest digest of a bundle downloaded, verified and written to the standby slot but not armed yet
    /// (waiting for its install window or a confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// The lowest version this robot will ever run again (its committed security floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub security_floor: Option<semver::Version>,
    /// The robot has seen no fresh signed timestamp for too long, or was sent a replayed or forged one
    /// (docs/time-model.md); absent: all is well, or its trust root names no timestamp key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_alarm: Option<crate::fleet::FreezeAlarm>,
}

/// An update the server offers a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateOffer {
    /// The rollout this offer belongs to; quote it in every report.
    pub rollout_id: u64,
    /// SHA-256 of the bundle file.
    pub bundle_id: String,
    /// Version the bundle installs.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: semver::Version,
    /// The bundle's `compatible`.
    pub compatible: String,
    /// SHA-256 of the bundle's signed manifest (the bundle's identity).
    pub manifest_digest: String,
    /// Size of the bundle file in bytes.
    pub size: u64,
    /// Where to download it, relative to the server's base URL. Supports `Range`.
    pub download_url: String,
    /// `false` outside the install window: the robot may download, verify and write the standby slot, but must
    /// not arm it or reboot until an offer says `true`.
    #[serde(default = "yes")]
    pub install_allowed: bool,
    /// The operator rolls back to this release: a lower version than the running one is allowed (never one below
    /// the robot's security floor). A robot whose other slot still holds exactly this bundle switches to it
    /// without downloading.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revert: bool,
    /// The robot must wait for a local confirmation (`ota-client approve`) before it reboots into the update.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_confirmation: bool,
    /// Every image of the bundle is chunked: the robot asks by byte ranges from its first request and fetches
    /// only what it lacks (a robot that ignores the field streams the head first and then switches).
    #[serde(default, skip_serializing_if = "is_false")]
    pub chunked: bool,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Poll answer: when to poll next and, maybe, an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResponse {
    /// Base delay before the next poll.
    pub poll_interval_secs: u32,
    /// Maximum random extra delay.
    pub poll_jitter_secs: u32,
    /// The update to install, or `None`.
    pub update: Option<UpdateOffer>,
    /// The newest trust root version the server publishes (`None`: no rotation published). A robot below it
    /// fetches `GET /api/trust/chain?after=ITS_VERSION` and walks it before acting on `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_version: Option<u64>,
    /// The server's signed timestamp (`"type": "ota-timestamp"`, see `ota_keys::timestamp`), when it has a
    /// timestamp key. Opaque here: a robot whose trust root names a timestamp key verifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub timestamp: Option<serde_json::Value>,
}

impl PollResponse {
    /// The delay before the next poll: the interval plus `random / u32::MAX` of the jitter. Pass a uniformly
    /// random `u32` (the crate has no randomness of its own).
    pub fn next_poll_delay(&self, random: u32) -> Duration {
        let jitter_ms =
            u64::from(self.poll_jitter_secs) * 1000 * u64::from(random) / u64::from(u32::MAX);
        Duration::from_secs(u64::from(self.poll_interval_secs)) + Duration::from_millis(jitter_ms)
    }
}

/// Stages of installing an update, as reported by the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Downloading the bundle.
    Downloading,
    /// Writing the images to the inactive slot.
    Installing,
    /// Downloaded, verified and written to the standby slot, not armed: waiting for the install window or a
    /// confirmation.
    Staged,
    /// About to reboot into the new slot.
    Rebooting,
    /// Booted the new version and committed it.
    Success,
    /// The update failed before switching slots; `error` (and preferably `log_tail`) say why.
    Failure,
    /// The new version was booted but the device went back to the old slot; `reason` says why.
    RolledBack,
}

impl ReportStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [ReportStatus; 7] = [
        ReportStatus::Downloading,
        ReportStatus::Installing,
        ReportStatus::Staged,
        ReportStatus::Rebooting,
        ReportStatus::Success,
        ReportStatus::Failure,
        ReportStatus::RolledBack,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Downloading => "downloading",
            ReportStatus::Installing => "installing",
            ReportStatus::Staged => "staged",
            ReportStatus::Rebooting => "rebooting",
            ReportStatus::Success => "success",
            ReportStatus::Failure => "failure",
            ReportStatus::RolledBack => "rolled_back",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the update is over for this device (success, failure or rolled back).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ReportStatus::Success | ReportStatus::Failure | ReportStatus::RolledBack
        )
    }

    /// Whether this counts against the rollout's failure threshold.
    pub fn is_bad(self) -> bool {
        matches!(self, ReportStatus::Failure | ReportStatus::RolledBack)
    }
}

/// Status report (`POST /api/device/report`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Unique per report; reuse it when retrying the same report (1-128 characters).
    pub report_id: String,
    /// The rollout from the offer; `None` for reports outside a rollout (e.g. a local install).
    #[serde(default)]
    pub rollout_id: Option<u64>,
    /// Version being installed.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<semver::Version>,
    /// Manifest digest of the bundle being installed.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// The lifecycle stage.
    pub status: ReportStatus,
    /// Progress within the stage, 0-100.
    #[serde(default)]
    pub progress_percent: Option<u8>,
    /// The error; required for `failure`.
    #[serde(default)]
    pub error: Option<String>,
    /// Last lines of the client's log (at most [`MAX_LOG_TAIL`] bytes).
    #[serde(default)]
    pub log_tail: Option<String>,
    /// Why the device rolled back; required for `rolled_back`.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ReportRequest {
    /// Checks the fields that depend on each other; the message names the field to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.report_id.is_empty() || self.report_id.len() > 128 {
            return Err("report_id must be 1-128 characters long".into());
        }
        if self.progress_percent.is_some_and(|p| p > 100) {
            return Err("progress_percent must be between 0 and 100".into());
        }
        if self
            .log_tail
            .as_ref()
            .is_some_and(|l| l.len() > MAX_LOG_TAIL)
        {
            return Err(format!(
                "log_tail must be at most {MAX_LOG_TAIL} bytes; send the last lines only"
            ));
        }
        match self.status {
            ReportStatus::Failure if self.error.as_deref().unwrap_or("").is_empty() => {
                Err("a failure report needs a non-empty 'error'".into())
            }
            ReportStatus::RolledBack if self.reason.as_deref().unwrap_or("").is_empty() => {
                Err("a rolled_back report needs a non-empty 'reason'".into())
            }
            _ => Ok(()),
        }
    }
}

/// Report answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResponse {
    /// The report is stored.
    pub accepted: bool,
    /// The `report_id` had been received before; nothing changed.
    pub duplicate: bool,
}

/// Parses a `Retry-After` header value in its delay-seconds form. (HTTP dates are not produced by this server.)
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `GET /api/trust/chain?after=N`, and the answer to publishing a root: the fleet's rotated trust roots newer
/// than version N, oldest first. Each is a trust root file (`"type": "ota-trust-root"`) that verifies itself
/// against the one before, so the route needs no authentication and a robot trusts nothing the server says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustChain {
    /// The newest published version (`None`: nothing published past the server's own root).
    pub newest: Option<u64>,
    /// The roots after the version asked for, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub roots: Vec<serde_json::Value>,
}
