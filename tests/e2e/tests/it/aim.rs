//! Rollouts an operator aims and times (issue 10), end to end: targets that change while a rollout runs (a late
//! robot, a relabelled one, operator tags), a start time, maintenance windows with download-ahead, a robot that
//! says it is busy, a confirmation before the reboot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ota_client::daemon::SystemClock;
use ota_client::Slot;
use ota_e2e::{fleet, plans, release_bundle};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{DeviceLabels, GroupSettings, StageRules, TargetFilter, WaitPhase};
use ota_testkit::fleet::{wait_devices, wait_rollout, LogLines};
use ota_testkit::proxy::Proxy;
use ota_testkit::wait::wait_for;

use crate::common::*;

#[test]
fn a_robot_enrolled_after_the_rollout_started_joins_it_at_the_next_stage() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let all = plans(3, &[]);
    let _fleet = started(dir.path(), &server, &all[..2], &lines);
    // robot-3 leaves the factory now but is switched on only while the rollout runs.
    let mut late = fleet(
        &dir.path().join("late"),
        &server.base,
        &server,
        &all[2..],
        lines.sink(),
    );
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    // Stage 1 is one robot, and it soaks long enough for robot-3 to enroll and poll during it.
    let id = create(&admin, &published.bundle_id, &[50, 100], |r| {
        r.filter = Some(site("warehouse-1"));
        r.rules = StageRules {
            soak_secs: 20,
            deadline_secs: 0,
        };
    });
    assert_eq!(admin.rollout(id).unwrap().rollout.counts.targeted, 2);
    wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 1
    })
    .unwrap();

    late.start(Arc::new(SystemClock));
    wait_devices(&admin, &late.ids(), ENROLL_TIMEOUT).unwrap();
    let robot3 = ["robot-3".to_string()];
    wait_for(
        "robot-3 to poll twice or be offered the update",
        ENROLL_TIMEOUT,
        || lines.count(Some("robot-3"), POLLED) >= 2 || !reports(&admin, "robot-3", id).is_empty(),
    );
    let during = admin.rollout(id).unwrap();
    assert_eq!(during.rollout.current_stage, 0, "stage 1 still soaks");
    assert_eq!(
        member(&during, "robot-3").status,
        "pending",
        "joined, not offered"
    );
    assert!(reports(&admin, "robot-3", id).is_empty());
    assert_eq!(
        during.rollout.counts.targeted, 3,
        "{:?}",
        during.rollout.counts
    );

    // Stage 2 offers it with the rest.
    let finished = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(
        finished.rollout.counts.succeeded, 3,
        "{:?}",
        finished.rollout.counts
    );
    let before = poll_counts(&lines, &robot3);
    wait_polls(&lines, &robot3, &before, 1);
    assert_eq!(
        admin
            .device("robot-3")
            .unwrap()
            .device
            .current_version
            .unwrap()
            .to_string(),
        "1.1.0"
    );
}

#[test]
fn a_robot_the_operator_moves_into_a_group_gets_the_groups_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &plans(3, &[]), &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.filter = Some(TargetFilter {
            group: Some("lab-a".into()),
            ..Default::default()
        });
    });
    assert_eq!(admin.rollout(id).unwrap().rollout.counts.targeted, 0);

    set_labels(&admin, "robot-2", Some("lab-a"));
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 1 && all_finished(d)
    })
    .unwrap();
    let members: Vec<&str> = d.devices.iter().map(|m| m.device_id.as_str()).collect();
    assert_eq!(members, ["robot-2"]);
    let info = admin.device("robot-2").unwrap().device;
    assert_eq!(info.group.as_deref(), Some("lab-a"));

    // The others, outside the group, are never offered it however often they poll.
    let others = ["robot-1".to_string(), "robot-3".to_string()];
    let before = poll_counts(&lines, &others);
    wait_polls(&lines, &others, &before, 2);
    for robot in &others {
        assert!(reports(&admin, robot, id).is_empty(), "{robot}");
        let r = fleet.robot(robot).unwrap();
        assert_eq!(r.robot.booted(), Slot::B, "{robot} stays on 1.0.0");
    }
    assert_eq!(admin.rollout(id).unwrap().rollout.counts.targeted, 1);
}

#[test]
fn a_closed_maintenance_window_holds_installs_and_the_robots_download_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let proxy = Proxy::start(server.addr);
    let lines = LogLines::default();
    let mut fleet = fleet(
        dir.path(),
        &proxy.base,
        &server,
        &plans(3, &[]),
        lines.sink(),
    );
    fleet.start(Arc::new(SystemClock));
    wait_devices(&admin, &fleet.ids(), ENROLL_TIMEOUT).unwrap();
    // The night shift's window opens in two hours.
    admin
        .put_group(
            "night-shift",
            &GroupSettings {
                schedule: window(120, 180),
            },
        )
        .unwrap();
    for id in fleet.ids() {
        set_labels(&admin, &id, Some("night-shift"));
    }
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.filter = Some(TargetFilter {
            group: Some("night-shift".into()),
            ..Default::default()
        });
    });
    // Outside the window every robot downloads, verifies and writes its standby slot, and stops there.
    wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.devices.len() == 3 && d.devices.iter().all(|m| m.status == "staged")
    })
    .unwrap();
    let polls = |proxy: &Proxy| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/poll"))
            .count()
    };
    let seen = polls(&proxy);
    wait_for("every robot to poll twice more", ENROLL_TIMEOUT, || {
        polls(&proxy) >= seen + 6
    });
    let held = admin.rollout(id).unwrap();
    assert!(
        held.devices.iter().all(|m| m.status == "staged"),
        "{:?}",
        held.devices
    );
    for r in &fleet.robots {
        assert_eq!(r.robot.booted(), Slot::B, "{} did not install", r.id);
        assert_eq!(
            r.robot.slot_bytes("rootfs", Slot::A),
            r.robot.rootfs_image("1.1.0"),
            "{} staged the release in its standby slot",
            r.id
        );
        assert_eq!(r.robot.take_reboot_requests(), 0, "{}", r.id);
    }

    // The window opens: the robots install what they staged, without downloading it again.
    admin
        .put_group(
            "night-shift",
            &GroupSettings {
                schedule: window(-60, 60),
            },
        )
        .unwrap();
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(d.rollout.counts.succeeded, 3, "{:?}", d.rollout.counts);
    let downloads = proxy
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/download") && s.fate != "cut")
        .count();
    assert_eq!(downloads, 3, "one download per robot");
    for r in &fleet.robots {
        assert_eq!(r.robot.booted(), Slot::A, "{}", r.id);
    }
}

#[test]
fn a_robot_on_a_mission_holds_the_update_and_the_server_shows_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let mut robots = plans(2, &[]);
    for p in &mut robots {
        p.readiness = Some(vec![]);
    }
    let mut fleet = fleet(dir.path(), &server.base, &server, &robots, lines.sink());
    let busy = Arc::clone(&fleet.robot("robot-1").unwrap().robot);
    busy.set_busy(Some("on a mission: pick 4711"));
    fleet.start(Arc::new(SystemClock));
    wait_devices(&admin, &fleet.ids(), ENROLL_TIMEOUT).unwrap();
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |_| {});

    // robot-2 is idle and updates; robot-1 waits and says why.
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        member(d, "robot-2").status == "success" && d.rollout.counts.waiting == 1
    })
    .unwrap();
    let waiting = member(&d, "robot-1")
        .waiting
        .clone()
        .expect("robot-1 waits");
    assert!(waiting.reason.contains("on a mission"), "{waiting:?}");
    assert_eq!(waiting.phase, WaitPhase::Download);
    let device = admin.device("robot-1").unwrap().device;
    let shown = device
        .waiting
        .expect("the inventory shows why robot-1 waits");
    assert!(
        shown.reason.contains("on a mission: pick 4711"),
        "{shown:?}"
    );
    assert!(
        !reports(&admin, "robot-1", id).contains(&ReportStatus::Downloading),
        "nothing downloaded while busy"
    );
    assert_eq!(busy.booted(), Slot::B);

    // The mission ends: it updates at its next poll.
    busy.set_busy(None);
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(d.rollout.counts.succeeded, 2, "{:?}", d.rollout.counts);
    assert_eq!(d.rollout.counts.waiting, 0);
    wait_for("robot-1 to stop waiting", ENROLL_TIMEOUT, || {
        admin.device("robot-1").unwrap().device.waiting.is_none()
    });
    assert_eq!(busy.booted(), Slot::A);
}

#[test]
fn a_rollout_that_requires_confirmation_waits_for_approve_before_the_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &plans(1, &[]), &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.require_confirmation = true;
    });
    // Downloaded and written, then it waits before rebooting and says so.
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        member(d, "robot-1").waiting.is_some()
    })
    .unwrap();
    let waiting = member(&d, "robot-1").waiting.clone().unwrap();
    assert_eq!(waiting.phase, WaitPhase::Reboot, "{waiting:?}");
    assert!(waiting.reason.contains("confirmation"), "{waiting:?}");
    let robot = &fleet.robot("robot-1").unwrap().robot;
    assert_eq!(robot.booted(), Slot::B, "no reboot before the approval");
    assert!(!reports(&admin, "robot-1", id).contains(&ReportStatus::Rebooting));

    // Someone at the robot runs `ota-client approve`.
    ota_client::daemon::approve(&robot.config().data_dir, Some(&published.manifest_digest))
        .unwrap();
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(d.rollout.counts.succeeded, 1, "{:?}", d.rollout.counts);
    assert_eq!(robot.booted(), Slot::A);
}

#[test]
fn operator_tags_override_the_robots_own_and_aim_the_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let _fleet = started(dir.path(), &server, &plans(2, &[]), &lines);
    // Both robots say site=warehouse-1; the operator knows robot-2 moved.
    admin
        .set_labels(
            "robot-2",
            &DeviceLabels {
                tags: BTreeMap::from([("site".to_string(), "warehouse-2".to_string())]),
                group: None,
            },
        )
        .unwrap();
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.filter = Some(site("warehouse-2"));
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 1 && all_finished(d)
    })
    .unwrap();
    let members: Vec<&str> = d.devices.iter().map(|m| m.device_id.as_str()).collect();
    assert_eq!(members, ["robot-2"]);
    let robot1 = ["robot-1".to_string()];
    let before = poll_counts(&lines, &robot1);
    wait_polls(&lines, &robot1, &before, 2);
    assert!(reports(&admin, "robot-1", id).is_empty());
}

#[test]
fn nothing_is_offered_before_the_rollouts_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &plans(2, &[]), &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start_at = unix_now() + 12;
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.start_at = Some(start_at);
    });
    let ids = fleet.ids();
    let before = poll_counts(&lines, &ids);
    wait_polls(&lines, &ids, &before, 2);
    assert!(unix_now() < start_at, "the robots polled before the start");
    for r in &ids {
        assert!(reports(&admin, r, id).is_empty(), "{r} was offered early");
    }
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(d.rollout.counts.succeeded, 2, "{:?}", d.rollout.counts);
    assert!(unix_now() >= start_at);
}
