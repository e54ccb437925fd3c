//! What every [`Store`] backend must do, as tests written once and run for each backend by [`suite!`]:
//! reopening keeps data, duplicate reports change nothing, a report and its effects are one transaction,
//! compare-and-set rollout writes, labels, groups and aims round trip, history merges and compacts.

use std::any::Any;
use std::collections::BTreeMap;

use ota_protocol::admin::{LastStatus, ReportRecord, RolloutState};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{DeviceLabels, GroupSettings};

use super::*;
use crate::history::{self, Bucket, HOUR, MINUTE};

/// A database under test: `open` opens (and migrates) the same database on every call.
pub struct Target {
    /// Opens the database.
    pub open: Box<dyn Fn() -> Box<dyn Store>>,
    /// Whatever keeps the database alive (a temp dir, a test cluster).
    pub _keep: Box<dyn Any>,
}

/// One `#[test]` per conformance check for the backend that `$target` (an `Option<Target>`, `None`: skipped)
/// gives, each on a fresh database.
macro_rules! suite {
    ($target:expr) => {
        $crate::store::conformance::suite!(@tests $target;
            reopening_keeps_data, duplicate_reports_change_nothing, a_report_and_its_effects_are_one_transaction,
            labels_groups_rollout_aims_and_late_members_round_trip, devices_are_replaced_and_deleted,
            bundles_are_inserted_once, history_merges_and_compacts, single_entities_read_back,
            recent_poll_telemetry_reads_back, identities_round_trip_and_challenges_work_once,
            device_tokens_are_replaced_and_expire,
            users_sessions_tokens_and_audit_round_trip,
            sites_round_trip_and_are_replaced, history_metric_names_read_back,
            alerts_open_clear_and_acknowledge, reports_tally_and_prune, recent_outcomes_skip_progress_and_keep_the_newest,
            only_unused_bundles_are_deleted);
    };
    (@tests $target:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                if let Some(target) = $target {
                    $crate::store::conformance::$name(&target);
                }
            }
        )*
    };
}
pub use super::alerts::conformance::*;
pub use super::sites::conformance::*;
pub(crate) use suite;

mod accounts;
pub use accounts::users_sessions_tokens_and_audit_round_trip;

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        compatible: "acme".into(),
        tags: BTreeMap::from([("site".to_string(), "w3".to_string())]),
        token_id: format!("tid-{id}"),
        token_hash: [7; 32],
        token_expires_at: None,
        enrolled_at: 10,
        labels: Default::default(),
        state: DeviceState::default(),
    }
}

fn bundle(id: &str) -> BundleRecord {
    BundleRecord {
        bundle_id: id.into(),
        version: "2.0.0".parse().unwrap(),
        compatible: "acme".into(),
        manifest_digest: "d".into(),
        size: 1,
        description: String::new(),
        uploaded_at: 1,
        images: vec![],
    }
}

fn rollout(bundle_id: &str) -> RolloutRecord {
    RolloutRecord {
        rollout_id: 0,
        name: "n".into(),
        bundle_id: bundle_id.into(),
        tags: BTreeMap::new(),
        stages: vec![50, 100],
        current_stage: 0,
        state: RolloutState::Active,
        pause_reason: None,
        failure_threshold: 0.2,
        bad_baseline: 0,
        created_at: 1,
        updated_at: 1,
        aim: RolloutAim::default(),
        stage_started_at: 5,
        stage_completed_at: None,
        revision: 0,
    }
}

fn member(id: &str, rank: u64, joined: Option<usize>) -> MemberRecord {
    MemberRecord {
        device_id: id.into(),
        rank,
        status: None,
        updated_at: 1,
        joined,
    }
}

fn report(id: &str, status: ReportStatus, rollout_id: Option<u64>) -> ReportRecord {
    ReportRecord {
        report_id: id.into(),
        rollout_id,
        version: None,
        manifest_digest: None,
        status,
        progress_percent: Some(5),
        error: None,
        log_tail: None,
        reason: None,
        received_at: 5,
    }
}

fn last(status: ReportStatus) -> LastStatus {
    LastStatus {
        status,
        rollout_id: None,
        version: None,
        at: 5,
        error: None,
        reason: None,
    }
}

/// Data written before a reopen is there after it; the write-behind batch skips a device that is gone.
pub fn reopening_keeps_data(t: &Target) {
    {
        let store = (t.open)();
        store.upsert_device(&device("r1")).unwrap();
        store.set_setting("k", "v").unwrap();
        store.set_setting("k2", "a").unwrap();
        store.set_setting("k2", "b").unwrap();
        let mut d = device("r1");
        d.state = DeviceState {
            current_version: Some("1.0.0".parse().unwrap()),
            last_seen: Some(99),
            ..Default::default()
        };
        d.compatible = "acme-2".into();
        store.save_device_states(&[d, device("gone")]).unwrap();
        store.save_device_states(&[]).unwrap();
    }
    let store = (t.open)();
    let snap = store.load().unwrap();
    assert_eq!(snap.devices.len(), 1);
    assert_eq!(snap.devices[0].state.last_seen, Some(99));
    assert_eq!(snap.devices[0].token_hash, [7; 32]);
    assert_eq!(snap.devices[0].compatible, "acme-2");
    assert_eq!(store.setting("k").unwrap().as_deref(), Some("v"));
    assert_eq!(store.setting("k2").unwrap().as_deref(), Some("b"));
    assert_eq!(store.setting("nope").unwrap(), None);
}

/// A report sent twice is stored once.
pub fn duplicate_reports_change_nothing(t: &Target) {
    let store = (t.open)();
    store.upsert_device(&device("r1")).unwrap();
    let report = report("x", ReportStatus::Downloading, None);
    let last = last(ReportStatus::Downloading);
    let commit = ReportCommit {
        device_id: "r1",
        report: &report,
        last_status: &last,
        member: None,
        rollout: None,
    };
    assert!(store.commit_report(&commit).unwrap());
    assert!(!store.commit_report(&commit).unwrap());
    assert_eq!(store.reports("r1", 10).unwrap(), vec![report]);
}

/// A report whose rollout write loses its compare-and-set leaves nothing behind: not the report, not the
/// member status, not the device's last status. The winning write bumps the revision once.
pub fn a_report_and_its_effects_are_one_transaction(t: &Target) {
    let store = (t.open)();
    store.upsert_device(&device("r1")).unwrap();
    store.insert_bundle(&bundle("b")).unwrap();
    let mut r = rollout("b");
    r.rollout_id = store.create_rollout(&r, &[member("r1", 0, None)]).unwrap();
    let stale = r.clone();
    r.updated_at = 7;
    store.update_rollout(&r).unwrap();
    let report1 = report("a", ReportStatus::Success, Some(r.rollout_id));
    let last1 = last(ReportStatus::Success);
    let lost = store.commit_report(&ReportCommit {
        device_id: "r1",
        report: &report1,
        last_status: &last1,
        member: Some((r.rollout_id, ReportStatus::Success)),
        rollout: Some(&stale),
    });
    assert!(
        matches!(lost, Err(StoreError::Stale(id)) if id == r.rollout_id),
        "{lost:?}"
    );
    assert!(store.reports("r1", 10).unwrap().is_empty());
    let snap = store.load().unwrap();
    assert_eq!(snap.devices[0].state.last_status, None);
    assert_eq!(snap.rollouts[0].1[0].status, None);
    assert_eq!(snap.rollouts[0].0.revision, 1);
    // The same report with the current row goes through, and may be sent again without effect.
    r.revision = 1;
    let commit = ReportCommit {
        device_id: "r1",
        report: &report1,
        last_status: &last1,
        member: Some((r.rollout_id, ReportStatus::Success)),
        rollout: Some(&r),
    };
    assert!(store.commit_report(&commit).unwrap());
    assert!(!store.commit_report(&commit).unwrap());
    let snap = store.load().unwrap();
    assert_eq!(snap.rollouts[0].0.revision, 2);
    assert_eq!(snap.rollouts[0].1[0].status, Some(ReportStatus::Success));
    assert_eq!(snap.devices[0].state.last_status, Some(last1));
    let missing = RolloutRecord {
        rollout_id: 999,
        ..r.clone()
    };
    assert!(matches!(
        store.update_rollout(&missing),
        Err(StoreError::Missing(_))
    ));
}

/// Operator labels, groups, a rollout's aim and timing and a late member survive a reopen; a second write
/// from a stale copy of a rollout loses.
pub fn labels_groups_rollout_aims_and_late_members_round_trip(t: &Target) {
    use ota_protocol::fleet::{Schedule, StageRules, Window};
    let store = (t.open)();
    store.upsert_device(&device("r1")).unwrap();
    let labels = DeviceLabels {
        tags: BTreeMap::from([("row".to_string(), "7".to_string())]),
        group: Some("night".into()),
    };
    assert!(store.set_labels("r1", &labels).unwrap());
    assert!(!store.set_labels("ghost", &labels).unwrap());
    let settings = GroupSettings {
        schedule: Schedule {
            windows: vec![Window {
                days: vec![],
                start: "22:00".into(),
                end: "06:00".into(),
            }],
            timezone: Some("Europe/Berlin".into()),
        },
    };
    store.put_group("night", &settings).unwrap();
    store.put_group("night", &settings).unwrap();
    store.insert_bundle(&bundle("b")).unwrap();
    let mut rollout = RolloutRecord {
        aim: RolloutAim {
            group: Some("night".into()),
            versions: Some(">=1.0".parse().unwrap()),
            rules: StageRules {
                soak_secs: 60,
                deadline_secs: 600,
            },
            revert: true,
            ..Default::default()
        },
        stage_completed_at: Some(9),
        ..self::rollout("b")
    };
    rollout.rollout_id = store
        .create_rollout(&rollout, &[member("r1", 0, None)])
        .unwrap();
    rollout.current_stage = 1;
    store
        .save_members(&rollout, &[member("r2", 1, Some(1))])
        .unwrap();
    // A second write from the same (now stale) copy loses: another replica could have written in between.
    let err = store.update_rollout(&rollout).unwrap_err();
    assert!(
        matches!(err, StoreError::Stale(id) if id == rollout.rollout_id),
        "{err}"
    );
    rollout.revision += 1;
    drop(store);
    let snap = (t.open)().load().unwrap();
    assert_eq!(snap.devices[0].labels, labels);
    assert_eq!(snap.groups, vec![("night".to_string(), settings)]);
    let (loaded, members) = &snap.rollouts[0];
    assert_eq!(loaded, &rollout);
    assert_eq!(
        members,
        &vec![member("r1", 0, None), member("r2", 1, Some(1))]
    );
}

/// Upserting a device keeps nothing of its older row (poll state included); deleting says whether it was there.
pub fn devices_are_replaced_and_deleted(t: &Target) {
    let store = (t.open)();
    let mut d = device("r1");
    d.state.staged = Some("abc".into());
    d.state.current_version = Some("1.2.3".parse().unwrap());
    store.upsert_device(&d).unwrap();
    store.save_device_states(std::slice::from_ref(&d)).unwrap();
    assert_eq!(store.load().unwrap().devices, vec![d]);
    let mut again = device("r1");
    again.token_id = "tid-new".into();
    store.upsert_device(&again).unwrap();
    assert_eq!(store.load().unwrap().devices, vec![again]);
    assert!(store.delete_device("r1").unwrap());
    assert!(!store.delete_device("r1").unwrap());
    assert!(store.load().unwrap().devices.is_empty());
}

/// A bundle is recorded once.
pub fn bundles_are_inserted_once(t: &Target) {
    let store = (t.open)();
    assert!(!store.bundle_exists("b").unwrap());
    assert!(store.insert_bundle(&bundle("b")).unwrap());
    assert!(!store.insert_bundle(&bundle("b")).unwrap());
    assert!(store.bundle_exists("b").unwrap());
    assert_eq!(store.load().unwrap().bundles, vec![bundle("b")]);
}

fn history_row(at: u64, v: f64) -> history::Row {
    history::Row {
        device_id: "r1".into(),
        metric: "latency".into(),
        bucket: Bucket::sample(at, v),
    }
}

/// A bucket stored twice merges; compaction folds old minutes into hours and drops expired rows, once.
pub fn history_merges_and_compacts(t: &Target) {
    let store = (t.open)();
    store
        .save_history(&[history_row(600, 10.0), history_row(660, 1.0)])
        .unwrap();
    store.save_history(&[history_row(610, 30.0)]).unwrap();
    let got = store.history("r1", "latency", 0).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].count, got[0].mean(), got[0].max), (2, 20.0, 30.0));
    assert_eq!(store.history("r1", "latency", 660).unwrap().len(), 1);
    assert!(store.history("r1", "other", 0).unwrap().is_empty());

    let store = (t.open)();
    let now = 50 * 86_400;
    let day_ago = now - history::FINE_SPAN - 2 * HOUR;
    store
        .save_history(&[
            history_row(now - 120, 1.0),
            history_row(day_ago, 2.0),
            history_row(day_ago + 60, 4.0),
            history_row(now - 40 * 86_400, 9.0),
        ])
        .unwrap();
    // The two rows of the first half (t=600..720) are past retention too.
    assert_eq!(store.compact_history(now, 30 * 86_400).unwrap(), 5);
    let got = store.history("r1", "latency", 0).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].width, got[0].count, got[0].mean()), (HOUR, 2, 3.0));
    assert_eq!(got[1].width, MINUTE);
    assert_eq!(
        store.compact_history(now, 30 * 86_400).unwrap(),
        0,
        "idempotent"
    );
}

/// The one-entity reads agree with [`Store::load`].
pub fn single_entities_read_back(t: &Target) {
    let store = (t.open)();
    store.upsert_device(&device("r1")).unwrap();
    store.insert_bundle(&bundle("b")).unwrap();
    let settings = GroupSettings::default();
    store.put_group("g", &settings).unwrap();
    let mut r = rollout("b");
    r.rollout_id = store
        .create_rollout(&r, &[member("r2", 1, None), member("r1", 0, None)])
        .unwrap();
    let snap = store.load().unwrap();
    assert_eq!(store.device("r1").unwrap(), Some(snap.devices[0].clone()));
    assert_eq!(store.device("ghost").unwrap(), None);
    assert_eq!(store.bundle("b").unwrap(), Some(bundle("b")));
    assert_eq!(store.bundle("ghost").unwrap(), None);
    assert_eq!(store.group("g").unwrap(), Some(settings));
    assert_eq!(store.group("ghost").unwrap(), None);
    let (got, members) = store.rollout(r.rollout_id).unwrap().unwrap();
    assert_eq!(got, r);
    assert_eq!(members, vec![member("r1", 0, None), member("r2", 1, None)]);
    assert_eq!(store.rollout(r.rollout_id + 1).unwrap(), None);
}

/// [`Store::telemetry_since`] returns the last stored poll telemetry of the devices seen since a time.
pub fn recent_poll_telemetry_reads_back(t: &Target) {
    let store = (t.open)();
    let mut polled = device("r1");
    polled.state.last_seen = Some(1_000);
    polled.state.current_version = Some("2.0.0".parse().unwrap());
    polled.state.telemetry = Some(ota_protocol::device::Telemetry {
        battery_percent: Some(55.0),
        ..Default::default()
    });
    let mut old = device("r2");
    old.state.last_seen = Some(400);
    old.state.telemetry = polled.state.telemetry.clone();
    for d in [&polled, &old, &device("r3")] {
        store.upsert_device(d).unwrap();
    }
    store.save_device_states(&[polled.clone()]).unwrap();
    let got = store.telemetry_since(500).unwrap();
    assert_eq!(
        got,
        vec![SeenTelemetry {
            device_id: "r1".into(),
            last_seen: 1_000,
            version: polled.state.current_version.clone(),
            telemetry: polled.state.telemetry.clone().unwrap(),
        }]
    );
    assert_eq!(
        store.telemetry_since(0).unwrap().len(),
        2,
        "r3 never polled"
    );
}

fn identity(id: &str, admission: ota_protocol::admin::Admission) -> DeviceIdentity {
    DeviceIdentity {
        device_id: id.into(),
        public_key: "ab".repeat(32),
        admission,
        requested_at: 5,
        decided_at: None,
        decided_by: None,
    }
}

/// Identities round trip and change; a challenge is claimed once and only a later one after it; deleting a
/// device forgets its identity.
pub fn identities_round_trip_and_challenges_work_once(t: &Target) {
    use ota_protocol::admin::Admission;
    let store = (t.open)();
    assert_eq!(store.identity("r1").unwrap(), None);
    assert!(
        !store.claim_challenge("r1", 100).unwrap(),
        "no identity, no claim"
    );
    let pending = identity("r1", Admission::Pending);
    store.put_identity(&pending).unwrap();
    store
        .put_identity(&identity("r0", Admission::Rejected))
        .unwrap();
    assert_eq!(store.identity("r1").unwrap(), Some(pending.clone()));
    assert!(store.claim_challenge("r1", 100).unwrap());
    assert!(
        !store.claim_challenge("r1", 100).unwrap(),
        "a challenge works once"
    );
    assert!(
        !store.claim_challenge("r1", 99).unwrap(),
        "an older one never"
    );
    let accepted = DeviceIdentity {
        admission: Admission::Accepted,
        decided_at: Some(9),
        decided_by: Some("admin".into()),
        ..pending
    };
    store.put_identity(&accepted).unwrap();
    assert!(
        !store.claim_challenge("r1", 100).unwrap(),
        "an update keeps the last claim"
    );
    assert!(store.claim_challenge("r1", 101).unwrap());
    let again = (t.open)();
    let all = again.identities().unwrap();
    assert_eq!(
        all.iter().map(|i| i.device_id.as_str()).collect::<Vec<_>>(),
        ["r0", "r1"]
    );
    assert_eq!(all[1], accepted);
    again.upsert_device(&device("r1")).unwrap();
    assert!(again.delete_device("r1").unwrap());
    assert_eq!(again.identity("r1").unwrap(), None);
    assert!(again.identity("r0").unwrap().is_some());
}

/// A token is replaced with its expiry, and the replacement survives a reopen.
pub fn device_tokens_are_replaced_and_expire(t: &Target) {
    let store = (t.open)();
    let mut d = device("r1");
    d.token_expires_at = Some(77);
    store.upsert_device(&d).unwrap();
    assert_eq!(store.load().unwrap().devices, vec![d.clone()]);
    assert!(store
        .set_device_token("r1", "tid-2", &[9; 32], Some(88))
        .unwrap());
    assert!(!store
        .set_device_token("nobody", "tid-3", &[9; 32], None)
        .unwrap());
    let got = (t.open)().device("r1").unwrap().unwrap();
    assert_eq!(
        (got.token_id.as_str(), got.token_hash, got.token_expires_at),
        ("tid-2", [9; 32], Some(88))
    );
}
