//! A real robot daemon against a server that admits robots by hand: it asks, waits without a token, and
//! proceeds on its own once an operator admits it; its identity key is private and the same after a restart.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_client::daemon::{DaemonHooks, ScaledClock};
use ota_protocol::admin::{Admission, DeviceIdentity};
use ota_server::admission::AdmissionMode;
use ota_testkit::release::trust_root;
use ota_testkit::robot::{release_key, Backend, Robot, RobotSpec, ServerSpec};
use ota_testkit::server::{ServerHandle, ServerOptions};
use ota_testkit::wait::wait_for;

fn identities(server: &ServerHandle) -> Vec<DeviceIdentity> {
    server.admin().get(ota_protocol::paths::ADMISSION).unwrap()
}

fn start(robot: &Arc<Robot>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let (r, c) = (Arc::clone(robot), Arc::clone(&cancel));
    let thread = std::thread::spawn(move || {
        let hooks = DaemonHooks {
            // Retry-After 30 s of a pending robot takes 0.3 s.
            clock: Arc::new(ScaledClock(0.01)),
            ..DaemonHooks::default()
        };
        r.run_daemon(&hooks, &c).unwrap();
    });
    (cancel, thread)
}

#[test]
fn a_pending_robot_proceeds_once_admitted_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        ServerOptions::new(&dir.path().join("server"), trust_root(&[release_key()], 1));
    options.admission = AdmissionMode::Manual;
    let server = ServerHandle::start(&options).unwrap();
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.server = Some(ServerSpec {
        url: server.base.clone(),
        device_id: "r1".into(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: Default::default(),
        backoff_initial_ms: 20,
        backoff_max_secs: 1,
        telemetry_command: None,
    });
    let robot = Arc::new(Robot::create(&dir.path().join("r1"), &spec));
    let (cancel, thread) = start(&robot);
    let limit = Duration::from_secs(30);
    wait_for("the robot to ask for admission", limit, || {
        identities(&server)
            .iter()
            .any(|i| i.admission == Admission::Pending)
    });
    assert!(
        server.admin().devices().unwrap().is_empty(),
        "no token before admission"
    );
    let _: DeviceIdentity = server
        .admin()
        .post(
            &ota_protocol::paths::admission("r1", "admit"),
            &serde_json::json!({}),
        )
        .unwrap();
    wait_for("the admitted robot to poll", limit, || {
        server
            .admin()
            .devices()
            .unwrap()
            .iter()
            .any(|d| d.device_id == "r1" && d.last_seen.is_some())
    });
    cancel.store(true, Ordering::Relaxed);
    thread.join().unwrap();

    let key = robot.path("data").join("identity").join("device.pem");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(key.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
    let bytes = std::fs::read(&key).unwrap();
    // Without its token, the restarted robot enrolls again: with the same key, so it is admitted already.
    let token = robot.path("data").join(ota_client::daemon::TOKEN_FILE);
    std::fs::remove_file(&token).unwrap();
    let (cancel, thread) = start(&robot);
    wait_for("the restarted robot to get a token", limit, || {
        token.exists()
    });
    cancel.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    assert_eq!(
        std::fs::read(&key).unwrap(),
        bytes,
        "the key survives restarts unchanged"
    );
    let ids = identities(&server);
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].admission, Admission::Accepted);
}
