//! The demo fleet as a library: an in-process OTA server ([`ServerHandle`]), an admin API
//! client ([`Admin`]), simulated robots running the real `ota-client daemon` loop
//! ([`Fleet`]), and the whole scripted demo ([`run`]). The `ota-demo` binary and the
//! end-to-end tests (`tests/e2e`) use the same pieces.
//!
//! This crate is an application harness, so its errors are `anyhow` errors with one-line
//! context.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ota_client::daemon::{DaemonHooks, Level, SystemClock};
use ota_keys::{SecretKey, TrustRoot};
use ota_protocol::admin::{
    CreateRolloutRequest, DeviceDetail, DeviceInfo, PublishResponse, RolloutDetail, RolloutInfo,
    RolloutState,
};
use ota_protocol::device::ReportStatus;
use ota_protocol::{paths, ErrorBody};
use ota_server::server::{self, Settings};
use ota_testkit::robot::{Backend, Robot, RobotSpec, ServerSpec};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Data directory (SQLite database, bundle store, generated secrets).
    pub data_dir: PathBuf,
    /// Trust root uploads are checked against.
    pub trust: TrustRoot,
    /// Address to listen on first.
    pub listen: SocketAddr,
    /// Listen on a free port of 127.0.0.1 when `listen` is taken.
    pub fallback_to_free_port: bool,
    /// Admin token; `None`: the data directory's (generated on first start).
    pub admin_token: Option<String>,
    /// Enrollment secret; `None`: the data directory's (generated on first start).
    pub enrollment_secret: Option<String>,
    /// Poll interval suggested to robots.
    pub poll_interval_secs: u32,
    /// Poll jitter suggested to robots.
    pub poll_jitter_secs: u32,
}

impl ServerOptions {
    /// Defaults for tests and the demo: 127.0.0.1 on a free port, 1 s polls, no jitter.
    pub fn new(data_dir: &Path, trust: TrustRoot) -> ServerOptions {
        ServerOptions {
            data_dir: data_dir.to_path_buf(),
            trust,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fallback_to_free_port: false,
            admin_token: None,
            enrollment_secret: None,
            poll_interval_secs: 1,
            poll_jitter_secs: 0,
        }
    }
}

/// An OTA server running in this process (its own thread and async runtime) until stopped
/// or dropped.
pub struct ServerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// Its admin token.
    pub admin_token: String,
    /// Its enrollment secret.
    pub enrollment_secret: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

fn read_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_string())
}

impl ServerHandle {
    /// Opens the data directory and serves it.
    pub fn start(options: &ServerOptions) -> anyhow::Result<ServerHandle> {
        let mut settings = Settings::new(options.data_dir.clone(), options.trust.clone());
        settings.admin_token = options.admin_token.clone();
        settings.enrollment_secret = options.enrollment_secret.clone();
        settings.config.poll_interval_secs = options.poll_interval_secs;
        settings.config.poll_jitter_secs = options.poll_jitter_secs;
        let opened = server::open(settings).context("cannot open the server's data directory")?;
        let admin_token = match &options.admin_token {
            Some(t) => t.clone(),
            None => read_secret(&options.data_dir, "admin-token")?,
        };
        let enrollment_secret = match &options.enrollment_secret {
            Some(s) => s.clone(),
            None => read_secret(&options.data_dir, "enrollment-secret")?,
        };
        let listener = match TcpListener::bind(options.listen) {
            Ok(l) => l,
            Err(e) if options.fallback_to_free_port => {
                let l = TcpListener::bind(("127.0.0.1", 0))
                    .context("cannot listen on a free port of 127.0.0.1")?;
                eprintln!(
                    "{} is not available ({e}); using {} instead",
                    options.listen,
                    l.local_addr()?
                );
                l
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on {}", options.listen))
            }
        };
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = opened.state;
        let thread = std::thread::Builder::new()
            .name("ota-server".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    server::serve(state, listener, None, async move {
                        let _ = rx.await;
                    })
                    .await
                })
            })?;
        Ok(ServerHandle {
            addr,
            base: format!("http://{addr}"),
            admin_token,
            enrollment_secret,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// An admin client for this server.
    pub fn admin(&self) -> anyhow::Result<Admin> {
        Admin::new(&self.base, &self.admin_token)
    }

    /// Stops gracefully (drains connections, flushes device state) and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The admin API over HTTP (what `ota-bundle publish` and `ota-server rollout` use).
pub struct Admin {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

fn check(
    resp: reqwest::blocking::Response,
    what: &str,
) -> anyhow::Result<reqwest::blocking::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text).map_or(text, |b| b.error);
    bail!("{what}: HTTP {}: {message}", status.as_u16())
}

impl Admin {
    /// A client for the server at `base` with the admin `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Admin> {
        Ok(Admin {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .context("cannot set up HTTP")?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("GET {path}"))?;
        check(resp, &format!("GET {path}"))?
            .json()
            .with_context(|| format!("GET {path}: unreadable answer"))
    }

    fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| format!("POST {path}"))?;
        check(resp, &format!("POST {path}"))?
            .json()
            .with_context(|| format!("POST {path}: unreadable answer"))
    }

    /// Uploads a bundle file (streamed, as `ota-bundle publish` does).
    pub fn publish_file(&self, path: &Path) -> anyhow::Result<PublishResponse> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open bundle {}", path.display()))?;
        let len = file.metadata()?.len();
        self.publish_body(reqwest::blocking::Body::sized(file, len))
    }

    /// Uploads bundle bytes.
    pub fn publish_bytes(&self, bytes: Vec<u8>) -> anyhow::Result<PublishResponse> {
        self.publish_body(reqwest::blocking::Body::from(bytes))
    }

    fn publish_body(&self, body: reqwest::blocking::Body) -> anyhow::Result<PublishResponse> {
        let resp = self
            .http
            .post(format!("{}{}", self.base, paths::BUNDLES))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .context("cannot upload the bundle")?;
        check(resp, "publishing the bundle")?
            .json()
            .context("publishing the bundle: unreadable answer")
    }

    /// Creates a rollout.
    pub fn create_rollout(&self, req: &CreateRolloutRequest) -> anyhow::Result<RolloutInfo> {
        self.post(paths::ROLLOUTS, req)
    }

    /// One rollout with its devices.
    pub fn rollout(&self, id: u64) -> anyhow::Result<RolloutDetail> {
        self.get(&format!("{}/{id}", paths::ROLLOUTS))
    }

    /// `pause`, `resume` or `abort`.
    pub fn rollout_action(&self, id: u64, action: &str) -> anyhow::Result<RolloutInfo> {
        self.post(&format!("{}/{id}/{action}", paths::ROLLOUTS), &())
    }

    /// The inventory.
    pub fn devices(&self) -> anyhow::Result<Vec<DeviceInfo>> {
        self.get(paths::DEVICES)
    }

    /// One device with its reports.
    pub fn device(&self, id: &str) -> anyhow::Result<DeviceDetail> {
        self.get(&format!("{}/{id}", paths::DEVICES))
    }

    /// Polls `GET /api/rollouts/{id}` until `done` holds, up to `timeout`.
    pub fn wait_rollout(
        &self,
        id: u64,
        timeout: Duration,
        mut done: impl FnMut(&RolloutDetail) -> bool,
    ) -> anyhow::Result<RolloutDetail> {
        let start = Instant::now();
        loop {
            let detail = self.rollout(id)?;
            if done(&detail) {
                return Ok(detail);
            }
            if start.elapsed() > timeout {
                bail!(
                    "rollout {id} did not reach the expected state within {} s: {} at stage {}, {:?}",
                    timeout.as_secs(),
                    detail.rollout.state.as_str(),
                    detail.rollout.current_stage,
                    detail.rollout.counts
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every id in `ids` is enrolled and has polled (reported a version).
    pub fn wait_devices(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Vec<DeviceInfo>> {
        let start = Instant::now();
        loop {
            let devices = self.devices()?;
            let ready = ids.iter().all(|id| {
                devices
                    .iter()
                    .any(|d| &d.device_id == id && d.current_version.is_some())
            });
            if ready {
                return Ok(devices);
            }
            if start.elapsed() > timeout {
                bail!(
                    "robots did not enroll and poll within {} s ({} of {} seen)",
                    timeout.as_secs(),
                    devices.len(),
                    ids.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Release keys and the trust root made for a demo or test.
pub struct Release {
    /// The signing key.
    pub key: SecretKey,
    /// The trust root (the key, threshold 1).
    pub trust: TrustRoot,
}

impl Release {
    /// Generates a key pair under `dir` (`release.key`, `release.pub`) and a signed trust
    /// root (`trust.json`), as `ota-bundle keygen` and `ota-bundle trust` would.
    pub fn create(dir: &Path) -> anyhow::Result<Release> {
        std::fs::create_dir_all(dir)?;
        let (_, _, key) = ota_keys::write_keypair(&dir.join("release"))
            .context("cannot write the release key pair")?;
        let root = TrustRoot::new(1, 1, vec![key.public_key()])?;
        let mut signed = ota_keys::SignedTrustRoot::new(root);
        signed.sign(&key);
        let path = dir.join("trust.json");
        std::fs::write(&path, signed.to_json_pretty())?;
        let trust = ota_keys::load_trust_root(&path)
            .with_context(|| format!("cannot load {}", path.display()))?;
        Ok(Release { key, trust })
    }
}

/// Starts a log line with the time since `start`.
pub fn stamp(start: Instant) -> String {
    format!("{:>6.2}s", start.elapsed().as_secs_f64())
}

/// Where a fleet's daemons log: (robot id, level, line).
pub type FleetLog = Arc<dyn Fn(&str, Level, &str) + Send + Sync>;

/// One robot of a fleet.
pub struct FleetRobot {
    /// Its device id.
    pub id: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The simulated hardware.
    pub robot: Arc<Robot>,
    /// Its version when the daemon started.
    pub version_before: Option<semver::Version>,
}

/// Simulated robots, each running the daemon in a thread.
pub struct Fleet {
    /// The robots.
    pub robots: Vec<FleetRobot>,
    cancel: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    log: FleetLog,
}

/// What a robot of a [`Fleet`] is.
#[derive(Clone, Debug)]
pub struct RobotPlan {
    /// Device id.
    pub id: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Version provisioned at the factory (`None`: the unversioned factory image).
    pub factory_version: Option<String>,
    /// Whether its application comes up after an update (false: the trial fails).
    pub healthy_after_update: bool,
    /// Its `telemetry_command` (the robot stack's battery, position, ...).
    pub telemetry_command: Option<Vec<String>>,
}

impl Fleet {
    /// Creates robots under `dir/<id>` and provisions them; daemons start with [`Fleet::start`].
    pub fn create(
        dir: &Path,
        plans: &[RobotPlan],
        spec: &RobotSpec,
        server: &ServerSpec,
        key: &SecretKey,
        log: FleetLog,
    ) -> anyhow::Result<Fleet> {
        let mut robots = Vec::new();
        for p in plans {
            let mut spec = spec.clone();
            spec.server = Some(ServerSpec {
                device_id: p.id.clone(),
                tags: p.tags.clone(),
                telemetry_command: p.telemetry_command.clone(),
                ..server.clone()
            });
            let robot = Robot::create(&dir.join(&p.id), &spec);
            if let Some(v) = &p.factory_version {
                robot
                    .provision(key, v)
                    .with_context(|| format!("provisioning {} with {v}", p.id))?;
            }
            // The health check runs only on a trial boot, so an unhealthy app shows only
            // after the next update.
            robot.set_healthy(p.healthy_after_update);
            let version_before = booted_version(&robot);
            robots.push(FleetRobot {
                id: p.id.clone(),
                tags: p.tags.clone(),
                robot: Arc::new(robot),
                version_before,
            });
        }
        Ok(Fleet {
            robots,
            cancel: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            log,
        })
    }

    /// Starts every robot's daemon in its own thread (`clock` paces it).
    pub fn start(&mut self, clock: Arc<dyn ota_client::daemon::Clock>) {
        for r in &self.robots {
            let robot = Arc::clone(&r.robot);
            let id = r.id.clone();
            let log = Arc::clone(&self.log);
            let cancel = Arc::clone(&self.cancel);
            let clock = Arc::clone(&clock);
            let thread = std::thread::Builder::new()
                .name(id.clone())
                .spawn(move || {
                    let sink_id = id.clone();
                    let sink_log = Arc::clone(&log);
                    let hooks = DaemonHooks {
                        clock,
                        reboot: None,
                        log: Arc::new(move |level, line| sink_log(&sink_id, level, line)),
                    };
                    if let Err(e) = robot.run_daemon(&hooks, &cancel) {
                        log(&id, Level::Error, &format!("daemon stopped: {e}"));
                    }
                })
                .expect("spawn a robot thread");
            self.threads.push(thread);
        }
    }

    /// Stops every daemon (as SIGTERM would) and waits for them.
    pub fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// A robot by id.
    pub fn robot(&self, id: &str) -> Option<&FleetRobot> {
        self.robots.iter().find(|r| r.id == id)
    }

    /// Ids in order.
    pub fn ids(&self) -> Vec<String> {
        self.robots.iter().map(|r| r.id.clone()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The version of the robot's booted rootfs slot, as the client records it.
pub fn booted_version(robot: &Robot) -> Option<semver::Version> {
    let st = robot.status();
    st.slots
        .iter()
        .find(|s| s.class == "rootfs" && Some(s.slot) == st.booted)
        .and_then(|s| s.version.clone())
}

/// One row of the demo's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Device id.
    pub robot: String,
    /// Its site tag.
    pub site: String,
    /// Version before the rollout.
    pub before: String,
    /// Version after.
    pub after: String,
    /// Booted slot after.
    pub booted: String,
    /// `updated`, `rolled back`, `failed`, or the last status seen.
    pub outcome: String,
    /// Why (rollbacks and failures).
    pub detail: String,
}

/// The demo's result.
#[derive(Clone, Debug)]
pub struct Summary {
    /// One row per robot.
    pub rows: Vec<Row>,
    /// The dashboard URL with the admin token.
    pub dashboard: String,
    /// Robots updated.
    pub updated: usize,
    /// Robots rolled back.
    pub rolled_back: usize,
    /// Whether the outcome is the expected one (all but the unhealthy robot updated, that
    /// one rolled back).
    pub as_expected: bool,
}

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Working directory (wiped at start if an earlier demo made it).
    pub dir: PathBuf,
    /// Address to try first (falls back to a free port).
    pub listen: SocketAddr,
    /// Number of robots.
    pub robots: usize,
    /// Which robot (1-based) fails its health check after the update.
    pub failing_robot: usize,
    /// Print the log lines (the summary is always printed).
    pub verbose: bool,
    /// How long the whole rollout may take.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: PathBuf::from("demo-fleet"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            robots: 5,
            failing_robot: 3,
            verbose: true,
            timeout: Duration::from_secs(90),
        }
    }
}

/// Marker file of a directory the demo made (and may therefore wipe).
const MARKER: &str = ".ota-demo";
/// The version robots leave the factory with.
pub const FACTORY_VERSION: &str = "1.0.0";
/// The version the demo rolls out.
pub const RELEASE_VERSION: &str = "1.1.0";
/// Rootfs image size of the demo robots.
pub const DEMO_ROOTFS_SIZE: usize = 3 << 20;
/// Model image size of the demo robots.
pub const DEMO_MODEL_SIZE: usize = 1 << 20;

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by ota-demo; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by ota-demo; deleted by its next run\n",
    )?;
    Ok(())
}

/// A running demo: what [`start`] set up.
pub struct Demo {
    /// The server.
    pub server: ServerHandle,
    /// The robots.
    pub fleet: Fleet,
    /// The summary.
    pub summary: Summary,
}

/// Runs the demo up to the summary, printing to `out`; the server and robots keep running
/// in the returned [`Demo`] until it is dropped.
pub fn start(options: &DemoOptions, out: Arc<Mutex<dyn Write + Send>>) -> anyhow::Result<Demo> {
    let t0 = Instant::now();
    let say = {
        let out = Arc::clone(&out);
        move |line: &str| {
            let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(o, "{} {line}", stamp(t0));
            let _ = o.flush();
        }
    };
    if options.robots == 0 || options.failing_robot > options.robots {
        bail!("--robots must be at least 1 and --failing-robot at most --robots");
    }
    let dir = options.dir.clone();
    fresh_dir(&dir)?;
    let dir = dir.canonicalize()?;

    let release = Release::create(&dir.join("keys"))?;
    say(&format!(
        "release key {} and trust root written to {}",
        release.key.key_id(),
        dir.join("keys").display()
    ));

    let mut server_options = ServerOptions::new(&dir.join("server"), release.trust.clone());
    server_options.listen = options.listen;
    server_options.fallback_to_free_port = true;
    server_options.poll_jitter_secs = 1;
    let server = ServerHandle::start(&server_options)?;
    say(&format!(
        "ota-server listening on {} (SQLite in {})",
        server.base,
        dir.join("server").display()
    ));
    let admin = server.admin()?;

    // Robots first, so the rollout targets them.
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.rootfs_size = DEMO_ROOTFS_SIZE;
    spec.model_size = DEMO_MODEL_SIZE;
    spec.trust_pem = release.key.public_key().to_pem();
    let server_spec = ServerSpec {
        url: server.base.clone(),
        device_id: String::new(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: BTreeMap::new(),
        backoff_initial_ms: 200,
        backoff_max_secs: 5,
        telemetry_command: None,
    };
    let plans: Vec<RobotPlan> = (1..=options.robots)
        .map(|i| RobotPlan {
            id: format!("robot-{i}"),
            tags: BTreeMap::from([(
                "site".to_string(),
                format!(
                    "warehouse-{}",
                    if i * 2 <= options.robots + 1 { 1 } else { 2 }
                ),
            )]),
            factory_version: Some(FACTORY_VERSION.to_string()),
            healthy_after_update: i != options.failing_robot,
            // What the robot stack would print: battery and position on the warehouse map.
            telemetry_command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    r#"echo '{{"battery_percent": {}, "position": {{"x": {}.5, "y": {}.0, "theta": 1.57, "frame": "map"}}, "metrics": {{"inference_latency_ms": {}}}}}'"#,
                    97 - 6 * i,
                    4 * i,
                    i % 3,
                    38 + i
                ),
            ]),
        })
        .collect();
    let verbose = options.verbose;
    let log_out = Arc::clone(&out);
    let log: FleetLog = Arc::new(move |robot: &str, level: Level, line: &str| {
        if verbose && level >= Level::Info {
            let mut o = log_out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(o, "{} [{robot}] {line}", stamp(t0));
            let _ = o.flush();
        }
    });
    let mut fleet = Fleet::create(
        &dir,
        &plans,
        &spec,
        &server_spec,
        &release.key,
        Arc::clone(&log),
    )?;
    say(&format!(
        "{} simulated robots provisioned with {FACTORY_VERSION} (GRUB, A/B file slots); robot-{} will fail its health check after the update",
        options.robots, options.failing_robot
    ));

    // The release.
    let bundle = ota_testkit::robot::try_bundle_with(
        &release.key,
        RELEASE_VERSION,
        ota_testkit::robot::COMPATIBLE,
        &[
            (
                "rootfs",
                fleet.robots[0].robot.rootfs_image(RELEASE_VERSION),
            ),
            ("model", fleet.robots[0].robot.model_image(RELEASE_VERSION)),
        ],
    )
    .context("cannot build the release bundle")?;
    let bundle_path = dir.join(format!("acme-robot-v2-{RELEASE_VERSION}.otab"));
    std::fs::write(&bundle_path, &bundle)?;
    say(&format!(
        "built and signed bundle {} ({} bytes: rootfs {} MiB + model {} MiB)",
        bundle_path.display(),
        bundle.len(),
        DEMO_ROOTFS_SIZE >> 20,
        DEMO_MODEL_SIZE >> 20
    ));
    let published = admin.publish_file(&bundle_path)?;
    say(&format!(
        "published {} as bundle {}",
        published.version,
        &published.bundle_id[..16]
    ));

    fleet.start(Arc::new(SystemClock));
    admin.wait_devices(&fleet.ids(), Duration::from_secs(30))?;
    say("all robots enrolled and polling");

    let rollout = admin.create_rollout(&CreateRolloutRequest {
        bundle_id: published.bundle_id.clone(),
        tags: BTreeMap::new(),
        stages: Some(vec![20, 100]),
        failure_threshold: Some(0.25),
        name: Some(format!("{RELEASE_VERSION} to both warehouses")),
    })?;
    let id = rollout.rollout_id;
    say(&format!(
        "rollout {id} created: stages 20% -> 100%, pauses itself when more than 25% of the offered robots fail"
    ));

    let mut last = (rollout.state, rollout.current_stage);
    let mut resumed = false;
    admin.wait_rollout(id, options.timeout, |d| {
        let r = &d.rollout;
        if (r.state, r.current_stage) != last {
            match r.state {
                RolloutState::Paused => say(&format!(
                    "rollout {id} PAUSED itself: {}",
                    r.pause_reason.as_deref().unwrap_or("")
                )),
                RolloutState::Completed => say(&format!("rollout {id} completed")),
                _ => say(&format!(
                    "rollout {id} at stage {} ({}%)",
                    r.current_stage + 1,
                    r.stages.get(r.current_stage).copied().unwrap_or(100)
                )),
            }
            last = (r.state, r.current_stage);
        }
        if r.state == RolloutState::Paused && !resumed {
            resumed = true;
            say("the operator reads the rollback report and resumes the rollout");
            if let Err(e) = admin.rollout_action(id, "resume") {
                say(&format!("resume failed: {e:#}"));
            }
        }
        let all_done = d
            .devices
            .iter()
            .all(|m| ReportStatus::parse(&m.status).is_some_and(ReportStatus::is_terminal));
        matches!(r.state, RolloutState::Completed | RolloutState::Aborted) && all_done
    })?;
    // The robots report on their own; wait until every one has nothing left to report.
    let settle = Instant::now();
    while fleet
        .robots
        .iter()
        .any(|r| !r.robot.status().unreported_events.is_empty())
        && settle.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }

    let summary = summarize(&fleet, &admin, &server, options.failing_robot)?;
    Ok(Demo {
        server,
        fleet,
        summary,
    })
}

fn summarize(
    fleet: &Fleet,
    admin: &Admin,
    server: &ServerHandle,
    failing_robot: usize,
) -> anyhow::Result<Summary> {
    let mut rows = Vec::new();
    let (mut updated, mut rolled_back) = (0, 0);
    let mut as_expected = true;
    for (i, r) in fleet.robots.iter().enumerate() {
        let detail = admin.device(&r.id)?;
        let last = detail.device.last_status.clone();
        let st = r.robot.status();
        let after = booted_version(&r.robot);
        let (outcome, why) = match last.as_ref().map(|l| l.status) {
            Some(ReportStatus::Success) => ("updated".to_string(), String::new()),
            Some(ReportStatus::RolledBack) => (
                "rolled back".to_string(),
                last.as_ref()
                    .and_then(|l| l.reason.clone())
                    .unwrap_or_default(),
            ),
            Some(ReportStatus::Failure) => (
                "failed".to_string(),
                last.as_ref()
                    .and_then(|l| l.error.clone())
                    .unwrap_or_default(),
            ),
            Some(other) => (other.as_str().to_string(), String::new()),
            None => ("no report".to_string(), String::new()),
        };
        let release: semver::Version = RELEASE_VERSION.parse()?;
        let factory: semver::Version = FACTORY_VERSION.parse()?;
        let expect_failure = i + 1 == failing_robot;
        let ok = if expect_failure {
            outcome == "rolled back" && after.as_ref() == Some(&factory)
        } else {
            outcome == "updated" && after.as_ref() == Some(&release)
        };
        as_expected &= ok;
        match outcome.as_str() {
            "updated" => updated += 1,
            "rolled back" => rolled_back += 1,
            _ => {}
        }
        let show =
            |v: &Option<semver::Version>| v.as_ref().map_or("-".to_string(), |v| v.to_string());
        rows.push(Row {
            robot: r.id.clone(),
            site: r.tags.get("site").cloned().unwrap_or_default(),
            before: show(&r.version_before),
            after: show(&after),
            booted: st.booted.map_or("-".to_string(), |s| s.to_string()),
            outcome,
            detail: why,
        });
    }
    Ok(Summary {
        rows,
        dashboard: format!("{}/#token={}", server.base, server.admin_token),
        updated,
        rolled_back,
        as_expected,
    })
}

/// The summary as a table.
pub fn format_summary(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<9} {:<12} {:<7} {:<7} {:<7} {}\n",
        "ROBOT", "SITE", "BEFORE", "AFTER", "BOOTED", "OUTCOME"
    ));
    for r in &s.rows {
        let outcome = if r.detail.is_empty() {
            r.outcome.clone()
        } else {
            format!("{}: {}", r.outcome, r.detail)
        };
        out.push_str(&format!(
            "{:<9} {:<12} {:<7} {:<7} {:<7} {}\n",
            r.robot, r.site, r.before, r.after, r.booted, outcome
        ));
    }
    out.push_str(&format!(
        "{} updated, {} rolled back{}\n",
        s.updated,
        s.rolled_back,
        if s.as_expected {
            " (as expected)"
        } else {
            " (NOT the expected outcome)"
        }
    ));
    out
}
