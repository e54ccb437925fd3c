//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver) with a small W3C WebDriver
//! client built on reqwest: the page signs in with the admin token from the URL fragment (and through the form),
//! shows the fleet and the rollout, applies a device's report live (no reload), shows a device's
//! report history with its error and log tail, renders hostile tag values as text, and looks right in a
//! 1280×800 screenshot (saved as `target/screenshots/dashboard.png`).
//!
//! Needs `chromium` and `chromedriver` on PATH (`scripts/install-deps.sh browser` installs them): without them
//! it fails under CI and prints a loud SKIPPED line elsewhere (`ota_testkit::tools`).

use std::time::Instant;

use crate::browser::{open, PATIENCE};
use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{ReportRequest, ReportStatus};
use serde_json::{json, Value};

fn report_req(id: &str, rollout: u64, status: ReportStatus) -> ReportRequest {
    let mut r = report_body(id, rollout, status);
    if status == ReportStatus::Downloading {
        r.progress_percent = Some(40);
    }
    r
}

/// `[data-status, status cell text, health]` of a device's row, or null.
const ROW_STATE: &str = r#"
const row = document.querySelector(`tr[data-device-id="${arguments[0]}"]`);
if (!row) return null;
return [row.getAttribute('data-status'), row.querySelector('td.col-status').textContent,
        row.getAttribute('data-health'), row.querySelector('td.col-version').textContent];
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_fleet_and_applies_live_reports() {
    if !ota_testkit::tools::require_all(&["chromium", "chromedriver"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let server = TestServer::start(settings(&tmp.path().join("data"), &trust(&[&key], 1))).await;
    let c = client();

    // A fleet: a device that will take an update, one with a hostile tag value, and a bystander.
    let robot = enroll(
        &c,
        &server,
        "robot-0042",
        &[("site", "warehouse-3"), ("model", "picker")],
        COMPATIBLE,
    )
    .await;
    let hostile = "<img src=x onerror=\"window.__pwned=1\"><b>bold</b>";
    let evil = enroll(&c, &server, "robot-0666", &[("site", hostile)], COMPATIBLE).await;
    let other = enroll(
        &c,
        &server,
        "robot-0100",
        &[("site", "warehouse-1")],
        COMPATIBLE,
    )
    .await;
    for t in [&robot, &evil, &other] {
        poll(&c, &server, t, "1.0.0").await;
    }
    let (status, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert!(status.is_success(), "{published}");
    let (status, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": published["bundle_id"], "tags": {"site": "warehouse-3"}, "stages": [100], "name": "2.0.0 to warehouse 3"}),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{rollout}");
    let rollout_id = rollout["rollout_id"].as_u64().unwrap();
    assert!(
        poll(&c, &server, &robot, "1.0.0").await.update.is_some(),
        "robot-0042 is offered the update"
    );

    let (driver, session) = open(tmp.path()).await;

    // Sign in through the URL fragment; the page drops the token from the URL and keeps it in sessionStorage.
    session
        .goto(&format!("{}/#token={ADMIN}", server.base))
        .await;
    let (v, _) = session
        .wait_for(
            "robot-0042's row",
            PATIENCE,
            ROW_STATE,
            json!(["robot-0042"]),
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(v[3], json!("1.0.0"), "version column: {v}");
    session.until_live().await;
    let where_token = session
        .js(
            "return [location.href, sessionStorage.getItem('ota-admin-token')]",
            json!([]),
        )
        .await;
    assert!(
        !where_token[0].as_str().unwrap().contains("token"),
        "token left in the URL: {where_token}"
    );
    assert_eq!(where_token[1], json!(ADMIN));

    // The fleet table has all three devices, and the rollout is listed.
    let rows = session
        .js(
            "return document.querySelectorAll('#device-rows tr').length",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(3));
    let rollout_text = session
        .js("const r = document.querySelector(`tr[data-rollout-id=\"${arguments[0]}\"]`); return r && r.textContent", json!([rollout_id]))
        .await;
    let rollout_text = rollout_text.as_str().expect("rollout row");
    assert!(
        rollout_text.contains("2.0.0 to warehouse 3") && rollout_text.contains("active"),
        "{rollout_text}"
    );
    assert!(rollout_text.contains("0 of 1 done"), "{rollout_text}");

    // Device-provided strings are text, never markup.
    let escaped = session
        .js(
            "const row = document.querySelector('tr[data-device-id=\"robot-0666\"]');
             return [row.querySelector('td.col-tags').textContent, row.querySelectorAll('img, b').length,
                     document.querySelectorAll('main img').length, window.__pwned === undefined];",
            json!([]),
        )
        .await;
    assert_eq!(escaped, json!([format!("site={hostile}"), 0, 0, true]));

    // A robot that holds back says why, and the row shows it live.
    let mut waiting = poll_body("1.0.0", COMPATIBLE);
    waiting.waiting = Some(
        serde_json::from_value(json!({"phase": "install", "reason": "on a mission <b>now</b>"}))
            .unwrap(),
    );
    let answer = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&other)
        .json(&waiting)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    session
        .wait_for(
            "the waiting reason",
            PATIENCE,
            "const r = document.querySelector('tr[data-device-id=\"robot-0100\"]'); return r && [r.textContent, r.querySelectorAll('b').length]",
            json!([]),
            |v| v[0].as_str().is_some_and(|t| t.contains("waiting before install: on a mission <b>now</b>")) && v[1] == 0,
        )
        .await;

    // Live: a report changes the row without a reload, well within 2 s.
    session
        .js("window.__sameDocument = 42; return null", json!([]))
        .await;
    let (status, _) = report(
        &c,
        &server,
        &robot,
        &report_req("r-1", rollout_id, ReportStatus::Downloading),
    )
    .await;
    assert!(status.is_success());
    let (v, took) = session
        .wait_for(
            "status 'downloading'",
            PATIENCE,
            ROW_STATE,
            json!(["robot-0042"]),
            |v| v[0] == "downloading",
        )
        .await;
    println!("report → screen: downloading shown after {took:?}");
    assert!(v[1].as_str().unwrap().contains("downloading"), "{v}");

    let sent = Instant::now();
    let (status, _) = report(
        &c,
        &server,
        &robot,
        &report_req("r-2", rollout_id, ReportStatus::Failure),
    )
    .await;
    assert!(status.is_success());
    let (v, took) = session
        .wait_for(
            "status 'failure'",
            PATIENCE,
            ROW_STATE,
            json!(["robot-0042"]),
            |v| v[0] == "failure",
        )
        .await;
    println!(
        "report → screen: failure shown {took:?} after the report's answer ({:?} after sending it)",
        sent.elapsed()
    );
    assert!(v[1].as_str().unwrap().contains("failure"), "{v}");
    assert_eq!(
        v[2],
        json!("warn"),
        "one failure: 'last failed', not yet flagged: {v}"
    );
    // The rollout's counts and the aria-live region followed too; the page was not reloaded.
    let (v, _) = session
        .wait_for(
            "the rollout's failure count",
            PATIENCE,
            "return document.querySelector(`tr[data-rollout-id=\"${arguments[0]}\"]`).textContent",
            json!([rollout_id]),
            |v| v.as_str().is_some_and(|t| t.contains("1 failed")),
        )
        .await;
    assert!(v.as_str().unwrap().contains("1 of 1 done"), "{v}");
    let live = session
        .js(
            "return [document.getElementById('announcer').textContent, window.__sameDocument]",
            json!([]),
        )
        .await;
    assert!(
        live[0].as_str().unwrap().contains("robot-0042: failure"),
        "{live}"
    );
    assert_eq!(live[1], json!(42), "the page was reloaded");

    // A roll-back after the failure: 2 of the last 5 reports are bad, so the device is flagged.
    let (status, _) = report(
        &c,
        &server,
        &robot,
        &report_req("r-3", rollout_id, ReportStatus::RolledBack),
    )
    .await;
    assert!(status.is_success());
    let (v, _) = session
        .wait_for(
            "the health flag",
            PATIENCE,
            ROW_STATE,
            json!(["robot-0042"]),
            |v| v[2] == "bad",
        )
        .await;
    assert_eq!(v[0], json!("rolled_back"));

    // Click the device: its history, newest first, with the error and the log tail.
    session
        .click("tr[data-device-id=\"robot-0042\"] button.device-link")
        .await;
    let (v, _) = session
        .wait_for(
            "the report history",
            PATIENCE,
            "return [...document.querySelectorAll('#report-rows tr')].map(r => r.getAttribute('data-report-id'))",
            json!([]),
            |v| v.as_array().is_some_and(|a| a.len() == 3),
        )
        .await;
    assert_eq!(v, json!(["r-3", "r-2", "r-1"]));
    let detail = session
        .js(
            "return document.getElementById('detail').innerText",
            json!([]),
        )
        .await;
    let detail = detail.as_str().unwrap();
    for needle in [
        "robot-0042",
        "write failed: no space left on device",
        "health check failed after boot",
        "log tail",
        "warehouse-3",
    ] {
        assert!(
            detail.contains(needle),
            "detail panel lacks {needle:?}:\n{detail}"
        );
    }
    session
        .js(
            "document.querySelector('#report-rows details').open = true; return null",
            json!([]),
        )
        .await;

    // What it looks like at 1280×800.
    assert_eq!(
        session.save_screenshot("dashboard").await,
        (1280, 800),
        "screenshot size"
    );

    // A live report for the open device lands in its history too.
    let (status, _) = report(
        &c,
        &server,
        &robot,
        &report_req("r-4", rollout_id, ReportStatus::Success),
    )
    .await;
    assert!(status.is_success());
    session
        .wait_for(
            "the live history entry",
            PATIENCE,
            "return document.querySelector('#report-rows tr').getAttribute('data-report-id')",
            json!([]),
            |v| v == "r-4",
        )
        .await;

    // Sign out and in again through the form.
    session.click("#logout").await;
    session
        .wait_for(
            "the sign-in form",
            PATIENCE,
            "return !document.getElementById('login').hidden",
            json!([]),
            |v| v == true,
        )
        .await;
    assert_eq!(
        session
            .js(
                "return sessionStorage.getItem('ota-admin-token')",
                json!([])
            )
            .await,
        Value::Null
    );
    session
        .type_into("#token-input", "wrong-token-0123456789")
        .await;
    session.click("#login-form button").await;
    session
        .wait_for(
            "the rejection",
            PATIENCE,
            "return document.getElementById('login-error').textContent",
            json!([]),
            |v| v.as_str().is_some_and(|t| t.contains("rejected")),
        )
        .await;
    session.type_into("#token-input", ADMIN).await;
    session.click("#login-form button").await;
    session
        .wait_for(
            "the fleet after signing in",
            PATIENCE,
            ROW_STATE,
            json!(["robot-0100"]),
            |v| !v.is_null(),
        )
        .await;

    session.close().await;
    drop(driver);
    server.stop().await;
}
