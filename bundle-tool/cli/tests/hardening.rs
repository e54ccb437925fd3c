//! Hardening (issue 13): `verify` states the threshold out of the root's keys, error lines say each thing once,
//! and an output path that is a planted link is replaced, never written through.

use std::fs;
use std::path::Path;

use assert_cmd::Command;
use ota_testkit::errors::assert_said_once;

fn ota_bundle(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("ota-bundle").unwrap();
    c.current_dir(dir);
    c
}

/// Three release keys, a 2-of-3 root and a bundle signed by two of them.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["rel1", "rel2", "rel3"] {
        ota_bundle(d).args(["keygen", name]).assert().success();
    }
    fs::write(d.join("rootfs.ext4"), vec![7u8; 100_000]).unwrap();
    let create = |out: &str, extra: &[&str]| {
        ota_bundle(d)
            .args(["create", "--version", "1.0.0", "--compatible", "acme"])
            .args(["--image", "rootfs=rootfs.ext4", "--key", "rel1.key"])
            .args(["--key", "rel2.key", "-o", out])
            .args(extra)
            .assert()
    };
    create("b.otab", &[]).success();
    ota_bundle(d)
        .args(["trust", "create", "--threshold", "2", "-o", "trust.json"])
        .args([
            "--key", "rel1.pub", "--key", "rel2.pub", "--key", "rel3.pub",
        ])
        .assert()
        .success();
    // An output path that is a link to a file elsewhere: replaced with --force, the target untouched.
    fs::write(d.join("victim"), "precious").unwrap();
    std::os::unix::fs::symlink(d.join("victim"), d.join("linked.otab")).unwrap();
    create("linked.otab", &["--force"]).success();
    assert_eq!(fs::read_to_string(d.join("victim")).unwrap(), "precious");
    assert!(!fs::symlink_metadata(d.join("linked.otab"))
        .unwrap()
        .file_type()
        .is_symlink());
    dir
}

#[test]
fn verify_states_the_threshold_out_of_the_roots_keys() {
    let ws = workspace();
    let out = ota_bundle(ws.path())
        .args(["verify", "--trust", "trust.json", "b.otab"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("signatures: 2 valid ("), "{line}");
    assert!(line.contains("threshold 2 of 3 keys"), "{line}");
    assert!(!line.contains("2 of 2"), "{line}");
    let out = ota_bundle(ws.path())
        .args(["verify", "--json", "--trust", "trust.json", "b.otab"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["threshold"].as_u64(), v["trusted_keys"].as_u64()),
        (Some(2), Some(3))
    );
}

#[test]
fn error_lines_say_each_thing_once() {
    let ws = workspace();
    let d = ws.path();
    fs::write(d.join("junk.otab"), b"hello world").unwrap();
    let runs: &[&[&str]] = &[
        &["verify", "--trust", "missing.json", "b.otab"],
        &["verify", "--trust", "trust.json", "missing.otab"],
        &["verify", "--trust", "trust.json", "junk.otab"],
        &["verify", "--trust", "rel3.pub", "b.otab"],
        &["sign", "--key", "rel3.key", "missing.otab"],
        &["info", "missing.otab"],
        &[
            "extract",
            "--trust",
            "trust.json",
            "b.otab",
            "/proc/no-such-dir/x",
        ],
        &[
            "create",
            "--version",
            "1.0.0",
            "--compatible",
            "acme",
            "--image",
            "rootfs=rootfs.ext4",
            "--key",
            "rel1.key",
            "-o",
            "/no-such-dir/b.otab",
        ],
    ];
    for args in runs {
        let out = ota_bundle(d).args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert_said_once(&stderr);
    }
}
