//! The alerts page in a real headless Chromium against a real server: a robot rolls back, and its alert
//! appears on `#/alerts` live (the `alerts_changed` event, no reload) with the count in the header; an operator
//! acknowledges it by clicking, and the API then says who and when. Screenshot: `alerts`.

use std::time::Duration;

use crate::browser::{open, PATIENCE};
use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{ReportRequest, ReportStatus};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_shows_up_live_and_is_acknowledged_by_clicking() {
    if !ota_testkit::tools::require_all(&["chromium", "chromedriver"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let mut s = settings(&tmp.path().join("data"), &trust(&[&key], 1));
    s.config.alerts.interval = Duration::from_millis(200);
    s.config.alerts.thresholds.offline_after_secs = 2; // amr-7 polls once, then goes quiet
    let server = TestServer::start(s).await;
    let c = client();
    let quiet = enroll(&c, &server, "amr-7", &[("site", "hall")], COMPATIBLE).await;
    poll(&c, &server, &quiet, "2.4.0").await;
    let robot = "amr-12";
    let token = enroll(&c, &server, robot, &[("site", "hall")], COMPATIBLE).await;
    poll(&c, &server, &token, "2.4.0").await;

    let (_driver, session) = open(tmp.path()).await;
    session.viewport(1100, 700).await;
    session.open_console(&server.base, ADMIN).await;
    session
        .js("location.hash = '#/alerts'; return null", json!([]))
        .await;
    session
        .wait_for(
            "the offline alert of the quiet robot",
            PATIENCE,
            "return [...document.querySelectorAll('#alert-rows tr')].map(r => r.innerText).join('|')",
            json!([]),
            |v| v.as_str().is_some_and(|t| t.contains("amr-7") && t.contains("offline")),
        )
        .await;

    // The robot rolls back: the row appears without a reload.
    let body = ReportRequest {
        rollout_id: None,
        ..report_body("rb-1", 0, ReportStatus::RolledBack)
    };
    let (code, answer) = report(&c, &server, &token, &body).await;
    assert_eq!(code.as_u16(), 200, "{answer}");
    let (row, took) = session
        .wait_for(
            "the rollback's alert row",
            PATIENCE,
            "const r = [...document.querySelectorAll('#alert-rows tr')].find(r => r.innerText.includes('rolled back')); return r && [r.getAttribute('data-alert'), r.innerText, document.getElementById('alert-count').textContent, r.querySelector('a.alert-target').getAttribute('href')]",
            json!([]),
            |v| v.is_array(),
        )
        .await;
    println!("rollback → alert on the page in {took:?}");
    let id = row[0].as_str().unwrap().to_string();
    let text = row[1].as_str().unwrap();
    assert!(text.contains("rolled back"), "{text}");
    assert!(text.contains(robot), "{text}");
    assert_eq!(row[2], "2", "the header counts it with the offline one");
    assert_eq!(row[3], format!("#/robot/{robot}"));

    // Acknowledge by clicking; the API says who and when.
    session
        .click(&format!("button.ack[data-alert=\"{id}\"]"))
        .await;
    session
        .wait_for(
            "the acknowledgement on the page",
            PATIENCE,
            &format!("const r = document.querySelector('#alert-rows tr[data-alert=\"{id}\"] td.acked'); return r ? r.textContent : null"),
            json!([]),
            |v| v.as_str().is_some_and(|t| t.starts_with("admin-token")),
        )
        .await;
    let list: Value = admin_get(&c, &server, "/api/alerts").await;
    let alert = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap();
    assert_eq!(alert["acknowledged"]["by"], "admin-token", "{alert}");
    assert!(alert["acknowledged"]["at"].as_u64().unwrap() > 0);
    let count = session
        .js(
            "const c = document.getElementById('alert-count'); return [c.hidden, c.textContent]",
            json!([]),
        )
        .await;
    assert_eq!(
        count,
        json!([false, "1"]),
        "the offline one is left unacknowledged"
    );
    session.save_screenshot("alerts").await;
    session.close().await;
    server.stop().await;
}
