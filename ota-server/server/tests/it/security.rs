//! Authentication and authorisation (401 without/with bad tokens, 403 for others' data and wrong roles),
//! enrollment idempotency, and bad input answered with JSON 4xx.

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus;
use ota_server::api::routes::Route;
use ota_server::openapi::Auth;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn call(
    c: &reqwest::Client,
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
    (status, json)
}

/// The routes of the one route table whose auth requirement satisfies `keep`.
fn routes_with(keep: impl Fn(Auth) -> bool) -> impl Iterator<Item = &'static Route> {
    ota_server::api::routes::ROUTES
        .iter()
        .filter(move |r| keep(r.doc.auth))
}

fn method_of(route: &Route) -> Method {
    Method::from_bytes(route.doc.method.as_str().to_uppercase().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_confined_to_their_own_data() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    let a = enroll(&c, &server, "robot-a", &[("site", "w3")], COMPATIBLE).await;
    let b = enroll(&c, &server, "robot-b", &[("site", "w4")], COMPATIBLE).await;
    let (_, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": bundle_id, "tags": {"site": "w3"}, "stages": [100]}),
    )
    .await;
    let rid = rollout["rollout_id"].as_u64().unwrap();
    assert!(poll(&c, &server, &a, "1.0.0").await.update.is_some());
    assert!(poll(&c, &server, &b, "1.0.0").await.update.is_none());

    let download = format!("/api/bundles/{bundle_id}/download");
    let r = c
        .get(server.url(&download))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "B was not offered the bundle"
    );
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c
        .get(server.url(&download))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, body) = report(
        &c,
        &server,
        &b,
        &report_body("b-1", rid, ReportStatus::Success),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "B may not report into A's rollout: {body}"
    );
    let (s, _) = call(
        &c,
        &server,
        Method::GET,
        "/api/devices/robot-a",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, own) = call(
        &c,
        &server,
        Method::GET,
        "/api/devices/robot-b",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(
        (s, own["device"]["device_id"].as_str()),
        (StatusCode::OK, Some("robot-b"))
    );
    // A report body cannot name another device.
    let mut forged = serde_json::to_value(report_body("b-2", rid, ReportStatus::Success)).unwrap();
    forged["device_id"] = json!("robot-a");
    let (s, _) = call(
        &c,
        &server,
        Method::POST,
        "/api/device/report",
        Some(&b),
        Some(forged),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let a_state = admin_get(&c, &server, "/api/devices/robot-a").await;
    assert!(a_state["reports"].as_array().unwrap().is_empty());
    // Devices cannot use admin endpoints; admins are not devices (every route of each kind, from the table).
    let rid_text = rid.to_string();
    let vars = [
        ("bundle_id", bundle_id.as_str()),
        ("rollout_id", rid_text.as_str()),
        ("device_id", "robot-a"),
        ("name", "night"),
        ("alert_id", "0000000000000000"),
        ("token_id", "0000000000000000"),
    ];
    for route in routes_with(|auth| {
        matches!(
            auth,
            Auth::Viewer | Auth::Operator | Auth::Admin | Auth::Scrape
        )
    }) {
        let (method, path) = (method_of(route), concrete(route.doc.path, &vars));
        let (s, body) = call(&c, &server, method.clone(), &path, Some(&a), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }
    for route in routes_with(|auth| auth == Auth::Device) {
        let (method, path) = (method_of(route), concrete(route.doc.path, &vars));
        let body = Some(json!({"compatible": COMPATIBLE}));
        let (s, body) = call(&c, &server, method.clone(), &path, Some(ADMIN), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }

    // No token / bad token: 401 on every route that needs a token (writes and reads), even with a good body.
    let forged_device = format!("ota1.{}", "0".repeat(64));
    for token in [None, Some("wrong-token"), Some(forged_device.as_str())] {
        for route in routes_with(Auth::needs_token) {
            let (method, path) = (method_of(route), concrete(route.doc.path, &vars));
            let body = match route.doc.request {
                Some("PollRequest") => Some(json!({"compatible": COMPATIBLE})),
                Some("ReportRequest") => Some(json!({"report_id": "x", "status": "success"})),
                Some("CreateRolloutRequest") => Some(json!({"bundle_id": bundle_id})),
                _ => None,
            };
            let (s, body) = call(&c, &server, method.clone(), &path, token, body).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {body}"
            );
            assert!(body["error"].is_string());
        }
    }

    // Deleting a device revokes its token; it may then enroll again with a new request id.
    let (s, _) = (
        c.delete(server.url("/api/devices/robot-b"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(
        &c,
        &server,
        Method::POST,
        "/api/device/poll",
        Some(&b),
        Some(json!({"compatible": COMPATIBLE})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut again = enroll_request("robot-b", &[], COMPATIBLE);
    again.request_id = "a-brand-new-request".into();
    let (s, _) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(serde_json::to_value(&again).unwrap()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_idempotent_and_cannot_take_over_a_device() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let req =
        serde_json::to_value(enroll_request("robot-1", &[("site", "w3")], COMPATIBLE)).unwrap();
    let (s1, first) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(req.clone()),
    )
    .await;
    let (s2, second) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(req.clone()),
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        first["token"], second["token"],
        "a retried enrollment returns the same token"
    );
    assert!(first["token"].as_str().unwrap().starts_with("ota1."));
    assert_eq!(
        admin_get(&c, &server, "/api/devices")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut takeover = req.clone();
    takeover["request_id"] = json!("attacker-request-id");
    let (s, body) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(takeover),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("DELETE /api/devices/robot-1"),
        "{body}"
    );
    let mut wrong = req.clone();
    wrong["enrollment_secret"] = json!("not-the-secret");
    let (s, _) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(wrong),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut bad_id = req.clone();
    bad_id["device_id"] = json!("../../etc/passwd");
    let (s, body) = call(
        &c,
        &server,
        Method::POST,
        "/api/devices/enroll",
        None,
        Some(bad_id),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_json_4xx() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.min_poll_interval = std::time::Duration::from_secs(30);
    let server = TestServer::start(s).await;
    let c = client();
    let token = enroll(&c, &server, "robot-1", &[], COMPATIBLE).await;
    let raw = |body: &'static str, ct: &'static str| {
        c.post(server.url("/api/device/poll"))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    for (body, ct, expected) in [
        ("{not json", "application/json", StatusCode::BAD_REQUEST),
        (
            "{\"compatible\": 5}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"compatible\": \"x\", \"current_version\": \"not-semver\"}",
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"compatible\": \"x\"}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let r = raw(body, ct).await.unwrap();
        assert_eq!(r.status(), expected, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let huge = json!({"compatible": COMPATIBLE, "telemetry": {"metrics": {"x": 1.0}}, "booted_slot": "a".repeat(400_000)});
    let device = Some(token.as_str());
    let admin = Some(ADMIN);
    let cases = [
        (
            Method::POST,
            "/api/device/poll",
            device,
            Some(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::GET,
            "/api/no-such-thing",
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/device/poll",
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/api/rollouts/abc",
            admin,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/rollouts/99",
            admin,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/devices/nobody",
            admin,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/bundles/..%2F..%2Fetc/download",
            admin,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/rollouts",
            admin,
            Some(json!({"bundle_id": "f".repeat(64)})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/rollouts",
            admin,
            Some(json!({"bundle_id": "x", "stages": [50, 20]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/device/report",
            device,
            Some(json!({"report_id": "r", "rollout_id": 42, "status": "success"})),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, who, body, expected) in cases {
        let what = format!("{method} {path}");
        let (s, answer) = call(&c, &server, method, path, who, body).await;
        assert_eq!(s, expected, "{what}: {answer}");
    }

    // Polling faster than the configured minimum: 429 with Retry-After.
    let ok = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&token)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let fast = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&token)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait =
        ota_protocol::device::parse_retry_after(fast.headers()["retry-after"].to_str().unwrap())
            .unwrap();
    assert!(wait.as_secs() >= 1 && wait.as_secs() <= 30, "{wait:?}");
    server.stop().await;
}
