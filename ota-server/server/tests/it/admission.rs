//! Robot identity and admission over HTTP: a key per robot proven on a one-time challenge, pending / accepted /
//! rejected, pre-authorised keys, revocation, short-lived tokens, and the rate limit on the fleet secret.

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{enroll_message, ChallengeResponse, EnrollRequest};
use ota_server::admission::AdmissionMode;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn server(mode: AdmissionMode, ttl: u64) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let mut s = settings(dir.path(), &trust(&[&key], 1));
    s.config.admission = mode;
    s.config.device_token_ttl_secs = ttl;
    (TestServer::start(s).await, dir)
}

fn hex_key(key: &SecretKey) -> String {
    hex::encode(key.public_key().to_bytes())
}

/// A signed enrollment of `id` with `key` over a fresh challenge (`secret`: the fleet secret or a wrong one).
async fn signed(
    c: &reqwest::Client,
    s: &TestServer,
    id: &str,
    key: &SecretKey,
    secret: &str,
) -> EnrollRequest {
    let r = c
        .post(s.url("/api/devices/challenge"))
        .json(&json!({ "device_id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let challenge = r.json::<ChallengeResponse>().await.unwrap().challenge;
    let mut req = enroll_request(id, &[], COMPATIBLE);
    req.enrollment_secret = secret.into();
    req.request_id = format!("req-{id}-{}", &challenge[challenge.len() - 8..]);
    let message = enroll_message(id, &hex_key(key), &challenge, &req.request_id);
    req.public_key = Some(hex_key(key));
    req.signature = Some(hex::encode(key.sign(&message).sig));
    req.challenge = Some(challenge);
    req
}

async fn send(
    c: &reqwest::Client,
    s: &TestServer,
    req: &EnrollRequest,
) -> (StatusCode, Value, Option<String>) {
    let r = c
        .post(s.url("/api/devices/enroll"))
        .json(req)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap(), retry)
}

/// Enrolls with a fresh challenge; the status, and the token when there is one.
async fn try_enroll(
    c: &reqwest::Client,
    s: &TestServer,
    id: &str,
    key: &SecretKey,
    secret: &str,
) -> (StatusCode, String) {
    let req = signed(c, s, id, key, secret).await;
    let (status, body, _) = send(c, s, &req).await;
    (
        status,
        body["token"].as_str().unwrap_or_default().to_string(),
    )
}

async fn poll_status(c: &reqwest::Client, s: &TestServer, token: &str) -> StatusCode {
    c.post(s.url("/api/device/poll"))
        .bearer_auth(token)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_robot_gets_a_token_only_once_admitted_and_a_rejected_one_never() {
    let (s, _dir) = server(AdmissionMode::Manual, 3600).await;
    let c = client();
    let robot = SecretKey::generate();
    let req = signed(&c, &s, "r1", &robot, ENROLL).await;
    let (status, body, retry) = send(&c, &s, &req).await;
    assert_eq!(status, StatusCode::TOO_EARLY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("waiting for an operator"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("30"));
    assert!(body.get("token").is_none());
    let listed = admin_get(&c, &s, "/api/admission").await;
    assert_eq!(listed[0]["device_id"], "r1");
    assert_eq!(listed[0]["admission"], "pending");
    assert_eq!(listed[0]["public_key"], hex_key(&robot));
    // Asking again changes nothing until an operator decides.
    assert_eq!(
        try_enroll(&c, &s, "r1", &robot, ENROLL).await.0,
        StatusCode::TOO_EARLY
    );
    let (status, admitted) = admin_post(&c, &s, "/api/devices/r1/admit", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{admitted}");
    assert_eq!(admitted["decided_by"], "admin");
    let (status, token) = try_enroll(&c, &s, "r1", &robot, ENROLL).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(poll_status(&c, &s, &token).await, StatusCode::OK);

    // A rejected robot is refused, with or without the secret.
    let other = SecretKey::generate();
    assert_eq!(
        try_enroll(&c, &s, "r2", &other, ENROLL).await.0,
        StatusCode::TOO_EARLY
    );
    assert_eq!(
        admin_post(&c, &s, "/api/devices/r2/reject", json!({}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        try_enroll(&c, &s, "r2", &other, ENROLL).await.0,
        StatusCode::FORBIDDEN
    );
    // Keyless enrollment with the secret alone is refused under manual admission.
    let (status, body, _) = send(&c, &s, &enroll_request("r3", &[], COMPATIBLE)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        admin_post(&c, &s, "/api/devices/nobody/admit", json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_under_an_enrolled_id_and_a_replayed_enrollment_are_refused() {
    let (s, _dir) = server(AdmissionMode::Auto, 3600).await;
    let c = client();
    let robot = SecretKey::generate();
    let req = signed(&c, &s, "r1", &robot, ENROLL).await;
    let (status, body, _) = send(&c, &s, &req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["token"].as_str().unwrap().to_string();
    // The same signed request again: its challenge was used.
    let (status, body, _) = send(&c, &s, &req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("used already"),
        "{body}"
    );
    // A signature by another key, or over another id, does not verify.
    let mut forged = signed(&c, &s, "r1", &robot, ENROLL).await;
    forged.public_key = Some(hex_key(&SecretKey::generate()));
    assert_eq!(send(&c, &s, &forged).await.0, StatusCode::UNAUTHORIZED);
    // An impostor with its own key and the fleet secret.
    let (status, _) = try_enroll(&c, &s, "r1", &SecretKey::generate(), ENROLL).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Keyless under an id with a key on record.
    assert_eq!(
        send(&c, &s, &enroll_request("r1", &[], COMPATIBLE)).await.0,
        StatusCode::CONFLICT
    );
    // The robot itself renews (a new token; the old one stops working).
    let (status, renewed) = try_enroll(&c, &s, "r1", &robot, "not-the-secret").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(poll_status(&c, &s, &renewed).await, StatusCode::OK);
    assert_eq!(poll_status(&c, &s, &first).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preauthorized_robot_is_accepted_on_first_contact_only_with_its_key() {
    let (s, _dir) = server(AdmissionMode::Manual, 3600).await;
    let c = client();
    let robot = SecretKey::generate();
    let (status, body) = admin_post(
        &c,
        &s,
        "/api/devices/r1/preauthorize",
        json!({ "public_key": robot.public_key().to_pem() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["admission"], "accepted");
    // Another key under that id, even with the fleet secret: refused.
    let (status, _) = try_enroll(&c, &s, "r1", &SecretKey::generate(), ENROLL).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Its own key, without the fleet secret: a token at once.
    let (status, token) = try_enroll(&c, &s, "r1", &robot, "no-fleet-secret-here").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(poll_status(&c, &s, &token).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_robot_loses_its_token_at_once_and_gets_no_new_one() {
    let (s, _dir) = server(AdmissionMode::Auto, 3600).await;
    let c = client();
    let robot = SecretKey::generate();
    let (status, token) = try_enroll(&c, &s, "r1", &robot, ENROLL).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(poll_status(&c, &s, &token).await, StatusCode::OK);
    let (status, body) = admin_post(&c, &s, "/api/devices/r1/reject", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(poll_status(&c, &s, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        try_enroll(&c, &s, "r1", &robot, ENROLL).await.0,
        StatusCode::FORBIDDEN
    );
    // Also after a restart of the server (the revocation is stored).
    let dir = s.data_dir.clone();
    drop(s);
    let mut again = settings(&dir, &trust(&[&SecretKey::generate()], 1));
    again.config.admission = AdmissionMode::Auto;
    let s = TestServer::start(again).await;
    assert_eq!(poll_status(&c, &s, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_401_and_the_robot_renews_it_with_its_key() {
    // A zero lifetime: every token is expired when first used (no waiting needed).
    let (s, _dir) = server(AdmissionMode::Auto, 0).await;
    let c = client();
    let robot = SecretKey::generate();
    let (status, token) = try_enroll(&c, &s, "r1", &robot, ENROLL).await;
    assert_eq!(status, StatusCode::OK);
    let r = c
        .post(s.url("/api/device/poll"))
        .bearer_auth(&token)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("expired"));
    let (status, renewed) = try_enroll(&c, &s, "r1", &robot, "no-fleet-secret-here").await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(renewed, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_secret_alone_floods_into_429() {
    let (s, _dir) = server(AdmissionMode::Manual, 3600).await;
    let c = client();
    let burst = ota_server::admission::ASK_LIMIT.burst as usize;
    let mut statuses = Vec::new();
    // One more request is earned every 2 s: ten more in a row cannot all pass.
    for i in 0..burst + 10 {
        let req = signed(
            &c,
            &s,
            &format!("flood-{i}"),
            &SecretKey::generate(),
            ENROLL,
        )
        .await;
        let (status, _, retry) = send(&c, &s, &req).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(status);
    }
    assert!(
        statuses[..burst]
            .iter()
            .all(|s| *s == StatusCode::TOO_EARLY),
        "{statuses:?}"
    );
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 8, "{statuses:?}");
    // Only the robots let through became identities; a wrong secret asks nothing.
    let asked = admin_get(&c, &s, "/api/admission")
        .await
        .as_array()
        .unwrap()
        .len();
    assert_eq!(asked, statuses.len() - limited);
    let (status, _) = try_enroll(
        &c,
        &s,
        "sneaky",
        &SecretKey::generate(),
        "wrong-secret-0123456",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
