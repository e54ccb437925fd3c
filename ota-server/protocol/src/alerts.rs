//! Alerts (`GET /api/alerts`, `POST /api/alerts/{id}/ack`), the webhook body and bundle pruning
//! (`POST /api/bundles/prune`): what needs a person, derived by the server from the fleet's state
//! (docs/alerts.md).

use serde::{Deserialize, Serialize};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A rollout paused itself: a health guard fired or too many robots failed.
    RolloutPaused,
    /// A robot's last report says it rolled back.
    RolledBack,
    /// A robot has not been seen for longer than the threshold.
    Offline,
    /// A robot has waited on its readiness check (or a local confirmation) for longer than the threshold.
    Waiting,
    /// A robot's maintenance score is above the threshold (docs/maintenance.md).
    MaintenanceDue,
    /// A robot reports that no fresh signed metadata reaches it, or that it was sent replayed or forged
    /// metadata (docs/time-model.md).
    FreezeAlarm,
    /// A robot asks to be admitted (`ota-server devices admit ID`).
    PendingAdmission,
}

impl AlertKind {
    /// Every kind, in display order.
    pub const ALL: [AlertKind; 7] = [
        AlertKind::RolloutPaused,
        AlertKind::RolledBack,
        AlertKind::FreezeAlarm,
        AlertKind::Offline,
        AlertKind::MaintenanceDue,
        AlertKind::Waiting,
        AlertKind::PendingAdmission,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RolloutPaused => "rollout_paused",
            AlertKind::RolledBack => "rolled_back",
            AlertKind::Offline => "offline",
            AlertKind::Waiting => "waiting",
            AlertKind::MaintenanceDue => "maintenance_due",
            AlertKind::FreezeAlarm => "freeze_alarm",
            AlertKind::PendingAdmission => "pending_admission",
        }
    }

    /// The kind of a wire name.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now: the fleet's updates or its security are held up.
    Critical,
    /// Look today.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The severity of a wire name.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an alert points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum AlertTarget {
    /// A robot, by device id.
    Robot(String),
    /// A rollout, by id.
    Rollout(u64),
}

impl AlertTarget {
    /// `robot/ID` or `rollout/ID`: the `target` label of `ota_alert` and the dashboard's hash path
    /// (`#/robot/ID`).
    pub fn path(&self) -> String {
        match self {
            AlertTarget::Robot(id) => format!("robot/{id}"),
            AlertTarget::Rollout(id) => format!("rollout/{id}"),
        }
    }

    /// The target of a [`AlertTarget::path`].
    pub fn parse(path: &str) -> Option<AlertTarget> {
        match path.split_once('/')? {
            ("robot", id) if !id.is_empty() => Some(AlertTarget::Robot(id.to_string())),
            ("rollout", id) => id.parse().ok().map(AlertTarget::Rollout),
            _ => None,
        }
    }
}

/// Who acknowledged an alert, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Acknowledgement {
    /// The user (or `admin-token` for the bootstrap token).
    pub by: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// One open alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    /// Stable id of this occurrence: an alert that clears and comes back gets a new id.
    pub id: String,
    /// What it is about.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The robot or rollout.
    pub target: AlertTarget,
    /// The dashboard's link to the target (`#/robot/ID`, `#/rollout/ID`).
    pub link: String,
    /// When the condition began (Unix seconds).
    pub since: u64,
    /// One line for an operator.
    pub message: String,
    /// Set once someone acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
}

/// The SSE event `alerts_changed`: the open set changed (opened, cleared or acknowledged); the page re-reads
/// `GET /api/alerts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertsChanged {
    /// Open alerts now.
    pub open: u64,
    /// Of which not acknowledged.
    pub unacknowledged: u64,
}

/// The webhook's body: one alert opened or cleared. Signed with `X-OTA-Signature: sha256=HEX`, the
/// HMAC-SHA256 of the body under the configured secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotice {
    /// `opened` or `cleared`.
    pub event: String,
    /// The alert.
    pub alert: Alert,
    /// When the server noticed (Unix seconds).
    pub at: u64,
}

/// `POST /api/bundles/prune`'s body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Only say what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
    /// Keep bundles uploaded less than this many days ago (default 7: a bundle just published for a rollout
    /// not yet created is kept).
    #[serde(default)]
    pub min_age_days: Option<u64>,
}

/// `POST /api/bundles/prune`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PruneResponse {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Bundles deleted (or that would be).
    pub deleted: Vec<String>,
    /// Bytes they held.
    pub freed_bytes: u64,
    /// Bundles kept because a rollout (of any state) names them.
    pub kept_in_use: u64,
    /// Bundles kept because they are younger than the minimum age.
    pub kept_recent: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        for t in [AlertTarget::Robot("r-1".into()), AlertTarget::Rollout(7)] {
            assert_eq!(AlertTarget::parse(&t.path()), Some(t));
        }
        assert_eq!(AlertTarget::parse("robot/"), None);
        assert_eq!(AlertTarget::parse("rollout/x"), None);
    }
}
