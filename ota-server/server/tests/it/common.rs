//! Test helpers: a real server on 127.0.0.1:0 over a temp data dir, bundles built in memory, and a device
//! client speaking the protocol with reqwest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ota_keys::{SecretKey, TrustRoot};
use ota_protocol::device::{
    EnrollRequest, EnrollResponse, PollRequest, PollResponse, ReportRequest, ReportStatus,
};
use ota_server::server::{self, Settings};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";
pub const ENROLL: &str = "enrollment-secret-for-tests-0123";
pub const COMPATIBLE: &str = "acme-robot-v2";

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn settings(data_dir: &Path, trust: &TrustRoot) -> Settings {
    let mut s = Settings::new(data_dir.to_path_buf(), trust.clone());
    s.admin_token = Some(ADMIN.into());
    s.enrollment_secret = Some(ENROLL.into());
    // These tests enroll keyless devices with the fleet secret; `admission` has its own tests.
    s.config.admission = ota_server::admission::AdmissionMode::Auto;
    s
}

/// The database a test runs on, for tests run against each backend: the data dir's SQLite file, or a fresh
/// database on the test kit's PostgreSQL cluster (kept while this lives).
pub struct Database {
    url: Option<String>,
    _postgres: Option<ota_testkit::postgres::PgDatabase>,
}

impl Database {
    pub fn sqlite() -> Database {
        Database {
            url: None,
            _postgres: None,
        }
    }

    /// `None` (after a SKIPPED line; a failure under CI) when PostgreSQL is not installed.
    pub fn postgres() -> Option<Database> {
        let db = ota_testkit::postgres::fresh_database()?;
        Some(Database {
            url: Some(db.url().to_string()),
            _postgres: Some(db),
        })
    }

    /// [`settings`] on this database.
    pub fn settings(&self, data_dir: &Path, trust: &TrustRoot) -> Settings {
        let mut s = settings(data_dir, trust);
        s.config.database = self.url.clone();
        s
    }
}

impl TestServer {
    pub async fn start(settings: Settings) -> TestServer {
        Self::start_with_tls(settings, None).await
    }

    pub async fn start_with_tls(
        settings: Settings,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestServer {
        let data_dir = settings.config.data_dir.clone();
        let opened = server::open(settings).expect("open server");
        Self::serve_opened(opened, data_dir, tls).await
    }

    /// Serves a state opened (and set up further, e.g. with a timestamp key) by the test.
    pub async fn serve_opened(
        opened: server::Opened,
        data_dir: PathBuf,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server::serve(opened.state, listener, tls, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            data_dir,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Graceful stop; waits for the final flush.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(std::time::Duration::from_secs(20), h)
                .await
                .expect("server stops within 20 s")
                .unwrap()
                .unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn blob_files(&self) -> Vec<PathBuf> {
        list(&self.data_dir.join("blobs"))
    }

    pub fn tmp_files(&self) -> Vec<PathBuf> {
        list(&self.data_dir.join("tmp"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub use ota_testkit::release::trust_root as trust;

/// A signed bundle of one 200 kB incompressible rootfs image (large enough to tamper with in the middle).
pub fn bundle(keys: &[&SecretKey], version: &str, compatible: &str) -> Vec<u8> {
    let rootfs = ota_testkit::robot::noise(version.len() as u64, 200_000);
    ota_testkit::robot::try_bundle_signed_by(keys, version, compatible, &[("rootfs", rootfs)])
        .expect("bundle builds")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn publish(c: &reqwest::Client, s: &TestServer, bytes: Vec<u8>) -> (StatusCode, Value) {
    let r = c
        .post(s.url("/api/bundles"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

pub async fn admin_get(c: &reqwest::Client, s: &TestServer, path: &str) -> Value {
    let r = c.get(s.url(path)).bearer_auth(ADMIN).send().await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

pub async fn admin_post(
    c: &reqwest::Client,
    s: &TestServer,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

pub fn enroll_request(id: &str, tags: &[(&str, &str)], compatible: &str) -> EnrollRequest {
    EnrollRequest {
        enrollment_secret: ENROLL.into(),
        device_id: id.into(),
        compatible: compatible.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_id: format!("enroll-{id}-0001"),
        public_key: None,
        challenge: None,
        signature: None,
    }
}

pub async fn enroll(
    c: &reqwest::Client,
    s: &TestServer,
    id: &str,
    tags: &[(&str, &str)],
    compatible: &str,
) -> String {
    let r = c
        .post(s.url("/api/devices/enroll"))
        .json(&enroll_request(id, tags, compatible))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "enroll {id}");
    r.json::<EnrollResponse>().await.unwrap().token
}

pub fn poll_body(version: &str, compatible: &str) -> PollRequest {
    serde_json::from_value(serde_json::json!({
        "compatible": compatible,
        "current_version": version,
        "booted_slot": "A",
        "slots": {"A": version, "B": "0.9.0"},
        "telemetry": {"battery_percent": 77.0, "cpu_percent": 12.5, "uptime_secs": 3600,
                      "position": {"x": 1.0, "y": 2.0},
                      "metrics": {"inference_latency_ms": 41.5}}
    }))
    .unwrap()
}

pub async fn poll(c: &reqwest::Client, s: &TestServer, token: &str, version: &str) -> PollResponse {
    let r = c
        .post(s.url("/api/device/poll"))
        .bearer_auth(token)
        .json(&poll_body(version, COMPATIBLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A poll at `version` whose telemetry reports `latency` as `inference_latency_ms` (what the guard tests watch).
pub async fn poll_with(
    c: &reqwest::Client,
    s: &TestServer,
    token: &str,
    version: &str,
    latency: f64,
) {
    let mut body = poll_body(version, COMPATIBLE);
    body.telemetry
        .metrics
        .insert("inference_latency_ms".into(), latency);
    let r = c
        .post(s.url("/api/device/poll"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

pub fn report_body(report_id: &str, rollout: u64, status: ReportStatus) -> ReportRequest {
    ReportRequest {
        report_id: report_id.into(),
        rollout_id: Some(rollout),
        version: Some("2.0.0".parse().unwrap()),
        manifest_digest: None,
        status,
        progress_percent: None,
        error: (status == ReportStatus::Failure)
            .then(|| "write failed: no space left on device".into()),
        log_tail: (status == ReportStatus::Failure).then(|| "line 1\nline 2".into()),
        reason: (status == ReportStatus::RolledBack)
            .then(|| "health check failed after boot".into()),
    }
}

pub async fn report(
    c: &reqwest::Client,
    s: &TestServer,
    token: &str,
    body: &ReportRequest,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url("/api/device/report"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Waits until `f` holds (up to 10 s).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A route's path template with its `{name}` (or `{*name}`) parameters replaced by `vars`.
pub fn concrete(template: &str, vars: &[(&str, &str)]) -> String {
    let mut path = template.replace("{*", "{");
    for (name, value) in vars {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    assert!(
        !path.contains('{'),
        "no value for a parameter of {template}"
    );
    path
}
