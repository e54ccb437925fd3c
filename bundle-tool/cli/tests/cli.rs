//! The `ota-bundle` binary as a release engineer uses it: every subcommand, its error paths, and interop with the
//! real `openssl` and `tar`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

mod chain;
mod pkcs11;

fn ota_bundle() -> Command {
    Command::cargo_bin("ota-bundle").unwrap()
}

struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Self {
        let ws = Workspace {
            dir: TempDir::new().unwrap(),
        };
        for name in ["rel1", "rel2", "rel3"] {
            ota_bundle()
                .current_dir(ws.path())
                .args(["keygen", name])
                .assert()
                .success();
        }
        let rootfs: Vec<u8> = (0..400_000u32)
            .flat_map(|i| (i % 977).to_le_bytes())
            .collect();
        fs::write(ws.file("rootfs.ext4"), rootfs).unwrap();
        fs::write(ws.file("detector.onnx"), b"model weights ".repeat(5000)).unwrap();
        ws
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = ota_bundle();
        c.current_dir(self.path());
        c
    }

    /// Builds `out` signed by the given keys, with the `full` payload these tests check byte by byte.
    fn create(&self, out: &str, version: &str, keys: &[&str]) {
        let mut c = self.cmd();
        c.env("SOURCE_DATE_EPOCH", "1700000000").args([
            "create",
            "--payload",
            "full",
            "--version",
            version,
            "--compatible",
            "acme-robot-v2",
            "--image",
            "rootfs=rootfs.ext4",
            "--image",
            "model=detector.onnx",
            "--level",
            "3",
            "-o",
            out,
        ]);
        for k in keys {
            c.args(["--key", &format!("{k}.key")]);
        }
        c.assert().success();
    }

    fn trust(&self, out: &str, keys: &[&str], threshold: u32) {
        let mut c = self.cmd();
        c.args([
            "trust",
            "create",
            "--threshold",
            &threshold.to_string(),
            "-o",
            out,
        ]);
        for k in keys {
            c.args(["--key", &format!("{k}.pub")]);
        }
        c.assert().success();
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Offset of a byte inside the payload of entry `images/<name>`.
fn payload_byte(bundle: &[u8], name: &str) -> usize {
    let path = format!("images/{name}");
    let header = (0..bundle.len())
        .step_by(512)
        .find(|&at| bundle[at..].starts_with(path.as_bytes()))
        .expect("entry present");
    header + 512 + 20
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["keygen"],
        vec!["key-id"],
        vec!["public-key"],
        vec!["create"],
        vec!["sign"],
        vec!["verify"],
        vec!["info"],
        vec!["extract"],
        vec!["trust", "create"],
        vec!["trust", "sign"],
        vec!["trust", "verify"],
        vec!["trust", "show"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        ota_bundle()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: ota-bundle"));
    }
}

#[test]
fn keygen_writes_private_key_0600_and_refuses_to_overwrite() {
    let ws = Workspace::new();
    let mode = fs::metadata(ws.file("rel1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = fs::read(ws.file("rel1.key")).unwrap();
    ws.cmd()
        .args(["keygen", "rel1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("refusing to overwrite"));
    assert_eq!(fs::read(ws.file("rel1.key")).unwrap(), before);
    // The key id printed by keygen matches key-id for both halves.
    let id_sec = ws
        .cmd()
        .args(["key-id", "rel1.key"])
        .output()
        .unwrap()
        .stdout;
    let id_pub = ws
        .cmd()
        .args(["key-id", "rel1.pub"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(id_sec, id_pub);
    assert_eq!(String::from_utf8(id_sec).unwrap().trim().len(), 16);
}

#[test]
fn keygen_and_key_id_print_json() {
    let ws = Workspace::new();
    let out = ws
        .cmd()
        .args(["keygen", "--json", "robot-release"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(made["secret_key"]
        .as_str()
        .unwrap()
        .ends_with("robot-release.key"));
    assert!(made["public_key"]
        .as_str()
        .unwrap()
        .ends_with("robot-release.pub"));
    let out = ws
        .cmd()
        .args(["key-id", "--json", "robot-release.pub"])
        .output()
        .unwrap();
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(id["key_id"], made["key_id"]);
    assert_eq!(id["key_id"].as_str().unwrap().len(), 16);
}

#[test]
fn create_sign_verify_info_extract() {
    let ws = Workspace::new();
    ws.create("b.otab", "1.0.0", &["rel1"]);
    ws.trust("trust.json", &["rel1", "rel2", "rel3"], 2);

    ws.cmd()
        .args(["verify", "--trust", "trust.json", "b.otab"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("1 of the required 2"));
    ws.cmd()
        .args(["sign", "--key", "rel2.key", "b.otab"])
        .assert()
        .success();
    ws.cmd()
        .args(["verify", "--trust", "trust.json", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK b.otab: version 1.0.0"));
    let out = ws
        .cmd()
        .args(["verify", "--json", "--trust", "trust.json", "b.otab"])
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["version"], "1.0.0");
    assert_eq!(verified["signed_by"].as_array().unwrap().len(), 2);
    let out = ws
        .cmd()
        .args(["trust", "show", "--json", "trust.json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["signed"]["threshold"], 2);
    // A single .pub works as a trust root.
    ws.cmd()
        .args(["verify", "--trust", "rel2.pub", "b.otab"])
        .assert()
        .success();

    let out = ws
        .cmd()
        .args(["info", "--json", "b.otab"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["manifest"]["version"], "1.0.0");
    assert_eq!(info["manifest"]["images"].as_array().unwrap().len(), 2);
    assert_eq!(info["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(info["verified"], false);
    ws.cmd()
        .args(["info", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains("compatible:  acme-robot-v2"))
        .stdout(predicate::str::contains("payload sha256 "))
        // the manifest's Unix time, in words (RFC 3339, UTC); --json above keeps the number
        .stdout(predicate::str::is_match(r"created: +20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\n").unwrap());
    assert!(info["manifest"]["created"].is_u64());
    let payload_sha = info["manifest"]["images"][0]["payload_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(payload_sha.len(), 64);

    ws.cmd()
        .args(["extract", "--trust", "trust.json", "b.otab", "out"])
        .assert()
        .success();
    assert_eq!(
        fs::read(ws.file("out/rootfs.ext4")).unwrap(),
        fs::read(ws.file("rootfs.ext4")).unwrap()
    );
    assert_eq!(
        fs::read(ws.file("out/detector.onnx")).unwrap(),
        fs::read(ws.file("detector.onnx")).unwrap()
    );
    // Extracting again refuses to overwrite.
    ws.cmd()
        .args(["extract", "--trust", "trust.json", "b.otab", "out"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn security_floor_is_written_shown_and_bounded() {
    let ws = Workspace::new();
    let create = |version: &str, floor: &str| {
        let mut args = create_args(version, &["rootfs=rootfs.ext4"], "rel1.key", "f.otab");
        args.extend([
            "--security-floor".to_string(),
            floor.to_string(),
            "--force".into(),
        ]);
        ws.cmd()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(args)
            .assert()
    };
    create("2.0.0", "1.5.0")
        .success()
        .stdout(predicate::str::contains("security floor 1.5.0"));
    ws.cmd()
        .args(["info", "f.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains("floor:       1.5.0"));
    let out = ws
        .cmd()
        .args(["info", "--json", "f.otab"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["manifest"]["security_floor"], "1.5.0");
    create("1.0.0", "1.5.0")
        .failure()
        .stderr(predicate::str::contains(
            "--security-floor 1.5.0 is above --version 1.0.0",
        ));
    // Without the flag the manifest has no floor at all (not even a null).
    ws.create("b.otab", "1.0.0", &["rel1"]);
    ws.cmd()
        .args(["info", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains("floor:").not());
    let out = ws
        .cmd()
        .args(["info", "--json", "b.otab"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info["manifest"].get("security_floor").is_none(), "{info}");
}

#[test]
fn reproducible_with_source_date_epoch() {
    let ws = Workspace::new();
    ws.create("a.otab", "1.0.0", &["rel1", "rel2"]);
    ws.create("b.otab", "1.0.0", &["rel2", "rel1"]);
    assert_eq!(
        fs::read(ws.file("a.otab")).unwrap(),
        fs::read(ws.file("b.otab")).unwrap()
    );
    let mode = fs::metadata(ws.file("a.otab"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "a new bundle is world-readable");
}

#[test]
fn verify_names_the_failed_check() {
    let ws = Workspace::new();
    ws.create("b.otab", "1.0.0", &["rel1"]);
    let good = fs::read(ws.file("b.otab")).unwrap();
    let check = |bytes: &[u8], trust: &str, expect: &str| {
        fs::write(ws.file("x.otab"), bytes).unwrap();
        ws.cmd()
            .args(["verify", "--trust", trust, "x.otab"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(expect));
    };
    check(
        &good,
        "rel2.pub",
        "signed only by keys the trust root does not contain",
    );
    // Flip a byte inside a payload.
    let mut tampered = good.clone();
    tampered[payload_byte(&good, "rootfs.ext4")] ^= 0x40;
    fs::write(ws.file("x.otab"), &tampered).unwrap();
    let out = ws
        .cmd()
        .args(["verify", "--trust", "rel1.pub", "x.otab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("payload is corrupt") || msg.contains("does not match its SHA-256"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "one-line error: {msg}");
    check(&good[..good.len() - 700], "rel1.pub", "truncated");
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    check(&longer, "rel1.pub", "trailing data");
    check(b"hello world", "rel1.pub", "not an OTA bundle");
    check(b"", "rel1.pub", "not an OTA bundle: the file is empty");
    ws.cmd()
        .args(["verify", "--trust", "missing.json", "b.otab"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("missing.json"));
}

/// `create VERSION` of the given `--image` and `--key` arguments into `out.otab`.
fn create_args(version: &str, images: &[&str], key: &str, out: &str) -> Vec<String> {
    let mut args = ["create", "--version", version, "--compatible", "acme"]
        .map(String::from)
        .to_vec();
    for image in images {
        args.extend(["--image".to_string(), image.to_string()]);
    }
    args.extend(["--key", key, "-o", out].map(String::from));
    args
}

#[test]
fn failed_create_leaves_nothing() {
    let ws = Workspace::new();
    let before = ws.entries();
    let rootfs = "rootfs=rootfs.ext4";
    // (version, images, key, exit code, what stderr names)
    let cases = [
        (
            "1.0.0",
            vec![rootfs, "model=missing.bin"],
            "rel1.key",
            1,
            "missing.bin",
        ),
        (
            "1.0.0",
            vec!["rootfs.ext4"],
            "rel1.key",
            1,
            "must be SLOT_CLASS=FILE",
        ),
        (
            "1.0.0",
            vec![rootfs, "rootfs=detector.onnx"],
            "rel1.key",
            1,
            "two images target slot class 'rootfs'",
        ),
        ("not-semver", vec![rootfs], "rel1.key", 2, "not-semver"),
        ("1.0.0", vec![rootfs], "rel1.pub", 1, "rel1.pub"),
    ];
    for (version, images, key, code, names) in cases {
        ws.cmd()
            .args(create_args(version, &images, key, "out.otab"))
            .assert()
            .code(code)
            .stderr(predicate::str::contains(names));
    }
    assert_eq!(
        ws.entries(),
        before,
        "no output or temporary file left behind"
    );
    // An existing output is not replaced without --force.
    ws.create("b.otab", "1.0.0", &["rel1"]);
    ws.cmd()
        .args(create_args("2.0.0", &[rootfs], "rel1.key", "b.otab"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn failed_extract_and_sign_leave_nothing() {
    let ws = Workspace::new();
    ws.create("b.otab", "1.0.0", &["rel1"]);
    let mut bytes = fs::read(ws.file("b.otab")).unwrap();
    let at = payload_byte(&bytes, "detector.onnx");
    bytes[at] ^= 0x01;
    fs::write(ws.file("bad.otab"), &bytes).unwrap();
    ws.cmd()
        .args(["extract", "--trust", "rel1.pub", "bad.otab", "out"])
        .assert()
        .code(1);
    let left: Vec<_> = fs::read_dir(ws.file("out"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        left.is_empty() || left == vec![0],
        "extract left files behind"
    );

    let before = ws.entries();
    ws.cmd()
        .args(["sign", "--key", "rel2.key", "bad.otab"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("refusing to sign"));
    assert_eq!(
        fs::read(ws.file("bad.otab")).unwrap(),
        bytes,
        "bundle unchanged"
    );
    assert_eq!(ws.entries(), before);
}

#[test]
fn trust_root_rotation() {
    let ws = Workspace::new();
    ws.trust("root-v1.json", &["rel1", "rel2"], 2);
    // v2 drops (revokes) rel1 and adds rel3.
    ws.cmd()
        .args([
            "trust",
            "create",
            "--key",
            "rel2.pub",
            "--key",
            "rel3.pub",
            "--threshold",
            "1",
            "--root-version",
            "2",
            "--sign-with",
            "rel1.key",
            "-o",
            "root-v2.json",
        ])
        .assert()
        .success();
    ws.cmd()
        .args([
            "trust",
            "verify",
            "--current",
            "root-v1.json",
            "root-v2.json",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not signed by enough keys"));
    ws.cmd()
        .args(["trust", "sign", "--key", "rel2.key", "root-v2.json"])
        .assert()
        .success();
    ws.cmd()
        .args([
            "trust",
            "verify",
            "--current",
            "root-v1.json",
            "root-v2.json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("version 2 may replace version 1"));
    // The revoked key alone cannot produce a v3.
    ws.cmd()
        .args([
            "trust",
            "create",
            "--key",
            "rel1.pub",
            "--threshold",
            "1",
            "--root-version",
            "3",
            "--sign-with",
            "rel1.key",
            "-o",
            "root-v3.json",
        ])
        .assert()
        .success();
    ws.cmd()
        .args([
            "trust",
            "verify",
            "--current",
            "root-v2.json",
            "root-v3.json",
        ])
        .assert()
        .code(1);
    // Same version is not a rotation.
    ws.cmd()
        .args([
            "trust",
            "verify",
            "--current",
            "root-v2.json",
            "root-v2.json",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not newer"));
    ws.cmd()
        .args(["trust", "show", "root-v2.json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("threshold:  1"));
}

#[test]
fn openssl_and_tar_interop() {
    if !ota_testkit::tools::require_all(&["openssl", "tar"]) {
        return;
    }
    let ws = Workspace::new();
    let run = |args: &[&str]| {
        let out = StdCommand::new(args[0])
            .args(&args[1..])
            .current_dir(ws.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // A key made by OpenSSL signs a bundle; our tool verifies it with OpenSSL's public key.
    run(&[
        "openssl",
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        "ossl.key",
    ]);
    run(&[
        "openssl", "pkey", "-in", "ossl.key", "-pubout", "-out", "ossl.pub",
    ]);
    ws.create("b.otab", "3.1.4", &["ossl"]);
    ws.cmd()
        .args(["verify", "--trust", "ossl.pub", "b.otab"])
        .assert()
        .success();
    // Our public key is read by OpenSSL, and OpenSSL verifies the manifest signature we made, on the manifest
    // bytes that plain tar extracts from the bundle.
    run(&["openssl", "pkey", "-pubin", "-in", "rel1.pub", "-noout"]);
    ws.create("c.otab", "3.1.4", &["rel1"]);
    fs::create_dir(ws.file("x")).unwrap();
    run(&["tar", "-C", "x", "-xf", "c.otab"]);
    assert!(ws.file("x/images/rootfs.ext4").exists());
    let block: serde_json::Value =
        serde_json::from_slice(&fs::read(ws.file("x/signatures.json")).unwrap()).unwrap();
    let sig_hex = block["signatures"][0]["sig"].as_str().unwrap();
    fs::write(ws.file("sig.bin"), hex::decode(sig_hex).unwrap()).unwrap();
    let out = run(&[
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "rel1.pub",
        "-rawin",
        "-in",
        "x/manifest.json",
        "-sigfile",
        "sig.bin",
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Signature Verified Successfully"));
    // The payload is a plain zstd frame of the image.
    if ota_testkit::tools::require("zstd") {
        run(&[
            "zstd",
            "-q",
            "-d",
            "x/images/rootfs.ext4",
            "-o",
            "rootfs.out",
        ]);
        assert_eq!(
            fs::read(ws.file("rootfs.out")).unwrap(),
            fs::read(ws.file("rootfs.ext4")).unwrap()
        );
    }
}

/// `create` of rootfs.ext4 for slot class `class`, with extra arguments, at a fixed time.
fn create_chunked(
    ws: &Workspace,
    out: &str,
    version: &str,
    class: &str,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    let mut c = ws.cmd();
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "create",
            "--version",
            version,
            "--compatible",
            "acme-robot-v2",
        ])
        .args([
            "--image",
            &format!("{class}=rootfs.ext4"),
            "--key",
            "rel1.key",
            "--level",
            "3",
            "-o",
            out,
        ])
        .args(extra);
    c.assert()
}

fn manifest_of(ws: &Workspace, bundle: &str) -> serde_json::Value {
    let out = ws.cmd().args(["info", "--json", bundle]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["manifest"].clone()
}

#[test]
fn chunked_by_default_with_deltas_from_an_earlier_release() {
    let ws = Workspace::new();
    create_chunked(&ws, "v1.otab", "1.0.0", "rootfs", &[]).success();
    let v1 = manifest_of(&ws, "v1.otab");
    assert_eq!(v1["images"][0]["payload"], "chunked");
    assert!(v1["images"][0]["chunks"]["base"].is_null());

    let mut rootfs = fs::read(ws.file("rootfs.ext4")).unwrap();
    rootfs.splice(700_000..700_000, b"a new config file ".repeat(900));
    fs::write(ws.file("rootfs.ext4"), &rootfs).unwrap();
    create_chunked(
        &ws,
        "v2.otab",
        "2.0.0",
        "rootfs",
        &["--delta-from", "v1.otab", "--threads", "1"],
    )
    .success()
    .stdout(
        predicate::str::contains("deltas").and(predicate::str::contains("against version 1.0.0")),
    );
    let v2 = manifest_of(&ws, "v2.otab");
    let chunks = &v2["images"][0]["chunks"];
    assert_eq!(chunks["base"]["version"], "1.0.0");
    assert_eq!(chunks["base"]["sha256"], v1["images"][0]["sha256"]);
    let delta = chunks["delta_size"].as_u64().unwrap();
    assert!(delta > 0 && delta < 20_000, "delta entry {delta} bytes");

    // A chunked bundle with deltas is co-signed, verified and extracted like any other.
    ws.cmd()
        .args([
            "sign",
            "--key",
            "rel2.key",
            "-o",
            "v2-signed.otab",
            "v2.otab",
        ])
        .assert()
        .success();
    for trust in ["rel1.pub", "rel2.pub"] {
        ws.cmd()
            .args(["verify", "--trust", trust, "v2-signed.otab"])
            .assert()
            .success();
    }
    ws.cmd()
        .args(["extract", "--trust", "rel2.pub", "v2-signed.otab", "out"])
        .assert()
        .success();
    assert_eq!(fs::read(ws.file("out/rootfs.ext4")).unwrap(), rootfs);

    // Same inputs, keys and time: the same bytes, whatever the thread count.
    create_chunked(
        &ws,
        "v2b.otab",
        "2.0.0",
        "rootfs",
        &["--delta-from", "v1.otab", "--threads", "3"],
    )
    .success();
    assert_eq!(
        fs::read(ws.file("v2.otab")).unwrap(),
        fs::read(ws.file("v2b.otab")).unwrap()
    );
}

#[test]
fn delta_from_refuses_bases_that_cannot_serve() {
    let ws = Workspace::new();
    create_chunked(&ws, "full.otab", "1.0.0", "rootfs", &["--payload", "full"]).success();
    create_chunked(&ws, "model.otab", "1.0.0", "model", &[]).success();
    let before = ws.entries();
    for (base, extra, names) in [
        ("full.otab", None, "image 'rootfs.ext4'"),
        ("model.otab", None, "slot class 'model', not 'rootfs'"),
        ("missing.otab", None, "missing.otab"),
        (
            "model.otab",
            Some("full"),
            "--delta-from needs the chunked payload",
        ),
    ] {
        let mut extra_args = vec!["--delta-from", base];
        if let Some(kind) = extra {
            extra_args.extend(["--payload", kind]);
        }
        let out = create_chunked(&ws, "v2.otab", "2.0.0", "rootfs", &extra_args)
            .code(1)
            .stderr(predicate::str::contains(names));
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    }
    assert_eq!(ws.entries(), before, "nothing written");
}

/// `publish` defaults to the server URL `ota-server` listens on by default and reads the same variables as
/// `ota-server`'s admin commands.
#[test]
fn publish_agrees_with_the_server_on_defaults() {
    ota_bundle()
        .args(["publish", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[default: http://127.0.0.1:8080]"))
        .stdout(predicate::str::contains("OTA_SERVER_URL"))
        .stdout(predicate::str::contains("OTA_ADMIN_TOKEN"))
        .stdout(predicate::str::contains("--json"));
    // A URL that is no URL is said in our words, not reqwest's.
    ota_bundle()
        .args([
            "publish",
            "--server",
            "ota.example.com",
            "--token",
            "t",
            "x.otab",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "server URL \"ota.example.com\" must start with http://",
        ))
        .stderr(predicate::str::contains("builder error").not());
}

/// `trust create --key` takes what the signing commands take: a public or a secret PEM file names the same
/// key (the root holds only its public half), and a file that is neither is refused in one line.
#[test]
fn trust_create_takes_public_and_secret_key_files() {
    let ws = Workspace::new();
    let create = |out: &str, keys: &[&str]| {
        let mut c = ws.cmd();
        c.args(["trust", "create", "--threshold", "2", "-o", out]);
        for k in keys {
            c.args(["--key", k]);
        }
        c.assert()
    };
    create("pub.json", &["rel1.pub", "rel2.pub"]).success();
    create("mixed.json", &["rel1.key", "rel2.pub"]).success();
    let read = |f: &str| fs::read_to_string(ws.file(f)).unwrap();
    assert_eq!(read("pub.json"), read("mixed.json"));
    assert!(!read("mixed.json").contains("PRIVATE"));
    fs::write(ws.file("junk.pem"), "hello").unwrap();
    create("junk.json", &["junk.pem", "rel2.pub"])
        .failure()
        .stderr(predicate::str::contains("junk.pem: not a PEM key file"));
    assert!(!ws.file("junk.json").exists());
}

#[test]
fn trust_rotation_is_signed_by_the_old_and_the_new_keys() {
    let ws = Workspace::new();
    ws.trust("root-v1.json", &["rel1"], 1);
    let create = |out: &str, key: &str, version: &str| {
        ws.cmd()
            .args(["trust", "create", "--key", key, "--threshold", "1"])
            .args(["--root-version", version, "-o", out])
            .assert()
            .success();
    };
    let verify = |current: &str, new: &str| {
        ws.cmd()
            .args(["trust", "verify", "--current", current, new])
            .assert()
    };
    create("root-v2.json", "rel2.pub", "2");
    // The old key alone hands over to keys that never signed: refused, and the message says what to run.
    ws.cmd()
        .args(["trust", "sign", "--key", "rel1.key", "root-v2.json"])
        .assert()
        .success();
    verify("root-v1.json", "root-v2.json")
        .code(1)
        .stderr(predicate::str::contains(
            "not signed by enough of its own keys",
        ))
        .stderr(predicate::str::contains("ota-bundle trust sign"));
    // Old and new keys in one call.
    ws.cmd()
        .args([
            "trust",
            "sign",
            "--key",
            "rel1.key",
            "--key",
            "rel2.key",
            "root-v2.json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("with keys "));
    verify("root-v1.json", "root-v2.json")
        .success()
        .stdout(predicate::str::contains("version 2 may replace version 1"));
    // Skipping a version is refused even when signed by everyone.
    create("root-v3.json", "rel3.pub", "3");
    ws.cmd()
        .args([
            "trust",
            "sign",
            "--key",
            "rel1.key",
            "--key",
            "rel2.key",
            "--key",
            "rel3.key",
            "root-v3.json",
        ])
        .assert()
        .success();
    verify("root-v1.json", "root-v3.json")
        .code(1)
        .stderr(predicate::str::contains("exactly one version newer"));
    // A chain file (a JSON list, any order) is walked to its end.
    let chain: Vec<serde_json::Value> = ["root-v3.json", "root-v2.json"]
        .iter()
        .map(|f| serde_json::from_slice(&fs::read(ws.file(f)).unwrap()).unwrap())
        .collect();
    fs::write(ws.file("chain.json"), serde_json::to_vec(&chain).unwrap()).unwrap();
    verify("root-v1.json", "chain.json")
        .success()
        .stdout(predicate::str::contains("version 3 may replace version 1"));
    // --help shows how.
    ws.cmd()
        .args(["trust", "sign", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "AND by a threshold of its own keys",
        ));
}
