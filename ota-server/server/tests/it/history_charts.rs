//! What the history charts read, over real HTTP: a robot's timeline (the metrics it has history of, its update
//! events with versions, progress reports left out) and a rollout's guard history (updated against
//! not-yet-updated robots, with the guard's limit), from robots polling with telemetry.

use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus::{Downloading, Installing, Success};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// GETs `path` until `done` holds (up to 10 s).
async fn until(
    c: &reqwest::Client,
    s: &TestServer,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = admin_get(c, s, path).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting on {path}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robots_timeline_and_a_rollouts_guard_history() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let mut tokens = Vec::new();
    for i in 0..3 {
        let token = enroll(&c, &server, &format!("g-{i}"), &[("site", "w")], COMPATIBLE).await;
        poll_with(&c, &server, &token, "1.0.0", 40.0).await;
        tokens.push(token);
    }
    let (status, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert!(status.is_success(), "{published}");
    let (status, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": published["bundle_id"], "tags": {"site": "w"}, "stages": [100],
               "guards": [{"metric": "inference_latency_ms", "stat": "mean", "max_increase_percent": 20.0},
                          {"metric": "reboots", "stat": "max", "max": 3.0}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rollout}");
    let rid = rollout["rollout_id"].as_u64().unwrap();
    for (n, st) in [Downloading, Installing, Success].into_iter().enumerate() {
        let (status, body) = report(
            &c,
            &server,
            &tokens[0],
            &report_body(&format!("g0-{n}"), rid, st),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    poll_with(&c, &server, &tokens[0], "2.0.0", 90.0).await;

    // The robot's timeline: its metrics (from the recorder until the buckets are stored) and its update events.
    let timeline = until(&c, &server, "/api/devices/g-0/timeline", |t| {
        t["metrics"].as_array().is_some_and(|m| m.len() >= 4)
    })
    .await;
    assert_eq!(
        timeline["metrics"],
        json!([
            "battery_percent",
            "cpu_percent",
            "inference_latency_ms",
            "uptime_secs"
        ]),
        "{timeline}"
    );
    let events: Vec<(&str, &str, u64)> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap(),
                e["version"].as_str().unwrap(),
                e["rollout_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [("installing", "2.0.0", rid), ("success", "2.0.0", rid)]
    );
    let later = admin_get(
        &c,
        &server,
        &format!("/api/devices/g-0/timeline?since={}", u64::MAX / 2),
    )
    .await;
    assert_eq!(later["events"], json!([]), "{later}");

    // The guard history: robot g-0 on the updated side, the others the baseline, the limit 20 % over it.
    let history = until(
        &c,
        &server,
        &format!("/api/rollouts/{rid}/guards/history"),
        |h| {
            h["guards"][0]["points"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["updated_robots"] == 1 && p["baseline_robots"] == 2)
            })
        },
    )
    .await;
    assert_eq!(
        history["guards"][0]["text"],
        "inference_latency_ms:mean>+20%"
    );
    let point = history["guards"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["updated_robots"] == 1)
        .unwrap();
    let (updated, baseline, limit) = (
        point["updated"].as_f64().unwrap(),
        point["baseline"].as_f64().unwrap(),
        point["limit"].as_f64().unwrap(),
    );
    assert_eq!(baseline, 40.0, "{point}");
    assert!((limit - 48.0).abs() < 1e-9, "{point}");
    assert!(
        updated > limit,
        "the slower release shows above the limit: {point}"
    );
    assert_eq!(
        history["guards"][1]["points"],
        json!([]),
        "boots are not history"
    );

    // Unknown things are 404, a bad `since` 400.
    for (path, status) in [
        ("/api/devices/nobody/timeline", StatusCode::NOT_FOUND),
        ("/api/rollouts/999/guards/history", StatusCode::NOT_FOUND),
        ("/api/rollouts/x/guards/history", StatusCode::BAD_REQUEST),
        (
            "/api/devices/g-0/timeline?since=yesterday",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = c
            .get(server.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().contains('\n'), "{body}");
    }
    server.stop().await;
}
