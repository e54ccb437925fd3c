//! What the store keeps for alerts and retention: alerts with their acknowledgements
//! ([`crate::alerts::track`]), the report tallies the maintenance score reads, pruning old reports and
//! deleting unused bundles. Every [`super::Store`] is an [`AlertStore`]; each backend implements it in its
//! `alerts.rs`.

use crate::alerts::track::{AlertRecord, Changes};
use crate::error::StoreError;

/// Failed and rolled-back reports of one device ([`AlertStore::report_tally`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportTally {
    /// Device id.
    pub device_id: String,
    /// `failure` reports.
    pub failures: u64,
    /// `rolled_back` reports.
    pub rollbacks: u64,
}

/// What [`AlertStore::delete_bundle`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleDeletion {
    /// The row is gone.
    Deleted,
    /// A rollout names it: kept.
    InUse,
    /// There was no such row.
    Missing,
}

/// Alerts and retention.
pub trait AlertStore {
    /// The open alerts.
    fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;
    /// Stores an evaluation's changes in one transaction (an alert stored already, by another replica, is
    /// kept as it is).
    fn save_alerts(&self, changes: &Changes) -> Result<(), StoreError>;
    /// Acknowledges an open alert (the first acknowledgement stays); the alert as stored afterwards, `None`
    /// when no open alert has this id.
    fn ack_alert(&self, id: &str, by: &str, at: u64) -> Result<Option<AlertRecord>, StoreError>;
    /// Deletes the reports received before `before` and the alerts cleared before it. Returns the rows
    /// removed.
    fn prune_reports(&self, before: u64) -> Result<u64, StoreError>;
    /// Failed and rolled-back reports per device received at or after `since` (devices with none left out).
    fn report_tally(&self, since: u64) -> Result<Vec<ReportTally>, StoreError>;
    /// Deletes a bundle's row unless a rollout (of any state) names it, in one transaction.
    fn delete_bundle(&self, bundle_id: &str) -> Result<BundleDeletion, StoreError>;
}

/// What every backend's [`AlertStore`] must do (run by `store::conformance::suite!`).
#[cfg(test)]
pub mod conformance {
    use std::collections::BTreeMap;

    use ota_protocol::admin::{LastStatus, ReportRecord, RolloutState};
    use ota_protocol::alerts::{AlertKind, AlertTarget, Severity};
    use ota_protocol::device::ReportStatus;

    use super::*;
    use crate::alerts::track::alert_id;
    use crate::store::conformance::Target;
    use crate::store::{
        BundleRecord, DeviceRecord, ReportCommit, RolloutAim, RolloutRecord, Store,
    };

    fn alert(kind: AlertKind, robot: &str, since: u64) -> AlertRecord {
        let target = AlertTarget::Robot(robot.into());
        AlertRecord {
            id: alert_id(kind, &target, 0, since),
            kind,
            target,
            severity: Severity::Warning,
            since,
            episode: 0,
            message: format!("{robot} m"),
            cleared_at: None,
            acknowledged: None,
        }
    }

    /// Alerts open, update, clear; an acknowledgement is kept once, only on an open alert, and survives a
    /// reopen; an alert another replica stored already is not overwritten.
    pub fn alerts_open_clear_and_acknowledge(t: &Target) {
        let a = alert(AlertKind::Offline, "r1", 10);
        let b = alert(AlertKind::RolledBack, "r2", 20);
        {
            let store = (t.open)();
            assert!(store.open_alerts().unwrap().is_empty());
            let changes = Changes {
                opened: vec![a.clone(), b.clone()],
                ..Changes::default()
            };
            store.save_alerts(&changes).unwrap();
            store.save_alerts(&changes).unwrap(); // stored twice: kept once
            assert_eq!(store.open_alerts().unwrap(), vec![a.clone(), b.clone()]);
            let acked = store.ack_alert(&a.id, "alice", 30).unwrap().unwrap();
            assert_eq!(acked.acknowledged.as_ref().unwrap().by, "alice");
            let again = store.ack_alert(&a.id, "bob", 31).unwrap().unwrap();
            assert_eq!(
                again.acknowledged, acked.acknowledged,
                "the first ack stays"
            );
            assert_eq!(store.ack_alert("nope", "alice", 30).unwrap(), None);
        }
        let store = (t.open)();
        let open = store.open_alerts().unwrap();
        assert_eq!(open[0].acknowledged.as_ref().unwrap().at, 30);
        let updated = AlertRecord {
            message: "new words".into(),
            severity: Severity::Critical,
            ..open[0].clone()
        };
        let cleared = AlertRecord {
            cleared_at: Some(40),
            ..b.clone()
        };
        store
            .save_alerts(&Changes {
                opened: vec![],
                cleared: vec![cleared],
                updated: vec![updated.clone()],
            })
            .unwrap();
        assert_eq!(store.open_alerts().unwrap(), vec![updated]);
        assert_eq!(store.ack_alert(&b.id, "alice", 41).unwrap(), None);
    }

    fn device(id: &str) -> DeviceRecord {
        DeviceRecord {
            device_id: id.into(),
            compatible: "acme".into(),
            tags: BTreeMap::new(),
            token_id: format!("tid-{id}"),
            token_hash: [1; 32],
            token_expires_at: None,
            enrolled_at: 1,
            labels: Default::default(),
            state: Default::default(),
        }
    }

    /// Commits a bare report (no rollout) of `status` at `at`: what the report-reading checks start from.
    fn report(store: &dyn Store, device: &str, id: &str, status: ReportStatus, at: u64) {
        let report = ReportRecord {
            report_id: id.into(),
            rollout_id: None,
            version: None,
            manifest_digest: None,
            status,
            progress_percent: None,
            error: None,
            log_tail: None,
            reason: None,
            received_at: at,
        };
        let last = LastStatus {
            status,
            rollout_id: None,
            version: None,
            at,
            error: None,
            reason: None,
        };
        assert!(store
            .commit_report(&ReportCommit {
                device_id: device,
                report: &report,
                last_status: &last,
                member: None,
                rollout: None,
            })
            .unwrap());
    }

    /// Each robot's last outcomes ([`crate::store::outcomes::OutcomeStore`]), newest first, at most the limit;
    /// progress reports and robots without an outcome are left out.
    pub fn recent_outcomes_skip_progress_and_keep_the_newest(t: &Target) {
        use ReportStatus::*;
        let store = (t.open)();
        for id in ["a", "b", "c"] {
            store.upsert_device(&device(id)).unwrap();
        }
        let a = [
            Success,
            Failure,
            Downloading,
            RolledBack,
            Installing,
            Failure,
            Success,
        ];
        for (n, s) in a.into_iter().enumerate() {
            report(&*store, "a", &format!("a-{n}"), s, n as u64);
        }
        report(&*store, "b", "b-0", Downloading, 0);
        report(&*store, "c", "c-0", RolledBack, 0);
        assert_eq!(
            store.recent_outcomes(3).unwrap(),
            vec![
                ("a".to_string(), vec![Success, Failure, RolledBack]),
                ("c".to_string(), vec![RolledBack]),
            ]
        );
    }

    /// Tallies count failures and rollbacks in the window; pruning deletes what is older, and cleared alerts.
    pub fn reports_tally_and_prune(t: &Target) {
        let store = (t.open)();
        store.upsert_device(&device("r1")).unwrap();
        store.upsert_device(&device("r2")).unwrap();
        report(&*store, "r1", "a", ReportStatus::Failure, 100);
        report(&*store, "r1", "b", ReportStatus::RolledBack, 200);
        report(&*store, "r1", "c", ReportStatus::Failure, 300);
        report(&*store, "r2", "d", ReportStatus::Success, 300);
        let tally = store.report_tally(150).unwrap();
        assert_eq!(
            tally,
            vec![ReportTally {
                device_id: "r1".into(),
                failures: 1,
                rollbacks: 1
            }]
        );
        let old = AlertRecord {
            cleared_at: Some(50),
            ..alert(AlertKind::Offline, "r1", 10)
        };
        store
            .save_alerts(&Changes {
                opened: vec![AlertRecord {
                    cleared_at: None,
                    ..old.clone()
                }],
                ..Changes::default()
            })
            .unwrap();
        store
            .save_alerts(&Changes {
                cleared: vec![old],
                ..Changes::default()
            })
            .unwrap();
        // Reports a (100) and the alert cleared at 50 go.
        assert_eq!(store.prune_reports(150).unwrap(), 2);
        assert_eq!(store.reports("r1", 10).unwrap().len(), 2);
        assert_eq!(store.prune_reports(150).unwrap(), 0);
    }

    /// A bundle a rollout names (in any state) is kept; others are deleted once.
    pub fn only_unused_bundles_are_deleted(t: &Target) {
        let store = (t.open)();
        let bundle = |id: &str| BundleRecord {
            bundle_id: id.into(),
            version: "1.0.0".parse().unwrap(),
            compatible: "acme".into(),
            manifest_digest: "d".into(),
            size: 1,
            description: String::new(),
            uploaded_at: 1,
            images: vec![],
        };
        store.insert_bundle(&bundle("used")).unwrap();
        store.insert_bundle(&bundle("free")).unwrap();
        store
            .create_rollout(
                &RolloutRecord {
                    rollout_id: 0,
                    name: "n".into(),
                    bundle_id: "used".into(),
                    tags: BTreeMap::new(),
                    stages: vec![100],
                    current_stage: 0,
                    state: RolloutState::Completed,
                    pause_reason: None,
                    failure_threshold: 0.2,
                    bad_baseline: 0,
                    created_at: 1,
                    updated_at: 1,
                    aim: RolloutAim::default(),
                    stage_started_at: 1,
                    stage_completed_at: None,
                    revision: 0,
                },
                &[],
            )
            .unwrap();
        assert_eq!(store.delete_bundle("used").unwrap(), BundleDeletion::InUse);
        assert_eq!(
            store.delete_bundle("free").unwrap(),
            BundleDeletion::Deleted
        );
        assert_eq!(
            store.delete_bundle("free").unwrap(),
            BundleDeletion::Missing
        );
        assert!(store.bundle_exists("used").unwrap());
        assert!(!store.bundle_exists("free").unwrap());
    }
}
