//! Runs the real `ota-demo` binary with `--exit-when-done` in a temp dir.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_binary_updates_four_robots_and_rolls_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ota-demo"))
        .args([
            "--exit-when-done",
            "--listen",
            "127.0.0.1:0",
            "--timeout-secs",
            "120",
        ])
        .arg("--dir")
        .arg(dir.path().join("fleet"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 updated, 1 rolled back (as expected)"),
        "{stdout}"
    );
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("#token="), "{stdout}");
    assert!(stdout.contains("[robot-3] reported rollback"), "{stdout}");
    assert!(start.elapsed() < Duration::from_secs(150));
    // A second run replaces the first one's directory.
    let again = Command::new(env!("CARGO_BIN_EXE_ota-demo"))
        .args([
            "--exit-when-done",
            "--quiet",
            "--listen",
            "127.0.0.1:0",
            "--robots",
            "2",
            "--failing-robot",
            "2",
        ])
        .arg("--dir")
        .arg(dir.path().join("fleet"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 updated, 1 rolled back (as expected)"),
        "{stdout}"
    );
    assert!(!stdout.contains("[robot-1]"), "--quiet: {stdout}");
}

#[test]
fn a_directory_the_demo_did_not_make_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota-demo"))
        .args(["--exit-when-done", "--listen", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not made by ota-demo"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(dir.path().join("precious.txt").exists());
}
