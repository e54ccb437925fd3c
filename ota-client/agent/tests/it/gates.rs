//! The robot's own say, with the real daemon against a real server on loopback: a readiness
//! check that says "on a mission" holds the update and the server shows why; a rollout that
//! requires a confirmation stages the update and reboots into it only after `ota-client approve`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ota_client::daemon::{SystemClock, APPROVAL_FILE};
use ota_protocol::admin::{CreateRolloutRequest, DeviceInfo, RolloutState};
use ota_protocol::client::ApiClient;
use ota_protocol::fleet::WaitPhase;
use ota_testkit::fleet::{wait_devices, wait_rollout, Fleet, LogLines, RobotPlan};
use ota_testkit::robot::*;
use ota_testkit::server::{ServerHandle, ServerOptions};
use ota_testkit::wait::wait_for;

const TIMEOUT: Duration = Duration::from_secs(60);

struct Site {
    _dir: tempfile::TempDir,
    server: ServerHandle,
    admin: ApiClient,
    fleet: Fleet,
    lines: LogLines,
}

/// A server and one robot `robot-1` on 1.0.0 whose daemon runs, gated by a readiness check
/// on `readiness` phases (`None`: no check).
fn site(readiness: Option<Vec<String>>, busy: Option<&str>) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let trust = ota_testkit::release::trust_root(&[release_key()], 1);
    let server =
        ServerHandle::start(&ServerOptions::new(&dir.path().join("server"), trust)).unwrap();
    let admin = server.admin();
    let plan = RobotPlan {
        readiness,
        ..RobotPlan::new("robot-1", "1.0.0", &[])
    };
    let server_spec = ServerSpec {
        url: server.base.clone(),
        device_id: String::new(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: BTreeMap::new(),
        backoff_initial_ms: 100,
        backoff_max_secs: 2,
        telemetry_command: None,
    };
    let lines = LogLines::default();
    let mut fleet = Fleet::create(
        dir.path(),
        &[plan],
        &RobotSpec::new(Backend::Grub),
        &server_spec,
        release_key(),
        lines.sink(),
    )
    .unwrap();
    fleet.robots[0].robot.set_busy(busy);
    fleet.start(Arc::new(SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    Site {
        _dir: dir,
        server,
        admin,
        fleet,
        lines,
    }
}

impl Site {
    fn robot(&self) -> &Robot {
        &self.fleet.robots[0].robot
    }

    /// Publishes 1.1.0 and starts a rollout of it to every robot.
    fn roll_out(&self, require_confirmation: bool) -> (u64, String) {
        self.roll_out_bundle(
            bundle_with(
                release_key(),
                "1.1.0",
                COMPATIBLE,
                &[
                    ("rootfs", self.robot().rootfs_image("1.1.0")),
                    ("model", self.robot().model_image("1.1.0")),
                ],
            ),
            require_confirmation,
        )
    }

    /// Publishes `bundle` and starts a rollout of it to every robot.
    fn roll_out_bundle(&self, bundle: Vec<u8>, require_confirmation: bool) -> (u64, String) {
        let published = self.admin.publish_bytes(bundle).unwrap();
        let id = self
            .admin
            .create_rollout(&CreateRolloutRequest {
                bundle_id: published.bundle_id.clone(),
                stages: Some(vec![100]),
                require_confirmation,
                ..Default::default()
            })
            .unwrap()
            .rollout_id;
        (id, published.manifest_digest)
    }

    fn device(&self) -> DeviceInfo {
        self.admin.device("robot-1").unwrap().device
    }

    fn wait_waiting(&self, phase: WaitPhase, reason: &str) -> DeviceInfo {
        let mut last = None;
        wait_for(
            &format!("the server to show robot-1 waiting before its {phase}: {reason}"),
            TIMEOUT,
            || {
                let d = self.device();
                let ok = d
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.phase == phase && w.reason == reason);
                last = Some(d);
                ok
            },
        );
        last.unwrap()
    }

    fn wait_updated(&self, id: u64) {
        let done = wait_rollout(&self.admin, id, TIMEOUT, |d| {
            d.rollout.state == RolloutState::Completed && d.rollout.counts.succeeded == 1
        })
        .unwrap();
        assert_eq!(done.rollout.counts.failed, 0, "{:?}", done.rollout.counts);
        wait_for("the server to show 1.1.0 running", TIMEOUT, || {
            let d = self.device();
            d.current_version.is_some_and(|v| v.to_string() == "1.1.0") && d.waiting.is_none()
        });
    }
}

#[test]
fn a_robot_on_a_mission_holds_the_update_the_server_shows_why_and_it_goes_once_ready() {
    let site = site(Some(vec![]), Some("on a mission"));
    let (id, _) = site.roll_out(false);
    let factory_slot = site.robot().booted();
    let shown = site.wait_waiting(WaitPhase::Download, "on a mission");
    assert_eq!(
        shown.current_version.map(|v| v.to_string()).as_deref(),
        Some("1.0.0")
    );
    let robot = site.robot();
    assert_eq!(
        robot.status().staged,
        None,
        "nothing downloaded while the check says no"
    );
    assert_eq!(robot.take_reboot_requests(), 0);
    assert!(
        site.lines
            .count(Some("robot-1"), "the download of 1.1.0 waits: on a mission")
            >= 1
    );
    let rollout = site.admin.rollout(id).unwrap();
    assert_eq!(
        rollout.rollout.counts.waiting, 1,
        "{:?}",
        rollout.rollout.counts
    );

    robot.set_busy(None);
    site.wait_updated(id);
    assert_eq!(robot.booted(), factory_slot.other());
    drop(site.server);
}

#[test]
fn a_required_confirmation_stages_the_update_and_approval_releases_the_reboot() {
    let site = site(None, None);
    let factory_slot = site.robot().booted();
    let (id, digest) = site.roll_out(true);
    site.wait_waiting(WaitPhase::Reboot, "waiting for confirmation");
    let robot = site.robot();
    let status = robot.status();
    assert_eq!(
        status.staged.as_deref(),
        Some(digest.as_str()),
        "downloaded ahead"
    );
    assert!(status.trial.is_none(), "staged, not armed, while it waits");
    assert_eq!(robot.booted(), factory_slot);
    assert_eq!(robot.take_reboot_requests(), 0);

    // The operator on site approves, as `ota-client approve` on the robot.
    let out = Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&robot.config_path)
        .arg("approve")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("approved the reboot into 1.1.0"),
        "{stdout}"
    );
    let approval = std::fs::read_to_string(robot.path("data").join(APPROVAL_FILE)).unwrap();
    assert!(approval.contains(&digest), "{approval}");

    site.wait_updated(id);
    assert_eq!(robot.booted(), factory_slot.other());
    assert_eq!(
        site.lines.count(
            Some("robot-1"),
            "downloaded and written to the standby slot"
        ),
        1,
        "downloaded once"
    );
}

#[test]
fn a_live_only_update_held_for_its_reboot_gate_is_switched_by_its_activation_without_a_reboot() {
    let site = site(Some(vec!["reboot".into()]), Some("lifting a box"));
    let model_before = site.robot().model_link();
    let (id, digest) = site.roll_out_bundle(
        bundle_with(
            release_key(),
            "1.1.0",
            COMPATIBLE,
            &[("model", site.robot().model_image("1.1.0"))],
        ),
        false,
    );
    site.wait_waiting(WaitPhase::Reboot, "lifting a box");
    let robot = site.robot();
    assert_eq!(robot.status().staged.as_deref(), Some(digest.as_str()));
    assert_eq!(robot.model_link(), model_before, "staged, not switched");
    robot.set_busy(None);
    let done = wait_rollout(&site.admin, id, TIMEOUT, |d| {
        d.rollout.counts.succeeded == 1
    })
    .unwrap();
    assert_eq!(done.rollout.counts.failed, 0, "{:?}", done.rollout.counts);
    assert_eq!(robot.model_link(), model_before.other());
    assert_eq!(
        robot.take_reboot_requests(),
        0,
        "a live switch needs no reboot"
    );
    assert!(
        site.lines
            .count(Some("robot-1"), "1.1.0 switched live (model) and healthy")
            >= 1
    );
}

#[test]
fn approve_without_an_update_says_so() {
    let r = Robot::new(Backend::Grub);
    let out = Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&r.config_path)
        .arg("approve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no update is waiting for confirmation; name one with --digest"),
        "{stderr}"
    );
    assert!(!r.path("data").join(APPROVAL_FILE).exists());
}
