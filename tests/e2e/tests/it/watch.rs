//! Rollouts an operator watches and undoes (issue 10), end to end: stage deadlines, retries and a manual next
//! stage, health guards (inference latency while the rollout runs, error rate in the watch period after it
//! completed), a fleet revert and the security floor.

use std::sync::Arc;

use ota_client::daemon::SystemClock;
use ota_client::Slot;
use ota_e2e::{fleet, plans, release_bundle, release_bundle_with_floor};
use ota_protocol::admin::RolloutState;
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{GuardRule, GuardStat, StageRules};
use ota_testkit::fleet::{wait_devices, wait_rollout, LogLines};
use ota_testkit::proxy::Proxy;
use ota_testkit::wait::wait_for;

use crate::common::*;

#[test]
fn a_robot_switched_off_stops_blocking_its_stage_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let mut fleet = started(dir.path(), &server, &plans(4, &[]), &lines);
    fleet.switch_off("robot-4");
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    // Whichever stage robot-4 is in, only the deadline lets the rollout finish.
    let id = create(&admin, &published.bundle_id, &[50, 100], |r| {
        r.rules = StageRules {
            soak_secs: 0,
            deadline_secs: 6,
        };
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Completed
    })
    .unwrap();
    assert_eq!(d.rollout.counts.succeeded, 3, "{:?}", d.rollout.counts);
    assert_eq!(d.rollout.counts.timed_out, 1, "{:?}", d.rollout.counts);
    let off = member(&d, "robot-4");
    assert!(off.timed_out, "{off:?}");
    assert_eq!(off.status, "pending");
    for r in ["robot-1", "robot-2", "robot-3"] {
        assert!(!member(&d, r).timed_out, "{r}");
    }
}

#[test]
fn failed_robots_are_offered_the_update_again_when_the_operator_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &plans(3, &[2]), &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.failure_threshold = Some(1.0);
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(
        (d.rollout.counts.succeeded, d.rollout.counts.rolled_back),
        (2, 1),
        "{:?}",
        d.rollout.counts
    );
    // The operator fixes what made robot-2's application fail and retries.
    let robot2 = &fleet.robot("robot-2").unwrap().robot;
    robot2.set_healthy(true);
    admin.rollout_action(id, "retry").unwrap();
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 3 && done(d)
    })
    .unwrap();
    assert_eq!(member(&d, "robot-2").status, "success");
    assert_eq!(robot2.booted(), Slot::A);
    assert_eq!(
        robot2.slot_bytes("rootfs", Slot::A),
        robot2.rootfs_image("1.1.0")
    );
    let statuses = reports(&admin, "robot-2", id);
    assert!(
        statuses.contains(&ReportStatus::RolledBack) && statuses.contains(&ReportStatus::Success),
        "{statuses:?}"
    );
}

#[test]
fn next_starts_the_next_stage_before_the_soak_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let _fleet = started(dir.path(), &server, &plans(4, &[]), &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let id = create(&admin, &published.bundle_id, &[25, 100], |r| {
        r.rules = StageRules {
            soak_secs: 3600,
            deadline_secs: 0,
        };
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 1
    })
    .unwrap();
    // Soaking: the other three poll and get nothing.
    let waiting: Vec<String> = d
        .devices
        .iter()
        .filter(|m| m.status == "pending")
        .map(|m| m.device_id.clone())
        .collect();
    assert_eq!(waiting.len(), 3, "{:?}", d.devices);
    let before = poll_counts(&lines, &waiting);
    wait_polls(&lines, &waiting, &before, 2);
    let soaking = admin.rollout(id).unwrap();
    assert_eq!(soaking.rollout.current_stage, 0);
    assert_eq!(soaking.rollout.counts.succeeded, 1);

    let info = admin.rollout_action(id, "next").unwrap();
    assert_eq!(info.current_stage, 1);
    // Every robot is offered at once; the soak gates only a next stage, so the finished last stage completes.
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 4
            && all_finished(d)
            && d.rollout.state == RolloutState::Completed
    })
    .unwrap();
    assert_eq!(d.rollout.current_stage, 1);
}

#[test]
fn a_latency_guard_pauses_the_rollout_and_names_the_rule_and_the_robots() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &slow_model_plans(4), &lines);
    for r in fleet.ids() {
        wait_for(&format!("{r}'s baseline latency"), ENROLL_TIMEOUT, || {
            latency(&admin, &r) == Some(40.0)
        });
    }
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let guard = GuardRule {
        metric: "inference_latency_ms".into(),
        stat: GuardStat::P95,
        max: None,
        max_increase_percent: Some(20.0),
        min_robots: 1,
    };
    // Stage 1 passes its health checks; the soak gives the updated robots' telemetry time to arrive.
    let id = create(&admin, &published.bundle_id, &[50, 100], |r| {
        r.guards = vec![guard.clone()];
        r.rules = StageRules {
            soak_secs: 60,
            deadline_secs: 0,
        };
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Paused
    })
    .unwrap();
    let reason = d.rollout.pause_reason.clone().unwrap_or_default();
    assert!(reason.contains("inference_latency_ms"), "{reason}");
    let breach = d.rollout.breach.clone().expect("the breach is stored");
    assert_eq!(breach.rule, guard);
    assert!(breach.updated >= 90.0, "{breach:?}");
    assert!(breach.baseline.is_some_and(|b| b < 50.0), "{breach:?}");
    let updated: Vec<&str> = d
        .devices
        .iter()
        .filter(|m| m.status == "success")
        .map(|m| m.device_id.as_str())
        .collect();
    assert_eq!(updated.len(), 2, "{:?}", d.devices);
    assert!(!breach.robots.is_empty());
    for r in &breach.robots {
        assert!(updated.contains(&r.as_str()), "{r} named but not updated");
        // The history shows the model before and after the update.
        let history = admin.history(r, "inference_latency_ms", None).unwrap();
        let low = history
            .points
            .iter()
            .map(|p| p.min)
            .fold(f64::MAX, f64::min);
        let high = history
            .points
            .iter()
            .map(|p| p.max)
            .fold(f64::MIN, f64::max);
        assert!(low <= 40.0 && high >= 95.0, "{r}: {history:?}");
    }
    // Paused: the rest keep their model.
    let rest: Vec<String> = d
        .devices
        .iter()
        .filter(|m| m.status == "pending")
        .map(|m| m.device_id.clone())
        .collect();
    let before = poll_counts(&lines, &rest);
    wait_polls(&lines, &rest, &before, 2);
    for r in &rest {
        assert!(reports(&admin, r, id).is_empty(), "{r}");
        assert_eq!(latency(&admin, r), Some(40.0));
    }
    assert_eq!(
        admin.rollout(id).unwrap().rollout.state,
        RolloutState::Paused
    );
}

#[test]
fn a_revert_takes_the_robots_back_by_switching_slots_and_downloads_only_where_needed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let proxy = Proxy::start(server.addr);
    let lines = LogLines::default();
    let mut fleet = fleet(
        dir.path(),
        &proxy.base,
        &server,
        &{
            // robot-3 left the factory on 0.9.0: its other slot will not hold 1.0.0.
            let mut robots = slow_model_plans(3);
            robots[2].factory_version = Some("0.9.0".into());
            robots
        },
        lines.sink(),
    );
    fleet.start(Arc::new(SystemClock));
    wait_devices(&admin, &fleet.ids(), ENROLL_TIMEOUT).unwrap();
    let release = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    // The factory release, byte for byte what the robots were provisioned with.
    let previous = admin.publish_bytes(release_bundle("1.0.0")).unwrap();
    let id = create(&admin, &release.bundle_id, &[100], |_| {});
    wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    for r in fleet.ids() {
        wait_for(
            &format!("{r} to report the slow model"),
            ENROLL_TIMEOUT,
            || latency(&admin, &r) == Some(95.0),
        );
    }

    let revert = create(&admin, &previous.bundle_id, &[100], |r| {
        r.revert = true;
        r.filter = Some(site("warehouse-1"));
    });
    let info = admin.rollout(revert).unwrap();
    assert!(info.rollout.revert);
    assert_eq!(info.rollout.counts.targeted, 3, "{:?}", info.rollout.counts);
    let d = wait_rollout(&admin, revert, ROLLOUT_TIMEOUT, done).unwrap();
    assert_eq!(d.rollout.counts.succeeded, 3, "{:?}", d.rollout.counts);
    for r in &fleet.robots {
        let robot = &r.robot;
        assert_eq!(
            robot.booted(),
            Slot::B,
            "{} is back on its 1.0.0 slot",
            r.id
        );
        assert_eq!(
            robot.slot_bytes("rootfs", Slot::B),
            robot.rootfs_image("1.0.0")
        );
        assert_eq!(robot.model_link(), Slot::B, "{}", r.id);
        wait_for(
            &format!("{} to report 1.0.0's latency", r.id),
            ENROLL_TIMEOUT,
            || latency(&admin, &r.id) == Some(40.0),
        );
    }
    let fetched: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/download") && s.path.contains(&previous.bundle_id))
        .map(|s| s.path)
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "only robot-3 downloads 1.0.0: {fetched:?}"
    );
    for robot in ["robot-1", "robot-2"] {
        let statuses = reports(&admin, robot, revert);
        assert!(
            !statuses.contains(&ReportStatus::Downloading),
            "{robot}'s other slot held 1.0.0: {statuses:?}"
        );
    }
    assert!(reports(&admin, "robot-3", revert).contains(&ReportStatus::Downloading));
}

#[test]
fn no_robot_goes_below_its_security_floor_whatever_the_server_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let fleet = started(dir.path(), &server, &plans(2, &[]), &lines);
    // 1.1.0 fixes a vulnerability: nothing older may run after it.
    let fixed = admin
        .publish_bytes(release_bundle_with_floor("1.1.0", "1.1.0"))
        .unwrap();
    let vulnerable = admin.publish_bytes(release_bundle("1.0.0")).unwrap();
    let id = create(&admin, &fixed.bundle_id, &[100], |_| {});
    wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    for r in fleet.ids() {
        wait_for(&format!("{r} to report its floor"), ENROLL_TIMEOUT, || {
            admin
                .device(&r)
                .unwrap()
                .device
                .security_floor
                .is_some_and(|f| f.to_string() == "1.1.0")
        });
    }

    let revert = create(&admin, &vulnerable.bundle_id, &[100], |r| {
        r.revert = true;
        r.failure_threshold = Some(1.0);
    });
    let d = wait_rollout(&admin, revert, ROLLOUT_TIMEOUT, |d| {
        d.devices.len() == 2 && all_finished(d)
    })
    .unwrap();
    assert_eq!(d.rollout.counts.succeeded, 0, "{:?}", d.rollout.counts);
    for r in &fleet.robots {
        let failure = admin
            .device(&r.id)
            .unwrap()
            .reports
            .into_iter()
            .find(|x| x.rollout_id == Some(revert) && x.status == ReportStatus::Failure)
            .unwrap_or_else(|| panic!("{} refused the revert", r.id));
        assert!(
            failure.error.as_deref().unwrap_or("").contains("floor"),
            "{failure:?}"
        );
        assert_eq!(r.robot.booted(), Slot::A, "{} stays on 1.1.0", r.id);
        assert_eq!(
            r.robot.slot_bytes("rootfs", Slot::A),
            r.robot.rootfs_image("1.1.0")
        );
    }
}

#[test]
fn a_guard_keeps_watching_after_the_rollout_completed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    // The robots report what their stack wrote last (nothing at first).
    let mut robots = plans(2, &[]);
    for p in &mut robots {
        let file = dir.path().join(&p.id).join("telemetry.json");
        p.telemetry_command = Some(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "cat {:?} 2>/dev/null || echo '{{}}'",
                file.display().to_string()
            ),
        ]);
    }
    let _fleet = started(dir.path(), &server, &robots, &lines);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    let guard = GuardRule {
        metric: "error_rate".into(),
        stat: GuardStat::Mean,
        max: Some(0.1),
        max_increase_percent: None,
        min_robots: 1,
    };
    let id = create(&admin, &published.bundle_id, &[100], |r| {
        r.guards = vec![guard.clone()];
        r.watch_secs = 600;
    });
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, done).unwrap();
    assert!(d.rollout.breach.is_none());
    // Hours later in the field: robot-2's new release starts failing its tasks.
    std::fs::write(
        dir.path().join("robot-2").join("telemetry.json"),
        r#"{"metrics": {"error_rate": 0.6}}"#,
    )
    .unwrap();
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Paused
    })
    .unwrap();
    let breach = d.rollout.breach.clone().expect("the breach is stored");
    assert_eq!(breach.rule, guard);
    assert_eq!(breach.robots, ["robot-2"]);
    let reason = d.rollout.pause_reason.unwrap_or_default();
    assert!(reason.contains("error_rate"), "{reason}");
    // Seen: resuming puts it back to completed.
    let resumed = admin.rollout_action(id, "resume").unwrap();
    assert_eq!(resumed.state, RolloutState::Completed);
}
