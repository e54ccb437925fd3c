//! Decommissioning a robot deletes everything the server holds about it: a new robot enrolled under the same
//! id sees none of the old one's reports, telemetry, history, rollout membership or token. On both backends.

use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{EnrollRequest, ReportStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_robot_under_an_old_id_sees_nothing_of_the_old_one() {
    decommission(Database::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_on_postgres() {
    if let Some(db) = Database::postgres() {
        decommission(db).await;
    }
}

fn members(rollout: &Value) -> Vec<Value> {
    rollout["devices"].as_array().cloned().unwrap_or_default()
}

async fn decommission(db: Database) {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(db.settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    let old = enroll(&c, &server, "robot-a", &[("site", "w3")], COMPATIBLE).await;
    let (status, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": bundle_id, "tags": {"site": "w3"}, "stages": [100]}),
    )
    .await;
    assert!(status.is_success(), "{rollout}");
    let rollout_id = rollout["rollout_id"].as_u64().unwrap();
    assert!(poll(&c, &server, &old, "1.0.0").await.update.is_some());
    let (status, _) = report(
        &c,
        &server,
        &old,
        &report_body("fail-1", rollout_id, ReportStatus::Failure),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let history = "/api/devices/robot-a/history?metric=battery_percent";
    // The old robot's state is there before: telemetry, a report, its history, its membership.
    let mut seen = false;
    for _ in 0..50 {
        let h = admin_get(&c, &server, history).await;
        if h["points"].as_array().is_some_and(|p| !p.is_empty()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the old robot's telemetry history is recorded");
    let detail = admin_get(&c, &server, "/api/devices/robot-a").await;
    assert_eq!(detail["reports"].as_array().unwrap().len(), 1, "{detail}");
    let before = admin_get(&c, &server, &format!("/api/rollouts/{rollout_id}")).await;
    assert!(
        members(&before).iter().any(|m| m["device_id"] == "robot-a"),
        "{before}"
    );

    let r = c
        .delete(server.url("/api/devices/robot-a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Its token is revoked.
    let r = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&old)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A new robot under the same id (another enrollment request, no tags: it joins no rollout).
    let request = EnrollRequest {
        request_id: "a-new-robot-0001".into(),
        ..enroll_request("robot-a", &[], COMPATIBLE)
    };
    let r = c
        .post(server.url("/api/devices/enroll"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let detail = admin_get(&c, &server, "/api/devices/robot-a").await;
    assert!(
        detail["reports"].as_array().unwrap().is_empty(),
        "old reports: {detail}"
    );
    assert!(
        detail["device"]["telemetry"].is_null(),
        "old telemetry: {detail}"
    );
    let h = admin_get(&c, &server, history).await;
    assert!(
        h["points"].as_array().unwrap().is_empty(),
        "old history: {h}"
    );
    let after = admin_get(&c, &server, &format!("/api/rollouts/{rollout_id}")).await;
    assert!(
        !members(&after).iter().any(|m| m["device_id"] == "robot-a"),
        "old membership: {after}"
    );

    // And after a restart, from the database alone.
    server.stop().await;
    let server = TestServer::start(db.settings(dir.path(), &trust(&[&key], 1))).await;
    let detail = admin_get(&c, &server, "/api/devices/robot-a").await;
    assert!(
        detail["reports"].as_array().unwrap().is_empty(),
        "old reports: {detail}"
    );
    let h = admin_get(&c, &server, history).await;
    assert!(
        h["points"].as_array().unwrap().is_empty(),
        "old history: {h}"
    );
    let after = admin_get(&c, &server, &format!("/api/rollouts/{rollout_id}")).await;
    assert!(
        !members(&after).iter().any(|m| m["device_id"] == "robot-a"),
        "old membership: {after}"
    );
    server.stop().await;
}
