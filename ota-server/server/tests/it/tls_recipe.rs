//! docs/tls.md's OpenSSL recipe, run as written (with this machine's name and address): the server serves its
//! certificate, and the API client, the `ota-bundle` CLI and the `ota-server` admin CLI trust it through the
//! CA file alone. A one-file self-signed CA certificate is refused at start with a pointer to the recipe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::client::{ApiClient, ClientOptions};

/// The recipe's shell lines, for `name` and `ip`.
fn recipe(name: &str, ip: &str) -> String {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tls.md"))
            .unwrap();
    let start = page
        .find("<!-- recipe:begin -->")
        .expect("recipe:begin marker");
    let stop = page.find("<!-- recipe:end -->").expect("recipe:end marker");
    page[start..stop]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .map(|l| {
            if l.starts_with("name=") {
                format!("name={name}")
            } else if l.starts_with("ip=") {
                format!("ip={ip}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_recipe(dir: &Path) {
    let out = Command::new("sh")
        .args(["-e", "-c", &recipe("localhost", "127.0.0.1")])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_recipe_makes_certificates_every_client_accepts() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    run_recipe(pki.path());
    let (cert, key, ca) = (
        pki.path().join("server.pem"),
        pki.path().join("server.key"),
        pki.path().join("ca.pem"),
    );
    let tls = ota_server::tls::load_server_config(&cert, &key)
        .expect("the recipe's certificate is served");
    let signing = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_tls(settings(dir.path(), &trust(&[&signing], 1)), Some(tls)).await;
    let port = server.addr.port();

    for base in [
        format!("https://localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let options = ClientOptions {
            ca_file: Some(ca.clone()),
            token: Some(ADMIN.into()),
            timeout: Duration::from_secs(10),
            ..ClientOptions::new(&base)
        };
        let list = tokio::task::spawn_blocking(move || ApiClient::new(&options).unwrap().bundles())
            .await
            .unwrap();
        assert!(list.is_ok(), "{base}: {list:?}");
    }

    // The real command-line tools, with --ca-file.
    let tool = tokio::task::spawn_blocking(crate::cli::ota_bundle)
        .await
        .unwrap();
    let file = pki.path().join("release.otab");
    std::fs::write(&file, bundle(&[&signing], "1.0.0", COMPATIBLE)).unwrap();
    let base = format!("https://localhost:{port}");
    let publish: Vec<String> = vec![
        "publish".into(),
        "--server".into(),
        base.clone(),
        "--token".into(),
        ADMIN.into(),
        "--ca-file".into(),
        ca.display().to_string(),
        file.display().to_string(),
    ];
    let out = blocking(tool, publish).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<String> = vec![
        "devices".into(),
        "list".into(),
        "--server".into(),
        base,
        "--token".into(),
        ADMIN.into(),
        "--ca-file".into(),
        ca.display().to_string(),
    ];
    let out = blocking(PathBuf::from(env!("CARGO_BIN_EXE_ota-server")), list).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

/// A robot's bundle download (its HTTP source) over the recipe's certificate, trusting the CA through
/// `[http] ca_file` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_downloads_over_the_recipes_certificate() {
    use ota_client::source::HttpRequest;
    use ota_client::{BundleSource, InstallOptions, NoProgress};
    use ota_testkit::robot::{release_key, rootfs_bundle, Backend, Robot};
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    run_recipe(pki.path());
    let tls = ota_server::tls::load_server_config(
        &pki.path().join("server.pem"),
        &pki.path().join("server.key"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_tls(settings(dir.path(), &trust(&[release_key()], 1)), Some(tls))
            .await;
    let ca = pki.path().join("ca.pem");
    let (ok, published) = publish_tls(&server, &ca, rootfs_bundle("2.0.0")).await;
    assert!(ok, "{published}");
    let url = format!(
        "https://localhost:{}/api/bundles/{}/download",
        server.addr.port(),
        published["bundle_id"].as_str().unwrap()
    );
    tokio::task::spawn_blocking(move || {
        let robot = Robot::new(Backend::File);
        let mut config = std::fs::read_to_string(&robot.config_path).unwrap();
        assert!(
            config.trim_end().ends_with("retry_delay_ms = 20"),
            "[http] is the last section"
        );
        config.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
        std::fs::write(&robot.config_path, config).unwrap();
        let standby = robot.booted().other();
        let source = BundleSource::Http(HttpRequest::bearer(&url, ADMIN));
        robot
            .client()
            .install(&source, &InstallOptions::default(), &mut NoProgress)
            .expect("the robot downloads and installs over HTTPS");
        assert_eq!(
            robot.slot_bytes("rootfs", standby),
            robot.rootfs_image("2.0.0")
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

async fn publish_tls(server: &TestServer, ca: &Path, bytes: Vec<u8>) -> (bool, serde_json::Value) {
    let pem = std::fs::read(ca).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = c
        .post(format!(
            "https://localhost:{}/api/bundles",
            server.addr.port()
        ))
        .bearer_auth(ADMIN)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (r.status().is_success(), r.json().await.unwrap())
}

async fn blocking(program: PathBuf, args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(args)
            .env_remove("OTA_ADMIN_TOKEN")
            .env_remove("OTA_SERVER_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[test]
fn a_ca_certificate_as_the_server_certificate_is_refused_with_the_way_out() {
    if !ota_testkit::tools::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_recipe(dir.path());
    let err =
        ota_server::tls::load_server_config(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("CaUsedAsEndEntity") && err.contains("docs/tls.md"),
        "{err}"
    );
}
