//! `ota-server serve` as operators run it: a config file, secrets in files, the trust root kept in the data
//! directory (a restart with the config file alone serves the same fleet; only a signed successor replaces the
//! root), precedence command line > environment > file, and the audit log lines of admin actions and refusals.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};
use ota_protocol::client::{ApiClient, ClientOptions, ErrorKind};

use crate::common::{bundle, ADMIN, COMPATIBLE};

/// A running `ota-server serve`: its base URL and everything it wrote to stderr so far.
struct Served {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn api(&self, token: &str) -> ApiClient {
        let mut o = ClientOptions::new(self.base.clone());
        o.token = Some(token.to_string());
        ApiClient::new(&o).unwrap()
    }

    /// Stops the server and returns its log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let log = self.log.lock().unwrap().clone();
        log
    }
}

fn serve_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-server"));
    cmd.arg("serve")
        .args(args)
        .env_remove("OTA_ADMIN_TOKEN")
        .env_remove("OTA_ENROLLMENT_SECRET")
        .env_remove("OTA_SERVER_CONFIG")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the server and waits for its "listening on" line.
fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut child = serve_command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("ota-server listening on ") {
                    break url.to_string();
                }
            }
            _ => {
                let _ = child.wait();
                panic!("server did not start: {}", log.lock().unwrap());
            }
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, base, log }
}

/// Runs `serve` expecting it to fail; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = serve_command(args, &[]).output().unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn signed_root(version: u64, keys: &[&SecretKey], signers: &[&SecretKey]) -> String {
    let root = TrustRoot::new(version, 1, keys.iter().map(|k| k.public_key()).collect()).unwrap();
    let mut signed = SignedTrustRoot::new(root);
    for k in signers {
        signed.sign(k);
    }
    signed.to_json_pretty()
}

#[test]
fn a_config_file_alone_serves_the_same_fleet_and_admin_actions_are_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let (k1, k2) = (SecretKey::generate(), SecretKey::generate());
    let v1 = write(dir, "trust-v1.json", &signed_root(1, &[&k1], &[]));
    let token_file = write(dir, "admin-token", &format!("{ADMIN}\n"));
    let secret_file = write(dir, "secret", "enrollment-secret-from-a-file\n");
    let base_config = format!(
        "# a comment\nlisten = \"127.0.0.1:0\"\ndata-dir = {:?}\nadmin-token-file = {:?}\n\
         enrollment-secret-file = {:?}\nallowed-compatible = [{COMPATIBLE:?}]\n",
        data.display().to_string(),
        token_file.display().to_string(),
        secret_file.display().to_string()
    );
    let first = write(
        dir,
        "first.toml",
        &format!("{base_config}trust-root = {:?}\n", v1.display().to_string()),
    );
    let config = write(dir, "config.toml", &base_config);
    let first_str = first.display().to_string();
    let config_str = config.display().to_string();

    // First start: the trust root comes from the file's trust-root and is kept in the data directory.
    let server = start(&["--config", &first_str], &[]);
    let admin = server.api(ADMIN);
    let published = admin
        .publish_bytes(bundle(&[&k1], "1.0.0", COMPATIBLE))
        .unwrap();
    admin.bundles().unwrap();
    let err = server
        .api("not-the-admin-token-at-all")
        .publish_bytes(bundle(&[&k1], "1.0.1", COMPATIBLE))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Reauthenticate);
    let err = admin
        .publish_bytes(bundle(&[&k1], "1.0.2", "someone-else"))
        .unwrap_err();
    assert_eq!(err.status, Some(422));
    let log = server.stop();
    assert!(data.join("trust.json").exists(), "{log}");
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ota_server::audit"))
        .collect();
    assert_eq!(
        audit.len(),
        3,
        "one line per admin action or refusal:\n{log}"
    );
    assert!(
        audit[0].contains("POST /api/bundles by admin token from 127.0.0.1:")
            && audit[0].contains(": 201"),
        "{log}"
    );
    assert!(
        // (the client asks with a GET before it streams the bundle)
        audit[1].contains("/api/bundles by unknown token from 127.0.0.1:")
            && audit[1].contains("refused")
            && audit[1].contains("401")
            && audit[1].contains("unknown or revoked token"),
        "{log}"
    );
    assert!(
        audit[2].contains("refused POST /api/bundles by admin token") && audit[2].contains("422"),
        "{log}"
    );
    assert!(!log.contains("\x1b["), "a pipe: no ANSI codes:\n{log}");

    // A restart with the config file alone (no trust-root anywhere) serves the same fleet and the same root.
    let server = start(&["--config", &config_str], &[]);
    let admin = server.api(ADMIN);
    let bundles = admin.bundles().unwrap();
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].bundle_id, published.bundle_id);
    admin
        .publish_bytes(bundle(&[&k1], "1.1.0", COMPATIBLE))
        .unwrap();
    let err = admin
        .publish_bytes(bundle(&[&k2], "1.2.0", COMPATIBLE))
        .unwrap_err();
    assert_eq!(err.status, Some(422), "{err}");
    server.stop();

    // An unrelated root is refused in one line; the kept one stays.
    let other = write(dir, "other.pub", &k2.public_key().to_pem());
    let stderr = refused(&[
        "--config",
        &config_str,
        "--trust-root",
        other.to_str().unwrap(),
    ]);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refusing --trust-root") && stderr.contains("trust.json"),
        "{stderr}"
    );
    // The kept keys' hand-over alone is not enough (the robots' rule: the new root signs itself too).
    let half = write(dir, "trust-v2-half.json", &signed_root(2, &[&k2], &[&k1]));
    let stderr = refused(&["--config", &config_str, "--trust", half.to_str().unwrap()]);
    assert!(stderr.contains("own keys"), "{stderr}");
    // A successor signed by the kept root and its own key replaces it (the old flag name still works).
    let v2 = write(dir, "trust-v2.json", &signed_root(2, &[&k2], &[&k1, &k2]));
    let server = start(
        &["--config", &config_str, "--trust", v2.to_str().unwrap()],
        &[],
    );
    server
        .api(ADMIN)
        .publish_bytes(bundle(&[&k2], "2.0.0", COMPATIBLE))
        .unwrap();
    let log = server.stop();
    assert!(log.contains("rotated from version 1 to 2"), "{log}");

    // The environment beats the file (the admin token from OTA_ADMIN_TOKEN, not the file's admin-token-file),
    // and the command line beats both (this listen address, not the file's).
    let env_token = "an-admin-token-from-the-environment";
    let server = start(
        &["--config", &config_str, "--listen", "127.0.0.1:0"],
        &[("OTA_ADMIN_TOKEN", env_token)],
    );
    server.api(env_token).bundles().unwrap();
    assert_eq!(
        server.api(ADMIN).bundles().unwrap_err().kind,
        ErrorKind::Reauthenticate
    );
    server.stop();
}

#[test]
fn config_file_mistakes_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, says) in [
        ("listne = \"127.0.0.1:0\"\n", "unknown key 'listne'"),
        (
            "poll-interval-secs = \"often\"\n",
            "key 'poll-interval-secs'",
        ),
        ("listen = \n", "not valid TOML"),
    ] {
        let path = write(tmp.path(), "bad.toml", text);
        let stderr = refused(&["--config", path.to_str().unwrap()]);
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(says),
            "{text}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let missing = tmp.path().join("missing.toml");
    let stderr = refused(&["--config", missing.to_str().unwrap()]);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
    let data = tmp.path().join("empty-data");
    let stderr = refused(&[
        "--config",
        "/dev/null",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("no trust root: pass --trust-root"),
        "{stderr}"
    );
}
