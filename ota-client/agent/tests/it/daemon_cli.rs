//! `ota-client daemon` as a process: a config without [server] is a one-line error; while the
//! server is unreachable the daemon backs off, and SIGTERM stops it cleanly at once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ota_testkit::robot::*;
use ota_testkit::wait::wait_for;

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
    ota_testkit::errors::assert_said_once(&stderr);
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
    // Its stderr, read as it comes, so the test waits for the backoff instead of a fixed time.
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let mut pipe = child.stderr.take().unwrap();
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_for("the daemon's second retry", Duration::from_secs(20), || {
        seen.lock().unwrap().contains("retry 2 in")
    });
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
    reader.join().unwrap();
    let stderr = seen.lock().unwrap().clone();
    assert!(stderr.contains("started as device robot-cli"), "{stderr}");
    assert!(stderr.contains("retry 2 in"), "backs off: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    // The identity was persisted before the first enrollment attempt, so a retry after the
    // restart is the same request.
    let state = std::fs::read_to_string(r.path("data/daemon-state.json")).unwrap();
    assert!(state.contains("enroll-"), "{state}");
    assert!(!r.path("data/device-token").exists());
}

/// `ota-client identity show` names the robot's key without ever making one; once the daemon made it, it shows
/// the key id, the public key (the PEM `ota-server devices preauthorize --key` reads) and where it is kept; the
/// command has its man page.
#[test]
fn identity_show_names_the_robots_key_and_never_makes_one() {
    let r = Robot::new(Backend::Grub);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ota-client"))
            .arg("--config")
            .arg(&r.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let data = r.path("data");
    let key_file = ota_client::identity::key_path(&data, None);
    let before = run(&["identity", "show"]);
    assert!(before.contains("none yet"), "{before}");
    assert!(before.contains("not enrolled"), "{before}");
    assert!(!key_file.exists(), "show made a key");

    // What the daemon does at its first start (the client made the data directory before).
    std::fs::create_dir_all(&data).unwrap();
    let key = ota_client::identity::load_or_create(&data, None).unwrap();
    let shown = run(&["identity", "show"]);
    assert!(shown.contains(&key.key_id().to_string()), "{shown}");
    assert!(shown.contains(&key_file.display().to_string()), "{shown}");
    assert!(
        shown.contains(&ota_client::identity::public_key_hex(&key)),
        "{shown}"
    );
    let pem = run(&["identity", "show", "--pem"]);
    assert_eq!(
        ota_keys::PublicKey::from_pem(&pem).unwrap(),
        key.public_key()
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["identity", "show", "--json"])).unwrap();
    assert_eq!(json["public_key_pem"].as_str(), Some(pem.as_str()));
    assert_eq!(json["device_id"], serde_json::Value::Null);

    let docs = tempfile::tempdir().unwrap();
    run(&["generate-docs", docs.path().to_str().unwrap()]);
    let page =
        std::fs::read_to_string(docs.path().join("man/man1/ota-client-identity-show.1")).unwrap();
    assert!(page.contains("never creates a key"), "{page}");
}
