//! From conditions to alerts: an open alert lives as long as its condition (same kind, target and episode)
//! holds; a condition without an open alert opens one; an open alert without its condition clears. Ids are
//! derived from what opened the alert, so two evaluations of the same facts agree on them and an alert that
//! clears and comes back (a later `since`) gets a new id.

use ota_protocol::alerts::{Acknowledgement, Alert, AlertKind, AlertTarget, Severity};
use sha2::{Digest, Sha256};

use super::Condition;

/// An alert as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    /// Stable id ([`alert_id`]).
    pub id: String,
    /// What.
    pub kind: AlertKind,
    /// Where.
    pub target: AlertTarget,
    /// How urgent.
    pub severity: Severity,
    /// When the condition began.
    pub since: u64,
    /// Which occurrence ([`Condition::episode`]).
    pub episode: u64,
    /// One line for an operator (the latest evaluation's).
    pub message: String,
    /// When it cleared (`None`: open).
    pub cleared_at: Option<u64>,
    /// Who acknowledged it, and when.
    pub acknowledged: Option<Acknowledgement>,
}

impl AlertRecord {
    /// The API's view.
    pub fn to_alert(&self) -> Alert {
        Alert {
            id: self.id.clone(),
            kind: self.kind,
            severity: self.severity,
            target: self.target.clone(),
            link: format!("#/{}", self.target.path()),
            since: self.since,
            message: self.message.clone(),
            acknowledged: self.acknowledged.clone(),
        }
    }

    fn key(&self) -> (AlertKind, &AlertTarget, u64) {
        (self.kind, &self.target, self.episode)
    }
}

/// The id of the alert a condition opens at `since`: 16 hex digits of SHA-256 over kind, target, episode and
/// `since`.
pub fn alert_id(kind: AlertKind, target: &AlertTarget, episode: u64, since: u64) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{}\0{}\0{episode}\0{since}",
        kind.as_str(),
        target.path()
    ));
    hex::encode(&h.finalize()[..8])
}

/// What an evaluation changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// New alerts.
    pub opened: Vec<AlertRecord>,
    /// Open alerts whose condition ended, with `cleared_at` set.
    pub cleared: Vec<AlertRecord>,
    /// Open alerts whose message or severity changed.
    pub updated: Vec<AlertRecord>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.cleared.is_empty() && self.updated.is_empty()
    }
}

/// Compares the open alerts with the conditions holding at `now`.
pub fn reconcile(open: &[AlertRecord], conditions: &[Condition], now: u64) -> Changes {
    let mut changes = Changes::default();
    let mut matched = vec![false; open.len()];
    for c in conditions {
        let key = (c.kind, &c.target, c.episode);
        match open
            .iter()
            .position(|a| a.cleared_at.is_none() && a.key() == key)
        {
            Some(i) => {
                matched[i] = true;
                let a = &open[i];
                if a.message != c.message || a.severity != c.severity {
                    changes.updated.push(AlertRecord {
                        message: c.message.clone(),
                        severity: c.severity,
                        ..a.clone()
                    });
                }
            }
            None => {
                let since = c.since.min(now);
                changes.opened.push(AlertRecord {
                    id: alert_id(c.kind, &c.target, c.episode, since),
                    kind: c.kind,
                    target: c.target.clone(),
                    severity: c.severity,
                    since,
                    episode: c.episode,
                    message: c.message.clone(),
                    cleared_at: None,
                    acknowledged: None,
                });
            }
        }
    }
    for (a, m) in open.iter().zip(matched) {
        if !m && a.cleared_at.is_none() {
            changes.cleared.push(AlertRecord {
                cleared_at: Some(now),
                ..a.clone()
            });
        }
    }
    changes
}

/// `open` with `changes` applied: what is open afterwards.
pub fn apply(open: &[AlertRecord], changes: &Changes) -> Vec<AlertRecord> {
    let mut out: Vec<AlertRecord> = open
        .iter()
        .filter(|a| !changes.cleared.iter().any(|c| c.id == a.id))
        .map(|a| {
            changes
                .updated
                .iter()
                .find(|u| u.id == a.id)
                .cloned()
                .unwrap_or_else(|| a.clone())
        })
        .collect();
    out.extend(changes.opened.iter().cloned());
    out.sort_by(|a, b| {
        (a.severity, std::cmp::Reverse(a.since), &a.id).cmp(&(
            b.severity,
            std::cmp::Reverse(b.since),
            &b.id,
        ))
    });
    out
}
