//! Alerts, the maintenance score and retention through the API of a real server: a rollback raises an alert
//! that an operator acknowledges (who and when kept; the metrics lines; a new occurrence is a new alert), the
//! webhook delivers signed notices and retries after a 500, and pruning keeps the bundles rollouts use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxStatus};
use hmac::{Hmac, Mac};
use ota_keys::SecretKey;
use ota_protocol::device::{ReportRequest, ReportStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::*;

const WEBHOOK_SECRET: &str = "webhook-secret-for-tests-0123456";

fn fast(settings: &mut ota_server::server::Settings) {
    settings.config.alerts.interval = Duration::from_millis(100);
}

async fn alerts(c: &reqwest::Client, s: &TestServer) -> Vec<Value> {
    admin_get(c, s, "/api/alerts")
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `GET /api/alerts` until `f` holds for the list (10 s at most).
async fn alerts_until(
    c: &reqwest::Client,
    s: &TestServer,
    what: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let list = alerts(c, s).await;
        if f(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", alerts(c, s).await);
}

fn rollback(id: &str) -> ReportRequest {
    ReportRequest {
        rollout_id: None,
        ..report_body(id, 0, ReportStatus::RolledBack)
    }
}

#[tokio::test]
async fn a_rollback_raises_an_alert_an_operator_acknowledges() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    fast(&mut s);
    let server = TestServer::start(s).await;
    let c = client();
    let token = enroll(&c, &server, "amr-1", &[], COMPATIBLE).await;
    let mut body = poll_body("1.0.0", COMPATIBLE);
    body.telemetry
        .metrics
        .insert("battery_capacity_percent".into(), 60.0);
    body.telemetry.uptime_secs = None; // no boot seen: the reboots component stays 0
    let r = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (code, answer) = report(&c, &server, &token, &rollback("rb-1")).await;
    assert_eq!(code, StatusCode::OK, "{answer}");

    let list = alerts_until(&c, &server, "the rollback alert", |l| {
        l.iter().any(|a| a["kind"] == "rolled_back")
    })
    .await;
    let alert = list.iter().find(|a| a["kind"] == "rolled_back").unwrap();
    assert_eq!(alert["target"], json!({"type": "robot", "id": "amr-1"}));
    assert_eq!(alert["link"], "#/robot/amr-1");
    assert_eq!(alert["severity"], "warning");
    assert!(alert.get("acknowledged").is_none(), "{alert}");
    let id = alert["id"].as_str().unwrap().to_string();

    // The maintenance score: battery at 60 % of design is fully worn (weight 3), 1 rollback of 3 (weight 2),
    // no failures (2) or boots (1), hours unknown (left out): (3 × 1 + 2 × 1/3) / 8 = 45.8.
    let devices = admin_get(&c, &server, "/api/devices").await;
    let devices = devices
        .as_array()
        .cloned()
        .or_else(|| devices["devices"].as_array().cloned())
        .unwrap();
    let score = devices[0]["maintenance_score"].as_f64();
    assert_eq!(score, Some(45.8), "{devices:?}");

    let metrics = c
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ota_alerts{kind="rolled_back",severity="warning"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ota_alert{acknowledged="false",kind="rolled_back",severity="warning",target="robot/amr-1"} 1"#),
        "{metrics}"
    );

    let (code, acked) = admin_post(&c, &server, &format!("/api/alerts/{id}/ack"), json!({})).await;
    assert_eq!(code, StatusCode::OK, "{acked}");
    assert_eq!(acked["acknowledged"]["by"], "admin-token", "{acked}");
    let at = acked["acknowledged"]["at"].as_u64().unwrap();
    // A second acknowledgement keeps the first.
    let (_, again) = admin_post(&c, &server, &format!("/api/alerts/{id}/ack"), json!({})).await;
    assert_eq!(again["acknowledged"]["at"].as_u64(), Some(at));
    let listed = alerts(&c, &server).await;
    let listed = listed.iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!(listed["acknowledged"]["by"], "admin-token");
    // The acknowledgement is in the audit trail, with its author.
    let audit = admin_get(&c, &server, "/api/audit").await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "POST /api/alerts/{alert_id}/ack")
        .unwrap_or_else(|| panic!("no ack in the audit trail: {audit}"));
    assert_eq!(entry["user"], "admin-token", "{entry}");
    assert_eq!(entry["status"], 200, "{entry}");
    let (code, missing) =
        admin_post(&c, &server, "/api/alerts/0000000000000000/ack", json!({})).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{missing}");
    // A device may not acknowledge.
    let r = c
        .post(server.url(&format!("/api/alerts/{id}/ack")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // It clears when a later report replaces the rollback; the next rollback is a new, unacknowledged alert.
    let ok = ReportRequest {
        rollout_id: None,
        ..report_body("ok-1", 0, ReportStatus::Success)
    };
    assert_eq!(report(&c, &server, &token, &ok).await.0, StatusCode::OK);
    alerts_until(&c, &server, "the alert to clear", |l| {
        !l.iter().any(|a| a["kind"] == "rolled_back")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a report of a later second
    assert_eq!(
        report(&c, &server, &token, &rollback("rb-2")).await.0,
        StatusCode::OK
    );
    let list = alerts_until(&c, &server, "the second rollback's alert", |l| {
        l.iter().any(|a| a["kind"] == "rolled_back")
    })
    .await;
    let second = list.iter().find(|a| a["kind"] == "rolled_back").unwrap();
    assert_ne!(second["id"], id.as_str());
    assert!(second.get("acknowledged").is_none(), "{second}");
    server.stop().await;
}

/// What the test webhook receiver saw: bodies with their signature headers.
#[derive(Default)]
struct Received {
    calls: Vec<(Vec<u8>, Option<String>)>,
}

/// A receiver on 127.0.0.1 that answers 500 to the first call and 200 after.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let seen = Arc::new(Mutex::new(Received::default()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let mut s = state.lock().unwrap();
                let sig = headers
                    .get("x-ota-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                s.calls.push((body.to_vec(), sig));
                if s.calls.len() == 1 {
                    AxStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxStatus::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn the_webhook_gets_signed_notices_and_retries_after_a_500() {
    let (url, seen) = receiver().await;
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    fast(&mut s);
    s.config.alerts.thresholds.offline_after_secs = 1;
    s.config.alerts.webhook = Some((url, WEBHOOK_SECRET.into()));
    let server = TestServer::start(s).await;
    let c = client();
    enroll(&c, &server, "quiet-1", &[], COMPATIBLE).await; // never polls: offline after 1 s
    for _ in 0..200 {
        if seen.lock().unwrap().calls.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = seen.lock().unwrap().calls.clone();
    assert!(
        calls.len() >= 2,
        "a retry after the 500: {} calls",
        calls.len()
    );
    assert_eq!(calls[0], calls[1], "the retry sends the same signed body");
    let (body, sig) = &calls[1];
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig.as_deref(), Some(expected.as_str()));
    let notice: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(notice["event"], "opened");
    assert_eq!(notice["alert"]["kind"], "offline");
    assert_eq!(notice["alert"]["target"]["id"], "quiet-1");
    server.stop().await;
}

#[tokio::test]
async fn prune_keeps_bundles_rollouts_use_and_dry_run_changes_nothing() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let mut ids = Vec::new();
    for v in ["1.0.0", "2.0.0"] {
        let (code, b) = publish(&c, &server, bundle(&[&key], v, COMPATIBLE)).await;
        assert_eq!(code, StatusCode::CREATED, "{b}");
        ids.push(b["bundle_id"].as_str().unwrap().to_string());
    }
    let (used, unused) = (&ids[1], &ids[0]);
    let (code, r) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": used, "stages": [100]}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{r}");
    let blobs = server.blob_files();
    assert_eq!(blobs.len(), 2);

    // Young bundles are kept by default.
    let (code, young) = admin_post(&c, &server, "/api/bundles/prune", json!({})).await;
    assert_eq!(code, StatusCode::OK, "{young}");
    assert_eq!(young["deleted"], json!([]));
    assert_eq!(young["kept_recent"], 1);

    let (code, dry) = admin_post(
        &c,
        &server,
        "/api/bundles/prune",
        json!({"dry_run": true, "min_age_days": 0}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{dry}");
    assert_eq!(dry["deleted"], json!([unused]));
    assert_eq!(dry["kept_in_use"], 1);
    assert_eq!(server.blob_files(), blobs, "a dry run deletes nothing");
    // The same through the command line.
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ota-server"))
            .args(["bundles", "prune", "--server", &base, "--token", ADMIN])
            .args(["--dry-run", "--min-age-days", "0"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("would delete 1 bundle(s)"), "{text}");
    assert!(text.contains(unused.as_str()), "{text}");
    assert_eq!(server.blob_files(), blobs, "a dry run deletes nothing");
    assert_eq!(
        admin_get(&c, &server, "/api/bundles")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (code, done) = admin_post(
        &c,
        &server,
        "/api/bundles/prune",
        json!({"min_age_days": 0}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(done["deleted"], json!([unused]));
    assert!(done["freed_bytes"].as_u64().unwrap() > 0);
    let audit = admin_get(&c, &server, "/api/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "POST /api/bundles/prune" && e["user"] == "admin-token"),
        "{audit}"
    );
    let r = c
        .get(server.url(&format!("/api/bundles/{unused}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let left = admin_get(&c, &server, "/api/bundles").await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["bundle_id"], used.as_str());
    assert_eq!(server.blob_files().len(), 1);
    assert!(server.blob_files()[0].ends_with(used));
    server.stop().await;
    // After a restart the working set loads (the used bundle and its rollout are intact).
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    assert_eq!(
        admin_get(&c, &server, "/api/bundles")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    server.stop().await;
}

/// Reports older than `reports-retention-days` go at the compaction (which also runs when the server starts);
/// newer ones stay.
#[tokio::test]
async fn old_reports_are_deleted_by_the_compaction() {
    use ota_protocol::admin::{LastStatus, ReportRecord};
    use ota_server::store::ReportCommit;

    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let token = enroll(&c, &server, "old-1", &[], COMPATIBLE).await;
    let recent = ReportRequest {
        rollout_id: None,
        ..report_body("recent", 0, ReportStatus::Success)
    };
    assert_eq!(report(&c, &server, &token, &recent).await.0, StatusCode::OK);
    server.stop().await;
    {
        let store = ota_server::store::open(None, dir.path()).unwrap();
        let old = ReportRecord {
            report_id: "ancient".into(),
            rollout_id: None,
            version: None,
            manifest_digest: None,
            status: ReportStatus::Failure,
            progress_percent: None,
            error: Some("long ago".into()),
            log_tail: None,
            reason: None,
            received_at: 1000,
        };
        let last = LastStatus {
            status: ReportStatus::Failure,
            rollout_id: None,
            version: None,
            at: 1000,
            error: None,
            reason: None,
        };
        store
            .commit_report(&ReportCommit {
                device_id: "old-1",
                report: &old,
                last_status: &last,
                member: None,
                rollout: None,
            })
            .unwrap();
        assert_eq!(store.reports("old-1", 10).unwrap().len(), 2);
    }
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.alerts.reports_retention_secs = Some(86_400);
    let server = TestServer::start(s).await;
    let store = ota_server::store::open(None, dir.path()).unwrap();
    let mut left = 0;
    for _ in 0..100 {
        left = store.reports("old-1", 10).unwrap().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 1, "the ancient report is gone, the recent one kept");
    assert_eq!(store.reports("old-1", 10).unwrap()[0].report_id, "recent");
    server.stop().await;
}
