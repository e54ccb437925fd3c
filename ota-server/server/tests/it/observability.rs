//! `/metrics`, `/api/openapi.json` (every documented route is served, every served route documented), the
//! dashboard files, write-behind persistence of polls, and the router used in-process with tower's oneshot.

use std::collections::BTreeSet;

use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use ota_keys::SecretKey;
use ota_server::store::sqlite::SqliteStore;
use ota_server::store::Store;
use reqwest::{Method, StatusCode};
use tower::ServiceExt;

/// The routes the router serves (method, OpenAPI path), from the one route table that builds the router.
fn served() -> BTreeSet<(String, String)> {
    ota_server::api::routes::ROUTES
        .iter()
        .map(|r| (r.doc.method.as_str().to_string(), r.doc.openapi_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_served_routes() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let doc: serde_json::Value = c
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(
        !doc.to_string().contains("\"required\":[]"),
        "an empty required list is not valid OpenAPI 3.0"
    );
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].is_object() && op["summary"].is_string(),
                "{method} {path}"
            );
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served = served();
    assert_eq!(served.len(), 28);
    assert_eq!(documented, served);
    // Every documented route is really routed: the router's fallback (404 "no such route") or 405 never answers.
    for (method, path) in &served {
        let zeros = "0".repeat(64);
        let concrete = concrete(
            path,
            &[
                ("path", "style.css"),
                ("bundle_id", &zeros),
                ("device_id", "nobody"),
                ("rollout_id", "1"),
                ("name", "night"),
            ],
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = c
            .request(method.clone(), server.url(&concrete))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        if path != "/api/events" {
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("no such route"),
                "{method} {concrete}: {status} {text}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_dashboard_and_write_behind() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let token = enroll(&c, &server, "robot-m", &[], COMPATIBLE).await;
    for _ in 0..3 {
        poll(&c, &server, &token, "1.0.0").await;
    }
    let r = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for line in [
        "ota_polls_total 3",
        "ota_devices 1",
        "ota_enrollments_total 1",
        "ota_rollouts{state=\"active\"} 0",
        "ota_reports_total{status=\"rolled_back\"} 0",
        "ota_uploads_total{result=\"deduplicated\"} 0",
        "ota_backoff_total{code=\"503\"} 0",
        "# HELP ota_polls_total Device polls answered.",
        "# TYPE ota_polls_total counter",
        "# TYPE ota_devices gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every sample belongs to the family whose HELP and TYPE came last.
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap().to_string();
            continue;
        }
        if line.starts_with("# TYPE ") {
            assert!(line.starts_with(&format!("# TYPE {family} ")), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("ota_"), "{line}");
        assert!(
            name == family || name.starts_with(&format!("{family}{{")),
            "{line} outside its family {family}"
        );
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
    }

    let r = c.get(server.url("/")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("<html"));
    let r = c.get(server.url("/static/style.css")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert_eq!(
        c.get(server.url("/static/missing.js"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Polls reach the database by the write-behind flush (about once a second), while the server runs.
    let db = SqliteStore::open(&dir.path().join("ota.sqlite")).unwrap();
    let mut persisted = false;
    for _ in 0..60 {
        let snap = db.load().unwrap();
        if snap.devices[0].state.last_seen.is_some() {
            let telemetry = snap.devices[0].state.telemetry.clone().unwrap();
            assert_eq!(telemetry.battery_percent, Some(77.0));
            persisted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(persisted, "poll state was not flushed within 6 s");
    server.stop().await;
}

#[tokio::test]
async fn the_router_works_in_process_with_oneshot() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let opened = ota_server::server::open(settings(dir.path(), &trust(&[&key], 1))).unwrap();
    let app = ota_server::app(opened.state.clone());
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/bundles")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"[]");
    let response = app
        .oneshot(
            Request::post("/api/device/poll")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("Authorization"));
}

#[tokio::test]
async fn overloaded_device_endpoints_answer_503_with_retry_after() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.max_inflight_device_requests = 0;
    let opened = ota_server::server::open(s).unwrap();
    let app = ota_server::app(opened.state.clone());
    let body = serde_json::to_vec(&enroll_request("robot-x", &[], COMPATIBLE)).unwrap();
    let response = app
        .clone()
        .oneshot(
            Request::post("/api/devices/enroll")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let wait = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(wait >= 1);
    // Admin endpoints are not limited by the device gate.
    let response = app
        .oneshot(
            Request::get("/api/devices")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
