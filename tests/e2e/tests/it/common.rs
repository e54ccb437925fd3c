//! What the end-to-end tests share: a server, rollouts, and waits on robots' polls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ota_client::daemon::SystemClock;
use ota_e2e::{fleet, plans, trust};
use ota_protocol::admin::{CreateRolloutRequest, RolloutDetail, RolloutState};
use ota_protocol::client::{ApiClient, ApiError};
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{DeviceLabels, Schedule, TargetFilter, Window};
use ota_testkit::fleet::{wait_devices, Fleet, LogLines, ModelLatency, RobotPlan};
use ota_testkit::server::{ServerHandle, ServerOptions};
use ota_testkit::wait::wait_for;

pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn server(dir: &std::path::Path) -> ServerHandle {
    ServerHandle::start(&ServerOptions::new(&dir.join("server"), trust())).unwrap()
}

pub fn rollout(admin: &ApiClient, bundle_id: &str, stages: Vec<u8>, threshold: f64) -> u64 {
    admin
        .create_rollout(&CreateRolloutRequest {
            bundle_id: bundle_id.into(),
            tags: BTreeMap::new(),
            stages: Some(stages),
            failure_threshold: Some(threshold),
            name: None,
            ..Default::default()
        })
        .unwrap()
        .rollout_id
}

pub fn all_finished(d: &RolloutDetail) -> bool {
    d.devices
        .iter()
        .all(|m| ReportStatus::parse(&m.status).is_some_and(ReportStatus::is_terminal))
}

/// The daemon logs this after every poll that brought no update.
pub const POLLED: &str = "polled: no update";

/// Waits until each of `robots` has polled `n` more times than `before` (its count of [`POLLED`] lines then).
pub fn wait_polls(lines: &LogLines, robots: &[String], before: &[usize], n: usize) {
    for (robot, before) in robots.iter().zip(before) {
        wait_for(
            &format!("{robot} to poll {n} more times"),
            Duration::from_secs(20),
            || lines.count(Some(robot), POLLED) >= before + n,
        );
    }
}

pub fn poll_counts(lines: &LogLines, robots: &[String]) -> Vec<usize> {
    robots
        .iter()
        .map(|r| lines.count(Some(r), POLLED))
        .collect()
}

/// The HTTP status of a call's answer (200 for any success).
pub fn status<T>(result: Result<T, ApiError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => e.status.unwrap_or_else(|| panic!("no answer: {e}")),
    }
}

pub const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// A rollout of `bundle_id` in `stages`, changed by `edit`.
pub fn create(
    admin: &ApiClient,
    bundle_id: &str,
    stages: &[u8],
    edit: impl FnOnce(&mut CreateRolloutRequest),
) -> u64 {
    let mut request = CreateRolloutRequest {
        bundle_id: bundle_id.into(),
        stages: Some(stages.to_vec()),
        failure_threshold: Some(0.5),
        ..Default::default()
    };
    edit(&mut request);
    admin.create_rollout(&request).unwrap().rollout_id
}

/// The operator's labels of a device (`PUT /api/devices/{id}/labels`).
pub fn set_labels(admin: &ApiClient, id: &str, group: Option<&str>) {
    admin
        .set_labels(
            id,
            &DeviceLabels {
                tags: BTreeMap::new(),
                group: group.map(str::to_string),
            },
        )
        .unwrap();
}

/// The statuses `robot` reported about rollout `id`.
pub fn reports(admin: &ApiClient, robot: &str, id: u64) -> Vec<ReportStatus> {
    admin
        .device(robot)
        .unwrap()
        .reports
        .into_iter()
        .filter(|r| r.rollout_id == Some(id))
        .map(|r| r.status)
        .collect()
}

pub fn member<'a>(d: &'a RolloutDetail, robot: &str) -> &'a ota_protocol::admin::RolloutDevice {
    d.devices
        .iter()
        .find(|m| m.device_id == robot)
        .unwrap_or_else(|| panic!("{robot} is not a member: {:?}", d.devices))
}

pub fn done(d: &RolloutDetail) -> bool {
    d.rollout.state == RolloutState::Completed && all_finished(d)
}

pub fn started(
    dir: &std::path::Path,
    server: &ServerHandle,
    plans: &[RobotPlan],
    lines: &LogLines,
) -> Fleet {
    let mut f = fleet(dir, &server.base, server, plans, lines.sink());
    f.start(Arc::new(SystemClock));
    wait_devices(&server.admin(), &f.ids(), ENROLL_TIMEOUT).unwrap();
    f
}

pub fn site(name: &str) -> TargetFilter {
    TargetFilter {
        tags: BTreeMap::from([("site".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// `"HH:MM"` of now + `minutes` (UTC, wrapping at midnight).
pub fn clock_in(minutes: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let m = ((now / 60 + minutes) % 1440 + 1440) % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

pub fn window(from_minutes: i64, to_minutes: i64) -> Schedule {
    Schedule {
        windows: vec![Window {
            days: vec![],
            start: clock_in(from_minutes),
            end: clock_in(to_minutes),
        }],
        timezone: Some("UTC".into()),
    }
}

/// Robots whose 1.1.0 model answers in 95 ms where the factory's takes 40.
pub fn slow_model_plans(n: usize) -> Vec<RobotPlan> {
    let mut robots = plans(n, &[]);
    for p in &mut robots {
        p.model_latency = Some(ModelLatency {
            default_ms: 40.0,
            by_version: BTreeMap::from([("1.1.0".to_string(), 95.0)]),
            fields: String::new(),
        });
    }
    robots
}

pub fn latency(admin: &ApiClient, robot: &str) -> Option<f64> {
    admin
        .device(robot)
        .unwrap()
        .device
        .telemetry
        .and_then(|t| t.metrics.get("inference_latency_ms").copied())
}
