//! Trust roots that rotate by themselves: a chain walked from a file (`ota-client trust update`) or from the
//! server on a poll, kept on the data partition outside the A/B slots; the image's root is only the start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ota_client::daemon::SystemClock;
use ota_client_core::Slot;
use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};
use ota_protocol::admin::{CreateRolloutRequest, RolloutState};
use ota_protocol::device::TrustChain;
use ota_testkit::fleet::{wait_devices, wait_rollout, Fleet, LogLines, RobotPlan};
use ota_testkit::robot::*;
use ota_testkit::server::{ServerHandle, ServerOptions};

/// Release keys of versions 1.. (index 0 is version 1: the kit's release key).
pub(crate) fn keys(n: usize) -> Vec<&'static SecretKey> {
    let mut keys = vec![release_key()];
    keys.extend((1..n).map(|_| &*Box::leak(Box::new(SecretKey::generate()))));
    keys
}

/// Root `version` trusting `key`, signed by `signers`.
fn root(version: u64, key: &SecretKey, signers: &[&SecretKey]) -> SignedTrustRoot {
    let mut signed =
        SignedTrustRoot::new(TrustRoot::new(version, 1, vec![key.public_key()]).unwrap());
    for s in signers {
        signed.sign(s);
    }
    signed
}

/// The proper link to `version` (keys[version - 1]): signed by the previous key and its own.
pub(crate) fn link(keys: &[&SecretKey], version: u64) -> SignedTrustRoot {
    let i = version as usize - 1;
    root(version, keys[i], &[keys[i - 1], keys[i]])
}

pub(crate) fn chain_json(roots: &[SignedTrustRoot]) -> Vec<u8> {
    ota_keys::chain::chain_to_json(roots).into_bytes()
}

pub(crate) fn rootfs(r: &Robot, key: &SecretKey, version: &str) -> Vec<u8> {
    bundle_with(
        key,
        version,
        COMPATIBLE,
        &[("rootfs", r.rootfs_image(version))],
    )
}

/// A robot whose image trusts version 1 (the kit's release key, as a trust root file).
pub(crate) fn robot_at_v1() -> Robot {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.trust_pem = root(1, release_key(), &[release_key()]).to_json_pretty();
    let r = Robot::create(&dir.path().join("robot"), &spec);
    std::mem::forget(dir); // removed with the process's temp files; the robot keeps paths into it
    r
}

#[test]
fn a_chain_file_is_walked_kept_outside_the_slots_and_survives_a_slot_switch() {
    let r = robot_at_v1();
    let keys = keys(4);
    let image_root = std::fs::read(r.path("trust.pub")).unwrap();
    // Any order, with a replay of version 1 among them.
    let file = r.put(
        "chain.json",
        &chain_json(&[
            link(&keys, 3),
            root(1, keys[0], &[keys[0]]),
            link(&keys, 4),
            link(&keys, 2),
        ]),
    );
    assert_eq!(r.client().trust_update(&file).unwrap(), 4);
    assert_eq!(r.status().trust_version, Some(4));
    assert_eq!(
        std::fs::read(r.path("trust.pub")).unwrap(),
        image_root,
        "the image's root is never written"
    );
    let kept = r.client().kept_root_path();
    assert!(
        kept.starts_with(r.client().config().data_dir.clone()),
        "{}",
        kept.display()
    );
    assert_eq!(ota_keys::load_trust_root(&kept).unwrap().version, 4);

    // The old key no longer installs; the newest key does, and after the switch to the other slot (whose image
    // carries the same version-1 root) the robot still trusts version 4.
    let err = r
        .install(&rootfs(&r, keys[0], "2.0.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature"), "{err}");
    r.install(&rootfs(&r, keys[3], "2.0.0")).unwrap();
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::B);
    confirm.unwrap();
    assert_eq!(r.status().trust_version, Some(4));
    assert_eq!(std::fs::read(r.path("trust.pub")).unwrap(), image_root);
    r.install(&rootfs(&r, keys[3], "3.0.0")).unwrap();

    // `ota-client status` shows it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&r.config_path)
        .arg("status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trust root: version 4"), "{stdout}");
}

#[test]
fn a_link_signed_only_by_the_old_keys_is_refused_and_the_robot_stays_at_the_last_good_root() {
    let r = robot_at_v1();
    let keys = keys(4);
    let only_old = root(3, keys[2], &[keys[1]]);
    let file = r.put(
        "chain.json",
        &chain_json(&[link(&keys, 2), only_old, link(&keys, 4)]),
    );
    let err = r.client().trust_update(&file).unwrap_err().to_string();
    assert!(err.contains("trust root version 3 refused"), "{err}");
    assert!(
        err.contains("not signed by enough of its own keys"),
        "{err}"
    );
    assert_eq!(
        r.status().trust_version,
        Some(2),
        "the last good root is kept"
    );
    // Signed only by its own keys: refused the same way (the old ones never handed over).
    let only_new = root(3, keys[2], &[keys[2]]);
    let file = r.put("chain.json", &chain_json(&[only_new]));
    let err = r.client().trust_update(&file).unwrap_err().to_string();
    assert!(
        err.contains("not signed by enough keys of the current trust root"),
        "{err}"
    );
    assert_eq!(r.status().trust_version, Some(2));
    // Version 2's key installs; version 3's does not.
    let err = r
        .install(&rootfs(&r, keys[2], "2.0.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature"), "{err}");
    r.install(&rootfs(&r, keys[1], "2.0.0")).unwrap();
}

#[test]
fn a_robot_offline_through_three_rotations_catches_up_and_installs_in_one_poll() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(4);
    let server = ServerHandle::start(&ServerOptions::new(
        &dir.path().join("server"),
        ota_testkit::release::trust_root(&[release_key()], 1),
    ))
    .unwrap();
    let admin = server.admin();
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.trust_pem = root(1, release_key(), &[release_key()]).to_json_pretty();
    let lines = LogLines::default();
    let server_spec = ServerSpec {
        url: server.base.clone(),
        device_id: String::new(),
        enrollment_secret: server.enrollment_secret.clone(),
        tags: BTreeMap::new(),
        backoff_initial_ms: 100,
        backoff_max_secs: 2,
        telemetry_command: None,
    };
    let mut fleet = Fleet::create(
        dir.path(),
        &[RobotPlan::new("robot-1", "1.0.0", &[])],
        &spec,
        &server_spec,
        release_key(),
        lines.sink(),
    )
    .unwrap();
    let robot = Arc::clone(&fleet.robots[0].robot);
    let image_root = std::fs::read(robot.path("trust.pub")).unwrap();

    // While the robot is off, the fleet rotates three times.
    for version in 2..=4 {
        let chain: TrustChain = admin
            .post(ota_protocol::paths::TRUST_CHAIN, &link(&keys, version))
            .unwrap();
        assert_eq!(chain.newest, Some(version));
    }
    let bundle = bundle_with(
        keys[3],
        "1.1.0",
        COMPATIBLE,
        &[
            ("rootfs", robot.rootfs_image("1.1.0")),
            ("model", robot.model_image("1.1.0")),
        ],
    );
    let published = admin.publish_bytes(bundle).unwrap();
    let id = admin
        .create_rollout(&CreateRolloutRequest {
            bundle_id: published.bundle_id,
            stages: Some(vec![100]),
            ..Default::default()
        })
        .unwrap()
        .rollout_id;

    fleet.start(Arc::new(SystemClock));
    wait_devices(&admin, &fleet.ids(), Duration::from_secs(20)).unwrap();
    let done = wait_rollout(&admin, id, Duration::from_secs(60), |d| {
        d.rollout.state == RolloutState::Completed && d.rollout.counts.succeeded == 1
    })
    .unwrap();
    assert_eq!(
        done.rollout.counts.failed, 0,
        "no install failed for want of the new keys"
    );
    assert_eq!(
        lines.count(Some("robot-1"), "trust root updated from version 1 to 4"),
        1
    );
    assert_eq!(robot.status().trust_version, Some(4));
    assert_eq!(std::fs::read(robot.path("trust.pub")).unwrap(), image_root);
    fleet.stop();
    drop(server);
}
