//! History charts and the map in a real headless Chromium against a real server: a robot with two hours of
//! telemetry history (written to the store beside the running server) and update reports shows one non-empty
//! chart per metric with its update markers, and a live report adds a marker; a rollout's guard chart renders;
//! an operator uploads a site plan through the form, robots reporting positions on it appear as dots, and a
//! moving robot's dot moves live. Canvases are checked for drawn pixels through JS, not for exact pixels.
//! Screenshots: `robot-history` and `map` (see `Session::save_screenshot`).

use std::time::Duration;

use crate::browser::{open, PATIENCE};
use crate::common::*;
use crate::sites::{plan_png, poll_at};
use ota_keys::SecretKey;
use ota_protocol::admin::{LastStatus, ReportRecord};
use ota_protocol::device::ReportStatus;
use ota_server::history::{Bucket, Row};
use ota_server::store::ReportCommit;
use serde_json::{json, Value};

/// Pixels of a canvas (by CSS selector) that are not fully transparent.
const DRAWN: &str = "const c = document.querySelector(arguments[0]); if (!c || !c.width) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++; return n;";

const ROBOT_CHARTS: &str = ".chart-grid[data-device-id=\"robot-hist\"]";

/// Two hours of minute buckets for three robots: latency near 40 ms, robot-hist's at 68 ms since it installed
/// 2.4.0 forty minutes ago (its reports say so); battery draining, CPU wobbling.
fn seed_history(data_dir: &std::path::Path, now: u64) {
    let store = ota_server::store::open(None, data_dir).expect("open the store beside the server");
    let update = now - 40 * 60;
    let mut rows = Vec::new();
    for (k, id) in ["robot-hist", "robot-b1", "robot-b2"]
        .into_iter()
        .enumerate()
    {
        for m in 1..=120u64 {
            let t = now - m * 60;
            let wobble = ((m * 7 + k as u64 * 3) % 11) as f64 / 10.0;
            let latency = if id == "robot-hist" && t >= update {
                68.0
            } else {
                40.0
            } + 3.0 * wobble;
            for (metric, value) in [
                ("inference_latency_ms", latency),
                ("battery_percent", 60.0 + m as f64 * 0.3 - k as f64 * 5.0),
                ("cpu_percent", 20.0 + 15.0 * wobble),
            ] {
                rows.push(Row {
                    device_id: id.into(),
                    metric: metric.into(),
                    bucket: Bucket::sample(t, value),
                });
            }
        }
    }
    store.save_history(&rows).unwrap();
    for (n, (status, at)) in [
        (ReportStatus::Installing, update - 90),
        (ReportStatus::Success, update),
    ]
    .into_iter()
    .enumerate()
    {
        let version = Some("2.4.0".parse().unwrap());
        let report = ReportRecord {
            report_id: format!("past-{n}"),
            rollout_id: None,
            version: version.clone(),
            manifest_digest: None,
            status,
            progress_percent: None,
            error: None,
            log_tail: None,
            reason: None,
            received_at: at,
        };
        let last = LastStatus {
            status,
            rollout_id: None,
            version,
            at,
            error: None,
            reason: None,
        };
        store
            .commit_report(&ReportCommit {
                device_id: "robot-hist",
                report: &report,
                last_status: &last,
                member: None,
                rollout: None,
            })
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_and_the_map_render_and_follow_the_fleet() {
    if !ota_testkit::tools::require_all(&["chromium", "chromedriver"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let server = TestServer::start(settings(&tmp.path().join("data"), &trust(&[&key], 1))).await;
    let c = client();
    let mut tokens = Vec::new();
    for id in ["robot-hist", "robot-b1", "robot-b2"] {
        let token = enroll(&c, &server, id, &[("site", "hall")], COMPATIBLE).await;
        poll_with(&c, &server, &token, "2.4.0", 45.0).await;
        tokens.push(token);
    }
    let now = ota_server::fleet::unix_now();
    seed_history(&server.data_dir, now);
    let (status, published) = publish(&c, &server, bundle(&[&key], "2.5.0", COMPATIBLE)).await;
    assert!(status.is_success(), "{published}");
    let (status, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": published["bundle_id"], "tags": {"site": "hall"}, "stages": [100], "name": "2.5.0 to the hall",
               "guards": [{"metric": "inference_latency_ms", "stat": "mean", "max_increase_percent": 20.0}]}),
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{rollout}");
    let rid = rollout["rollout_id"].as_u64().unwrap();

    let (driver, session) = open(tmp.path()).await;
    session.open_console(&server.base, ADMIN).await;

    // A robot's history: one non-empty chart per metric, the update markers of its past install.
    session
        .js(
            "location.hash = '#/robot/robot-hist'; return null",
            json!([]),
        )
        .await;
    let (v, _) = session
        .wait_for(
            "robot-hist's charts",
            PATIENCE,
            &format!("const g = document.querySelector('{ROBOT_CHARTS}'); return g && [g.getAttribute('data-charts'), g.getAttribute('data-markers')]"),
            json!([]),
            |v| v[0].as_str().is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 4),
        )
        .await;
    assert_eq!(v[1], json!("2"), "installing and success of 2.4.0: {v}");
    let metrics = session
        .js(&format!("return [...document.querySelectorAll('{ROBOT_CHARTS} canvas.chart')].map(c => [c.getAttribute('data-metric'), +c.getAttribute('data-points')])"), json!([]))
        .await;
    let metrics = metrics.as_array().unwrap();
    for name in ["battery_percent", "cpu_percent", "inference_latency_ms"] {
        let m = metrics
            .iter()
            .find(|m| m[0] == name)
            .unwrap_or_else(|| panic!("no {name} chart: {metrics:?}"));
        assert!(
            m[1].as_u64().unwrap() >= 100,
            "{name} has its two hours of points: {m}"
        );
        let drawn = session
            .js(
                DRAWN,
                json!([format!("{ROBOT_CHARTS} canvas[data-metric=\"{name}\"]")]),
            )
            .await;
        assert!(
            drawn.as_u64().unwrap() > 2000,
            "{name}'s chart is drawn: {drawn} pixels"
        );
    }
    // A live report adds a marker without a reload.
    assert!(
        poll(&c, &server, &tokens[0], "2.4.0")
            .await
            .update
            .is_some(),
        "robot-hist is offered 2.5.0"
    );
    let mut installing = report_body("live-1", rid, ReportStatus::Installing);
    installing.version = Some("2.5.0".parse().unwrap());
    let (status, body) = report(&c, &server, &tokens[0], &installing).await;
    assert!(status.is_success(), "{body}");
    session
        .wait_for(
            "the live update marker",
            PATIENCE,
            &format!(
                "return document.querySelector('{ROBOT_CHARTS}').getAttribute('data-markers')"
            ),
            json!([]),
            |v| v == "3",
        )
        .await;
    session
        .js(
            &format!("document.querySelector('{ROBOT_CHARTS}').scrollIntoView(); return null"),
            json!([]),
        )
        .await;
    session.save_screenshot("robot-history").await;

    // The rollout's guard chart.
    session
        .js(
            &format!("location.hash = '#/rollout/{rid}'; return null"),
            json!([]),
        )
        .await;
    let guards = format!(".chart-grid[data-rollout-id=\"{rid}\"]");
    session
        .wait_for(
            "the guard chart",
            PATIENCE,
            &format!("const g = document.querySelector('{guards}'); return g && g.getAttribute('data-charts')"),
            json!([]),
            |v| v == "1",
        )
        .await;
    let (drawn, _) = session
        .wait_for(
            "the guard chart's pixels",
            PATIENCE,
            DRAWN,
            json!([format!("{guards} canvas.chart")]),
            |v| v.as_u64().is_some_and(|n| n > 2000),
        )
        .await;
    println!("guard chart: {drawn} pixels drawn");

    // The map: an operator uploads a plan through the form; robots reporting positions on it are dots.
    let plan = tmp.path().join("hall-a.png");
    std::fs::write(&plan, plan_png(640, 400)).unwrap();
    session
        .js("location.hash = '#/map'; return null", json!([]))
        .await;
    session
        .wait_for(
            "the upload form",
            PATIENCE,
            "return !!document.getElementById('site-form')",
            json!([]),
            |v| v == true,
        )
        .await;
    session.type_into("#site-name", "hall-a").await;
    session
        .type_into("#site-file", plan.to_str().unwrap())
        .await;
    // The numbers through the DOM (the harness types only into empty fields).
    session
        .js(
            "for (const [id, v] of [['site-scale', '0.05'], ['site-origin-x', '40'], ['site-origin-y', '360']]) \
             document.getElementById(id).value = v; return null",
            json!([]),
        )
        .await;
    session.click("#site-form button[type=submit]").await;
    let site = until_site(&c, &server).await;
    assert_eq!(
        (&site["width"], &site["height"], &site["scale"]),
        (&json!(640), &json!(400), &json!(0.05))
    );
    for (token, (x, y)) in tokens.iter().zip([(2.0, 3.0), (10.0, 8.0), (20.0, 12.0)]) {
        poll_at(&c, &server, token, "hall-a", x, y).await;
    }
    const DOTS: &str = "const c = document.getElementById('map-canvas'); return c && [c.getAttribute('data-site'), c.getAttribute('data-robots')]";
    session
        .wait_for("three dots on hall-a", PATIENCE, DOTS, json!([]), |v| {
            v == &json!(["hall-a", "3"])
        })
        .await;
    let drawn = session.js(DRAWN, json!(["#map-canvas"])).await;
    assert!(
        drawn.as_u64().unwrap() > 100_000,
        "the plan is drawn: {drawn} pixels"
    );
    const DOT_AT: &str = "const li = document.querySelector(`#map-robots li[data-device-id=\"${arguments[0]}\"]`); return li && [+li.getAttribute('data-x'), +li.getAttribute('data-y')]";
    let before = session.js(DOT_AT, json!(["robot-b1"])).await;
    assert_eq!(
        before,
        json!([240, 200]),
        "10 m right of x=40 px, 8 m up from y=360 px at 0.05 m/px"
    );
    // A robot that moves is redrawn live, without a reload.
    session
        .js("window.__sameDocument = 7; return null", json!([]))
        .await;
    poll_at(&c, &server, &tokens[1], "hall-a", 25.0, 5.0).await;
    let (after, took) = session
        .wait_for(
            "robot-b1's dot to move",
            PATIENCE,
            DOT_AT,
            json!(["robot-b1"]),
            |v| v == &json!([540, 260]),
        )
        .await;
    println!("moved robot redrawn {took:?} after its poll: {after}");
    assert_eq!(
        session.js("return window.__sameDocument", json!([])).await,
        json!(7)
    );
    session.save_screenshot("map").await;

    session.close().await;
    drop(driver);
    server.stop().await;
}

/// The site the form uploaded, once the API lists it.
async fn until_site(c: &reqwest::Client, server: &TestServer) -> Value {
    for _ in 0..100 {
        let sites = admin_get(c, server, "/api/sites").await;
        if let Some(s) = sites.as_array().and_then(|a| a.first()) {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the form's upload never reached the API");
}
