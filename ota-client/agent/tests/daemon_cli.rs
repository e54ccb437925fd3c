//! `ota-client daemon` as a process: a config without [server] is a one-line error; while the
//! server is unreachable the daemon backs off, and SIGTERM stops it cleanly at once.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::robot::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn without_a_server_section_the_daemon_says_what_to_add() {
    let r = Robot::new(Backend::Grub);
    let out = Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&r.config_path)
        .arg("daemon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[server]") && stderr.contains("enrollment_secret"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn sigterm_stops_a_daemon_that_is_backing_off() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.server = Some(ServerSpec {
        url: format!("http://127.0.0.1:{port}"),
        device_id: "robot-cli".into(),
        enrollment_secret: "fleet-secret".into(),
        tags: Default::default(),
        backoff_initial_ms: 50,
        backoff_max_secs: 1,
        telemetry_command: None,
    });
    let r = Robot::create(dir.path(), &spec);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&r.config_path)
        .arg("daemon")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let stopped = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "SIGTERM did not stop the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("started as device robot-cli"), "{stderr}");
    assert!(stderr.contains("retry 2 in"), "backs off: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    // The identity was persisted before the first enrollment attempt, so a retry after the
    // restart is the same request.
    let state = std::fs::read_to_string(r.path("data/daemon-state.json")).unwrap();
    assert!(state.contains("enroll-"), "{state}");
    assert!(!r.path("data/device-token").exists());
}
