//! The scripted demo ([`start`]): an in-process OTA server, a signed release, a staged rollout and simulated
//! robots running the real `ota-client daemon` loop, one of which rolls back. The server, the robots and the
//! waits are the test kit's (`ota_testkit::{server, fleet}`), so the `ota-demo` binary and the end-to-end tests
//! (`tests/e2e`) run the same pieces; the API calls go through `ota_protocol::client::ApiClient`.
//!
//! This crate is an application harness, so its errors are `anyhow` errors with one-line
//! context.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod guard;

pub use guard::{GuardStory, GROUP, SLOW_MODEL_MS, SLOW_VERSION};

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ota_client::daemon::{Level, SystemClock};
use ota_protocol::admin::{CreateRolloutRequest, RolloutState};
use ota_protocol::client::ApiClient;
use ota_protocol::device::ReportStatus;
use ota_testkit::fleet::{
    booted_version, stamp, wait_devices, wait_rollout, Fleet, FleetLog, ModelLatency, RobotPlan,
};
use ota_testkit::release::Release;
use ota_testkit::robot::{Backend, RobotSpec, ServerSpec};
use ota_testkit::server::{ServerHandle, ServerOptions};
use ota_testkit::wait;

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
    /// one rolled back; then the second story's as expected).
    pub as_expected: bool,
    /// The second story (the slower model halted by its guard and reverted); `None` when the first
    /// did not go as expected.
    pub guard: Option<GuardStory>,
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
    let admin = server.admin();

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
            telemetry_command: None,
            readiness: None,
            // What the robot stack would print: battery and position on the warehouse map, and how long its
            // perception model takes (1.2.0's new model is slower).
            model_latency: Some(ModelLatency {
                default_ms: 38.0 + i as f64,
                by_version: BTreeMap::from([(SLOW_VERSION.to_string(), SLOW_MODEL_MS)]),
                fields: format!(
                    r#""battery_percent": {}, "position": {{"x": {}.5, "y": {}.0, "theta": 1.57, "frame": "map"}}"#,
                    97 - 6 * i,
                    4 * i,
                    i % 3
                ),
            }),
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
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(30))?;
    say("all robots enrolled and polling");

    let rollout = admin.create_rollout(&CreateRolloutRequest {
        bundle_id: published.bundle_id.clone(),
        tags: BTreeMap::new(),
        stages: Some(vec![20, 100]),
        failure_threshold: Some(0.25),
        name: Some(format!("{RELEASE_VERSION} to both warehouses")),
        ..Default::default()
    })?;
    let id = rollout.rollout_id;
    say(&format!(
        "rollout {id} created: stages 20% -> 100%, pauses itself when more than 25% of the offered robots fail"
    ));

    let mut last = (rollout.state, rollout.current_stage);
    let mut resumed = false;
    wait_rollout(&admin, id, options.timeout, |d| {
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
    let _ = wait::poll(Duration::from_secs(10), || {
        let settled = fleet
            .robots
            .iter()
            .all(|r| r.robot.status().unreported_events.is_empty());
        Ok::<_, ()>(settled.then_some(()))
    });

    let mut summary = summarize(&fleet, &admin, &server, options.failing_robot)?;
    if summary.as_expected {
        let updated = summary
            .rows
            .iter()
            .filter(|r| r.outcome == "updated")
            .map(|r| r.robot.clone())
            .collect();
        let story = guard::run(&guard::Stage {
            admin: &admin,
            fleet: &fleet,
            release: &release,
            release_bundle_id: &published.bundle_id,
            updated,
            timeout: options.timeout,
            say: &say,
        })?;
        summary.as_expected &= story.as_expected;
        summary.guard = Some(story);
    }
    Ok(Demo {
        server,
        fleet,
        summary,
    })
}

fn summarize(
    fleet: &Fleet,
    admin: &ApiClient,
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
        guard: None,
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
    let first_as_expected = s.guard.is_some();
    out.push_str(&format!(
        "{} updated, {} rolled back{}\n",
        s.updated,
        s.rolled_back,
        if first_as_expected {
            " (as expected)"
        } else {
            " (NOT the expected outcome)"
        }
    ));
    if let Some(g) = &s.guard {
        out.push_str(&guard::format(g));
    }
    out
}
