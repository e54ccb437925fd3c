//! The end-to-end tests' presets: their robots, fleet, release bundle and trust root. The machinery (server,
//! fleet, fault-injecting proxy, waits) is the test kit's.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ota_testkit::fleet::{Fleet, FleetLog, RobotPlan};
use ota_testkit::robot::{release_key, Backend, RobotSpec, ServerSpec};
use ota_testkit::server::ServerHandle;

/// Plans for `n` robots `robot-1..n` on version 1.0.0, site warehouse-1, healthy except
/// those in `unhealthy` (1-based).
pub fn plans(n: usize, unhealthy: &[usize]) -> Vec<RobotPlan> {
    (1..=n)
        .map(|i| RobotPlan {
            id: format!("robot-{i}"),
            tags: BTreeMap::from([("site".to_string(), "warehouse-1".to_string())]),
            factory_version: Some("1.0.0".into()),
            healthy_after_update: !unhealthy.contains(&i),
            telemetry_command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    r#"echo '{{"battery_percent": {}, "position": {{"x": {i}, "y": 0}}}}'"#,
                    90 - i
                ),
            ]),
            readiness: None,
            model_latency: None,
        })
        .collect()
}

/// A fleet of simulated robots (default sizes, trusting the tests' release key) whose
/// daemons talk to `url`, with fast backoff.
pub fn fleet(
    dir: &Path,
    url: &str,
    server: &ServerHandle,
    plans: &[RobotPlan],
    log: FleetLog,
) -> Fleet {
    let spec = RobotSpec::new(Backend::Grub);
    let server_spec = ServerSpec {
        url: url.to_string(),
        device_id: String::new(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: BTreeMap::new(),
        backoff_initial_ms: 100,
        backoff_max_secs: 2,
        telemetry_command: None,
    };
    Fleet::create(dir, plans, &spec, &server_spec, release_key(), log).unwrap()
}

/// The release bundle for the tests' robots: rootfs + model of `version`.
pub fn release_bundle(version: &str) -> Vec<u8> {
    let r = ota_testkit::robot::Robot::new(Backend::Grub);
    ota_testkit::robot::bundle_with(
        release_key(),
        version,
        ota_testkit::robot::COMPATIBLE,
        &[
            ("rootfs", r.rootfs_image(version)),
            ("model", r.model_image(version)),
        ],
    )
}

/// The trust root of the tests' release key.
pub fn trust() -> ota_keys::TrustRoot {
    ota_testkit::release::trust_root(&[release_key()], 1)
}

/// Like [`release_bundle`], carrying a signed security floor.
pub fn release_bundle_with_floor(version: &str, floor: &str) -> Vec<u8> {
    let r = ota_testkit::robot::Robot::new(Backend::Grub);
    ota_testkit::robot::try_bundle_with_floor(
        &[release_key()],
        version,
        Some(floor),
        ota_testkit::robot::COMPATIBLE,
        &[
            ("rootfs", r.rootfs_image(version)),
            ("model", r.model_image(version)),
        ],
    )
    .expect("bundle builds")
}
