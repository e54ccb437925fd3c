//! Issue 10 with real processes only: the `ota-server serve` binary and three `ota-client daemon` processes on
//! simulated robots (file slots, file boot env), all on 127.0.0.1. The operator's steps go through the real
//! `ota-server` CLI; a robot's reboot is the test killing its daemon, booting the simulated loader, running
//! `ota-client confirm` as the boot service would and starting the daemon again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ota_e2e::release_bundle;
use ota_protocol::admin::{RolloutDetail, RolloutState};
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_testkit::fleet::{wait_rollout, ModelLatency};
use ota_testkit::robot::{release_key, Backend, Robot, RobotSpec, ServerSpec, MODEL_SIZE};
use ota_testkit::wait::wait_for;

use ota_protocol::device::ReportStatus;

use crate::common::{all_finished, latency, reports};

const ADMIN_TOKEN: &str = "processes-admin-token";
const SECRET: &str = "processes-fleet-secret";
const TIMEOUT: Duration = Duration::from_secs(30);

/// `target/<profile>/<name>`: cargo builds the workspace's binaries next to the test executable's directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p ota-server -p ota-client` first",
        bin.display()
    );
    bin
}

/// Kills every process it holds when dropped, so a failing test leaves nothing running.
#[derive(Default)]
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `ota-server serve` on 127.0.0.1 (a port it picks) and returns its base URL.
fn start_server(processes: &mut Processes, dir: &Path) -> String {
    let trust = dir.join("release.pub");
    std::fs::write(&trust, release_key().public_key().to_pem()).unwrap();
    let mut child = Command::new(binary("ota-server"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("server"))
        .arg("--trust")
        .arg(&trust)
        .args(["--poll-interval-secs", "1", "--poll-jitter-secs", "0"])
        .args(["--guard-interval-ms", "200"])
        .args(["--admission", "auto"])
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OTA_ENROLLMENT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    processes.0.push(("server".into(), child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Drains stdout for the whole run so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on http://").nth(1) {
                let _ = tx.send(format!("http://{}", url.trim()));
            }
        }
    });
    rx.recv_timeout(TIMEOUT)
        .expect("ota-server printed its address")
}

/// One robot: its simulated hardware and its daemon process.
struct ProcessRobot {
    id: String,
    robot: Robot,
}

impl ProcessRobot {
    fn create(dir: &Path, id: &str, base: &str) -> ProcessRobot {
        let robot_dir = dir.join(id);
        // 1.1.0's model is slower than the factory's: the robot's telemetry says so while it runs.
        let model = ModelLatency {
            default_ms: 40.0,
            by_version: [("1.1.0".to_string(), 95.0)].into(),
            fields: String::new(),
        };
        let mut spec = RobotSpec::new(Backend::File);
        spec.server = Some(ServerSpec {
            url: base.to_string(),
            device_id: id.to_string(),
            enrollment_secret: SECRET.into(),
            tags: [("site".to_string(), "warehouse-1".to_string())].into(),
            backoff_initial_ms: 100,
            backoff_max_secs: 1,
            telemetry_command: Some(model.command(&robot_dir, MODEL_SIZE).unwrap()),
        });
        let robot = Robot::create(&robot_dir, &spec);
        robot.provision(release_key(), "1.0.0").unwrap();
        ProcessRobot {
            id: id.to_string(),
            robot,
        }
    }

    fn start(&self, processes: &mut Processes) {
        let child = Command::new(binary("ota-client"))
            .arg("--config")
            .arg(&self.robot.config_path)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        processes.0.push((self.id.clone(), child));
    }

    /// If the daemon ran the reboot command: power off (kill the daemon), boot, run `ota-client confirm` as the
    /// boot service would (again while it asks for a reboot), start the daemon.
    fn reboot_if_asked(&self, processes: &mut Processes) {
        if self.robot.take_reboot_requests() == 0 {
            return;
        }
        processes.kill(&self.id);
        for _ in 0..5 {
            self.robot.reboot();
            let out = Command::new(binary("ota-client"))
                .arg("--config")
                .arg(&self.robot.config_path)
                .arg("confirm")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: confirm: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            );
            if self.robot.take_reboot_requests() == 0 {
                break;
            }
        }
        self.start(processes);
    }
}

/// Runs the real `ota-server` CLI against `base`; panics with its stderr if it fails.
fn cli(base: &str, args: &[&str]) -> String {
    let out = Command::new(binary("ota-server"))
        .args(args)
        .args(["--server", base, "--token", ADMIN_TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ota-server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id of the newest rollout of `bundle_id`.
fn newest_rollout(admin: &ApiClient, bundle_id: &str) -> u64 {
    admin
        .rollouts()
        .unwrap()
        .into_iter()
        .filter(|r| r.bundle_id == bundle_id)
        .map(|r| r.rollout_id)
        .max()
        .unwrap_or_else(|| panic!("no rollout of {bundle_id}"))
}

fn version(admin: &ApiClient, id: &str) -> Option<String> {
    admin
        .device(id)
        .unwrap()
        .device
        .current_version
        .map(|v| v.to_string())
}

#[test]
fn a_slow_model_is_halted_by_its_guard_and_reverted_with_real_processes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes::default();
    let base = start_server(&mut processes, dir.path());
    let admin = ApiClient::new(&ClientOptions::new(&base))
        .unwrap()
        .with_token(ADMIN_TOKEN);
    let robots: Vec<ProcessRobot> = ["robot-1", "robot-2", "robot-3"]
        .iter()
        .map(|id| ProcessRobot::create(dir.path(), id, &base))
        .collect();
    // Provisioning rebooted each robot into the slot that holds 1.0.0.
    let factory_slots: Vec<_> = robots.iter().map(|r| r.robot.booted()).collect();
    for r in &robots {
        r.start(&mut processes);
    }
    let tick = |processes: &mut Processes| {
        for r in &robots {
            r.reboot_if_asked(processes);
        }
    };
    for r in &robots {
        wait_for(&format!("{}'s baseline latency", r.id), TIMEOUT, || {
            admin.device(&r.id).is_ok() && latency(&admin, &r.id) == Some(40.0)
        });
    }
    // The operator puts two robots in line-a; robot-3 stays out of it.
    for (id, group) in [("robot-1", "line-a"), ("robot-2", "line-a")] {
        cli(&base, &["devices", "label", id, "--group", group]);
    }
    cli(&base, &["devices", "label", "robot-3", "--group", "line-b"]);
    let old = admin.publish_bytes(release_bundle("1.0.0")).unwrap();
    let new = admin.publish_bytes(release_bundle("1.1.0")).unwrap();
    cli(
        &base,
        &[
            "rollout",
            "create",
            "--bundle",
            &new.bundle_id,
            "--group",
            "line-a",
            "--stages",
            "100",
            "--failure-threshold",
            "1",
            "--guard",
            "inference_latency_ms:p95>80",
            "--watch",
            "10m",
        ],
    );
    let id = newest_rollout(&admin, &new.bundle_id);
    let mut halted: Option<RolloutDetail> = None;
    wait_for("the latency guard to halt the rollout", TIMEOUT, || {
        tick(&mut processes);
        let d = admin.rollout(id).unwrap();
        let paused = d.rollout.state == RolloutState::Paused;
        halted = paused.then_some(d);
        paused
    });
    let d = halted.unwrap();
    let reason = d.rollout.pause_reason.clone().unwrap_or_default();
    assert!(reason.contains("inference_latency_ms"), "{reason}");
    let breach = d.rollout.breach.clone().expect("the breach is stored");
    assert!(breach.updated > 80.0, "{breach:?}");
    assert!(!breach.robots.is_empty(), "{breach:?}");
    for r in &breach.robots {
        assert!(["robot-1", "robot-2"].contains(&r.as_str()), "{breach:?}");
    }
    let members: Vec<&str> = d.devices.iter().map(|m| m.device_id.as_str()).collect();
    assert!(!members.contains(&"robot-3"), "{members:?}");
    for id in ["robot-1", "robot-2"] {
        wait_for(&format!("{id} on 1.1.0"), TIMEOUT, || {
            tick(&mut processes);
            version(&admin, id).as_deref() == Some("1.1.0")
        });
    }
    assert_eq!(version(&admin, "robot-3").as_deref(), Some("1.0.0"));

    cli(
        &base,
        &[
            "rollout",
            "revert",
            "--group",
            "line-a",
            "--to",
            &old.bundle_id,
            "--stages",
            "100",
            "--failure-threshold",
            "1",
        ],
    );
    let revert = newest_rollout(&admin, &old.bundle_id);
    let d = wait_rollout(&admin, revert, TIMEOUT, |d| {
        tick(&mut processes);
        d.devices.len() == 2 && all_finished(d)
    })
    .unwrap();
    assert!(d.rollout.revert, "{:?}", d.rollout);
    assert_eq!(d.rollout.counts.succeeded, 2, "{:?}", d.rollout.counts);
    for id in ["robot-1", "robot-2", "robot-3"] {
        wait_for(&format!("{id} back on 1.0.0's model"), TIMEOUT, || {
            tick(&mut processes);
            version(&admin, id).as_deref() == Some("1.0.0") && latency(&admin, id) == Some(40.0)
        });
    }
    for (r, slot) in robots.iter().zip(&factory_slots) {
        // The update's reboot and the revert's were the test restarting the robot's processes.
        assert_eq!(
            r.robot.booted(),
            *slot,
            "{} is back on its 1.0.0 slot",
            r.id
        );
    }
    for id in ["robot-1", "robot-2"] {
        let statuses = reports(&admin, id, revert);
        assert!(
            !statuses.contains(&ReportStatus::Downloading),
            "{id}'s other slot held 1.0.0: {statuses:?}"
        );
        assert!(
            statuses.contains(&ReportStatus::Success),
            "{id}: {statuses:?}"
        );
    }
    assert!(
        reports(&admin, "robot-3", id).is_empty(),
        "robot-3 is not in line-a"
    );
    drop(processes);
    eprintln!("processes: {:.1} s", started.elapsed().as_secs_f64());
}
