//! Rollouts an operator aims, times, watches and undoes (issue 10), end to end: targets that change while a
//! rollout runs, stage deadlines, retries and a manual next stage, maintenance windows with download-ahead, a
//! robot that says it is busy, a health guard on inference latency, a fleet revert and the security floor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ota_client::daemon::SystemClock;
use ota_client::Slot;
use ota_e2e::{fleet, plans, release_bundle, release_bundle_with_floor};
use ota_protocol::admin::{CreateRolloutRequest, RolloutDetail, RolloutState};
use ota_protocol::client::ApiClient;
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{
    DeviceLabels, GroupSettings, GuardRule, GuardStat, Schedule, StageRules, TargetFilter,
    WaitPhase, Window,
};
use ota_testkit::fleet::{wait_devices, wait_rollout, Fleet, LogLines, ModelLatency, RobotPlan};
use ota_testkit::proxy::Proxy;
use ota_testkit::server::ServerHandle;
use ota_testkit::wait::wait_for;

use crate::common::{all_finished, poll_counts, server, wait_polls, POLLED, ROLLOUT_TIMEOUT};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// A rollout of `bundle_id` in `stages`, changed by `edit`.
fn create(
    admin: &ApiClient,
    bundle_id: &str,
    stages: &[u8],
    edit: impl FnOnce(&mut CreateRolloutRequest),
) -> u64 {
    let mut request = CreateRolloutRequest {
        bundle_id: bundle_id.into(),
        stages: Some(stages.to_vec()),
        failure_threshold: Some(0.5),
        ..Default::default()
    };
    edit(&mut request);
    admin.create_rollout(&request).unwrap().rollout_id
}

/// The operator's labels of a device (`PUT /api/devices/{id}/labels`).
fn set_labels(admin: &ApiClient, id: &str, group: Option<&str>) {
    admin
        .set_labels(
            id,
            &DeviceLabels {
                tags: BTreeMap::new(),
                group: group.map(str::to_string),
            },
        )
        .unwrap();
}

/// The statuses `robot` reported about rollout `id`.
fn reports(admin: &ApiClient, robot: &str, id: u64) -> Vec<ReportStatus> {
    admin
        .device(robot)
        .unwrap()
        .reports
        .into_iter()
        .filter(|r| r.rollout_id == Some(id))
        .map(|r| r.status)
        .collect()
}

fn member<'a>(d: &'a RolloutDetail, robot: &str) -> &'a ota_protocol::admin::RolloutDevice {
    d.devices
        .iter()
        .find(|m| m.device_id == robot)
        .unwrap_or_else(|| panic!("{robot} is not a member: {:?}", d.devices))
}

fn done(d: &RolloutDetail) -> bool {
    d.rollout.state == RolloutState::Completed && all_finished(d)
}

fn started(
    dir: &std::path::Path,
    server: &ServerHandle,
    plans: &[RobotPlan],
    lines: &LogLines,
) -> Fleet {
    let mut f = fleet(dir, &server.base, server, plans, lines.sink());
    f.start(Arc::new(SystemClock));
    wait_devices(&server.admin(), &f.ids(), ENROLL_TIMEOUT).unwrap();
    f
}

fn site(name: &str) -> TargetFilter {
    TargetFilter {
        tags: BTreeMap::from([("site".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// `"HH:MM"` of now + `minutes` (UTC, wrapping at midnight).
fn clock_in(minutes: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let m = ((now / 60 + minutes) % 1440 + 1440) % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn window(from_minutes: i64, to_minutes: i64) -> Schedule {
    Schedule {
        windows: vec![Window {
            days: vec![],
            start: clock_in(from_minutes),
            end: clock_in(to_minutes),
        }],
        timezone: Some("UTC".into()),
    }
}

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
    // The last stage soaks too before the rollout counts as completed; every robot is offered at once.
    let d = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded == 4 && all_finished(d)
    })
    .unwrap();
    assert_eq!(d.rollout.current_stage, 1);
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

/// Robots whose 1.1.0 model answers in 95 ms where the factory's takes 40.
fn slow_model_plans(n: usize) -> Vec<RobotPlan> {
    let mut robots = plans(n, &[]);
    for p in &mut robots {
        p.model_latency = Some(ModelLatency {
            default_ms: 40.0,
            by_version: BTreeMap::from([("1.1.0".to_string(), 95.0)]),
            fields: String::new(),
        });
    }
    robots
}

fn latency(admin: &ApiClient, robot: &str) -> Option<f64> {
    admin
        .device(robot)
        .unwrap()
        .device
        .telemetry
        .and_then(|t| t.metrics.get("inference_latency_ms").copied())
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
