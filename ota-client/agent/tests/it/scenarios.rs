//! End-to-end scenarios on simulated robots booting through the shipped GRUB script, run
//! against both the GRUB environment and the `file` backend.

use ota_client::{ClientError, InstallOptions, InstallReport, Slot};
use ota_client_core::EventKind;
use ota_testkit::robot::*;

const BACKENDS: [Backend; 2] = [Backend::Grub, Backend::File];

fn events(r: &Robot) -> Vec<EventKind> {
    r.status()
        .unreported_events
        .iter()
        .map(|e| e.kind)
        .collect()
}

#[test]
fn factory_robot_updates_confirms_and_stays_committed() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        assert!(r.env_bytes().is_none(), "factory env is never written");
        assert_eq!(r.reboot(), Slot::A, "a never-written env boots A");
        assert!(
            r.env_bytes().is_none(),
            "a committed boot does not write the env"
        );

        let report = r.install(&rootfs_bundle("2.0.0")).unwrap();
        assert!(
            matches!(
                report,
                InstallReport::TrialArmed {
                    slot: Slot::B,
                    tries: 3,
                    ..
                }
            ),
            "{report:?}"
        );
        assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
        assert_eq!(r.slot_bytes("rootfs", Slot::A), rootfs_image("factory"));
        let env = r.env_vars();
        assert_eq!(
            (
                env["OTA_PRIMARY"].as_str(),
                env["OTA_TRIAL"].as_str(),
                env["OTA_TRIES"].as_str()
            ),
            ("A", "B", "3")
        );
        assert_eq!(r.slot_state("rootfs", Slot::B), "trying");

        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::B);
        confirm.unwrap();
        let env = r.env_vars();
        assert_eq!(
            (env["OTA_PRIMARY"].as_str(), env["OTA_TRIAL"].as_str()),
            ("B", "")
        );
        assert_eq!(r.slot_state("rootfs", Slot::B), "good");
        let st = r.status();
        assert_eq!(
            (st.booted, st.primary, st.trial.clone()),
            (Some(Slot::B), Some(Slot::B), None)
        );
        assert!(matches!(
            st.last_install.unwrap().outcome,
            ota_client_core::OutcomeKind::Succeeded
        ));
        assert_eq!(events(&r), vec![EventKind::Committed]);

        // Ordinary reboots of the committed slot change nothing, confirm is idempotent.
        let env_bytes = r.env_bytes();
        let state_before = std::fs::read(r.path("data/state.json")).unwrap();
        for _ in 0..2 {
            let (booted, confirm) = r.reboot_and_confirm();
            assert_eq!(booted, Slot::B);
            confirm.unwrap();
            assert_eq!(
                r.env_bytes(),
                env_bytes,
                "{backend:?}: env changed on an ordinary reboot"
            );
        }
        assert_eq!(
            std::fs::read(r.path("data/state.json")).unwrap(),
            state_before
        );
        assert_eq!(r.take_reboot_requests(), 0);

        // The next update goes to A.
        let report = r.install(&rootfs_bundle("3.0.0")).unwrap();
        assert!(matches!(
            report,
            InstallReport::TrialArmed { slot: Slot::A, .. }
        ));
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::A);
        confirm.unwrap();
        assert_eq!(r.slot_bytes("rootfs", Slot::A), rootfs_image("3.0.0"));
        assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
    }
}

#[test]
fn failed_health_check_rolls_back_to_a_with_the_reason() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        r.install(&rootfs_bundle("2.0.0")).unwrap();
        r.set_healthy(false);
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::B);
        let err = confirm.unwrap_err();
        assert!(
            matches!(err, ClientError::TrialFailed { slot: Slot::B, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("app-healthy") && msg.contains("app did not come up"),
            "{msg}"
        );
        assert_eq!(r.take_reboot_requests(), 1, "the reboot command ran");
        assert_eq!(r.env_vars()["OTA_TRIAL"], "");
        assert_eq!(r.slot_state("rootfs", Slot::B), "bad");

        r.set_healthy(true);
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::A);
        confirm.unwrap();
        let st = r.status();
        assert_eq!(st.primary, Some(Slot::A));
        let ev = st.unreported_events.last().unwrap().clone();
        assert_eq!(ev.kind, EventKind::TrialFailed);
        assert!(ev.reason.contains("app-healthy"), "{}", ev.reason);
        assert_eq!(ev.version, Some("2.0.0".parse().unwrap()));
        assert_eq!(r.slot_bytes("rootfs", Slot::A), rootfs_image("factory"));
    }
}

#[test]
fn trial_that_never_reaches_confirm_is_rolled_back_by_the_bootloader() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        r.install(&rootfs_bundle("2.0.0")).unwrap();
        // Kernel panics before confirm: every try is used up on B only.
        for left in ["2", "1", "0"] {
            assert_eq!(r.reboot(), Slot::B);
            assert_eq!(r.env_vars()["OTA_TRIES"], left);
            assert_eq!(r.env_vars()["OTA_PRIMARY"], "A");
        }
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::A);
        let report = confirm.unwrap();
        assert!(
            report.actions[0].contains("rolled back"),
            "{:?}",
            report.actions
        );
        let st = r.status();
        let ev = st.unreported_events.last().unwrap();
        assert_eq!(ev.kind, EventKind::RolledBack);
        assert!(ev.reason.contains("trial boots exhausted"), "{}", ev.reason);
        assert_eq!(r.slot_state("rootfs", Slot::B), "bad");
        assert_eq!(r.env_vars()["OTA_TRIAL"], "");
        // Further reboots stay on A and change nothing.
        let env = r.env_bytes();
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::A);
        confirm.unwrap();
        assert_eq!(r.env_bytes(), env);
        // Events are taken once.
        let taken = r.client().take_events().unwrap();
        assert_eq!(taken.last().unwrap().kind, EventKind::RolledBack);
        assert!(r.status().unreported_events.is_empty());
        // And the robot takes the next update.
        r.install(&rootfs_bundle("2.0.1")).unwrap();
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::B);
        confirm.unwrap();
        assert_eq!(r.status().primary, Some(Slot::B));
    }
}

fn refused(r: &Robot, bundle: &[u8], options: &InstallOptions, expect: &str) {
    let before = r.snapshot();
    let err = r.install_bytes(bundle, options).unwrap_err().to_string();
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let after = r.snapshot();
    assert_eq!(
        after.rootfs_a, before.rootfs_a,
        "booted slot touched: {err}"
    );
    assert_eq!(after.env, before.env, "env touched: {err}");
    assert_eq!(after.model_a, before.model_a);
    assert_eq!(after.link, before.link);
    let failed = r.status().last_install.unwrap();
    assert!(
        matches!(failed.outcome, ota_client_core::OutcomeKind::Failed { .. }),
        "failure recorded"
    );
}

/// Refusals before the first byte leave every slot byte-identical.
fn refused_before_writing(r: &Robot, bundle: &[u8], options: &InstallOptions, expect: &str) {
    let before = r.snapshot();
    refused(r, bundle, options, expect);
    assert_eq!(
        r.snapshot(),
        before,
        "a slot was touched although the bundle was refused up front"
    );
}

#[test]
fn bad_bundles_are_refused_each_with_its_own_message() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        let none = InstallOptions::default();
        let other_key = ota_keys::SecretKey::generate();
        let forged = bundle_with(
            &other_key,
            "2.0.0",
            COMPATIBLE,
            &[("rootfs", rootfs_image("2.0.0"))],
        );
        refused_before_writing(&r, &forged, &none, "signature check failed");
        let wrong = bundle_with(
            release_key(),
            "2.0.0",
            "other-robot",
            &[("rootfs", rootfs_image("2.0.0"))],
        );
        refused_before_writing(
            &r,
            &wrong,
            &none,
            "bundle is for \"other-robot\" but this robot is \"acme-robot-v2\"",
        );
        let too_big = bundle_with(
            release_key(),
            "2.0.0",
            COMPATIBLE,
            &[("rootfs", image(9, ROOTFS_SIZE + 1))],
        );
        refused_before_writing(&r, &too_big, &none, "holds only");
        let unknown = bundle_with(
            release_key(),
            "2.0.0",
            COMPATIBLE,
            &[("kernel", image(9, 10))],
        );
        refused_before_writing(&r, &unknown, &none, "slot class 'kernel'");
        let good = rootfs_bundle("2.0.0");
        refused_before_writing(&r, &good[..700], &none, "truncated");
        refused_before_writing(&r, b"", &none, "not an OTA bundle: the file is empty");

        // Damage in the payload is found while streaming: the standby slot was written
        // but is never armed.
        let truncated = &good[..good.len() - 2000];
        refused(&r, truncated, &none, "truncated");
        assert_eq!(r.slot_state("rootfs", Slot::B), "writing");
        assert_eq!(r.status().trial, None);
        let mut tampered = good.clone();
        let at = tampered.len() - 3000;
        tampered[at] ^= 0x40;
        refused(&r, &tampered, &none, "image 'rootfs.img'");
        assert_eq!(r.slot_state("rootfs", Slot::B), "writing");
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0u8; 512]);
        refused(&r, &trailing, &none, "trailing data");
        assert_eq!(
            r.slot_state("rootfs", Slot::B),
            "writing",
            "never recorded as verified"
        );
        assert_eq!(r.reboot(), Slot::A);
        assert!(r
            .client()
            .mark_good(Some(Slot::B))
            .unwrap_err()
            .to_string()
            .contains("never fully written"));

        // A good bundle still installs.
        r.install(&good).unwrap();
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::B);
        confirm.unwrap();

        // Downgrades and reinstalls.
        let older = rootfs_bundle("1.5.0");
        refused_before_writing(
            &r,
            &older,
            &none,
            "refusing a downgrade (use --allow-downgrade)",
        );
        refused_before_writing(&r, &good, &none, "version 2.0.0 is already installed");
        r.install_bytes(
            &older,
            &InstallOptions {
                allow_downgrade: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::A);
        confirm.unwrap();
        assert_eq!(r.slot_bytes("rootfs", Slot::A), rootfs_image("1.5.0"));
    }
}

#[test]
fn install_while_a_trial_is_pending_is_refused() {
    let r = Robot::new(Backend::Grub);
    r.install(&rootfs_bundle("2.0.0")).unwrap();
    let before = r.snapshot();
    let err = r.install(&rootfs_bundle("3.0.0")).unwrap_err().to_string();
    assert!(err.contains("a trial boot of slot B is pending"), "{err}");
    assert_eq!(r.snapshot(), before);
    // Also while running the trial slot.
    assert_eq!(r.reboot(), Slot::B);
    let err = r.install(&rootfs_bundle("3.0.0")).unwrap_err().to_string();
    assert!(
        err.contains("pending") || err.contains("committed slot"),
        "{err}"
    );
}

#[test]
fn a_second_writer_fails_on_the_lock() {
    let r = Robot::new(Backend::Grub);
    let data = ota_client::store::DataDir::new(r.path("data"));
    let held = data.lock().unwrap();
    let before = r.snapshot();
    let err = r.install(&rootfs_bundle("2.0.0")).unwrap_err().to_string();
    assert!(
        err.contains("another ota-client operation holds the lock"),
        "{err}"
    );
    for e in [
        r.client().confirm().unwrap_err(),
        r.client().mark_good(None).unwrap_err(),
        r.client().mark_bad(None).unwrap_err(),
    ] {
        assert!(e.to_string().contains("holds the lock"), "{e}");
    }
    assert_eq!(r.snapshot(), before);
    drop(held);
    r.install(&rootfs_bundle("2.0.0")).unwrap();
}

#[test]
fn corrupt_boot_environment_stops_everything_and_is_left_alone() {
    for backend in BACKENDS {
        let r = Robot::new(backend);
        let mut junk = match backend {
            Backend::Grub => {
                let mut b = ota_bootloader::grubenv::encode(&Default::default()).unwrap();
                b[0] = b'X';
                b
            }
            Backend::File => b"# ota boot state v1\nOTA_PRIMARY=B\n# crc32 00000000\n".to_vec(),
        };
        junk.truncate(junk.len());
        std::fs::write(r.env_path(), &junk).unwrap();
        let before = r.snapshot();
        let err = r.install(&rootfs_bundle("2.0.0")).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(
            err.contains(&r.env_path().display().to_string()),
            "names the file: {err}"
        );
        assert_eq!(r.snapshot(), before);
        assert_eq!(
            std::fs::read(r.env_path()).unwrap(),
            junk,
            "env file byte-identical"
        );
        let err = r.client().confirm().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert_eq!(std::fs::read(r.env_path()).unwrap(), junk);
        assert!(!r.status().errors.is_empty());
    }
}

#[test]
fn live_model_update_switches_without_reboot() {
    let r = Robot::new(Backend::Grub);
    let report = r.install(&model_bundle("2.0.0")).unwrap();
    assert!(
        matches!(report, InstallReport::LiveSwitched { .. }),
        "{report:?}"
    );
    assert_eq!(r.model_link(), Slot::B);
    assert_eq!(r.slot_bytes("model", Slot::B), model_image("2.0.0"));
    assert_eq!(r.restarts(), 1);
    assert!(
        r.env_bytes().is_none(),
        "a live update does not touch the boot env"
    );
    assert_eq!(r.take_reboot_requests(), 0);
    assert_eq!(r.slot_state("model", Slot::B), "good");
    assert_eq!(
        r.status().unreported_events.last().unwrap().kind,
        EventKind::LiveCommitted
    );
    // Survives reboots; next model update goes to A.
    let (_, confirm) = r.reboot_and_confirm();
    confirm.unwrap();
    assert_eq!(r.model_link(), Slot::B);
    r.install(&model_bundle("3.0.0")).unwrap();
    assert_eq!(r.model_link(), Slot::A);
    assert_eq!(r.slot_bytes("model", Slot::A), model_image("3.0.0"));
}

#[test]
fn live_model_update_failing_health_switches_back() {
    let r = Robot::new(Backend::File);
    r.set_healthy(false);
    let err = r.install(&model_bundle("2.0.0")).unwrap_err();
    assert!(matches!(err, ClientError::LiveFailed(_)), "{err}");
    assert!(err.to_string().contains("app-healthy"), "{err}");
    assert_eq!(r.model_link(), Slot::A);
    assert_eq!(r.slot_bytes("model", Slot::A), model_image("factory"));
    assert_eq!(
        r.restarts(),
        2,
        "restarted after switching and after switching back"
    );
    assert_eq!(r.slot_state("model", Slot::B), "bad");
    let ev = r.status().unreported_events.last().unwrap().clone();
    assert_eq!(ev.kind, EventKind::LiveFailed);
    r.set_healthy(true);
    r.install(&model_bundle("2.0.1")).unwrap();
    assert_eq!(r.model_link(), Slot::B);
}

#[test]
fn mixed_bundle_switches_live_classes_at_commit() {
    for healthy in [true, false] {
        let r = Robot::new(Backend::Grub);
        let report = r.install(&mixed_bundle("2.0.0")).unwrap();
        assert!(
            matches!(&report, InstallReport::TrialArmed { live_classes, .. } if live_classes == &["model".to_string()])
        );
        assert_eq!(r.model_link(), Slot::A, "not switched before the commit");
        assert_eq!(r.slot_bytes("model", Slot::B), model_image("2.0.0"));
        r.set_healthy(healthy);
        let (booted, confirm) = r.reboot_and_confirm();
        assert_eq!(booted, Slot::B);
        assert_eq!(confirm.is_ok(), healthy);
        assert_eq!(r.model_link(), if healthy { Slot::B } else { Slot::A });
        if healthy {
            assert_eq!(r.slot_state("model", Slot::B), "good");
            assert_eq!(r.restarts(), 1);
        }
    }
}

#[test]
fn mark_good_and_mark_bad() {
    let r = Robot::new(Backend::Grub);
    // The only good slot cannot be marked bad: B was never written.
    let before = r.snapshot();
    let err = r.client().mark_bad(None).unwrap_err().to_string();
    assert!(err.contains("not known good"), "{err}");
    assert_eq!(r.snapshot(), before);

    // mark-good on a trial boot commits it (without health checks, like rauc).
    r.install(&rootfs_bundle("2.0.0")).unwrap();
    assert_eq!(r.reboot(), Slot::B);
    r.client().mark_good(None).unwrap();
    assert_eq!(r.env_vars()["OTA_PRIMARY"], "B");
    assert_eq!(r.env_vars()["OTA_TRIAL"], "");
    r.client().confirm().unwrap();
    assert_eq!(r.reboot(), Slot::B);

    // Both slots good now: mark-bad of the running slot falls back to A at the next boot.
    let msg = r.client().mark_bad(None).unwrap();
    assert!(msg.contains("slot A boots"), "{msg}");
    assert_eq!(r.status().primary, Some(Slot::A));
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::A);
    confirm.unwrap();
    assert_eq!(r.slot_state("rootfs", Slot::B), "bad");
    // A bad slot cannot be the fallback.
    assert!(r
        .client()
        .mark_bad(None)
        .unwrap_err()
        .to_string()
        .contains("not known good"));

    // mark-bad on a trial boot fails the trial.
    r.install(&rootfs_bundle("3.0.0")).unwrap();
    assert_eq!(r.reboot(), Slot::B);
    let msg = r.client().mark_bad(None).unwrap();
    assert!(msg.contains("reboot to return to slot A"), "{msg}");
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::A);
    confirm.unwrap();
    assert_eq!(r.slot_state("rootfs", Slot::B), "bad");
}

#[test]
fn never_commits_a_slot_that_is_not_booted_on_trial() {
    let r = Robot::new(Backend::File);
    r.install(&rootfs_bundle("2.0.0")).unwrap();
    // Pretend the kernel says B although the bootloader did not arm it: inconsistent.
    let vars = r.env_vars();
    let mut cleared = vars.clone();
    cleared.insert("OTA_TRIAL".into(), String::new());
    r.store().store(&cleared).unwrap();
    std::fs::write(r.path("cmdline"), "ota.slot=B\n").unwrap();
    let before = r.snapshot();
    let err = r.client().confirm().unwrap_err().to_string();
    assert!(err.contains("not committing"), "{err}");
    assert_eq!(r.snapshot(), before);
    assert_eq!(r.env_vars()["OTA_PRIMARY"], "A");
}

#[test]
fn trust_root_rotation() {
    let r = Robot::new(Backend::Grub);
    let new_key = ota_keys::SecretKey::generate();
    // The robot trusts a bare .pub (version 0): the next root is version 1, signed by the old key and the new one.
    let root = ota_keys::TrustRoot::new(1, 1, vec![new_key.public_key()]).unwrap();
    let mut unsigned = ota_keys::SignedTrustRoot::new(root.clone());
    let p = r.put("new-trust.json", unsigned.to_json_pretty().as_bytes());
    let err = r.client().trust_update(&p).unwrap_err().to_string();
    assert!(err.contains("trust root update refused"), "{err}");
    unsigned.sign(release_key());
    unsigned.sign(&new_key);
    let p = r.put("new-trust.json", unsigned.to_json_pretty().as_bytes());
    assert_eq!(r.client().trust_update(&p).unwrap(), 1);
    // The old key no longer installs; the new one does.
    let err = r.install(&rootfs_bundle("2.0.0")).unwrap_err().to_string();
    assert!(err.contains("signature"), "{err}");
    let b = bundle_with(
        &new_key,
        "2.0.0",
        COMPATIBLE,
        &[("rootfs", rootfs_image("2.0.0"))],
    );
    r.install(&b).unwrap();
    // Replaying the same version is refused.
    assert!(r
        .client()
        .trust_update(&p)
        .unwrap_err()
        .to_string()
        .contains("not newer"));
}

#[test]
fn install_with_reboot_runs_the_reboot_command_after_arming() {
    let r = Robot::new(Backend::Grub);
    let report = r
        .install_bytes(
            &rootfs_bundle("2.0.0"),
            &InstallOptions {
                reboot: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        report,
        InstallReport::TrialArmed {
            rebooting: true,
            ..
        }
    ));
    assert_eq!(r.take_reboot_requests(), 1);
    assert_eq!(r.env_vars()["OTA_TRIAL"], "B", "armed before rebooting");
}
