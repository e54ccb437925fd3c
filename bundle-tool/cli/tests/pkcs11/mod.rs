//! Release keys on a PKCS#11 token (SoftHSM): a token key signs bundles and trust roots beside PEM keys, its
//! signatures verify with `ota-bundle verify` and with OpenSSL, and each way of naming it wrongly says so in one
//! line. One token per test process, made in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use tempfile::TempDir;

use super::Workspace;

/// Where Debian's softhsm2 puts its module.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";
const SO_PIN: &str = "13579111";
const LABEL: &str = "release";
/// RFC 8032 test 1: imported into the token as `imported` and written as a PEM file, to compare the two.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const SEED_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";
/// CKA_EC_PARAMS of ed25519 as SoftHSM spells it (a PrintableString).
const EDWARDS25519: &[u8] = b"\x13\x0cedwards25519";
/// CKA_EC_PARAMS of P-256 (its OID).
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A SoftHSM token labelled `release` holding `release-2026` (ed25519, generated on the token), `imported`
/// (ed25519, the RFC 8032 key) and `p256` (an ECDSA key).
struct Token {
    dir: TempDir,
    conf: PathBuf,
    /// SoftHSM rewrites its token files on a login and a process reading them meanwhile may see no token: the
    /// tests of this file take turns.
    turn: Mutex<()>,
}

impl Token {
    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// The URI of `object` with the module and the PIN file.
    fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={LABEL};object={object}?module-path={MODULE}&pin-source=file:{}",
            self.pin_file().display()
        )
    }
}

/// The token, for one test at a time.
fn token() -> Option<(&'static Token, MutexGuard<'static, ()>)> {
    if !ota_testkit::tools::require_file(
        Path::new(MODULE),
        "SoftHSM's PKCS#11 module (Debian package softhsm2, install-deps.sh group pkcs11)",
    ) {
        return None;
    }
    static TOKEN: OnceLock<Token> = OnceLock::new();
    let token = TOKEN.get_or_init(make_token);
    Some((token, token.turn.lock().unwrap_or_else(|e| e.into_inner())))
}

fn make_token() -> Token {
    let dir = TempDir::new().unwrap();
    let tokens = dir.path().join("tokens");
    fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
    // SoftHSM finds its configuration only through this variable: set once, before the module is first loaded,
    // to the same value for every test of this process (and inherited by the ota-bundle it runs).
    std::env::set_var("SOFTHSM2_CONF", &conf);

    let p11 = Pkcs11::new(MODULE).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let free = p11.get_slots_with_token().unwrap()[0];
    p11.init_token(free, &AuthPin::new(SO_PIN.into()), LABEL)
        .unwrap();
    // SoftHSM moves an initialised token to a new slot.
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == LABEL)
        .unwrap();
    let session = p11.open_rw_session(slot).unwrap();
    session
        .login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))
        .unwrap();
    session.init_pin(&AuthPin::new(PIN.into())).unwrap();
    session.logout().unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();

    let names = |label: &str, id: u8| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
        ]
    };
    let pair = |mechanism: Mechanism, params: &[u8], label: &str, id: u8| {
        let mut public = names(label, id);
        public.extend([
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
        ]);
        let mut private = names(label, id);
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
        ]);
        session
            .generate_key_pair(&mechanism, &public, &private)
            .unwrap_or_else(|e| panic!("generating {label} on SoftHSM: {e}"));
    };
    pair(
        Mechanism::EccEdwardsKeyPairGen,
        EDWARDS25519,
        "release-2026",
        1,
    );
    pair(Mechanism::EccKeyPairGen, P256, "p256", 2);

    let mut private = names("imported", 3);
    private.extend([
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::EcParams(EDWARDS25519.to_vec()),
        Attribute::Value(hex::decode(SEED).unwrap()),
    ]);
    session.create_object(&private).unwrap();
    let mut point = vec![0x04, 0x20];
    point.extend(hex::decode(PUBLIC).unwrap());
    let mut public = names("imported", 3);
    public.extend([
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(EDWARDS25519.to_vec()),
        Attribute::EcPoint(point),
    ]);
    session.create_object(&public).unwrap();
    // A private key whose public half was never imported.
    let mut lonely = names("lonely", 4);
    lonely.extend(private.into_iter().skip(3));
    session.create_object(&lonely).unwrap();
    drop(session);
    p11.finalize().unwrap();
    Token {
        dir,
        conf,
        turn: Mutex::new(()),
    }
}

impl Workspace {
    /// `ota-bundle` seeing the token's configuration (and nothing of the caller's PKCS#11 variables).
    fn hsm(&self, token: &Token) -> assert_cmd::Command {
        let mut c = self.cmd();
        c.env("SOFTHSM2_CONF", &token.conf)
            .env_remove("OTA_PKCS11_MODULE")
            .env_remove("OTA_PKCS11_PIN");
        c
    }

    fn stdout(&self, token: &Token, args: &[&str]) -> String {
        let out = self.hsm(token).args(args).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    }

    /// `create` of the `full` test bundle at a fixed time, signed by `keys` (files or URIs).
    fn create_signed(&self, token: &Token, out: &str, keys: &[&str]) -> assert_cmd::assert::Assert {
        let mut c = self.hsm(token);
        c.env("SOURCE_DATE_EPOCH", "1700000000").args([
            "create",
            "--payload",
            "full",
            "--version",
            "4.0.0",
            "--compatible",
            "acme-robot-v2",
            "--image",
            "rootfs=rootfs.ext4",
            "--level",
            "3",
            "-o",
            out,
        ]);
        for k in keys {
            c.args(["--key", k]);
        }
        c.assert()
    }
}

#[test]
fn a_token_key_and_a_pem_key_sign_a_bundle_for_a_2_of_2_root() {
    let Some((token, _turn)) = token() else {
        return;
    };
    let ws = Workspace::new();
    let uri = token.uri("release-2026");
    ws.hsm(token)
        .args(["public-key", &uri, "-o", "token.pub"])
        .assert()
        .success();
    let token_id = ws.stdout(token, &["key-id", &uri]);
    assert_eq!(
        token_id,
        ws.stdout(token, &["key-id", "token.pub"]),
        "the key id comes from the token's public key, as for a PEM key"
    );
    let token_id = token_id.trim().to_owned();
    ws.trust("root.json", &["token", "rel1"], 2);

    ws.create_signed(token, "both.otab", &[&uri, "rel1.key"])
        .success();
    ws.cmd()
        .args(["verify", "--trust", "root.json", "both.otab"])
        .assert()
        .success();

    // Signed by the PEM key alone it falls short; the token's co-signature completes it.
    ws.create_signed(token, "one.otab", &["rel1.key"]).success();
    ws.cmd()
        .args(["verify", "--trust", "root.json", "one.otab"])
        .assert()
        .failure();
    ws.hsm(token)
        .args(["sign", "--key", &uri, "one.otab"])
        .assert()
        .success()
        .stdout(predicates::str::contains(token_id.as_str()));
    ws.cmd()
        .args(["verify", "--trust", "root.json", "one.otab"])
        .assert()
        .success();

    // OpenSSL verifies the token's signature over the manifest bytes plain tar extracts.
    if !ota_testkit::tools::require_all(&["openssl", "tar"]) {
        return;
    }
    fs::create_dir(ws.file("x")).unwrap();
    run(&ws, &["tar", "-C", "x", "-xf", "both.otab"]);
    let block: serde_json::Value =
        serde_json::from_slice(&fs::read(ws.file("x/signatures.json")).unwrap()).unwrap();
    let signatures = block["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 2);
    let ours = signatures
        .iter()
        .find(|s| s["key_id"] == token_id.as_str())
        .expect("the token key's signature");
    let sig = hex::decode(ours["sig"].as_str().unwrap()).unwrap();
    fs::write(ws.file("sig.bin"), sig).unwrap();
    let out = run(
        &ws,
        &[
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "token.pub",
            "-rawin",
            "-in",
            "x/manifest.json",
            "-sigfile",
            "sig.bin",
        ],
    );
    assert!(String::from_utf8_lossy(&out).contains("Signature Verified Successfully"));
}

fn run(ws: &Workspace, args: &[&str]) -> Vec<u8> {
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
}

#[test]
fn a_key_on_a_token_signs_exactly_as_the_same_key_in_a_file() {
    let Some((token, _turn)) = token() else {
        return;
    };
    let ws = Workspace::new();
    fs::write(ws.file("same.key"), SEED_PEM).unwrap();
    ws.create_signed(token, "file.otab", &["same.key"])
        .success();
    ws.create_signed(token, "token.otab", &[&token.uri("imported")])
        .success();
    assert!(
        fs::read(ws.file("file.otab")).unwrap() == fs::read(ws.file("token.otab")).unwrap(),
        "the same key signs the same manifest into the same bundle, on a token or in a file"
    );
    assert_eq!(
        ws.stdout(token, &["key-id", &token.uri("imported")]),
        ws.stdout(token, &["key-id", "same.key"])
    );
}

#[test]
fn a_token_key_signs_a_trust_root_with_module_and_pin_from_the_environment() {
    let Some((token, _turn)) = token() else {
        return;
    };
    let ws = Workspace::new();
    ws.hsm(token)
        .args(["public-key", &token.uri("release-2026"), "-o", "token.pub"])
        .assert()
        .success();
    let token_id = ws.stdout(token, &["key-id", "token.pub"]);
    ws.trust("v1.json", &["token"], 1);
    ws.cmd()
        .args([
            "trust",
            "create",
            "--key",
            "rel2.pub",
            "--threshold",
            "1",
            "--root-version",
            "2",
            "--sign-with",
            "rel2.key",
            "-o",
            "v2.json",
        ])
        .assert()
        .success();
    ws.hsm(token)
        .env("OTA_PKCS11_MODULE", MODULE)
        .env("OTA_PKCS11_PIN", PIN)
        .args([
            "trust",
            "sign",
            "--key",
            "pkcs11:token=release;object=release-2026",
            "v2.json",
        ])
        .assert()
        .success()
        .stdout(predicates::str::contains(token_id.trim()));
    ws.cmd()
        .args(["trust", "verify", "--current", "v1.json", "v2.json"])
        .assert()
        .success();
}

/// `trust create --key pkcs11:...` reads the public key from the token: the root is the one made from the
/// token's exported .pub, and a missing object is refused before anything is written.
#[test]
fn trust_create_reads_a_token_keys_public_half() {
    let Some((token, _turn)) = token() else {
        return;
    };
    let ws = Workspace::new();
    let uri = token.uri("release-2026");
    ws.hsm(token)
        .args(["public-key", &uri, "-o", "token.pub"])
        .assert()
        .success();
    for (out, key) in [
        ("from-pub.json", "token.pub"),
        ("from-token.json", uri.as_str()),
    ] {
        ws.hsm(token)
            .args(["trust", "create", "--threshold", "2", "-o", out])
            .args(["--key", key, "--key", "rel1.pub"])
            .assert()
            .success();
    }
    assert_eq!(
        fs::read_to_string(ws.file("from-pub.json")).unwrap(),
        fs::read_to_string(ws.file("from-token.json")).unwrap()
    );
    ws.hsm(token)
        .args(["trust", "create", "--threshold", "1", "-o", "nope.json"])
        .args(["--key", &token.uri("nope")])
        .assert()
        .failure()
        .stderr(predicates::str::contains("no key object=nope"));
    assert!(!ws.file("nope.json").exists());
}

#[test]
fn each_wrong_way_to_name_a_token_key_fails_in_one_line_and_writes_nothing() {
    let Some((token, _turn)) = token() else {
        return;
    };
    let ws = Workspace::new();
    let pin = format!("pin-source=file:{}", token.pin_file().display());
    for (uri, expected) in [
        (
            format!(
                "pkcs11:token={LABEL};object=release-2026?module-path={MODULE}&pin-value=000000"
            ),
            "wrong PIN for PKCS#11 token 'release'".to_owned(),
        ),
        (
            format!("pkcs11:token={LABEL};object=nope?module-path={MODULE}&{pin}"),
            "PKCS#11 object not found: no private key object=nope on token 'release'".to_owned(),
        ),
        (
            format!("pkcs11:token={LABEL};object=p256?module-path={MODULE}&{pin}"),
            "PKCS#11 key object=p256 on token 'release' is not ed25519".to_owned(),
        ),
        (
            format!("pkcs11:token=prod;object=release-2026?module-path={MODULE}&{pin}"),
            "PKCS#11 token not found: no token matches token=prod (tokens present: 'release')"
                .to_owned(),
        ),
        (
            format!(
                "pkcs11:token={LABEL};object=release-2026?module-path=/nonexistent/p11.so&{pin}"
            ),
            "PKCS#11 module /nonexistent/p11.so not found".to_owned(),
        ),
        (
            format!("pkcs11:token={LABEL};object=release-2026?module-path={MODULE}"),
            "no PIN for PKCS#11 token 'release'".to_owned(),
        ),
        (
            format!("pkcs11:token={LABEL};object=release-2026?{pin}"),
            "no PKCS#11 module".to_owned(),
        ),
        (
            format!("pkcs11:token={LABEL};object=lonely?module-path={MODULE}&{pin}"),
            "PKCS#11 key object=lonely on token 'release' has no public key object".to_owned(),
        ),
        (
            format!(
                "pkcs11:token={LABEL};object=release-2026?module-path={}&{pin}",
                token.pin_file().display()
            ),
            format!(
                "PKCS#11 module {} cannot be used",
                token.pin_file().display()
            ),
        ),
    ] {
        let out = ws
            .create_signed(token, "x.otab", &[&uri, "rel1.key"])
            .failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(stderr.contains(&expected), "{uri}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{uri}: {stderr}");
        assert!(!ws.file("x.otab").exists(), "{uri}");
        assert!(
            !stderr.contains("000000"),
            "a PIN is never printed: {stderr}"
        );
    }
    // Looking up only the public half (no PIN needed) names a missing key as such.
    ws.hsm(token)
        .args([
            "key-id",
            &format!("pkcs11:token={LABEL};object=nope?module-path={MODULE}"),
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "PKCS#11 object not found: no key object=nope on token 'release'",
        ));
}

#[test]
fn public_key_prints_the_pub_file_of_a_pem_key_and_uris_are_checked_up_front() {
    let ws = Workspace::new();
    let out = ws.cmd().args(["public-key", "rel1.key"]).assert().success();
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout),
        fs::read_to_string(ws.file("rel1.pub")).unwrap()
    );
    ws.cmd()
        .args(["public-key", "rel1.key", "-o", "rel1.pub"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("already exists"));
    ws.cmd()
        .args(["create", "--key", "pkcs11:token=release;objct=k"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("unknown attribute 'objct'"));
}
