//! A revert and the robots it must take back: those that reported success on the release but had not polled
//! with it yet when the revert was created (a success says what a robot runs), and those that come onto the
//! release after a revert completed (membership is continuous, also for a completed rollout).

use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{PollResponse, ReportRequest, ReportStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Site {
    server: TestServer,
    c: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn poll(&self, token: &str, version: &str) -> PollResponse {
        poll(&self.c, &self.server, token, version).await
    }

    async fn publish(&self, key: &SecretKey, version: &str) -> String {
        let (status, b) = publish(&self.c, &self.server, bundle(&[key], version, COMPATIBLE)).await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        b["bundle_id"].as_str().unwrap().to_string()
    }

    async fn create(&self, body: Value) -> u64 {
        let (status, info) = admin_post(&self.c, &self.server, "/api/rollouts", body).await;
        assert_eq!(status, StatusCode::CREATED, "{info}");
        info["rollout_id"].as_u64().unwrap()
    }

    /// Reports `status` on `version` in rollout `rid`.
    async fn report(&self, token: &str, n: &str, rid: u64, version: &str, status: ReportStatus) {
        let body = ReportRequest {
            version: Some(version.parse().unwrap()),
            ..report_body(n, rid, status)
        };
        let (code, answer) = report(&self.c, &self.server, token, &body).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
    }

    async fn rollout(&self, id: u64) -> Value {
        admin_get(&self.c, &self.server, &format!("/api/rollouts/{id}")).await
    }

    /// Polls with `version` until an offer of rollout `rid` comes (the rollout tick runs once a second).
    async fn offered(&self, token: &str, version: &str, rid: u64) -> PollResponse {
        for _ in 0..40 {
            let answer = self.poll(token, version).await;
            if answer.update.as_ref().is_some_and(|u| u.rollout_id == rid) {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no offer of rollout {rid} to a robot on {version}: {}",
            self.rollout(rid).await
        );
    }
}

/// `late`: the robots that report success on 3.0.0 without polling with it before the revert is created.
async fn revert_after_success(prompt: &[&str], late: &[&str]) {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let site = Site {
        server,
        c: client(),
        _dir: dir,
    };
    let release = site.publish(&key, "3.0.0").await;
    let previous = site.publish(&key, "2.0.0").await;
    let mut tokens = Vec::new();
    for id in prompt.iter().chain(late) {
        let token = enroll(&site.c, &site.server, id, &[("site", "w9")], COMPATIBLE).await;
        site.poll(&token, "2.0.0").await;
        tokens.push((*id, token));
    }
    let id = site
        .create(json!({"bundle_id": release, "stages": [100], "filter": {"tags": {"site": "w9"}}}))
        .await;
    for (robot, token) in &tokens {
        site.offered(token, "2.0.0", id).await;
        site.report(
            token,
            &format!("{robot}-up"),
            id,
            "3.0.0",
            ReportStatus::Success,
        )
        .await;
    }
    for (_, token) in &tokens[..prompt.len()] {
        site.poll(token, "3.0.0").await;
    }
    let revert = site
        .create(
            json!({"bundle_id": previous, "stages": [100], "revert": true,
                       "filter": {"tags": {"site": "w9"}}}),
        )
        .await;
    let info = site.rollout(revert).await;
    assert_eq!(
        info["rollout"]["counts"]["targeted"],
        tokens.len(),
        "{info}"
    );
    for (robot, token) in &tokens[..prompt.len()] {
        site.offered(token, "3.0.0", revert).await;
        site.report(
            token,
            &format!("{robot}-back"),
            revert,
            "2.0.0",
            ReportStatus::Success,
        )
        .await;
        site.poll(token, "2.0.0").await;
    }
    let info = site.rollout(revert).await;
    assert_eq!(
        info["rollout"]["state"], "active",
        "it waits for the late robots: {info}"
    );
    // The late robots poll with 3.0.0 now: the revert takes them back too.
    for (robot, token) in &tokens[prompt.len()..] {
        let offer = site.offered(token, "3.0.0", revert).await.update.unwrap();
        assert!(offer.revert, "{robot}");
        assert_eq!(offer.version.to_string(), "2.0.0");
        site.report(
            token,
            &format!("{robot}-back"),
            revert,
            "2.0.0",
            ReportStatus::Success,
        )
        .await;
    }
    let detail = site.rollout(revert).await;
    assert_eq!(detail["rollout"]["state"], "completed", "{detail}");
    assert_eq!(
        detail["rollout"]["counts"]["succeeded"],
        tokens.len(),
        "{detail}"
    );
    site.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_takes_back_a_robot_that_reported_success_before_polling_with_the_release() {
    revert_after_success(&["r1", "r2"], &["r3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_with_no_robot_polled_on_the_release_yet_still_takes_them_back() {
    revert_after_success(&[], &["r1", "r2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_revert_takes_back_a_robot_that_comes_onto_the_release_later() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let site = Site {
        server,
        c: client(),
        _dir: dir,
    };
    site.publish(&key, "3.0.0").await;
    let previous = site.publish(&key, "2.0.0").await;
    let token = enroll(&site.c, &site.server, "r1", &[("site", "w9")], COMPATIBLE).await;
    site.poll(&token, "2.0.0").await;
    // Nobody runs 3.0.0 yet: the revert has no member and completes at once.
    let revert = site
        .create(
            json!({"bundle_id": previous, "stages": [5, 25, 100], "revert": true,
                       "filter": {"tags": {"site": "w9"}}}),
        )
        .await;
    let info = site.rollout(revert).await;
    assert_eq!(info["rollout"]["state"], "completed", "{info}");
    assert_eq!(info["rollout"]["counts"]["targeted"], 0, "{info}");
    // r1 gets 3.0.0 by hand and polls with it: the completed revert takes it back.
    let offer = site.offered(&token, "3.0.0", revert).await.update.unwrap();
    assert!(offer.revert);
    site.report(&token, "r1-back", revert, "2.0.0", ReportStatus::Success)
        .await;
    let detail = site.rollout(revert).await;
    assert_eq!(detail["rollout"]["state"], "completed", "{detail}");
    assert_eq!(detail["rollout"]["counts"]["succeeded"], 1, "{detail}");
    site.server.stop().await;
}

/// A database error while the rollout tick adds a robot does not lose it: the next tick adds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_robot_is_not_lost_when_the_database_refuses_it_once() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let site = Site {
        server,
        c: client(),
        _dir: dir,
    };
    site.publish(&key, "3.0.0").await;
    let previous = site.publish(&key, "2.0.0").await;
    let token = enroll(&site.c, &site.server, "r1", &[("site", "w9")], COMPATIBLE).await;
    site.poll(&token, "2.0.0").await;
    let revert = site
        .create(
            json!({"bundle_id": previous, "stages": [100], "revert": true,
                       "filter": {"tags": {"site": "w9"}}}),
        )
        .await;
    let db = rusqlite::Connection::open(site.server.data_dir.join("ota.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON rollout_devices BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    // The robot comes onto 3.0.0 (one poll: its facts change once); the tick fails to add it meanwhile.
    assert!(site.poll(&token, "3.0.0").await.update.is_none());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let detail = site.rollout(revert).await;
    assert_eq!(detail["rollout"]["counts"]["targeted"], 0, "{detail}");
    db.execute_batch("DROP TRIGGER refuse;").unwrap();
    let offer = site.offered(&token, "3.0.0", revert).await.update.unwrap();
    assert!(offer.revert);
    site.server.stop().await;
}
