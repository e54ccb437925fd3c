//! The security floor, reverts, stage-only installs and activation on simulated robots booting
//! through the shipped GRUB script (both boot backends), and through the `ota-client` CLI.

use std::process::Command;

use ota_bundle_format::{build_bundle_to_vec, manifest_digest, BundleSpec, ImageInput};
use ota_client::{ClientError, InstallOptions, InstallReport, Slot};
use ota_client_core::EventKind;
use ota_testkit::robot::*;

const BACKENDS: [Backend; 2] = [Backend::Grub, Backend::File];

/// A rootfs bundle of `version` carrying the signed `floor`.
pub(crate) fn floored_bundle(version: &str, floor: &str) -> Vec<u8> {
    let spec = BundleSpec {
        version: version.parse().unwrap(),
        compatible: COMPATIBLE.into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: Some(floor.parse().unwrap()),
        level: 1,
        workers: 1,
    };
    let image = ImageInput {
        name: "rootfs.img".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(std::io::Cursor::new(rootfs_image(version))),
    };
    let key = ota_keys::SecretKey::from_pem(&release_key().to_pem()).unwrap();
    build_bundle_to_vec(&spec, vec![image], &[key]).unwrap().1
}

/// The bundle's identity, as the server offers it.
pub(crate) fn digest(bundle: &[u8]) -> String {
    let head = ota_bundle_format::UnverifiedBundle::read(bundle).unwrap();
    manifest_digest(head.manifest_bytes())
}

fn commit(r: &Robot, bundle: &[u8], options: &InstallOptions) -> Slot {
    r.install_bytes(bundle, options).unwrap();
    let (booted, res) = r.reboot_and_confirm();
    res.unwrap();
    assert_eq!(r.status().primary, Some(booted));
    booted
}

fn revert() -> InstallOptions {
    InstallOptions {
        revert: true,
        ..InstallOptions::default()
    }
}

#[test]
fn a_committed_floor_refuses_every_lower_version_whatever_the_options() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        assert_eq!(
            commit(&r, &rootfs_bundle("2.0.0"), &Default::default()),
            Slot::B
        );
        let fix = floored_bundle("3.0.0", "3.0.0");
        r.install(&fix).unwrap();
        // Armed, not committed: the old release may still come back.
        assert_eq!(r.status().security_floor, None);
        assert!(!r.path("data/security-floor").exists());
        let (booted, res) = r.reboot_and_confirm();
        res.unwrap();
        assert_eq!(booted, Slot::A);
        assert_eq!(r.status().security_floor, Some("3.0.0".parse().unwrap()));
        assert_eq!(
            std::fs::read_to_string(r.path("data/security-floor")).unwrap(),
            "3.0.0\n"
        );

        let before = r.snapshot();
        let manual = InstallOptions {
            allow_downgrade: true,
            revert: true,
            ..InstallOptions::default()
        };
        for options in [revert(), manual] {
            let err = r
                .install_bytes(&rootfs_bundle("2.0.0"), &options)
                .unwrap_err();
            assert!(matches!(err, ClientError::Refused(_)), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("version 2.0.0 is below this robot's security floor 3.0.0"),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        // Slot B still holds 2.0.0, verified and good: activating it is refused too, and so is
        // falling back to it by marking the running slot bad.
        let err = r
            .client()
            .activate(&digest(&rootfs_bundle("2.0.0")), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("below this robot's security floor 3.0.0"),
            "{err}"
        );
        let err = r.client().mark_bad(None).unwrap_err().to_string();
        assert!(
            err.contains("below this robot's security floor 3.0.0"),
            "{err}"
        );
        assert_eq!(r.snapshot(), before, "a refusal touched the robot");
        let failed = r
            .status()
            .unreported_events
            .iter()
            .filter(|e| e.kind == EventKind::InstallFailed)
            .count();
        assert_eq!(failed, 3, "each refusal is reported to the server");

        // The floor outlives a state file moved away (it is kept in its own file too).
        std::fs::remove_file(r.path("data/state.json")).unwrap();
        assert_eq!(r.status().security_floor, Some("3.0.0".parse().unwrap()));
        let err = r
            .install_bytes(&rootfs_bundle("2.5.0"), &revert())
            .unwrap_err();
        assert!(err.to_string().contains("security floor 3.0.0"), "{err}");
        // A version at or above the floor still installs.
        assert_eq!(
            commit(&r, &rootfs_bundle("9.0.0"), &Default::default()),
            Slot::B
        );
    }
}

#[test]
fn a_floor_raising_release_that_fails_its_trial_leaves_the_floor_where_it_was() {
    let r = Robot::new(Backend::Grub);
    r.set_healthy(false);
    r.install(&floored_bundle("3.0.0", "3.0.0")).unwrap();
    let (_, res) = r.reboot_and_confirm();
    assert!(res.is_err());
    r.set_healthy(true);
    let (booted, res) = r.reboot_and_confirm();
    res.unwrap();
    assert_eq!(booted, Slot::A);
    assert_eq!(r.status().security_floor, None);
    assert!(!r.path("data/security-floor").exists());
    assert_eq!(
        commit(&r, &rootfs_bundle("2.0.0"), &Default::default()),
        Slot::B
    );
}

#[test]
fn a_corrupt_floor_file_refuses_installs_instead_of_guessing() {
    let r = Robot::new(Backend::File);
    std::fs::create_dir_all(r.path("data")).unwrap();
    std::fs::write(r.path("data/security-floor"), b"three\n").unwrap();
    let err = r.install(&rootfs_bundle("2.0.0")).unwrap_err().to_string();
    assert!(
        err.contains("security floor file") && err.contains("corrupt"),
        "{err}"
    );
    assert!(!r.status().errors.is_empty());
}

#[test]
fn a_revert_switches_back_to_the_release_in_the_other_slot_without_downloading() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        let old = rootfs_bundle("2.0.0");
        commit(&r, &old, &Default::default());
        commit(&r, &floored_bundle("3.0.0", "1.0.0"), &Default::default());
        assert_eq!(r.booted(), Slot::A);
        // Without the rollout's revert it is a downgrade.
        let err = r.client().activate(&digest(&old), false).unwrap_err();
        assert!(err.to_string().contains("refusing a downgrade"), "{err}");
        // A digest no slot holds: the caller downloads it.
        assert_eq!(
            r.client()
                .activate(&digest(&rootfs_bundle("2.5.0")), true)
                .unwrap(),
            None
        );
        assert_eq!(
            r.client().activate(&digest(&old), true).unwrap(),
            Some(Slot::B)
        );
        assert_eq!(r.slot_state("rootfs", Slot::B), "trying");
        let (booted, res) = r.reboot_and_confirm();
        res.unwrap();
        assert_eq!(booted, Slot::B);
        assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
        assert_eq!(r.slot_state("rootfs", Slot::B), "good");
        assert_eq!(r.status().security_floor, Some("1.0.0".parse().unwrap()));
        // The same revert as a fresh install (the other slot rewritten) is allowed too.
        r.install_bytes(&rootfs_bundle("2.5.0"), &Default::default())
            .unwrap();
        let (_, res) = r.reboot_and_confirm();
        res.unwrap();
        commit(&r, &rootfs_bundle("2.0.0"), &revert());
    }
}

#[test]
fn stage_only_writes_and_verifies_but_arms_nothing_until_activated() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        let bundle = rootfs_bundle("2.0.0");
        let options = InstallOptions {
            stage_only: true,
            ..InstallOptions::default()
        };
        let report = r.install_bytes(&bundle, &options).unwrap();
        assert_eq!(
            report,
            InstallReport::Staged {
                version: "2.0.0".parse().unwrap(),
                bundle_hash: digest(&bundle),
                slot: Some(Slot::B),
            }
        );
        let st = r.status();
        assert_eq!(st.staged, Some(digest(&bundle)));
        assert_eq!(st.trial, None);
        assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
        assert_eq!(r.slot_state("rootfs", Slot::B), "installed");
        assert_eq!(r.take_reboot_requests(), 0);
        // Reboots keep running the old slot.
        for _ in 0..3 {
            let (booted, res) = r.reboot_and_confirm();
            res.unwrap();
            assert_eq!(booted, Slot::A);
        }
        // Activation needs no bundle file at all.
        std::fs::remove_file(r.path("bundle.otab")).unwrap();
        assert_eq!(
            r.client().activate(&digest(&bundle), false).unwrap(),
            Some(Slot::B)
        );
        assert_eq!(r.status().staged, None);
        let (booted, res) = r.reboot_and_confirm();
        res.unwrap();
        assert_eq!(booted, Slot::B);
        assert_eq!(r.status().primary, Some(Slot::B));
    }
}

#[test]
fn a_staged_live_bundle_is_switched_on_activation() {
    let r = Robot::new(Backend::Grub);
    let bundle = model_bundle("2.0.0");
    let options = InstallOptions {
        stage_only: true,
        ..InstallOptions::default()
    };
    r.install_bytes(&bundle, &options).unwrap();
    assert_eq!(r.model_link(), Slot::A, "staging switched the model");
    assert_eq!(r.restarts(), 0);
    assert_eq!(
        r.client().activate(&digest(&bundle), false).unwrap(),
        Some(Slot::B)
    );
    assert_eq!(r.model_link(), Slot::B);
    assert_eq!(r.slot_state("model", Slot::B), "good");
    assert_eq!(r.status().staged, None);
}

#[test]
fn a_staged_mixed_bundle_switches_its_model_when_the_trial_commits() {
    let r = Robot::new(Backend::File);
    let bundle = mixed_bundle("2.0.0");
    let options = InstallOptions {
        stage_only: true,
        ..InstallOptions::default()
    };
    r.install_bytes(&bundle, &options).unwrap();
    assert_eq!(r.model_link(), Slot::A);
    assert_eq!(
        r.client().activate(&digest(&bundle), false).unwrap(),
        Some(Slot::B)
    );
    assert_eq!(r.model_link(), Slot::A, "the model waits for the commit");
    let (booted, res) = r.reboot_and_confirm();
    res.unwrap();
    assert_eq!(booted, Slot::B);
    assert_eq!(r.model_link(), Slot::B);
    assert_eq!(r.slot_bytes("model", Slot::B), model_image("2.0.0"));
}

#[test]
fn a_new_install_replaces_the_staged_bundle() {
    let r = Robot::new(Backend::Grub);
    let staged = rootfs_bundle("2.0.0");
    let options = InstallOptions {
        stage_only: true,
        ..InstallOptions::default()
    };
    r.install_bytes(&staged, &options).unwrap();
    r.install(&rootfs_bundle("2.5.0")).unwrap();
    assert_eq!(r.status().staged, None);
    let (booted, res) = r.reboot_and_confirm();
    res.unwrap();
    assert_eq!(booted, Slot::B);
    // The staged bytes are gone: nothing to activate.
    assert_eq!(r.client().activate(&digest(&staged), true).unwrap(), None);
}

fn cli(r: &Robot, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ota-client"))
        .arg("--config")
        .arg(&r.config_path)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_stages_activates_and_shows_the_floor() {
    let r = Robot::new(Backend::Grub);
    let bundle = floored_bundle("2.0.0", "2.0.0");
    let path = r.put("fix.otab", &bundle);
    let out = cli(&r, &["install", "--stage-only", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("ota-client activate {}", digest(&bundle))),
        "{stdout}"
    );
    let out = cli(&r, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("floor:      -"), "{stdout}");
    assert!(
        stdout.contains(&format!("staged:     {}", digest(&bundle))),
        "{stdout}"
    );

    let out = cli(&r, &["activate", &digest(&rootfs_bundle("1.0.0"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no slot other than the running one holds bundle"),
        "{stderr}"
    );
    let out = cli(&r, &["activate", &digest(&bundle)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("armed slot B"));
    r.reboot();
    let out = cli(&r, &["confirm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&r, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["security_floor"], "2.0.0");
    let out = cli(&r, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("floor:      2.0.0"));

    let old = r.put("old.otab", &rootfs_bundle("1.0.0"));
    let out = cli(&r, &["install", "--allow-downgrade", old.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim().lines().last().unwrap(),
        "ota-client: error: install refused: version 1.0.0 is below this robot's security floor 2.0.0: refusing it, whatever the server says"
    );
}
