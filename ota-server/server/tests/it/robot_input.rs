//! What a robot sends is checked the same way on every route, and bounded per robot: a value enrollment
//! refuses, a poll refuses too; too many metrics and too many reports get a 4xx naming the limit.

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus;
use reqwest::StatusCode;
use serde_json::Value;

async fn started() -> (tempfile::TempDir, TestServer, reqwest::Client, String) {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start(settings(dir.path(), &trust(&[&SecretKey::generate()], 1))).await;
    let c = client();
    let token = enroll(&c, &server, "robot-1", &[], COMPATIBLE).await;
    (dir, server, c, token)
}

async fn post(
    c: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: &impl serde::Serialize,
) -> (StatusCode, String) {
    let mut r = c.post(url).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_enrollment_refuses_a_poll_refuses() {
    let (_dir, server, c, token) = started().await;
    let bad = " acme-robot-v2";
    let (status, error) = post(
        &c,
        server.url("/api/devices/enroll"),
        None,
        &enroll_request("robot-2", &[], bad),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.contains("compatible"), "{error}");
    let (status, error) = post(
        &c,
        server.url("/api/device/poll"),
        Some(&token),
        &poll_body("1.0.0", bad),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.contains("compatible"), "{error}");

    let mut body = poll_body("1.0.0", COMPATIBLE);
    body.booted_slot = Some("../A".into());
    let (status, error) = post(&c, server.url("/api/device/poll"), Some(&token), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.contains("booted_slot"), "{error}");

    let mut body = poll_body("1.0.0", COMPATIBLE);
    body.telemetry.metrics.insert("temp\nc".into(), 1.0);
    let (status, error) = post(&c, server.url("/api/device/poll"), Some(&token), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.contains("telemetry metric"), "{error}");

    let mut body = poll_body("1.0.0", COMPATIBLE);
    for i in 0..65 {
        body.telemetry.metrics.insert(format!("m{i:02}"), 1.0);
    }
    let (status, error) = post(&c, server.url("/api/device/poll"), Some(&token), &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert!(
        error.contains("limit: telemetry metrics per robot"),
        "{error}"
    );

    let mut body = report_body("r-bell", 1, ReportStatus::Failure);
    body.rollout_id = None;
    body.error = Some("disk \u{7} full".into());
    let (status, error) = post(&c, server.url("/api/device/report"), Some(&token), &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error.contains("error"), "{error}");

    // A well-formed poll still passes.
    poll(&c, &server, &token, "1.0.0").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_rate_limited_per_robot() {
    let (_dir, server, c, token) = started().await;
    let other = enroll(&c, &server, "robot-2", &[], COMPATIBLE).await;
    let send = |token: String, id: String| {
        let (c, url) = (c.clone(), server.url("/api/device/report"));
        async move {
            let mut body = report_body(&id, 1, ReportStatus::Downloading);
            body.rollout_id = None;
            c.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..ota_server::limits::REPORT_BURST {
        let r = send(token.clone(), format!("r{i}")).await;
        assert_eq!(r.status(), StatusCode::OK, "report {i}");
    }
    let refused = send(token.clone(), "one-too-many".into()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let v: Value = refused.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("limit: 120 at once"),
        "{v}"
    );
    // Another robot's allowance is its own.
    assert_eq!(send(other, "r0".into()).await.status(), StatusCode::OK);
    server.stop().await;
}
