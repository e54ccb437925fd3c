//! HTTPS with a throwaway CA made at test time, plain HTTP refused on the TLS port, and a restart on the same
//! data directory that loses nothing.

use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_protocol::device::ReportStatus;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::StatusCode;
use serde_json::json;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn throwaway_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ota test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["ota.test".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    let pki = throwaway_pki();
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        tls_dir.path().join("server.pem"),
        tls_dir.path().join("server.key"),
    );
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let tls = ota_server::tls::load_server_config(&cert, &key).unwrap();
    let signing = SecretKey::generate();
    let server =
        TestServer::start_with_tls(settings(dir.path(), &trust(&[&signing], 1)), Some(tls)).await;
    let port = server.addr.port();

    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("ota.test", server.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://ota.test:{port}");
    let r = trusted.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = trusted
        .post(format!("{base}/api/devices/enroll"))
        .json(&enroll_request("tls-robot", &[], COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = trusted
        .post(format!("{base}/api/device/poll"))
        .bearer_auth(&token)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A client that does not trust the CA refuses the server.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .resolve("ota.test", server.addr)
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err());
    // ...and does not break the listener for others.
    let r = trusted.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The typed client the CLIs and the robot use trusts the same CA from a file.
    let ca_file = tls_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let options = ClientOptions {
        ca_file: Some(ca_file),
        ..ClientOptions::new(format!("https://localhost:{port}"))
    };
    let offered = tokio::task::spawn_blocking(move || {
        let api = ApiClient::new(&options).unwrap();
        let enrolled = api
            .enroll(&enroll_request("tls-robot-2", &[], COMPATIBLE))
            .unwrap();
        let polled = api
            .with_token(&enrolled.token)
            .poll(&poll_body("1.0.0", COMPATIBLE))
            .unwrap();
        polled.update.is_some()
    })
    .await
    .unwrap();
    assert!(!offered);
    server.stop().await;
}

#[test]
fn tls_config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("empty.pem");
    std::fs::write(&cert, "").unwrap();
    let err =
        ota_server::tls::load_server_config(&cert, &dir.path().join("missing.key")).unwrap_err();
    assert!(format!("{err:#}").contains("empty.pem"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing() {
    restart_loses_nothing(Database::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_postgres_loses_nothing() {
    if let Some(db) = Database::postgres() {
        restart_loses_nothing(db).await;
    }
}

async fn restart_loses_nothing(db: Database) {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(db.settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let (_, published) = publish(&c, &server, bytes.clone()).await;
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    let token = enroll(&c, &server, "robot-r", &[("site", "w3")], COMPATIBLE).await;
    let other = enroll(&c, &server, "robot-s", &[("site", "w3")], COMPATIBLE).await;
    let (_, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": bundle_id, "stages": [50, 100], "failure_threshold": 1.0}),
    )
    .await;
    let rid = rollout["rollout_id"].as_u64().unwrap();
    let mut offered = None;
    for t in [&token, &other] {
        if poll(&c, &server, t, "1.0.0").await.update.is_some() {
            offered = Some(t.clone());
        }
    }
    let offered = offered.expect("one of two is in the 50% stage");
    let (s, _) = report(
        &c,
        &server,
        &offered,
        &report_body("dl-1", rid, ReportStatus::Downloading),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let before_devices = admin_get(&c, &server, "/api/devices").await;
    let before_rollout = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await;
    server.stop().await;

    let server = TestServer::start(db.settings(dir.path(), &trust(&[&key], 1))).await;
    assert_eq!(
        admin_get(&c, &server, "/api/devices").await,
        before_devices,
        "inventory incl. write-behind state"
    );
    assert_eq!(
        admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await,
        before_rollout
    );
    let bundles = admin_get(&c, &server, "/api/bundles").await;
    assert_eq!(bundles[0]["bundle_id"], bundle_id.as_str());
    // Tokens still work, the offer stands, the download works, and a retried report is still a duplicate.
    let offer = poll(&c, &server, &offered, "1.0.0")
        .await
        .update
        .expect("offer survives the restart");
    let body = c
        .get(server.url(&offer.download_url))
        .bearer_auth(&offered)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), bytes.as_slice());
    let (s, dup) = report(
        &c,
        &server,
        &offered,
        &report_body("dl-1", rid, ReportStatus::Downloading),
    )
    .await;
    assert_eq!(
        (s, dup["duplicate"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (s, _) = report(
        &c,
        &server,
        &offered,
        &report_body("ok-1", rid, ReportStatus::Success),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let info = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await;
    assert_eq!(info["rollout"]["current_stage"], 1, "{info}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_secrets_are_saved_and_reused() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = ota_server::server::Settings::new(dir.path().to_path_buf(), trust(&[&key], 1));
    s.admin_token = None;
    s.enrollment_secret = None;
    let opened = ota_server::server::open(s.clone()).unwrap();
    assert_eq!(opened.generated.len(), 2);
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert_eq!(admin.trim(), opened.generated[0].1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "secret files are private");
    assert_eq!(
        opened.state.authenticate(admin.trim()).ok(),
        Some(ota_server::tokens::Caller::bootstrap())
    );
    drop(opened);
    let again = ota_server::server::open(s).unwrap();
    assert!(
        again.generated.is_empty(),
        "second start reuses the saved secrets"
    );
    assert!(again.state.authenticate(admin.trim()).is_ok());
}
