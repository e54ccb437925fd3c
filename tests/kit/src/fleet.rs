//! A fleet of simulated robots ([`crate::robot`]), each running the real `ota-client daemon` loop in a thread
//! against a server, with the waits the demo and the end-to-end tests share.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ota_client::daemon::{Clock, DaemonHooks, Level};
use ota_keys::SecretKey;
use ota_protocol::admin::{DeviceInfo, RolloutDetail};
use ota_protocol::client::ApiClient;

use crate::robot::{Robot, RobotSpec, ServerSpec};
use crate::wait;

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
    /// Set to stop this robot's daemon.
    cancel: Arc<AtomicBool>,
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
    /// A readiness command gating these phases (see [`RobotSpec::readiness`]); `None`: no `[readiness]`.
    pub readiness: Option<Vec<String>>,
    /// The `inference_latency_ms` its running model shows; replaces `telemetry_command` when set.
    pub model_latency: Option<ModelLatency>,
}

impl RobotPlan {
    /// A healthy robot `id` on `factory_version` with `tags` and nothing else.
    pub fn new(id: &str, factory_version: &str, tags: &[(&str, &str)]) -> RobotPlan {
        RobotPlan {
            id: id.to_string(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            factory_version: Some(factory_version.to_string()),
            healthy_after_update: true,
            telemetry_command: None,
            readiness: None,
            model_latency: None,
        }
    }
}

/// The inference latency a robot reports, as a property of the model it runs: its telemetry command compares
/// the active model slot with each listed release's model image and reports that release's latency (else
/// `default_ms`), so a slower model shows up in telemetry exactly while it runs, and goes away on a revert.
#[derive(Clone, Debug, Default)]
pub struct ModelLatency {
    /// Latency of any model not listed (the factory's, ...).
    pub default_ms: f64,
    /// Release version -> latency of its model.
    pub by_version: BTreeMap<String, f64>,
    /// Other telemetry members to report with it, as JSON object members (`"battery_percent": 80`; no single
    /// quotes); empty for none.
    pub fields: String,
}

impl ModelLatency {
    /// Writes the reference models under `dir/models` and returns the telemetry command for a robot in `dir`
    /// whose model slots are `model_size` bytes.
    pub fn command(&self, dir: &Path, model_size: usize) -> anyhow::Result<Vec<String>> {
        let models = dir.join("models");
        std::fs::create_dir_all(&models)?;
        let mut script = format!("lat={}\n", self.default_ms);
        for (version, ms) in &self.by_version {
            let reference = models.join(format!("{version}.bin"));
            std::fs::write(
                &reference,
                crate::robot::model_image_of_size(version, model_size),
            )?;
            script.push_str(&format!(
                "if cmp -s {:?} {:?}; then lat={ms}; fi\n",
                dir.join("model_current").display().to_string(),
                reference.display().to_string()
            ));
        }
        let fields = if self.fields.is_empty() {
            String::new()
        } else {
            format!("{}, ", self.fields)
        };
        script.push_str(&format!(
            "printf '{{{fields}\"metrics\": {{\"inference_latency_ms\": %s}}}}\\n' \"$lat\"\n"
        ));
        Ok(vec!["sh".into(), "-c".into(), script])
    }
}

/// Simulated robots, each running the daemon in a thread.
pub struct Fleet {
    /// The robots.
    pub robots: Vec<FleetRobot>,
    threads: Vec<(String, JoinHandle<()>)>,
    log: FleetLog,
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
            let robot_dir = dir.join(&p.id);
            let telemetry_command = match &p.model_latency {
                Some(latency) => Some(
                    latency
                        .command(&robot_dir, spec.model_size)
                        .with_context(|| format!("writing {}'s reference models", p.id))?,
                ),
                None => p.telemetry_command.clone(),
            };
            let mut spec = spec.clone();
            spec.readiness = p.readiness.clone();
            spec.server = Some(ServerSpec {
                device_id: p.id.clone(),
                tags: p.tags.clone(),
                telemetry_command,
                ..server.clone()
            });
            let robot = Robot::create(&robot_dir, &spec);
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
                cancel: Arc::new(AtomicBool::new(false)),
            });
        }
        Ok(Fleet {
            robots,
            threads: Vec::new(),
            log,
        })
    }

    /// Starts every robot's daemon in its own thread (`clock` paces it).
    pub fn start(&mut self, clock: Arc<dyn Clock>) {
        for r in &self.robots {
            let robot = Arc::clone(&r.robot);
            let id = r.id.clone();
            let log = Arc::clone(&self.log);
            let cancel = Arc::clone(&r.cancel);
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
            self.threads.push((r.id.clone(), thread));
        }
    }

    /// Stops every daemon (as SIGTERM would) and waits for them.
    pub fn stop(&mut self) {
        for r in &self.robots {
            r.cancel.store(true, Ordering::Relaxed);
        }
        for (_, t) in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Switches one robot off: stops its daemon (as a power cut between polls would) and waits for it. The
    /// others keep running.
    pub fn switch_off(&mut self, id: &str) {
        if let Some(r) = self.robot(id) {
            r.cancel.store(true, Ordering::Relaxed);
        }
        let (off, on): (Vec<_>, Vec<_>) = self.threads.drain(..).partition(|(t, _)| t == id);
        self.threads = on;
        for (_, t) in off {
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

/// Starts a log line with the time since `start`.
pub fn stamp(start: Instant) -> String {
    format!("{:>6.2}s", start.elapsed().as_secs_f64())
}

/// Every line a fleet's daemons logged, for tests to wait on and search.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<(String, Level, String)>>>);

impl LogLines {
    /// A sink that keeps every line (and prints those of level info and up, for failing tests' output).
    pub fn sink(&self) -> FleetLog {
        let lines = Arc::clone(&self.0);
        let start = Instant::now();
        Arc::new(move |robot: &str, level: Level, line: &str| {
            if level >= Level::Info {
                println!("{} [{robot}] {level}: {line}", stamp(start));
            }
            lines.lock().unwrap_or_else(|e| e.into_inner()).push((
                robot.to_string(),
                level,
                line.to_string(),
            ));
        })
    }

    /// The lines so far: (robot, level, line).
    pub fn all(&self) -> Vec<(String, Level, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines of `robot` (any robot for `None`) contain `needle`.
    pub fn count(&self, robot: Option<&str>, needle: &str) -> usize {
        self.all()
            .iter()
            .filter(|(r, _, l)| robot.map_or(true, |want| r == want) && l.contains(needle))
            .count()
    }
}

/// Polls `GET /api/rollouts/{id}` until `done` holds, up to `timeout`.
pub fn wait_rollout(
    api: &ApiClient,
    id: u64,
    timeout: Duration,
    mut done: impl FnMut(&RolloutDetail) -> bool,
) -> anyhow::Result<RolloutDetail> {
    let mut last = None;
    let found = wait::poll(timeout, || {
        let detail = api.rollout(id)?;
        if done(&detail) {
            return Ok::<_, anyhow::Error>(Some(detail));
        }
        last = Some(detail);
        Ok(None)
    })?;
    match (found, last) {
        (Some(detail), _) => Ok(detail),
        (None, Some(d)) => bail!(
            "rollout {id} did not reach the expected state within {} s: {} at stage {}, {:?}",
            timeout.as_secs(),
            d.rollout.state.as_str(),
            d.rollout.current_stage,
            d.rollout.counts
        ),
        (None, None) => bail!("rollout {id} did not reach the expected state"),
    }
}

/// Waits until every id in `ids` is enrolled and has polled (reported a version).
pub fn wait_devices(
    api: &ApiClient,
    ids: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<DeviceInfo>> {
    let mut seen = 0;
    let found = wait::poll(timeout, || {
        let devices = api.devices()?;
        let ready = ids.iter().all(|id| {
            devices
                .iter()
                .any(|d| &d.device_id == id && d.current_version.is_some())
        });
        seen = devices.len();
        Ok::<_, anyhow::Error>(ready.then_some(devices))
    })?;
    match found {
        Some(devices) => Ok(devices),
        None => bail!(
            "robots did not enroll and poll within {} s ({seen} of {} seen)",
            timeout.as_secs(),
            ids.len()
        ),
    }
}
