//! A bundle that carries the trust chain: `create --trust-chain`, `sign` keeps it, `set-chain` attaches, replaces
//! or removes it without re-signing, `info` shows it and `verify --trust-root` walks it as a robot does.

use super::*;

/// Roots 1 (rel1), 2 (rel2) and 3 (rel3), each signed by the previous root's key and its own.
fn rotations(ws: &Workspace) {
    ws.trust("root-v1.json", &["rel1"], 1);
    for (version, old, new) in [("2", "rel1", "rel2"), ("3", "rel2", "rel3")] {
        let out = format!("root-v{version}.json");
        ws.cmd()
            .args(["trust", "create", "--key", &format!("{new}.pub")])
            .args(["--threshold", "1", "--root-version", version, "-o", &out])
            .assert()
            .success();
        ws.cmd()
            .args(["trust", "sign", "--key", &format!("{old}.key")])
            .args(["--key", &format!("{new}.key"), &out])
            .assert()
            .success();
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn info(ws: &Workspace, bundle: &str) -> serde_json::Value {
    json(&ws.cmd().args(["info", "--json", bundle]).output().unwrap())
}

fn chain_versions(info: &serde_json::Value) -> Vec<u64> {
    info["trust_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect()
}

#[test]
fn set_chain_has_help() {
    ota_bundle()
        .args(["set-chain", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Usage: ota-bundle set-chain"));
}

#[test]
fn a_bundle_carries_the_chain_through_create_sign_set_chain_info_and_verify() {
    let ws = Workspace::new();
    rotations(&ws);
    // Signed by version 3's key only, carrying versions 2 and 3 (given as two files, in any order).
    ws.cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "create",
            "--version",
            "2.0.0",
            "--compatible",
            "acme-robot-v2",
        ])
        .args(["--image", "rootfs=rootfs.ext4", "--key", "rel3.key"])
        .args([
            "--trust-chain",
            "root-v3.json",
            "--trust-chain",
            "root-v2.json",
        ])
        .args(["-o", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "carries trust chain versions 2, 3",
        ));
    let shown = info(&ws, "b.otab");
    assert_eq!(chain_versions(&shown), vec![2, 3]);
    let id = shown["manifest_sha256"].as_str().unwrap().to_string();
    ws.cmd()
        .args(["info", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "trust chain: versions 2, 3 (not verified",
        ));

    // A robot still on version 1 walks the chain, then checks the signatures against version 3.
    ws.cmd()
        .args(["verify", "--trust-root", "root-v1.json", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "checked against trust root version 3, reached from version 1 through the bundle's trust chain \
             (versions 2, 3)",
        ));
    let out = ws
        .cmd()
        .args(["verify", "--json", "--trust", "root-v1.json", "b.otab"])
        .output()
        .unwrap();
    let verified = json(&out);
    assert_eq!(verified["trust_root_version"], 3);
    assert_eq!(verified["walked_from"], 1);
    // One already on version 3 ignores the chain.
    ws.cmd()
        .args(["verify", "--trust", "root-v3.json", "b.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "checked against trust root version 3; the bundle's trust chain (versions 2, 3) holds nothing newer",
        ));

    // A co-signature keeps the chain and the bundle id.
    ws.cmd()
        .args(["sign", "--key", "rel2.key", "b.otab"])
        .assert()
        .success();
    let signed = info(&ws, "b.otab");
    assert_eq!(chain_versions(&signed), vec![2, 3]);
    assert_eq!(signed["manifest_sha256"], id.as_str());
    assert_eq!(signed["signatures"].as_array().unwrap().len(), 2);

    // Without the chain, a version-1 robot refuses it by the threshold; the signatures and id are untouched.
    ws.cmd()
        .args(["set-chain", "--remove", "b.otab", "-o", "plain.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains("trust chain removed (was 2, 3)"));
    let plain = info(&ws, "plain.otab");
    assert!(plain["trust_chain"].as_array().unwrap().is_empty());
    assert_eq!(plain["manifest_sha256"], id.as_str());
    assert_eq!(plain["signatures"], signed["signatures"]);
    ws.cmd()
        .args(["verify", "--trust", "root-v1.json", "plain.otab"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("signature check failed"))
        .stderr(predicate::str::contains("of the required 1 signatures"));

    // Attached again in place, from the server's answer to GET /api/trust/chain.
    let root = |v: u32| fs::read_to_string(ws.file(&format!("root-v{v}.json"))).unwrap();
    let served = format!(r#"{{"newest": 3, "roots": [{}, {}]}}"#, root(2), root(3));
    fs::write(ws.file("served.json"), served).unwrap();
    ws.cmd()
        .args(["set-chain", "--trust-chain", "served.json", "plain.otab"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "trust chain versions 2, 3 (was none)",
        ));
    ws.cmd()
        .args(["verify", "--trust", "root-v1.json", "plain.otab"])
        .assert()
        .success();
    assert!(fs::read(ws.file("plain.otab")).unwrap() == fs::read(ws.file("b.otab")).unwrap());
}

#[test]
fn a_chain_that_does_not_walk_is_refused_when_attached_and_when_verified() {
    let ws = Workspace::new();
    rotations(&ws);
    ws.create("b.otab", "2.0.0", &["rel3"]);
    // A chain with a gap inside it could never walk: refused before anything is written.
    fs::write(
        ws.file("gap.json"),
        format!(
            "[{}, {}]",
            fs::read_to_string(ws.file("root-v1.json")).unwrap(),
            fs::read_to_string(ws.file("root-v3.json")).unwrap()
        ),
    )
    .unwrap();
    ws.cmd()
        .args(["set-chain", "--trust-chain", "gap.json", "b.otab"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "does not walk from its oldest root",
        ))
        .stderr(predicate::str::contains("no version 2"));
    assert!(info(&ws, "b.otab")["trust_chain"]
        .as_array()
        .unwrap()
        .is_empty());

    // A chain whose version-3 hand-over signature was altered inside the bundle: the format still reads (the
    // chain is not signed), the walk refuses it in one line naming the link, and nothing is verified.
    ws.cmd()
        .args([
            "set-chain",
            "--trust-chain",
            "root-v2.json",
            "--trust-chain",
            "root-v3.json",
        ])
        .arg("b.otab")
        .assert()
        .success();
    let v3: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ws.file("root-v3.json")).unwrap()).unwrap();
    let sig = v3["signatures"][0]["sig"].as_str().unwrap().to_string();
    let mut bytes = fs::read(ws.file("b.otab")).unwrap();
    let at = bytes
        .windows(sig.len())
        .position(|w| w == sig.as_bytes())
        .expect("the signature is in the bundle");
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(ws.file("b.otab"), &bytes).unwrap();
    let out = ws
        .cmd()
        .args(["verify", "--trust", "root-v1.json", "b.otab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the bundle's trust chain does not verify: trust root version 3 refused"),
        "{err}"
    );
    assert!(err.contains("the trust root stays at version 1"), "{err}");
}
