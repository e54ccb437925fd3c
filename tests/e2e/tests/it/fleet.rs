//! The update itself end to end: staged rollouts, rollbacks, interrupted and refused downloads, tampered
//! uploads, device authorization, a server restart and an outage.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ota_client::daemon::Level;
use ota_client::Slot;
use ota_e2e::{fleet, plans, release_bundle, trust};
use ota_protocol::admin::{BundleInfo, RolloutState};
use ota_protocol::device::ReportStatus;
use ota_protocol::paths;
use ota_testkit::fleet::{wait_devices, wait_rollout, LogLines};
use ota_testkit::proxy::{Mode, Proxy};
use ota_testkit::server::{ServerHandle, ServerOptions};
use ota_testkit::wait::wait_for;

use crate::common::{
    all_finished, poll_counts, rollout, server, status, wait_polls, ROLLOUT_TIMEOUT,
};

#[test]
fn rollout_updates_the_fleet_pauses_at_the_threshold_and_resumes_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &server.base, &server, &plans(5, &[2]), log);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();

    let id = rollout(&admin, &published.bundle_id, vec![40, 100], 0.1);
    // One rollback in any stage is more than 10 % of the offered robots.
    let paused = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Paused
    })
    .unwrap();
    assert!(
        paused
            .rollout
            .pause_reason
            .as_deref()
            .is_some_and(|r| r.contains("threshold")),
        "{:?}",
        paused.rollout
    );
    assert_eq!(paused.rollout.counts.rolled_back, 1);
    let robot2 = paused
        .devices
        .iter()
        .find(|m| m.device_id == "robot-2")
        .unwrap();
    assert_eq!(robot2.status, "rolled_back");

    // Paused: nobody new gets the update while the operator looks, however often they poll.
    let ids = fleet.ids();
    let before = poll_counts(&lines, &ids);
    wait_polls(&lines, &ids, &before, 2);
    let still = admin.rollout(id).unwrap();
    assert_eq!(still.rollout.state, RolloutState::Paused);
    assert_eq!(still.rollout.counts.offered, paused.rollout.counts.offered);

    admin.rollout_action(id, "resume").unwrap();
    let done = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Completed && all_finished(d)
    })
    .unwrap();
    assert_eq!(
        done.rollout.counts.succeeded, 4,
        "{:?}",
        done.rollout.counts
    );
    assert_eq!(done.rollout.counts.rolled_back, 1);

    for r in &fleet.robots {
        let robot = &r.robot;
        wait_for(
            &format!("{} to report everything", r.id),
            Duration::from_secs(10),
            || robot.status().unreported_events.is_empty(),
        );
        let booted = robot.booted();
        // The inventory names slots as the robot, its env and its kernel command line do.
        let running = if r.id == "robot-2" { "1.0.0" } else { "1.1.0" };
        wait_for(
            &format!("the inventory to show {} on {running} in {booted}", r.id),
            Duration::from_secs(10),
            || {
                let d = admin.device(&r.id).unwrap().device;
                d.booted_slot.as_deref() == Some(booted.to_string().as_str())
                    && d.current_version.is_some_and(|v| v.to_string() == running)
                    && d.slots.get(&booted.to_string()).map(String::as_str) == Some(running)
            },
        );
        if r.id == "robot-2" {
            // Back on the committed 1.0.0 slot, with the failed slot marked bad.
            assert_eq!(booted, Slot::B, "{}", r.id);
            assert_eq!(
                robot.slot_bytes("rootfs", Slot::B),
                robot.rootfs_image("1.0.0")
            );
            assert_eq!(robot.slot_state("rootfs", Slot::A), "bad");
        } else {
            assert_eq!(booted, Slot::A, "{}", r.id);
            assert_eq!(
                robot.slot_bytes("rootfs", Slot::A),
                robot.rootfs_image("1.1.0")
            );
            assert_eq!(robot.slot_state("rootfs", Slot::A), "good");
            assert_eq!(
                robot.model_link(),
                Slot::A,
                "{}: model switched at commit",
                r.id
            );
        }
    }

    // The rollback reached the server with its reason and the daemon's log.
    let detail = admin.device("robot-2").unwrap();
    let rb = detail
        .reports
        .iter()
        .find(|r| r.status == ReportStatus::RolledBack)
        .expect("a rolled_back report");
    assert_eq!(rb.rollout_id, Some(id));
    assert_eq!(
        rb.manifest_digest.as_deref(),
        Some(published.manifest_digest.as_str())
    );
    assert!(
        rb.reason
            .as_deref()
            .unwrap_or("")
            .contains("app did not come up"),
        "{rb:?}"
    );
    assert!(
        rb.log_tail.as_deref().unwrap_or("").contains("1.1.0"),
        "{rb:?}"
    );
    // A successful robot went through every stage of the protocol.
    let detail = admin.device("robot-1").unwrap();
    let statuses: Vec<ReportStatus> = detail.reports.iter().map(|r| r.status).collect();
    for s in [
        ReportStatus::Downloading,
        ReportStatus::Installing,
        ReportStatus::Rebooting,
        ReportStatus::Success,
    ] {
        assert!(statuses.contains(&s), "robot-1 reports: {statuses:?}");
    }
    // The inventory shows the new version once the robots poll again.
    wait_for(
        "the inventory to show 1.1.0",
        Duration::from_secs(10),
        || {
            let devices = admin.devices().unwrap();
            devices.iter().all(|d| {
                let want = if d.device_id == "robot-2" {
                    "1.0.0"
                } else {
                    "1.1.0"
                };
                d.current_version.as_ref().map(|v| v.to_string()).as_deref() == Some(want)
            })
        },
    );
    let devices = admin.devices().unwrap();
    let t = devices[0].telemetry.clone().unwrap();
    assert!(
        t.memory_total_bytes.is_some() && t.disk_total_bytes.is_some() && t.uptime_secs.is_some()
    );
    fleet.stop();
    assert!(
        !lines.all().iter().any(|(_, l, _)| *l == Level::Error),
        "no errors expected"
    );
}

#[test]
fn a_download_cut_mid_body_resumes_with_range() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let proxy = Proxy::start(server.addr);
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &proxy.base, &server, &plans(1, &[]), log);
    let bundle = release_bundle("1.1.0");
    let size = bundle.len();
    let published = admin.publish_bytes(bundle).unwrap();
    proxy.cut_next_download(size / 2);
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    let id = rollout(&admin, &published.bundle_id, vec![100], 0.5);
    let done = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, all_finished).unwrap();
    assert_eq!(
        done.rollout.counts.succeeded, 1,
        "{:?}",
        done.rollout.counts
    );
    let downloads: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/download"))
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    assert_eq!(downloads[0].fate, "cut");
    assert_eq!(downloads[0].range, None);
    let range = downloads[1]
        .range
        .clone()
        .expect("the second request resumes");
    let from: usize = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= size / 2, "{range} of {size}");
    let robot = &fleet.robots[0].robot;
    assert_eq!(robot.booted(), Slot::A);
    assert_eq!(
        robot.slot_bytes("rootfs", Slot::A),
        robot.rootfs_image("1.1.0")
    );
}

#[test]
fn a_permanent_download_error_is_not_retried_and_is_reported_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let proxy = Proxy::start(server.addr);
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &proxy.base, &server, &plans(1, &[]), log);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    proxy.fail_downloads(Some(410));
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    let id = rollout(&admin, &published.bundle_id, vec![100], 0.5);
    let done = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, all_finished).unwrap();
    assert_eq!(done.rollout.counts.failed, 1, "{:?}", done.rollout.counts);
    // Once reported, the update is not offered or downloaded again, however often the robot polls.
    let ids = fleet.ids();
    let before = poll_counts(&lines, &ids);
    wait_polls(&lines, &ids, &before, 3);
    let downloads = proxy
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/download"))
        .count();
    assert_eq!(downloads, 1, "410 is permanent: no retry");
    let failure = admin
        .device("robot-1")
        .unwrap()
        .reports
        .into_iter()
        .find(|r| r.status == ReportStatus::Failure)
        .expect("a failure report");
    assert_eq!(failure.rollout_id, Some(id));
    assert!(
        failure.error.as_deref().unwrap_or("").contains("HTTP 410"),
        "{failure:?}"
    );
    let robot = &fleet.robots[0].robot;
    assert_eq!(
        robot.booted(),
        Slot::B,
        "still on the factory-provisioned slot"
    );
    assert!(robot.status().unreported_events.is_empty());
}

#[test]
fn a_tampered_upload_is_refused_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let good = release_bundle("1.1.0");
    let mut tampered = good.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let err = admin.publish_bytes(tampered).unwrap_err().to_string();
    assert!(
        err.contains("HTTP 422") && err.contains("rejected"),
        "{err}"
    );
    // Signed by a key the server does not trust.
    let stranger = ota_keys::SecretKey::generate();
    let r = ota_testkit::robot::Robot::new(ota_testkit::robot::Backend::Grub);
    let foreign = ota_testkit::robot::bundle_with(
        &stranger,
        "1.1.0",
        ota_testkit::robot::COMPATIBLE,
        &[("rootfs", r.rootfs_image("1.1.0"))],
    );
    let err = admin.publish_bytes(foreign).unwrap_err().to_string();
    assert!(err.contains("HTTP 422"), "{err}");
    let list: Vec<BundleInfo> = admin.bundles().unwrap();
    assert!(list.is_empty(), "nothing published: {list:?}");
    // The untouched bundle is accepted.
    let ok = admin.publish_bytes(good).unwrap();
    assert!(!ok.deduplicated);
}

#[test]
fn devices_see_only_their_own_data_and_nothing_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &server.base, &server, &plans(2, &[]), log);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    fleet.stop();
    let token_file = fleet.robots[0].robot.path("data/device-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the device token is private");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let anonymous = server.anonymous();
    let as_device = |token: Option<&str>| match token {
        Some(t) => anonymous.with_token(t),
        None => anonymous.clone(),
    };
    let get =
        |path: &str, token: Option<&str>| status(as_device(token).get::<serde_json::Value>(path));
    assert_eq!(get("/api/devices/robot-1", Some(&token)), 200);
    assert_eq!(get("/api/devices/robot-2", Some(&token)), 403);
    assert_eq!(get("/api/devices", Some(&token)), 403, "admin route");
    assert_eq!(get("/api/devices/robot-1", None), 401);
    assert_eq!(get("/api/devices/robot-1", Some("ota1.forged")), 401);
    let download = format!("/api/bundles/{}/download", published.bundle_id);
    assert_eq!(get(&download, Some(&token)), 403, "not offered to it");
    assert_eq!(get(&download, None), 401);
    let poll = anonymous.post::<_, serde_json::Value>(
        paths::POLL,
        &serde_json::json!({"compatible": "acme-robot-v2"}),
    );
    assert_eq!(status(poll), 401);
    // Reports about a rollout that does not exist are refused, and need a token.
    let report =
        serde_json::json!({"report_id": "x-1", "rollout_id": 4242, "status": "downloading"});
    let post = |token: Option<&str>| {
        status(as_device(token).post::<_, serde_json::Value>(paths::REPORT, &report))
    };
    assert_eq!(post(Some(&token)), 404);
    assert_eq!(post(None), 401);
}

#[test]
fn a_server_restart_loses_nothing_and_the_robots_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::new(&dir.path().join("server"), trust());
    let first = ServerHandle::start(&options).unwrap();
    let admin = first.admin();
    let proxy = Proxy::start(first.addr);
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &proxy.base, &first, &plans(4, &[]), log);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    let tokens: Vec<String> = fleet
        .robots
        .iter()
        .map(|r| std::fs::read_to_string(r.robot.path("data/device-token")).unwrap())
        .collect();
    let id = rollout(&admin, &published.bundle_id, vec![25, 100], 0.5);
    // Stage 1 (one robot) finishes, then the server goes away.
    wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.counts.succeeded >= 1
    })
    .unwrap();
    let (admin_token, secret) = (first.admin_token.clone(), first.enrollment_secret.clone());
    first.stop().unwrap();
    proxy.set_mode(Mode::Down);
    // The robots find it gone (each poll meets a closed connection).
    let down = |proxy: &Proxy| proxy.seen().iter().filter(|s| s.fate == "down").count();
    wait_for(
        "the robots to find the server down",
        ROLLOUT_TIMEOUT,
        || down(&proxy) >= 4,
    );
    // Same data directory, generated secrets read back, a new port.
    let second = ServerHandle::start(&options).unwrap();
    assert_eq!(
        (second.admin_token.clone(), second.enrollment_secret.clone()),
        (admin_token, secret)
    );
    proxy.set_upstream(second.addr);
    proxy.set_mode(Mode::Forward);
    let admin = second.admin();
    let bundles = admin.bundles().unwrap();
    assert_eq!(bundles.len(), 1);
    assert_eq!(admin.devices().unwrap().len(), 4);
    let done = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, |d| {
        d.rollout.state == RolloutState::Completed && all_finished(d)
    })
    .unwrap();
    assert_eq!(
        done.rollout.counts.succeeded, 4,
        "{:?}",
        done.rollout.counts
    );
    for r in &fleet.robots {
        assert_eq!(
            r.robot.slot_bytes("rootfs", r.robot.booted()),
            r.robot.rootfs_image("1.1.0"),
            "{}",
            r.id
        );
        // Reports from before the restart are still there.
        let reports = admin.device(&r.id).unwrap().reports;
        assert!(
            reports.iter().any(|x| x.status == ReportStatus::Success),
            "{}: {reports:?}",
            r.id
        );
    }
    let after: Vec<String> = fleet
        .robots
        .iter()
        .map(|r| std::fs::read_to_string(r.robot.path("data/device-token")).unwrap())
        .collect();
    assert_eq!(tokens, after, "no robot had to enroll again");
    fleet.stop();
    assert_eq!(lines.count(None, "enrolling again"), 0);
}

#[test]
fn during_an_outage_the_daemon_backs_off_honours_retry_after_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let admin = server.admin();
    let proxy = Proxy::start(server.addr);
    let lines = LogLines::default();
    let log = lines.sink();
    let mut fleet = fleet(dir.path(), &proxy.base, &server, &plans(1, &[]), log);
    let published = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    fleet.start(std::sync::Arc::new(ota_client::daemon::SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();

    // A dead server: retries back off (100 ms doubling, full jitter, at most 2 s).
    let logged_before = lines.all().len();
    proxy.set_mode(Mode::Down);
    let down_at = Instant::now();
    let id = rollout(&admin, &published.bundle_id, vec![100], 0.5);
    wait_for("the third retry", ROLLOUT_TIMEOUT, || {
        lines.count(None, "retry 3 in") > 0
    });
    let down: Vec<Instant> = proxy
        .seen()
        .iter()
        .filter(|s| s.fate == "down")
        .map(|s| s.at)
        .collect();
    let attempts = down.len();
    assert!(
        (2..=40).contains(&attempts),
        "{attempts} attempts by the third retry"
    );
    let retries: Vec<String> = lines
        .all()
        .into_iter()
        .skip(logged_before)
        .filter(|(_, l, s)| *l == Level::Warn && s.contains("retry"))
        .map(|(_, _, s)| s)
        .collect();
    assert!(
        retries.iter().any(|s| s.contains("retry 3 in")),
        "{retries:?}"
    );
    // Each retry waited the backoff it announced (logged to 0.1 s), so none came early.
    for n in 1..=2usize {
        let line = retries
            .iter()
            .find(|s| s.contains(&format!("retry {n} in ")))
            .unwrap_or_else(|| panic!("retry {n} logged: {retries:?}"));
        let secs: f64 = line
            .rsplit_once(" in ")
            .and_then(|(_, d)| d.trim_end_matches(" s").parse().ok())
            .unwrap_or_else(|| panic!("a delay in {line:?}"));
        let gap = down[n] - down[n - 1];
        assert!(
            gap.as_secs_f64() >= secs - 0.06,
            "retry {n} came {gap:?} after the failure, announced {secs} s: {retries:?}"
        );
    }

    // Overloaded: 503 with Retry-After 2 is honoured.
    proxy.set_mode(Mode::Busy(2));
    let busy_count = |proxy: &Proxy| proxy.seen().iter().filter(|s| s.fate == "busy").count();
    wait_for("two polls answered 503", ROLLOUT_TIMEOUT, || {
        busy_count(&proxy) >= 2
    });
    proxy.set_mode(Mode::Forward);
    let busy: Vec<Instant> = proxy
        .seen()
        .iter()
        .filter(|s| s.fate == "busy")
        .map(|s| s.at)
        .collect();
    assert!(!busy.is_empty());
    for w in busy.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(1900),
            "retried {:?} after a 503 with Retry-After: 2",
            w[1] - w[0]
        );
    }

    // Back up: the robot gets the update that was created during the outage.
    let done = wait_rollout(&admin, id, ROLLOUT_TIMEOUT, all_finished).unwrap();
    assert_eq!(done.rollout.counts.succeeded, 1);
    assert!(down_at.elapsed() < ROLLOUT_TIMEOUT);
    let robot = &fleet.robots[0].robot;
    assert_eq!(
        robot.slot_bytes("rootfs", robot.booted()),
        robot.rootfs_image("1.1.0")
    );
}

#[test]
fn the_demo_runs_to_the_expected_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let options = ota_demo::DemoOptions {
        dir: dir.path().join("fleet"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        verbose: false,
        ..Default::default()
    };
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink: std::sync::Arc<std::sync::Mutex<dyn std::io::Write + Send>> = out.clone();
    let start = Instant::now();
    let mut demo = ota_demo::start(&options, sink).unwrap();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert!(demo.summary.as_expected, "{text}\n{:?}", demo.summary);
    assert_eq!((demo.summary.updated, demo.summary.rolled_back), (4, 1));
    assert!(demo.summary.dashboard.contains("#token="));
    assert!(text.contains("rollout 1 created"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(60));
    demo.fleet.stop();
}
