//! The SQLite store: migrations, reopening, duplicate reports, labels, groups and rollout aims.

use super::*;
use ota_protocol::admin::LastStatus;
use std::collections::BTreeMap;

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        compatible: "acme".into(),
        tags: BTreeMap::from([("site".to_string(), "w3".to_string())]),
        token_id: format!("tid-{id}"),
        token_hash: [7; 32],
        enrolled_at: 10,
        labels: Default::default(),
        state: DeviceState::default(),
    }
}

#[test]
fn migrations_are_versioned_and_reopening_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.upsert_device(&device("r1")).unwrap();
        store.set_setting("k", "v").unwrap();
        let mut d = device("r1");
        d.state = DeviceState {
            current_version: Some("1.0.0".parse().unwrap()),
            last_seen: Some(99),
            ..Default::default()
        };
        d.compatible = "acme-2".into();
        store.save_device_states(&[d, device("gone")]).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.devices.len(), 1);
    assert_eq!(snap.devices[0].state.last_seen, Some(99));
    assert_eq!(snap.devices[0].token_hash, [7; 32]);
    assert_eq!(snap.devices[0].compatible, "acme-2");
    assert_eq!(store.setting("k").unwrap().as_deref(), Some("v"));
    let conn = store.conn();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SqliteStore::schema_version());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("upgrade ota-server"), "{err}");
}

#[test]
fn duplicate_reports_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    store.upsert_device(&device("r1")).unwrap();
    let report = ReportRecord {
        report_id: "x".into(),
        rollout_id: None,
        version: None,
        manifest_digest: None,
        status: ReportStatus::Downloading,
        progress_percent: Some(5),
        error: None,
        log_tail: None,
        reason: None,
        received_at: 5,
    };
    let last = LastStatus {
        status: ReportStatus::Downloading,
        rollout_id: None,
        version: None,
        at: 5,
        error: None,
        reason: None,
    };
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

#[test]
fn labels_groups_rollout_aims_and_late_members_round_trip() {
    use ota_protocol::fleet::{Schedule, StageRules, Window};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).unwrap();
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
    store
        .insert_bundle(&BundleRecord {
            bundle_id: "b".into(),
            version: "2.0.0".parse().unwrap(),
            compatible: "acme".into(),
            manifest_digest: "d".into(),
            size: 1,
            description: String::new(),
            uploaded_at: 1,
            images: vec![],
        })
        .unwrap();
    let mut rollout = RolloutRecord {
        rollout_id: 0,
        name: "n".into(),
        bundle_id: "b".into(),
        tags: BTreeMap::new(),
        stages: vec![50, 100],
        current_stage: 0,
        state: RolloutState::Active,
        pause_reason: None,
        failure_threshold: 0.2,
        bad_baseline: 0,
        created_at: 1,
        updated_at: 1,
        aim: crate::store::RolloutAim {
            group: Some("night".into()),
            versions: Some(">=1.0".parse().unwrap()),
            rules: StageRules {
                soak_secs: 60,
                deadline_secs: 600,
            },
            revert: true,
            ..Default::default()
        },
        stage_started_at: 5,
        stage_completed_at: Some(9),
        revision: 0,
    };
    let member = |id: &str, rank, joined| MemberRecord {
        device_id: id.into(),
        rank,
        status: None,
        updated_at: 1,
        joined,
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
    assert!(matches!(err, StoreError::Stale(id) if id == rollout.rollout_id), "{err}");
    rollout.revision += 1;
    drop(store);
    let snap = SqliteStore::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.devices[0].labels, labels);
    assert_eq!(snap.groups, vec![("night".to_string(), settings)]);
    let (loaded, members) = &snap.rollouts[0];
    assert_eq!(loaded, &rollout);
    assert_eq!(
        members,
        &vec![member("r1", 0, None), member("r2", 1, Some(1))]
    );
}
