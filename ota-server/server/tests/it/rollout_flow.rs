//! Publish → rollout → devices enroll and poll → offers follow stages → reports advance stages → failures past
//! the threshold pause → resume, abort. Real server on 127.0.0.1:0, real HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use ota_keys::SecretKey;
use ota_protocol::device::ReportStatus::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_rollout_advances_pauses_resumes_and_aborts() {
    staged_rollout(Database::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_rollout_on_postgres() {
    if let Some(db) = Database::postgres() {
        staged_rollout(db).await;
    }
}

async fn staged_rollout(db: Database) {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(db.settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();

    // Dashboard event stream, read in the background.
    let events = c
        .get(server.url("/api/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
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

    let bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let (status, published) = publish(&c, &server, bytes.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let bundle_id = published["bundle_id"].as_str().unwrap().to_string();
    assert_eq!(published["version"], "2.0.0");
    assert_eq!(published["deduplicated"], false);

    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push((
            format!("robot-{i}"),
            enroll(
                &c,
                &server,
                &format!("robot-{i}"),
                &[("site", "w3")],
                COMPATIBLE,
            )
            .await,
        ));
    }
    let outsider = enroll(
        &c,
        &server,
        "robot-elsewhere",
        &[("site", "w9")],
        COMPATIBLE,
    )
    .await;
    let other_hw = enroll(
        &c,
        &server,
        "robot-other-hw",
        &[("site", "w3")],
        "acme-robot-v1",
    )
    .await;
    for (_, t) in &tokens {
        assert!(
            poll(&c, &server, t, "1.0.0").await.update.is_none(),
            "no rollout yet"
        );
    }

    let (status, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": bundle_id, "tags": {"site": "w3"}, "stages": [20, 60, 100], "failure_threshold": 0.25}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rollout}");
    let rid = rollout["rollout_id"].as_u64().unwrap();
    assert_eq!(
        rollout["counts"]["targeted"], 5,
        "tag + compatible selection: {rollout}"
    );
    assert_eq!(rollout["counts"]["offered"], 1);

    // Stage 1: exactly one of the five gets the offer; outsiders never.
    let offered_now = |set: &mut Vec<String>| set.clone();
    let mut offered = Vec::new();
    for (id, t) in &tokens {
        if let Some(offer) = poll(&c, &server, t, "1.0.0").await.update {
            assert_eq!(offer.rollout_id, rid);
            assert_eq!(offer.bundle_id, bundle_id);
            assert_eq!(offer.size, bytes.len() as u64);
            assert_eq!(offer.version.to_string(), "2.0.0");
            assert_eq!(
                offer.manifest_digest,
                published["manifest_digest"].as_str().unwrap()
            );
            offered.push(id.clone());
        }
    }
    assert_eq!(offered.len(), 1, "stage 1 is 20% of 5");
    let r = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&outsider)
        .json(&poll_body("1.0.0", COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert!(r
        .json::<ota_protocol::device::PollResponse>()
        .await
        .unwrap()
        .update
        .is_none());
    let r = c
        .post(server.url("/api/device/poll"))
        .bearer_auth(&other_hw)
        .json(&poll_body("1.0.0", "acme-robot-v1"))
        .send()
        .await
        .unwrap();
    assert!(r
        .json::<ota_protocol::device::PollResponse>()
        .await
        .unwrap()
        .update
        .is_none());

    // The first device downloads in two parts (Range resume) and installs.
    let first = offered_now(&mut offered)[0].clone();
    let token_of = |id: &str| tokens.iter().find(|(d, _)| d == id).unwrap().1.clone();
    let t1 = token_of(&first);
    let url = server.url(&format!("/api/bundles/{bundle_id}/download"));
    let part1 = c
        .get(&url)
        .bearer_auth(&t1)
        .header("range", "bytes=0-9999")
        .send()
        .await
        .unwrap();
    assert_eq!(part1.status(), StatusCode::PARTIAL_CONTENT);
    let part1 = part1.bytes().await.unwrap();
    assert_eq!(part1.len(), 10_000);
    let part2 = c
        .get(&url)
        .bearer_auth(&t1)
        .header("range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(part2.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part2.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10000-{}/{}", bytes.len() - 1, bytes.len())
    );
    let mut whole = part1.to_vec();
    whole.extend_from_slice(&part2.bytes().await.unwrap());
    assert_eq!(whole, bytes, "resumed download is byte-identical");

    for (n, st) in [Downloading, Installing, Rebooting, Success]
        .into_iter()
        .enumerate()
    {
        let (status, body) = report(
            &c,
            &server,
            &t1,
            &report_body(&format!("{first}-{n}"), rid, st),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["duplicate"], false);
    }
    // A retried report is recognised and changes nothing.
    let (status, body) = report(
        &c,
        &server,
        &t1,
        &report_body(&format!("{first}-3"), rid, Success),
    )
    .await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(
        poll(&c, &server, &t1, "2.0.0").await.update.is_none(),
        "already on the version"
    );

    // Stage 2 (60% = 3 devices): two more offers.
    let detail = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await;
    assert_eq!(detail["rollout"]["current_stage"], 1, "{detail}");
    let mut stage2 = Vec::new();
    for (id, t) in &tokens {
        if *id != first && poll(&c, &server, t, "1.0.0").await.update.is_some() {
            stage2.push(id.clone());
        }
    }
    assert_eq!(stage2.len(), 2, "stage 2 adds two devices");
    // One succeeds, one rolls back: 1 bad of 3 offered = 33% > 25% → automatic pause. Each report moves the
    // revision, which is how the console orders copies of a rollout that arrive out of order.
    let revision = |info: &serde_json::Value| info["revision"].as_u64().expect("revision");
    let before =
        revision(&admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await["rollout"]);
    let (s, _) = report(
        &c,
        &server,
        &token_of(&stage2[0]),
        &report_body("a-ok", rid, Success),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let after_success =
        revision(&admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await["rollout"]);
    assert!(after_success > before, "{before} → {after_success}");
    let (s, _) = report(
        &c,
        &server,
        &token_of(&stage2[1]),
        &report_body("b-rb", rid, RolledBack),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let info = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await["rollout"].clone();
    assert_eq!(info["state"], "paused", "{info}");
    assert!(revision(&info) > after_success, "{info}");
    assert!(
        info["pause_reason"]
            .as_str()
            .unwrap()
            .contains("automatic pause"),
        "{info}"
    );
    assert_eq!(info["counts"]["rolled_back"], 1);
    let rest: Vec<String> = tokens
        .iter()
        .map(|(d, _)| d.clone())
        .filter(|d| *d != first && !stage2.contains(d))
        .collect();
    for id in &rest {
        assert!(
            poll(&c, &server, &token_of(id), "1.0.0")
                .await
                .update
                .is_none(),
            "paused offers nothing"
        );
    }

    // The dashboard saw the automatic pause.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: rollout_updated") && seen.contains("\"state\":\"paused\"")) {
        let chunk = tokio::time::timeout_at(deadline, ev_rx.recv())
            .await
            .expect("rollout_updated event")
            .unwrap();
        seen.push_str(&chunk);
    }
    assert!(
        seen.contains("event: report") && seen.contains("event: device_updated"),
        "{seen}"
    );

    // Resume acknowledges the rollback; the stage is finished, so it advances to 100%.
    let (s, info) = admin_post(
        &c,
        &server,
        &format!("/api/rollouts/{rid}/resume"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (info["state"].as_str(), info["current_stage"].as_u64()),
        (Some("active"), Some(2)),
        "{info}"
    );
    assert!(revision(&info) > after_success + 1, "{info}");
    let mut last = BTreeSet::new();
    for id in &rest {
        if poll(&c, &server, &token_of(id), "1.0.0")
            .await
            .update
            .is_some()
        {
            last.insert(id.clone());
        }
    }
    assert_eq!(last.len(), 2, "final stage offers to the remaining devices");
    assert!(
        poll(&c, &server, &token_of(&stage2[1]), "1.0.0")
            .await
            .update
            .is_none(),
        "rolled-back device is not re-offered"
    );

    // Abort: nothing more is offered, and downloads are refused.
    let (s, info) = admin_post(
        &c,
        &server,
        &format!("/api/rollouts/{rid}/abort"),
        json!(null),
    )
    .await;
    assert_eq!(
        (s, info["state"].as_str()),
        (StatusCode::OK, Some("aborted"))
    );
    for id in &rest {
        assert!(poll(&c, &server, &token_of(id), "1.0.0")
            .await
            .update
            .is_none());
    }
    let r = c
        .get(&url)
        .bearer_auth(token_of(&rest[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, body) = admin_post(
        &c,
        &server,
        &format!("/api/rollouts/{rid}/resume"),
        json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    // Inventory reflects polls and reports.
    let devices = admin_get(&c, &server, "/api/devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 7);
    let d = admin_get(&c, &server, &format!("/api/devices/{first}")).await;
    assert_eq!(d["device"]["current_version"], "2.0.0");
    assert_eq!(d["device"]["booted_slot"], "A");
    assert_eq!(d["device"]["tags"]["site"], "w3");
    assert_eq!(
        d["device"]["telemetry"]["metrics"]["inference_latency_ms"],
        41.5
    );
    assert_eq!(d["device"]["last_status"]["status"], "success");
    assert_eq!(
        d["reports"].as_array().unwrap().len(),
        4,
        "history without the duplicate"
    );
    assert_eq!(d["reports"][0]["status"], "success");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reports_need_an_error_and_are_kept_with_the_log_tail() {
    let key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(settings(dir.path(), &trust(&[&key], 1))).await;
    let c = client();
    let (_, published) = publish(&c, &server, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    let token = enroll(&c, &server, "solo", &[], COMPATIBLE).await;
    let (_, rollout) = admin_post(
        &c,
        &server,
        "/api/rollouts",
        json!({"bundle_id": published["bundle_id"], "stages": [100]}),
    )
    .await;
    let rid = rollout["rollout_id"].as_u64().unwrap();
    assert!(poll(&c, &server, &token, "1.0.0").await.update.is_some());
    let mut bad = report_body("f1", rid, Failure);
    bad.error = None;
    let (s, body) = report(&c, &server, &token, &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("'error'"),
        "{body}"
    );
    let (s, _) = report(&c, &server, &token, &report_body("f1", rid, Failure)).await;
    assert_eq!(s, StatusCode::OK);
    let d = admin_get(&c, &server, "/api/devices/solo").await;
    assert_eq!(d["reports"][0]["log_tail"], "line 1\nline 2");
    assert_eq!(
        d["device"]["last_status"]["error"],
        "write failed: no space left on device"
    );
    let info = admin_get(&c, &server, &format!("/api/rollouts/{rid}")).await;
    assert_eq!(info["rollout"]["state"], "paused", "1 of 1 failed: {info}");
    server.stop().await;
}
