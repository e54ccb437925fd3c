//! Health guards and telemetry history end to end, over real HTTP: robots poll with latency telemetry, a
//! rollout whose updated robots got slow is paused by its guard (the reason names the rule, the metric and the
//! robots; the breach survives a restart), a healthy one evaluated by the same ticks is not, a rollback pauses a
//! completed rollout during its watch period, and the history route serves what the robots reported.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus::{self, *};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn finish(
    c: &reqwest::Client,
    s: &TestServer,
    id: &str,
    token: &str,
    rid: u64,
    end: ReportStatus,
) {
    for (n, st) in [Downloading, Installing, Rebooting, end]
        .into_iter()
        .enumerate()
    {
        let (status, body) = report(
            c,
            s,
            token,
            &report_body(&format!("{id}-{rid}-{n}"), rid, st),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Polls the rollout until `done` holds (up to 20 s).
async fn wait_rollout(
    c: &reqwest::Client,
    s: &TestServer,
    rid: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..400 {
        let detail = admin_get(c, s, &format!("/api/rollouts/{rid}")).await;
        if done(&detail["rollout"]) {
            return detail["rollout"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for rollout {rid}: {what}");
}

async fn fleet(c: &reqwest::Client, s: &TestServer, site: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("{site}-{i}");
        let token = enroll(c, s, &id, &[("site", site)], COMPATIBLE).await;
        poll_with(c, s, &token, "1.0.0", 40.0).await;
        out.push((id, token));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_release_is_paused_by_its_guard_and_a_healthy_one_is_not() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), &trust(&[&key], 1));
    cfg.config.guard_interval = Duration::from_millis(100);
    let server = TestServer::start(cfg.clone()).await;
    let c = client();

    let events = c
        .get(server.url("/api/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut stream = events.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            if ev_tx
                .send(String::from_utf8_lossy(&chunk).into_owned())
                .is_err()
            {
                return;
            }
        }
    });

    let (status, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    let good = fleet(&c, &server, "good", 4).await;
    let bad = fleet(&c, &server, "bad", 4).await;

    let mut rollouts = Vec::new();
    for site in ["good", "bad"] {
        let (status, info) = admin_post(&c, &server, "/api/rollouts", json!({
            "bundle_id": bundle_id, "tags": {"site": site}, "stages": [50, 100],
            "guards": [{"metric": "inference_latency_ms", "stat": "p95", "max_increase_percent": 20.0}]
        }))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{info}");
        assert_eq!(info["guards"][0]["metric"], "inference_latency_ms");
        rollouts.push(info["rollout_id"].as_u64().unwrap());
    }
    let (good_id, bad_id) = (rollouts[0], rollouts[1]);

    // Stage 1 of each: two robots update. The good ones stay near 40 ms, then the bad ones report 9999 ms.
    for (robots, rid, latency) in [(&good, good_id, 42.0), (&bad, bad_id, 9999.0)] {
        let detail = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await;
        let first: Vec<String> = detail["devices"].as_array().unwrap()[..2]
            .iter()
            .map(|d| d["device_id"].as_str().unwrap().to_string())
            .collect();
        for (id, token) in robots.iter().filter(|(id, _)| first.contains(id)) {
            finish(&c, &server, id, token, rid, Success).await;
            poll_with(&c, &server, token, "2.0.0", latency).await;
        }
        for (_, token) in robots.iter().filter(|(id, _)| !first.contains(id)) {
            poll_with(&c, &server, token, "1.0.0", 40.0).await;
        }
    }

    let paused = wait_rollout(&c, &server, bad_id, "paused by its guard", |r| {
        r["state"] == "paused"
    })
    .await;
    let reason = paused["pause_reason"].as_str().unwrap();
    assert!(reason.contains("inference_latency_ms:p95>+20%"), "{reason}");
    assert!(
        reason.contains("9999") && reason.contains(" 40 "),
        "values named: {reason}"
    );
    let breach = &paused["breach"];
    assert_eq!(breach["updated"], 9999.0);
    assert_eq!(breach["baseline"], 40.0);
    let named: Vec<&str> = breach["robots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(named.len(), 2, "{breach}");
    for robot in &named {
        assert!(
            robot.starts_with("bad-") && reason.contains(robot),
            "{reason}"
        );
    }
    // The tick that paused the bad rollout judged the good one too, with its data in.
    let good_now = admin_get(&c, &server, &format!("/api/rollouts/{good_id}")).await;
    assert_ne!(good_now["rollout"]["state"], "paused", "{good_now}");
    assert!(good_now["rollout"]["breach"].is_null());

    // The dashboard heard about it.
    let mut seen = String::new();
    while !(seen.contains("rollout_updated") && seen.contains("breached")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), ev_rx.recv())
            .await
            .expect("a rollout_updated event naming the breach")
            .unwrap();
        seen.push_str(&chunk);
    }

    // The history route serves what a slow robot reported.
    let slow = named[0].to_string();
    let history = admin_get(
        &c,
        &server,
        &format!("/api/devices/{slow}/history?metric=inference_latency_ms"),
    )
    .await;
    let points = history["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{history}");
    let max = points
        .iter()
        .map(|p| p["max"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(max, 9999.0, "{history}");
    let r = c
        .get(server.url(&format!("/api/devices/{slow}/history")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("metric="));

    // A restart keeps the breach and the history (stored at shutdown).
    server.stop().await;
    let server = TestServer::start(cfg).await;
    let detail = admin_get(&c, &server, &format!("/api/rollouts/{bad_id}")).await;
    assert_eq!(detail["rollout"]["state"], "paused");
    assert_eq!(
        detail["rollout"]["breach"]["robots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let base = server.base.clone();
    let history = tokio::task::spawn_blocking(move || {
        let mut options = ota_protocol::client::ClientOptions::new(base);
        options.token = Some(ADMIN.into());
        let client = ota_protocol::client::ApiClient::new(&options).unwrap();
        client
            .history(&slow, "inference_latency_ms", Some(0))
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        history.points.iter().any(|p| p.max == 9999.0),
        "{history:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_in_the_watch_period_pauses_a_completed_rollout() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), &trust(&[&key], 1));
    cfg.config.guard_interval = Duration::from_millis(100);
    let server = TestServer::start(cfg).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let robots = fleet(&c, &server, "w1", 2).await;
    let (status, info) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({
            "bundle_id": published["bundle_id"], "stages": [100], "failure_threshold": 1.0,
            "guards": [{"metric": "rollbacks", "stat": "max", "max": 0.0}], "watch_secs": 600
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["watch_secs"], 600);
    let rid = info["rollout_id"].as_u64().unwrap();
    finish(&c, &server, &robots[0].0, &robots[0].1, rid, Success).await;
    finish(&c, &server, &robots[1].0, &robots[1].1, rid, Success).await;
    wait_rollout(&c, &server, rid, "completed", |r| r["state"] == "completed").await;
    // Later, in the field, one robot falls back to its old slot.
    let (status, _) = report(
        &c,
        &server,
        &robots[1].1,
        &report_body("late-rollback", rid, RolledBack),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let paused = wait_rollout(&c, &server, rid, "paused by the rollback guard", |r| {
        r["state"] == "paused"
    })
    .await;
    let reason = paused["pause_reason"].as_str().unwrap();
    assert!(
        reason.contains("rollbacks:max>0") && reason.contains(&robots[1].0),
        "{reason}"
    );
    // Resuming acknowledges the breach: it completes again and the guard judges only what follows.
    let (status, resumed) = admin_post(
        &c,
        &server,
        &format!("/api/rollouts/{rid}/resume"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["state"], "completed", "{resumed}");
    assert!(resumed["breach"].is_null());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_a_guard_without_bound_is_refused() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let (status, body) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({
            "bundle_id": published["bundle_id"], "guards": [{"metric": "error_rate"}]
        }),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs a bound"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_creates_a_rollout_with_guards_and_a_watch_period() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    let run = |guard: &'static str| {
        let (base, bundle_id) = (server.base.clone(), bundle_id.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ota-server"))
                .args([
                    "rollout", "create", "--server", &base, "--token", ADMIN, "--bundle",
                    &bundle_id,
                ])
                .args([
                    "--guard",
                    guard,
                    "--guard",
                    "rollbacks:max>0",
                    "--watch",
                    "10m",
                ])
                .arg("--json")
                .env_remove("OTA_SERVER_URL")
                .env_remove("OTA_ADMIN_TOKEN")
                .output()
                .unwrap()
        })
    };
    let out = run("inference_latency_ms:p95>+20%").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["watch_secs"], 600);
    assert_eq!(
        info["guards"],
        json!([
            {"metric": "inference_latency_ms", "stat": "p95", "max_increase_percent": 20.0, "min_robots": 1},
            {"metric": "rollbacks", "stat": "max", "max": 0.0, "min_robots": 1}
        ])
    );
    let (base, id) = (server.base.clone(), info["rollout_id"].to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ota-server"))
            .args(["rollout", "show", &id, "--server", &base, "--token", ADMIN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("guards inference_latency_ms:p95>+20% rollbacks:max>0 watch 600s"),
        "{shown}"
    );
    let out = run("inference_latency_ms:p50>3").await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("METRIC[:STAT]>BOUND"), "{stderr}");

    // `devices history` prints a robot's buckets.
    let token = enroll(&c, &server, "r-cli", &[], COMPATIBLE).await;
    poll_with(&c, &server, &token, "1.0.0", 43.25).await;
    let base = server.base.clone();
    let mut printed = String::new();
    for _ in 0..100 {
        let base = base.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ota-server"))
                .args([
                    "devices",
                    "history",
                    "r-cli",
                    "--metric",
                    "inference_latency_ms",
                ])
                .args(["--server", &base, "--token", ADMIN])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed = String::from_utf8_lossy(&out.stdout).into_owned();
        if printed.contains("mean       43.250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(printed.contains("n    1  mean       43.250"), "{printed}");
    server.stop().await;
}
