//! The codecs and the shipped scripts against the real tools: grub-editenv and
//! grub-script-check (grub-common), mkimage (u-boot-tools). (The stores against
//! fw_printenv/fw_setenv and mkenvimage are tested in `ota-boot-store`.)
//! A missing tool fails the test under CI and prints a loud SKIPPED line otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_bootloader::env_from_pairs as vars;
use ota_bootloader::grubenv;
use ota_testkit::tools::require;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn crate_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Variables exercising escapes and awkward values.
fn grub_sample() -> BTreeMap<String, String> {
    vars(&[
        ("OTA_PRIMARY", "B"),
        ("OTA_TRIAL", ""),
        ("OTA_TRIES", "3"),
        ("back", "a\\b\\\\c"),
        ("multi", "line1\nline2"),
        ("saved_entry", "gnulinux-simple-1234"),
        ("spaces", " x y "),
    ])
}

#[test]
fn grub_editenv_reads_our_blocks_and_writes_identical_bytes() {
    if !require("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let v = grub_sample();
    std::fs::write(&ours, grubenv::encode(&v).unwrap()).unwrap();
    let listed = run(Command::new("grub-editenv").arg(&ours).arg("list"));
    let expected: String = v.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(listed, expected);

    let theirs = dir.path().join("theirs");
    run(Command::new("grub-editenv").arg(&theirs).arg("create"));
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        grubenv::encode(&BTreeMap::new()).unwrap(),
        "empty block"
    );
    let mut set = Command::new("grub-editenv");
    set.arg(&theirs).arg("set");
    for (k, val) in &v {
        set.arg(format!("{k}={val}"));
    }
    run(&mut set);
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        grubenv::encode(&v).unwrap()
    );
}

#[test]
fn grub_script_check_accepts_ota_cfg() {
    if !require("grub-script-check") {
        return;
    }
    run(Command::new("grub-script-check").arg(crate_file("grub/ota.cfg")));
}

#[test]
fn mkimage_compiles_boot_cmd() {
    if !require("mkimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scr = dir.path().join("boot.scr");
    run(Command::new("mkimage")
        .args([
            "-A", "arm", "-T", "script", "-C", "none", "-n", "OTA boot", "-d",
        ])
        .arg(crate_file("u-boot/boot.cmd"))
        .arg(&scr));
    let img = std::fs::read(&scr).unwrap();
    assert_eq!(&img[..4], &[0x27, 0x05, 0x19, 0x56], "legacy image magic");
    let source = std::fs::read(crate_file("u-boot/boot.cmd")).unwrap();
    assert!(img.windows(source.len()).any(|w| w == source.as_slice()));
}
