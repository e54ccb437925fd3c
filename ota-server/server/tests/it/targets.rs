//! Aim, time and undo over real HTTP: operator labels and groups, target filters with late joiners, stage
//! deadlines, `next` and `retry`, maintenance windows as `install_allowed`, a scheduled start, revert and
//! confirmation flags on offers, and what waiting robots say.

use std::time::Duration;

use crate::common::*;
use ota_keys::SecretKey;
use ota_protocol::device::{PollResponse, ReportStatus::*};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Fleet {
    server: TestServer,
    c: reqwest::Client,
    bundle_id: String,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let key = SecretKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
        let c = client();
        let (status, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
        assert_eq!(status, StatusCode::CREATED, "{published}");
        Fleet {
            bundle_id: published["bundle_id"].as_str().unwrap().to_string(),
            server,
            c,
            _dir: dir,
        }
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .c
            .put(self.server.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    async fn enroll(&self, id: &str) -> String {
        enroll(&self.c, &self.server, id, &[("site", "w3")], COMPATIBLE).await
    }

    async fn poll(&self, token: &str, version: &str) -> PollResponse {
        poll(&self.c, &self.server, token, version).await
    }

    async fn create(&self, body: Value) -> Value {
        let mut body = body;
        body["bundle_id"] = json!(self.bundle_id);
        let (status, info) = admin_post(&self.c, &self.server, "/api/rollouts", body).await;
        assert_eq!(status, StatusCode::CREATED, "{info}");
        info
    }

    async fn rollout(&self, id: u64) -> Value {
        admin_get(&self.c, &self.server, &format!("/api/rollouts/{id}")).await
    }

    /// Waits (up to 10 s) until the rollout's detail satisfies `f` (the rollout tick runs once a second).
    async fn wait_rollout(&self, id: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let detail = self.rollout(id).await;
            if f(&detail) {
                return detail;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}: {}", self.rollout(id).await);
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn member<'a>(detail: &'a Value, device: &str) -> Option<&'a Value> {
    detail["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_filter_offers_and_a_late_joiner_waits_for_the_next_stage() {
    let f = Fleet::start().await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let id = format!("robot-{i}");
        tokens.push(f.enroll(&id).await);
        let (status, info) = f
            .put(
                &format!("/api/devices/{id}/labels"),
                json!({"tags": {"site": "w9"}, "group": if i < 2 { "night" } else { "day" }}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["labels"]["site"], "w9");
        assert_eq!(info["tags"]["site"], "w3", "reported tags stay as reported");
    }
    let (status, _) = f
        .put("/api/devices/ghost/labels", json!({"group": "night"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let groups = admin_get(&f.c, &f.server, "/api/groups").await;
    assert_eq!(
        groups,
        json!([{"name": "day", "settings": {"schedule": {"windows": []}}, "devices": 2},
                              {"name": "night", "settings": {"schedule": {"windows": []}}, "devices": 2}])
    );

    // Operator labels win over the reported site=w3.
    let info = f
        .create(json!({"stages": [50, 100], "filter": {"group": "night", "tags": {"site": "w9"}}}))
        .await;
    let id = info["rollout_id"].as_u64().unwrap();
    assert_eq!(info["counts"]["targeted"], 2);
    assert_eq!(info["filter"]["group"], "night");
    let mut offered = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if f.poll(t, "1.0.0").await.update.is_some() {
            offered.push(i);
        }
    }
    assert_eq!(offered.len(), 1, "stage 1 of 2 night robots: {offered:?}");
    assert!(offered[0] < 2, "a day robot got an offer");

    // robot-4 enrolls and joins the group while stage 0 runs: it joins stage 1, not the current one.
    let late = f.enroll("robot-4").await;
    f.put(
        "/api/devices/robot-4/labels",
        json!({"tags": {"site": "w9"}, "group": "night"}),
    )
    .await;
    let detail = f
        .wait_rollout(id, "robot-4 to join", |d| member(d, "robot-4").is_some())
        .await;
    assert_eq!(detail["rollout"]["counts"]["targeted"], 3);
    assert_eq!(detail["rollout"]["current_stage"], 0);
    assert!(f.poll(&late, "1.0.0").await.update.is_none());

    // A robot relabelled out of the group is no longer offered, even as a member.
    let first = offered[0];
    f.put(
        &format!("/api/devices/robot-{first}/labels"),
        json!({"tags": {"site": "w9"}, "group": "day"}),
    )
    .await;
    assert!(f.poll(&tokens[first], "1.0.0").await.update.is_none());

    // `next` starts stage 1 at once: the late joiner is offered now.
    let (status, next) = admin_post(
        &f.c,
        &f.server,
        &format!("/api/rollouts/{id}/next"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["current_stage"], 1);
    assert!(f.poll(&late, "1.0.0").await.update.is_some());
    let (status, refused) = admin_post(
        &f.c,
        &f.server,
        &format!("/api/rollouts/{id}/next"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        refused["error"].as_str().unwrap().contains("last stage"),
        "{refused}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_moves_past_a_silent_robot_and_retry_offers_failures_again() {
    let f = Fleet::start().await;
    let tokens = [f.enroll("a").await, f.enroll("b").await];
    let info = f
        .create(
            json!({"stages": [50, 100], "rules": {"deadline_secs": 2}, "failure_threshold": 1.0}),
        )
        .await;
    let id = info["rollout_id"].as_u64().unwrap();
    assert_eq!(info["rules"]["deadline_secs"], 2);
    let first = if f.poll(&tokens[0], "1.0.0").await.update.is_some() {
        0
    } else {
        1
    };
    // The offered robot never answers: after the deadline stage 2 starts and it counts as timed out.
    let detail = f
        .wait_rollout(id, "the deadline", |d| d["rollout"]["current_stage"] == 1)
        .await;
    assert_eq!(detail["rollout"]["counts"]["timed_out"], 1);
    let silent = member(&detail, ["a", "b"][first]).unwrap();
    assert_eq!(silent["timed_out"], true);
    let other = &tokens[1 - first];
    assert!(f.poll(other, "1.0.0").await.update.is_some());
    let (status, _) = report(&f.c, &f.server, other, &report_body("r1", id, Failure)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        f.poll(other, "1.0.0").await.update.is_none(),
        "a failed robot is not offered again by itself"
    );

    let (status, retried) = admin_post(
        &f.c,
        &f.server,
        &format!("/api/rollouts/{id}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["counts"]["failed"], 0);
    assert!(f.poll(other, "1.0.0").await.update.is_some());
    let detail = f.rollout(id).await;
    assert_eq!(
        member(&detail, ["a", "b"][1 - first]).unwrap()["status"],
        "pending"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_start_times_and_offer_flags() {
    let f = Fleet::start().await;
    let night = f.enroll("night-1").await;
    let free = f.enroll("free-1").await;
    // A one-hour window two hours from now (UTC): closed now, whatever the time of day.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = (now / 3600 + 2) % 24;
    let window =
        json!({"start": format!("{hour:02}:00"), "end": format!("{:02}:00", (hour + 1) % 24)});
    let (status, group) = f
        .put(
            "/api/groups/night",
            json!({"schedule": {"windows": [window], "timezone": "UTC"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    let (status, bad) = f
        .put(
            "/api/groups/night",
            json!({"schedule": {"windows": [], "timezone": "Mars/Base"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    f.put("/api/devices/night-1/labels", json!({"group": "night"}))
        .await;

    let info = f
        .create(json!({"stages": [100], "require_confirmation": true}))
        .await;
    assert_eq!(info["require_confirmation"], true);
    let offer = f
        .poll(&night, "1.0.0")
        .await
        .update
        .expect("offered outside the window");
    assert!(!offer.install_allowed, "the group's window is closed");
    assert!(offer.require_confirmation && !offer.revert);
    let offer = f.poll(&free, "1.0.0").await.update.unwrap();
    assert!(offer.install_allowed, "no group, no schedule: any time");

    // A rollout's own window overrides the group's; a later start offers nothing yet.
    f.create(json!({"stages": [100], "start_at": now + 3600}))
        .await;
    let offer = f.poll(&free, "1.0.0").await.update.unwrap();
    assert_eq!(
        offer.rollout_id,
        info["rollout_id"].as_u64().unwrap(),
        "not started yet"
    );
    let own = f
        .create(
            json!({"stages": [100], "schedule": {"windows": [{"start": "00:00", "end": "24:00"}]}}),
        )
        .await;
    let offer = f.poll(&night, "1.0.0").await.update.unwrap();
    assert_eq!(offer.rollout_id, own["rollout_id"].as_u64().unwrap());
    assert!(offer.install_allowed);
    let (status, bad) = admin_post(
        &f.c,
        &f.server,
        "/api/rollouts",
        json!({"bundle_id": f.bundle_id, "schedule": {"windows": [{"start": "25:00", "end": "26:00"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_targets_robots_on_a_newer_version_and_waiting_robots_are_shown() {
    let f = Fleet::start().await;
    let token = f.enroll("r1").await;
    f.poll(&token, "3.0.0").await;
    let info = f.create(json!({"stages": [100], "revert": true})).await;
    let id = info["rollout_id"].as_u64().unwrap();
    assert_eq!(info["revert"], true);
    assert_eq!(info["counts"]["targeted"], 1);

    let mut body = poll_body("3.0.0", COMPATIBLE);
    body.waiting = Some(
        serde_json::from_value(
            json!({"phase": "install", "reason": "on a mission", "for_secs": 12}),
        )
        .unwrap(),
    );
    body.security_floor = Some("1.5.0".parse().unwrap());
    let r =
        f.c.post(f.server.url("/api/device/poll"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
    let answer: PollResponse = r.json().await.unwrap();
    let offer = answer.update.unwrap();
    assert!(offer.revert);
    assert_eq!(offer.version.to_string(), "2.0.0");

    let device = admin_get(&f.c, &f.server, "/api/devices/r1").await;
    assert_eq!(device["device"]["waiting"]["reason"], "on a mission");
    assert_eq!(device["device"]["security_floor"], "1.5.0");
    let detail = f.rollout(id).await;
    assert_eq!(detail["rollout"]["counts"]["waiting"], 1);
    assert_eq!(
        member(&detail, "r1").unwrap()["waiting"]["phase"],
        "install"
    );
    let list = admin_get(&f.c, &f.server, "/api/rollouts").await;
    assert_eq!(list[0]["counts"]["waiting"], 1);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_groups_and_rules_survive_a_restart() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let trust_root = trust(&[&key], 1);
    let server = TestServer::start(settings(dir.path(), &trust_root)).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let token = enroll(&c, &server, "r1", &[], COMPATIBLE).await;
    poll(&c, &server, &token, "1.0.0").await;
    let put = |path: &str, body: Value| {
        c.put(server.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    assert!(put(
        "/api/devices/r1/labels",
        json!({"tags": {"row": "7"}, "group": "g"})
    )
    .await
    .unwrap()
    .status()
    .is_success());
    assert!(put("/api/groups/g", json!({"schedule": {"windows": [{"days": ["sat"], "start": "22:00", "end": "06:00"}], "timezone": "Europe/Berlin"}})).await.unwrap().status().is_success());
    let (status, info) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": published["bundle_id"], "stages": [100], "filter": {"group": "g", "versions": ">=1.0, <2"},
               "rules": {"soak_secs": 60, "deadline_secs": 600}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["counts"]["targeted"], 1);
    let id = info["rollout_id"].as_u64().unwrap();
    // A robot that joins later keeps its place (and its join stage) across the restart; so does what it said.
    let late = enroll(&c, &server, "r2", &[], COMPATIBLE).await;
    let mut body = poll_body("1.1.0", COMPATIBLE);
    body.waiting =
        Some(serde_json::from_value(json!({"phase": "download", "reason": "charging"})).unwrap());
    c.post(server.url("/api/device/poll"))
        .bearer_auth(&late)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(put("/api/devices/r2/labels", json!({"group": "g"}))
        .await
        .unwrap()
        .status()
        .is_success());
    let mut joined = false;
    for _ in 0..100 {
        let detail = admin_get(&c, &server, &format!("/api/rollouts/{id}")).await;
        if detail["devices"].as_array().unwrap().len() == 2 {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined, "r2 joins the rollout");
    server.stop().await;

    let server = TestServer::start(settings(dir.path(), &trust_root)).await;
    let device = admin_get(&c, &server, "/api/devices/r1").await;
    assert_eq!(device["device"]["labels"]["row"], "7");
    assert_eq!(device["device"]["group"], "g");
    let groups = admin_get(&c, &server, "/api/groups").await;
    assert_eq!(
        groups[0]["settings"]["schedule"]["timezone"],
        "Europe/Berlin"
    );
    let rollouts = admin_get(&c, &server, "/api/rollouts").await;
    assert_eq!(rollouts[0]["filter"]["group"], "g");
    assert_eq!(
        rollouts[0]["rules"],
        json!({"soak_secs": 60, "deadline_secs": 600})
    );
    assert_eq!(rollouts[0]["counts"]["targeted"], 2);
    assert_eq!(
        rollouts[0]["counts"]["offered"], 2,
        "a one-stage rollout takes its late joiner at once"
    );
    let detail = admin_get(&c, &server, &format!("/api/rollouts/{id}")).await;
    assert_eq!(detail["devices"][1]["device_id"], "r2");
    assert_eq!(detail["devices"][1]["rank"], 1);
    assert_eq!(detail["devices"][1]["waiting"]["reason"], "charging");
    let late = poll(
        &c,
        &server,
        &enroll(&c, &server, "r2", &[], COMPATIBLE).await,
        "1.1.0",
    )
    .await;
    assert!(late.update.is_some());
    server.stop().await;
}
