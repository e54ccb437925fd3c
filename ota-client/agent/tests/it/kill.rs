//! SIGKILL of the real `ota-client` process at random moments of `install` and `confirm`,
//! and the CLI's behaviour (exit codes, one-line errors, the lock between two processes).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_client::Slot;
use ota_testkit::robot::*;
use ota_testkit::wait::wait_for;

use crate::common::http::{Behaviour, Server};

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("ota-client")
}

fn cli(r: &Robot) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config").arg(&r.config_path);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    killed
}

fn settle_and_update(r: &Robot, context: &str) {
    r.set_healthy(true);
    for round in 0..6 {
        r.reboot();
        r.assert_boots_good_slot(&["2.0.0", "9.0.0"], context);
        let res = r.client().confirm();
        let st = r.status();
        if res.is_ok()
            && st.trial.is_none()
            && st.pending_trial.is_none()
            && st.live_trial.is_none()
        {
            break;
        }
        assert!(round < 5, "{context}: never settled: {res:?}");
    }
    let out = cli(r)
        .arg("install")
        .arg(r.put("b9.otab", &rootfs_bundle("9.0.0")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{context}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booted = r.reboot();
    let out = cli(r).arg("confirm").output().unwrap();
    assert!(
        out.status.success(),
        "{context}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        r.slot_bytes("rootfs", booted),
        rootfs_image("9.0.0"),
        "{context}"
    );
    assert_eq!(r.status().primary, Some(booted));
}

fn pseudo_random(i: u64) -> u64 {
    i.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33
}

#[test]
fn sigkill_during_install_and_confirm() {
    // Measure a clean install to spread kills over its whole duration.
    let probe = Robot::new(Backend::Grub);
    let bundle = probe.put("b.otab", &mixed_bundle("2.0.0"));
    let start = Instant::now();
    let out = cli(&probe).arg("install").arg(&bundle).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = start.elapsed().as_micros() as u64 + 1;
    let mut kills = 0;
    for i in 0..30u64 {
        let r = Robot::new(if i % 2 == 0 {
            Backend::Grub
        } else {
            Backend::File
        });
        let b = r.put("b.otab", &mixed_bundle("2.0.0"));
        let delay = Duration::from_micros(pseudo_random(i) % (span * 5 / 4));
        let mut c = cli(&r);
        c.arg("install").arg(&b);
        kills += usize::from(kill_after(c, delay));
        settle_and_update(&r, &format!("install killed after {delay:?}"));
    }
    for i in 0..20u64 {
        let r = Robot::new(Backend::Grub);
        r.install(&mixed_bundle("2.0.0")).unwrap();
        r.set_healthy(i % 3 != 0);
        r.reboot();
        let delay = Duration::from_micros(pseudo_random(i + 100) % (span * 5 / 4));
        let mut c = cli(&r);
        c.arg("confirm");
        kills += usize::from(kill_after(c, delay));
        settle_and_update(&r, &format!("confirm killed after {delay:?}"));
    }
    assert!(
        kills >= 10,
        "only {kills} processes were still running when killed"
    );
}

#[test]
fn sigkill_during_a_slow_download_leaves_the_slot_unbootable() {
    for i in 0..10u64 {
        let body = rootfs_bundle("2.0.0");
        let server = Server::start(Behaviour {
            drop_first_after: Some(body.len() / 2),
            // Far longer than the wait below, however late a loaded machine reaches "writing": the
            // stall starts as soon as the half is in the socket, not when the client gets there.
            stall_first: Some(Duration::from_secs(8)),
            body,
            etag: "x".into(),
            ..Default::default()
        });
        let r = Robot::new(Backend::Grub);
        let mut child = cli(&r)
            .arg("install")
            .arg(server.url("/bundle.otab"))
            .spawn()
            .unwrap();
        // Wait until the slot is being written, then kill at a random moment of the stall.
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.slot_state("rootfs", Slot::B) != "writing" {
            assert!(Instant::now() < deadline, "install never started writing");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(pseudo_random(i) % 1000));
        assert!(child.try_wait().unwrap().is_none(), "still downloading");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(r.slot_state("rootfs", Slot::B), "writing");
        assert_eq!(r.status().trial, None);
        settle_and_update(&r, "killed mid-download");
    }
}

#[test]
fn a_second_process_fails_on_the_lock_while_an_install_runs() {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        drop_first_after: Some(body.len() / 2),
        stall_first: Some(Duration::from_millis(1200)),
        body,
        etag: "x".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let mut first = cli(&r);
    first.arg("install").arg(server.url("/bundle.otab"));
    let first = first.spawn().unwrap();
    // The install takes the lock before it opens the download; its stalled answer keeps it there.
    wait_for(
        "the first install's download",
        Duration::from_secs(20),
        || !server.bundle_requests().is_empty(),
    );
    let second = cli(&r)
        .arg("install")
        .arg(r.put("b.otab", &rootfs_bundle("2.0.0")))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another ota-client operation holds the lock"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(r.status().trial.unwrap().slot, Slot::B);
}

#[test]
fn cli_exit_codes_messages_and_status() {
    let r = Robot::new(Backend::Grub);
    let out = cli(&r)
        .args(["install", "/nonexistent.otab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("ota-client: error: cannot open bundle /nonexistent.otab"),
        "{err}"
    );

    let out = cli(&r)
        .arg("install")
        .arg(r.put("b.otab", &rootfs_bundle("2.0.0")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("armed for 3 trial boots") && text.contains("next: reboot"),
        "{text}"
    );

    let out = cli(&r).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["booted"], "A");
    assert_eq!(v["primary"], "A");
    assert_eq!(v["trial"]["slot"], "B");
    assert_eq!(v["trial"]["tries_left"], 3);
    let b = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["class"] == "rootfs" && s["slot"] == "B")
        .unwrap();
    assert_eq!(b["state"], "trying");
    assert_eq!(b["version"], "2.0.0");

    r.set_healthy(false);
    r.reboot();
    let out = cli(&r).arg("confirm").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed trial exits non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trial boot of slot B failed") && err.contains("app-healthy"),
        "{err}"
    );
    assert_eq!(r.take_reboot_requests(), 1);

    let out = cli(&r).args(["mark-bad", "C"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid slot \"C\""));

    let bad_cfg = r.put("bad.toml", b"compatible = 1\n");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&bad_cfg)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml line 1") && err.contains("string"),
        "{err}"
    );

    let out = cli(&r).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rootfs/B") && text.contains("bad"), "{text}");
}
