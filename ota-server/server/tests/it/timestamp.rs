//! The server's signed timestamp: the key `ota-server timestamp-key` generates and prints is the one that signs;
//! the document is served at `GET /api/trust/timestamp` and in every poll answer, re-signed when the period
//! turns, and verifies with the trust root's timestamp role; a robot's freeze alarm from its poll shows in the
//! device info and the metrics. A server without a timestamp key serves none.

use std::process::Command;
use std::time::{Duration, Instant};

use ota_keys::timestamp::{parse_timestamp, verify_timestamp, Timestamp, TimestampRole};
use ota_keys::{SecretKey, TrustRoot};
use ota_protocol::fleet::{FreezeAlarm, FreezeReason};
use ota_server::server;
use ota_server::timestamp::{load_or_generate, Timestamper};
use reqwest::StatusCode;

use crate::common::{self, TestServer, ADMIN, COMPATIBLE};

/// The role `ota-server timestamp-key` prints for the key it generates in `data_dir`.
fn printed_role(data_dir: &std::path::Path) -> TimestampRole {
    let out = Command::new(env!("CARGO_BIN_EXE_ota-server"))
        .args(["timestamp-key", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("\"timestamp\": "))
        .unwrap_or_else(|| panic!("no role in {text}"));
    serde_json::from_str(json).unwrap()
}

async fn get_timestamp(c: &reqwest::Client, s: &TestServer, root: &TrustRoot) -> Timestamp {
    let r = c
        .get(s.url(ota_protocol::paths::TRUST_TIMESTAMP))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc = parse_timestamp(&r.json().await.unwrap()).unwrap();
    verify_timestamp(root, &doc).unwrap()
}

#[tokio::test]
async fn the_timestamp_is_served_resigned_and_verifies_with_the_roots_key() {
    let dir = tempfile::tempdir().unwrap();
    let role = printed_role(dir.path());
    assert_eq!(printed_role(dir.path()), role, "generated once, then kept");
    let mut root = TrustRoot::new(1, 1, vec![SecretKey::generate().public_key()]).unwrap();
    root.timestamp = Some(role);
    root.validate().unwrap();

    let opened = server::open(common::settings(dir.path(), &root)).unwrap();
    let (key, generated) = load_or_generate(dir.path(), None).unwrap();
    assert!(generated.is_none());
    assert!(opened
        .state
        .set_timestamper(Timestamper::new(key, Duration::from_secs(1))));
    let s = TestServer::serve_opened(opened, dir.path().to_path_buf(), None).await;
    let c = common::client();

    let first = get_timestamp(&c, &s, &root).await;
    assert_eq!(first.trust_version, 1);
    assert_eq!(first.expires, first.issued_at + 3);
    // Every poll answer carries it.
    let token = common::enroll(&c, &s, "robot-1", &[], COMPATIBLE).await;
    let answer = common::poll(&c, &s, &token, "1.0.0").await;
    let polled =
        verify_timestamp(&root, &parse_timestamp(&answer.timestamp.unwrap()).unwrap()).unwrap();
    assert!(polled.version >= first.version);
    // Re-signed when the period turns.
    let start = Instant::now();
    let mut later = get_timestamp(&c, &s, &root).await;
    while later.version == first.version && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        later = get_timestamp(&c, &s, &root).await;
    }
    assert!(later.version > first.version && later.issued_at > first.issued_at);

    // A robot's alarm: listed in its device info and counted in the metrics.
    let mut body = common::poll_body("1.0.0", COMPATIBLE);
    body.freeze_alarm = Some(FreezeAlarm {
        reason: FreezeReason::Stale,
        stale_secs: 700_000,
        last_version: Some(first.version),
    });
    let r = c
        .post(s.url(ota_protocol::paths::POLL))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let device = common::admin_get(&c, &s, "/api/devices/robot-1").await;
    assert_eq!(
        device["device"]["freeze_alarm"]["reason"], "stale",
        "{device}"
    );
    let metrics = c
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ota_devices_freeze_alarm{reason=\"stale\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_server_without_a_timestamp_key_serves_none() {
    let dir = tempfile::tempdir().unwrap();
    let root = TrustRoot::new(1, 1, vec![SecretKey::generate().public_key()]).unwrap();
    let s = TestServer::start(common::settings(dir.path(), &root)).await;
    let c = common::client();
    let r = c
        .get(s.url(ota_protocol::paths::TRUST_TIMESTAMP))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let token = common::enroll(&c, &s, "robot-1", &[], COMPATIBLE).await;
    assert_eq!(common::poll(&c, &s, &token, "1.0.0").await.timestamp, None);
    s.stop().await;
}
