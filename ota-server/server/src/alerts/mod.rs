//! Alerts, pure: which conditions of the fleet need a person ([`conditions`]), how they become alerts with
//! stable ids and clear ([`track`]), the webhook's retry schedule and signature ([`webhook`]), the Prometheus
//! lines ([`metrics`]) and the settings ([`settings`]). No I/O and no clock: `crate::services::alerts` gathers
//! the [`Facts`] and the time and carries the decisions out (store, events, webhook).
//!
//! An alert that clears and comes back is a new alert with a new id: an acknowledgement is about one
//! occurrence ("I know robot 7 is offline since 10:02"), not about the robot forever.

pub mod metrics;
pub mod settings;
pub mod track;
pub mod webhook;

use ota_protocol::admin::RolloutState;
use ota_protocol::alerts::{AlertKind, AlertTarget, Severity};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::FreezeReason;

pub use settings::{AlertArgs, AlertSettings};

/// What the rules read of one robot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RobotFacts {
    /// Device id.
    pub id: String,
    /// Enrollment time.
    pub enrolled_at: u64,
    /// Last poll or report.
    pub last_seen: Option<u64>,
    /// Its latest report: status and when.
    pub last_status: Option<(ReportStatus, u64)>,
    /// Since when it waits before an offered update (its last poll's time minus the wait it reported).
    pub waiting_since: Option<u64>,
    /// Its freeze alarm, from its last poll.
    pub freeze: Option<FreezeReason>,
    /// Its maintenance score.
    pub maintenance_score: Option<f64>,
}

/// What the rules read of one rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutFacts {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// State.
    pub state: RolloutState,
    /// Why it paused itself (`None`: an operator paused it, or it is not paused).
    pub pause_reason: Option<String>,
    /// When a guard paused it, if one did.
    pub breach_at: Option<u64>,
}

/// A robot asking to be admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFacts {
    /// Device id.
    pub id: String,
    /// When it first asked.
    pub requested_at: u64,
}

/// Everything the rules read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Enrolled robots.
    pub robots: Vec<RobotFacts>,
    /// Rollouts.
    pub rollouts: Vec<RolloutFacts>,
    /// Robots pending admission.
    pub pending: Vec<PendingFacts>,
}

/// The thresholds of the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// A robot not seen for longer than this is offline.
    pub offline_after_secs: u64,
    /// A robot waiting on its readiness check for longer than this needs a look.
    pub waiting_after_secs: u64,
    /// A maintenance score above this is due.
    pub maintenance_score: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            offline_after_secs: 3600,
            waiting_after_secs: 4 * 3600,
            maintenance_score: 70.0,
        }
    }
}

/// One condition that needs a person, before it is tracked as an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// What.
    pub kind: AlertKind,
    /// Where.
    pub target: AlertTarget,
    /// How urgent.
    pub severity: Severity,
    /// When it began, as far as the facts tell.
    pub since: u64,
    /// Tells occurrences of the same kind and target apart where the facts can (a later rollback is another
    /// occurrence); 0 where they cannot.
    pub episode: u64,
    /// One line for an operator.
    pub message: String,
}

/// A span for a message: `1d 2h`, `3h 5m`, `4m`, `20s`.
fn span(s: u64) -> String {
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Every condition of the fleet at `now` that needs a person, sorted by target and kind.
pub fn conditions(facts: &Facts, t: &Thresholds, now: u64) -> Vec<Condition> {
    let mut out = Vec::new();
    for r in &facts.rollouts {
        if r.state != RolloutState::Paused {
            continue;
        }
        let Some(reason) = &r.pause_reason else {
            continue; // paused by an operator: they know
        };
        let by = if r.breach_at.is_some() {
            "a health guard"
        } else {
            "failures"
        };
        out.push(Condition {
            kind: AlertKind::RolloutPaused,
            target: AlertTarget::Rollout(r.id),
            severity: Severity::Critical,
            since: r.breach_at.unwrap_or(now),
            episode: r.breach_at.unwrap_or(0),
            message: format!("rollout '{}' paused by {by}: {reason}", r.name),
        });
    }
    for r in &facts.robots {
        let target = || AlertTarget::Robot(r.id.clone());
        if let Some((ReportStatus::RolledBack, at)) = r.last_status {
            out.push(Condition {
                kind: AlertKind::RolledBack,
                target: target(),
                severity: Severity::Warning,
                since: at,
                episode: at,
                message: format!("robot {} rolled back its update", r.id),
            });
        }
        let seen = r.last_seen.unwrap_or(r.enrolled_at);
        if now.saturating_sub(seen) > t.offline_after_secs {
            out.push(Condition {
                kind: AlertKind::Offline,
                target: target(),
                severity: Severity::Warning,
                since: seen,
                episode: seen,
                // Stable while it lasts (the page shows since when): no rewrite every minute.
                message: format!(
                    "robot {} not seen for over {}",
                    r.id,
                    span(t.offline_after_secs)
                ),
            });
        }
        if let Some(since) = r.waiting_since {
            if now.saturating_sub(since) > t.waiting_after_secs {
                out.push(Condition {
                    kind: AlertKind::Waiting,
                    target: target(),
                    severity: Severity::Info,
                    since,
                    episode: 0,
                    message: format!(
                        "robot {} has waited on its readiness check for over {}",
                        r.id,
                        span(t.waiting_after_secs)
                    ),
                });
            }
        }
        if let Some(reason) = r.freeze {
            let why = match reason {
                FreezeReason::Stale => "no fresh signed metadata reaches it",
                FreezeReason::Replayed => "it was sent replayed metadata",
                FreezeReason::Invalid => "it was sent metadata its trust root did not sign",
            };
            out.push(Condition {
                kind: AlertKind::FreezeAlarm,
                target: target(),
                severity: Severity::Critical,
                since: r.last_seen.unwrap_or(now),
                episode: 0,
                message: format!("robot {} raises its freeze alarm: {why}", r.id),
            });
        }
        if let Some(score) = r.maintenance_score {
            if score > t.maintenance_score {
                out.push(Condition {
                    kind: AlertKind::MaintenanceDue,
                    target: target(),
                    severity: Severity::Warning,
                    since: now,
                    episode: 0,
                    message: format!(
                        "robot {} needs maintenance (score {score:.1} > {:.1})",
                        r.id, t.maintenance_score
                    ),
                });
            }
        }
    }
    for p in &facts.pending {
        out.push(Condition {
            kind: AlertKind::PendingAdmission,
            target: AlertTarget::Robot(p.id.clone()),
            severity: Severity::Info,
            since: p.requested_at,
            episode: p.requested_at,
            message: format!(
                "robot {} asks to be admitted (ota-server devices admit {})",
                p.id, p.id
            ),
        });
    }
    out.sort_by(|a, b| (&a.target, a.kind).cmp(&(&b.target, b.kind)));
    out
}

#[cfg(test)]
mod tests;
