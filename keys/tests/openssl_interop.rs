//! Interoperability with the real `openssl` binary: operators generate and
//! inspect keys with it, and third parties may verify our signatures with it.
//!
//! Without `openssl` on PATH each test fails under CI=true and prints a loud SKIPPED otherwise
//! (`ota_testkit::tools::require`).

use std::path::Path;
use std::process::Command;

use ota_keys::{load_public_key, load_secret_key, write_keypair, PublicKey, SecretKey, Signature};

/// Run openssl, panicking with its stderr on failure; returns stdout.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn openssl_generated_key_loads() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"],
    );
    let public_pem = openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]);

    let secret = load_secret_key(&dir.path().join("k.pem")).unwrap();
    let openssl_public = PublicKey::from_pem(std::str::from_utf8(&public_pem).unwrap()).unwrap();
    assert_eq!(secret.public_key(), openssl_public);
    // Our re-encoding is byte-identical to openssl's.
    assert_eq!(openssl_public.to_pem().as_bytes(), public_pem.as_slice());
    let text = std::fs::read_to_string(dir.path().join("k.pem")).unwrap();
    assert_eq!(secret.to_pem().as_str(), text);
}

#[test]
fn openssl_reads_our_key_files() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key_path, pub_path, secret) = write_keypair(&dir.path().join("x")).unwrap();
    openssl(dir.path(), &["pkey", "-pubin", "-in", "x.pub", "-noout"]);
    openssl(dir.path(), &["pkey", "-in", "x.key", "-noout"]);
    // And openssl derives the same public key from our secret key.
    let derived = openssl(dir.path(), &["pkey", "-in", "x.key", "-pubout"]);
    assert_eq!(derived, std::fs::read(&pub_path).unwrap());
    assert_eq!(
        load_secret_key(&key_path).unwrap().key_id(),
        secret.key_id()
    );
}

#[test]
fn openssl_verifies_our_signature() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, _, secret) = write_keypair(&dir.path().join("x")).unwrap();
    let msg = b"ota bundle manifest\n\x00\xff";
    std::fs::write(dir.path().join("msg"), msg).unwrap();
    std::fs::write(dir.path().join("sig.bin"), secret.sign(msg).sig).unwrap();
    let verify = [
        "pkeyutl", "-verify", "-pubin", "-inkey", "x.pub", "-rawin", "-in", "msg", "-sigfile",
        "sig.bin",
    ];
    openssl(dir.path(), &verify);

    // A signature over a different message must be rejected by openssl too.
    std::fs::write(dir.path().join("sig.bin"), secret.sign(b"other").sig).unwrap();
    let status = Command::new("openssl")
        .args(verify)
        .current_dir(dir.path())
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "openssl accepted a wrong signature");
}

#[test]
fn we_verify_openssl_signature() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "k.pem", "-pubout", "-out", "k.pub"],
    );
    let msg = b"signed by openssl";
    std::fs::write(dir.path().join("msg"), msg).unwrap();
    openssl(
        dir.path(),
        &[
            "pkeyutl", "-sign", "-inkey", "k.pem", "-rawin", "-in", "msg", "-out", "sig.bin",
        ],
    );
    let public = load_public_key(&dir.path().join("k.pub")).unwrap();
    let signature = Signature {
        key_id: public.key_id(),
        sig: std::fs::read(dir.path().join("sig.bin"))
            .unwrap()
            .try_into()
            .expect("ed25519 signatures are 64 bytes"),
    };
    public.verify(msg, &signature).unwrap();
    assert!(public.verify(b"signed by openss1", &signature).is_err());

    // ed25519 is deterministic: our signature with the same key is identical.
    let secret =
        SecretKey::from_pem(&std::fs::read_to_string(dir.path().join("k.pem")).unwrap()).unwrap();
    assert_eq!(secret.sign(msg), signature);
}
