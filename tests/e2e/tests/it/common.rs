//! What the end-to-end tests share: a server, rollouts, and waits on robots' polls.

use std::collections::BTreeMap;
use std::time::Duration;

use ota_e2e::trust;
use ota_protocol::admin::{CreateRolloutRequest, RolloutDetail};
use ota_protocol::client::{ApiClient, ApiError};
use ota_protocol::device::ReportStatus;
use ota_testkit::fleet::LogLines;
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
