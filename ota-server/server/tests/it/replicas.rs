//! Three `ota-server serve` replicas on one PostgreSQL behind haproxy (health-checked on `/healthz`), with
//! simulated robots polling and reporting through the balancer while a staged rollout runs; one replica is
//! killed (SIGKILL) and another restarted mid-rollout. Every robot finishes, every report a robot got a 2xx for is
//! in the database, no stage starts twice, and a dashboard on one replica sees what was done through another.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::client::{ApiClient, ClientOptions, ErrorKind};
use ota_protocol::device::{PollRequest, ReportRequest, ReportStatus};
use ota_protocol::fleet::DeviceLabels;
use serde_json::Value;

use crate::common::{bundle, enroll_request, poll_body, ADMIN, COMPATIBLE, ENROLL};

const ROBOTS: usize = 24;
const DEADLINE: Duration = Duration::from_secs(45);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(base: &str, token: &str) -> ApiClient {
    let mut o = ClientOptions::new(base.to_string());
    o.token = Some(token.to_string());
    o.timeout = Duration::from_secs(5);
    ApiClient::new(&o).unwrap()
}

/// One `ota-server serve` on a fixed port (so a restart comes back where haproxy looks for it).
struct Replica {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, index: usize, db: &str, trust: &Path) -> Replica {
        let port = free_port();
        let data = dir.join(format!("replica-{index}"));
        let args = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data.display().to_string(),
            "--database",
            db,
            "--trust-root",
            &trust.display().to_string(),
            "--admin-token",
            ADMIN,
            "--enrollment-secret",
            ENROLL,
            "--admission",
            "auto",
            "--guard-interval-ms",
            "200",
        ]
        .map(String::from)
        .to_vec();
        let mut replica = Replica {
            child: None,
            port,
            args,
            log: dir.join(format!("replica-{index}.log")),
        };
        replica.spawn();
        replica
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ota-server"))
            .args(&self.args)
            .env_remove("OTA_SERVER_CONFIG")
            .env_remove("OTA_DATABASE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("ota-server listening on ") => break,
                Some(Ok(_)) => {}
                _ => panic!("replica did not start:\n{}", self.log_text()),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

/// haproxy in the foreground, round robin over the replicas, each health-checked every 100 ms.
struct Balancer(Child, u16);

impl Balancer {
    fn start(dir: &Path, replicas: &[Replica]) -> Balancer {
        let port = free_port();
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} 127.0.0.1:{} check\n", r.port))
            .collect();
        let config = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 10s\n\
             \x20 retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n\
             \x20 http-check expect status 200\n  default-server inter 100ms fall 1 rise 2\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy refused its config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .unwrap();
        Balancer(child, port)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.1)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dashboard client on one replica: every event's name and data, as they come.
fn dashboard(base: &str) -> Arc<Mutex<Vec<(String, Value)>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let response = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{base}{}", ota_protocol::paths::EVENTS))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    let sink = events.clone();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if let Ok(value) = serde_json::from_str(data.trim()) {
                    sink.lock().unwrap().push((name.clone(), value));
                }
            }
        }
    });
    events
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the robots' threads however the test ends: a failed assertion must not leave them polling.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A simulated robot through the balancer: enrolls, polls, and on an offer reports downloading and success,
/// then runs the new version. Returns the report ids it got a 2xx for.
fn robot(base: String, id: String, stop: Arc<AtomicBool>) -> (bool, Vec<String>) {
    let enroll = || loop {
        let anonymous = client(&base, "-");
        match anonymous.enroll(&enroll_request(&id, &[], COMPATIBLE)) {
            Ok(r) => return r.token,
            Err(_) if !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{id} cannot enroll: {e}"),
        }
    };
    let mut api = client(&base, &enroll());
    let mut version = "1.0.0".to_string();
    let mut acked = Vec::new();
    let mut serial = 0;
    let mut pending: Vec<ReportRequest> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(report) = pending.first() {
            match api.report(report) {
                Ok(_) => {
                    acked.push(report.report_id.clone());
                    if report.status == ReportStatus::Success {
                        version = "2.0.0".into();
                    }
                    pending.remove(0);
                }
                Err(e) if e.kind == ErrorKind::Reauthenticate => api = client(&base, &enroll()),
                Err(e) if e.kind == ErrorKind::Retry => {}
                Err(e) => panic!("{id}: report refused: {e}"),
            }
            continue;
        }
        let body: PollRequest = poll_body(&version, COMPATIBLE);
        match api.poll(&body) {
            Ok(answer) => {
                if version == "2.0.0" {
                    return (true, acked);
                }
                if let Some(offer) = answer.update {
                    for status in [ReportStatus::Downloading, ReportStatus::Success] {
                        serial += 1;
                        pending.push(ReportRequest {
                            report_id: format!("{id}-{serial}"),
                            rollout_id: Some(offer.rollout_id),
                            version: Some(offer.version.clone()),
                            manifest_digest: Some(offer.manifest_digest.clone()),
                            status,
                            progress_percent: None,
                            error: None,
                            log_tail: None,
                            reason: None,
                        });
                    }
                }
            }
            Err(e) if e.kind == ErrorKind::Reauthenticate => api = client(&base, &enroll()),
            Err(e) if e.kind == ErrorKind::Retry => {}
            Err(e) => panic!("{id}: poll refused: {e}"),
        }
    }
    (false, acked)
}

#[test]
fn three_replicas_behind_haproxy_finish_a_rollout_while_one_dies_and_one_restarts() {
    if !ota_testkit::tools::require("haproxy") {
        return;
    }
    let Some(db) = ota_testkit::postgres::fresh_database() else {
        return;
    };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = SecretKey::generate();
    let trust = dir.join("trust.json");
    let root = TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    std::fs::write(&trust, SignedTrustRoot::new(root).to_json_pretty()).unwrap();
    // One at a time, so the first creates the schema.
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(dir, i, db.url(), &trust))
        .collect();
    let lb = Balancer::start(dir, &replicas);
    let base = lb.base();
    let admin = client(&base, ADMIN);
    let mut last = None;
    wait_for("haproxy to see the replicas", || {
        last = admin.bundles().err();
        if let Some(e) = &last {
            eprintln!(
                "{e}\n{}",
                std::fs::read_to_string(dir.join("replica-0.log")).unwrap_or_default()
            );
        }
        last.is_none()
    });
    let on_two = dashboard(&replicas[2].base());

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_robots = StopOnDrop(stop.clone());
    let robots: Vec<_> = (0..ROBOTS)
        .map(|i| {
            let (base, id, stop) = (base.clone(), format!("robot-{i:02}"), stop.clone());
            std::thread::spawn(move || robot(base, id, stop))
        })
        .collect();
    wait_for("every robot to enroll", || {
        admin.devices().is_ok_and(|d| d.len() == ROBOTS)
    });

    // A change made through replica 0 reaches the dashboard of replica 2.
    let labels = DeviceLabels {
        tags: BTreeMap::from([("site".to_string(), "north".to_string())]),
        group: None,
    };
    client(&replicas[0].base(), ADMIN)
        .set_labels("robot-00", &labels)
        .unwrap();
    wait_for("replica 2's dashboard to hear of the relabel", || {
        on_two.lock().unwrap().iter().any(|(name, v)| {
            name == "device_updated"
                && v["device_id"] == "robot-00"
                && v["labels"]["site"] == "north"
        })
    });

    let published = admin
        .publish_bytes(bundle(&[&key], "2.0.0", COMPATIBLE))
        .unwrap();
    let rollout = admin
        .create_rollout(&CreateRolloutRequest {
            bundle_id: published.bundle_id.clone(),
            stages: Some(vec![10, 40, 100]),
            failure_threshold: Some(1.0),
            ..CreateRolloutRequest::default()
        })
        .unwrap();
    let id = rollout.rollout_id;

    // Mid-rollout: one replica dies, another restarts.
    wait_for("the rollout's second stage", || {
        admin
            .rollout(id)
            .is_ok_and(|r| r.rollout.current_stage >= 1)
    });
    let before = admin.rollout(id).unwrap().rollout.counts.succeeded;
    assert!(
        before < ROBOTS as u64,
        "the rollout finished before the replicas were disturbed"
    );
    replicas[0].signal("-KILL");
    replicas[1].signal("-TERM");
    replicas[1].spawn();

    let until = Instant::now() + DEADLINE;
    while robots.iter().any(|r| !r.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(bool, Vec<String>)> = robots.into_iter().map(|r| r.join().unwrap()).collect();
    let logs = || {
        replicas
            .iter()
            .map(|r| r.log_text())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let unfinished: Vec<usize> = (0..ROBOTS).filter(|&i| !results[i].0).collect();
    assert!(
        unfinished.is_empty(),
        "robots {unfinished:?} did not finish:\n{}",
        logs()
    );

    // No acknowledged report is lost.
    let admin = client(&replicas[2].base(), ADMIN);
    for (i, (_, acked)) in results.iter().enumerate() {
        let stored: BTreeSet<String> = admin
            .device(&format!("robot-{i:02}"))
            .unwrap()
            .reports
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        for report in acked {
            assert!(
                stored.contains(report),
                "acknowledged report {report} is not stored"
            );
        }
    }
    let detail = admin.rollout(id).unwrap();
    assert_eq!(detail.rollout.current_stage, 2);
    assert_eq!(detail.rollout.counts.succeeded, ROBOTS as u64);

    // No stage started twice: each stage index was entered at one instant, whoever announced it.
    let events = on_two.lock().unwrap().clone();
    let mut starts: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (name, v) in &events {
        if name == "rollout_updated" && v["rollout_id"] == id {
            let stage = v["current_stage"].as_u64().unwrap();
            let at = v["stage_started_at"].as_u64().unwrap_or_default();
            starts.entry(stage).or_default().insert(at);
        }
    }
    assert!(
        starts.contains_key(&2),
        "replica 2 heard the last stage start: {starts:?}"
    );
    assert!(
        starts.values().all(|at| at.len() == 1),
        "a stage started more than once: {starts:?}\n{}",
        logs()
    );
    eprintln!(
        "replicas test: {before} of {ROBOTS} robots updated when replica 0 was killed; stage starts seen by \
         replica 2: {starts:?}; {:?}",
        started.elapsed()
    );
}

/// Runs a blocking client call off the test's runtime.
async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Two servers with their own memory on one database and no change feed between them (the worst case of a late
/// notice): the stale one's decision loses its compare-and-set and is taken again on the stored row, so an
/// aborted rollout stays aborted instead of being paused back to life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_stale_copy_is_taken_again_on_the_stored_row() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let trust = TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    let a = crate::common::TestServer::start(crate::common::settings(tmp.path(), &trust)).await;
    let (base_a, bundle_bytes) = (a.base.clone(), bundle(&[&key], "2.0.0", COMPATIBLE));
    let id = off(move || {
        let admin = client(&base_a, ADMIN);
        admin
            .enroll(&enroll_request("robot-1", &[], COMPATIBLE))
            .unwrap();
        let published = admin.publish_bytes(bundle_bytes).unwrap();
        admin
            .create_rollout(&CreateRolloutRequest {
                bundle_id: published.bundle_id,
                ..CreateRolloutRequest::default()
            })
            .unwrap()
            .rollout_id
    })
    .await;
    // B loads the rollout while it is active; A then aborts it.
    let b = crate::common::TestServer::start(crate::common::settings(tmp.path(), &trust)).await;
    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let (aborted, paused, stored) = off(move || {
        let aborted = client(&base_a, ADMIN).rollout_action(id, "abort").unwrap();
        let paused = client(&base_b, ADMIN).rollout_action(id, "pause");
        let stored = client(&base_b, ADMIN).rollout(id).unwrap();
        (aborted, paused, stored)
    })
    .await;
    assert_eq!(aborted.state.as_str(), "aborted");
    let err = paused.expect_err("B's pause decided on its stale copy must not win");
    assert_eq!(err.status, Some(409), "{err}");
    assert!(err.message.contains("aborted"), "{err}");
    assert_eq!(
        stored.rollout.state.as_str(),
        "aborted",
        "B reloaded the stored row"
    );
    b.stop().await;
    a.stop().await;
}

/// A rollout targets what the database holds: robots enrolled through another server a moment ago (whose notices
/// have not arrived; here there is no feed at all) are in its first stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_targets_robots_enrolled_through_another_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let trust = TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    let a = crate::common::TestServer::start(crate::common::settings(tmp.path(), &trust)).await;
    let b = crate::common::TestServer::start(crate::common::settings(tmp.path(), &trust)).await;
    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let bundle_bytes = bundle(&[&key], "2.0.0", COMPATIBLE);
    let detail = off(move || {
        let admin_a = client(&base_a, ADMIN);
        for i in 0..5 {
            admin_a
                .enroll(&enroll_request(&format!("robot-{i}"), &[], COMPATIBLE))
                .unwrap();
        }
        let admin_b = client(&base_b, ADMIN);
        let published = admin_b.publish_bytes(bundle_bytes).unwrap();
        let id = admin_b
            .create_rollout(&CreateRolloutRequest {
                bundle_id: published.bundle_id,
                stages: Some(vec![100]),
                ..CreateRolloutRequest::default()
            })
            .unwrap()
            .rollout_id;
        admin_b.rollout(id).unwrap()
    })
    .await;
    assert_eq!(detail.devices.len(), 5, "{:?}", detail.devices);
    b.stop().await;
    a.stop().await;
}

/// Whether a server holds the lease, from its metrics.
async fn holds_lease(c: &reqwest::Client, s: &crate::common::TestServer) -> bool {
    let text = c
        .get(s.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().any(|l| l == "ota_lease_held 1")
}

/// Two replicas on one PostgreSQL: every robot polls and reports through the one that does NOT hold the lease,
/// so only the stored polls tell the other one (which judges the guards) that the updated robots got slow. It
/// pauses the rollout anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_holding_the_lease_judges_guards_on_polls_taken_by_another() {
    use crate::common::{admin_get, admin_post, client, enroll, publish, report, report_body};
    let Some(db) = crate::common::Database::postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let trust = TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let mut cfg = db.settings(&tmp.path().join(name), &trust);
        cfg.config.guard_interval = Duration::from_millis(100);
        servers.push(crate::common::TestServer::start(cfg).await);
    }
    let c = client();
    let mut leader = None;
    for _ in 0..200 {
        let held = [
            holds_lease(&c, &servers[0]).await,
            holds_lease(&c, &servers[1]).await,
        ];
        if held[0] != held[1] {
            leader = Some(if held[0] { 0 } else { 1 });
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.expect("exactly one replica holds the lease");
    let (lead, other) = (&servers[leader], &servers[1 - leader]);

    let (status, published) = publish(&c, lead, bundle(&[&key], "2.0.0", COMPATIBLE)).await;
    assert!(status.is_success(), "{published}");
    let mut robots = Vec::new();
    for i in 0..2 {
        let id = format!("robot-{i}");
        let token = enroll(&c, other, &id, &[], COMPATIBLE).await;
        crate::common::poll_with(&c, other, &token, "1.0.0", 40.0).await;
        robots.push((id, token));
    }
    let (status, info) = admin_post(
        &c,
        lead,
        "/api/rollouts",
        serde_json::json!({
            "bundle_id": published["bundle_id"], "stages": [100], "watch_secs": 600,
            "guards": [{"metric": "inference_latency_ms", "stat": "mean", "max": 100.0, "min_robots": 2}]
        }),
    )
    .await;
    assert!(status.is_success(), "{info}");
    let rid = info["rollout_id"].as_u64().unwrap();
    for (id, token) in &robots {
        // As a robot does: it reports on the rollout once the replica it polls offers it.
        let mut offered = false;
        for _ in 0..200 {
            let r = c
                .post(other.url("/api/device/poll"))
                .bearer_auth(token)
                .json(&poll_body("1.0.0", COMPATIBLE))
                .send()
                .await
                .unwrap();
            let answer: ota_protocol::device::PollResponse = r.json().await.unwrap();
            if answer.update.is_some_and(|u| u.rollout_id == rid) {
                offered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(offered, "{id} was never offered rollout {rid}");
        for (n, st) in [ReportStatus::Installing, ReportStatus::Success]
            .into_iter()
            .enumerate()
        {
            let (status, body) = report(
                &c,
                other,
                token,
                &report_body(&format!("{id}-{n}"), rid, st),
            )
            .await;
            assert!(status.is_success(), "{body}");
        }
        crate::common::poll_with(&c, other, token, "2.0.0", 9_999.0).await;
    }
    let mut state = Value::Null;
    for _ in 0..200 {
        state = admin_get(&c, lead, &format!("/api/rollouts/{rid}")).await["rollout"].clone();
        if state["state"] == "paused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "paused", "{state}");
    assert!(
        state["pause_reason"]
            .as_str()
            .is_some_and(|r| r.contains("inference_latency_ms")),
        "{state}"
    );
    for s in servers {
        s.stop().await;
    }
}
