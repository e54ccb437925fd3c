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

/// Simulated robots, each running the daemon in a thread.
pub struct Fleet {
    /// The robots.
    pub robots: Vec<FleetRobot>,
    cancel: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
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
    pub fn start(&mut self, clock: Arc<dyn Clock>) {
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
