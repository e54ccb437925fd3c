//! Hardening (issue 13): links planted in the data directory are never written through, a failed arm leaves the
//! records matching the boot environment and says so, `mark-good` refuses what `confirm` refuses, and the CLI's
//! error lines say each thing once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_boot_store::{GrubEnvFile, StateFile};
use ota_bootloader::{BootEnvError, EnvState, EnvStore};
use ota_client::boot::BootBackend;
use ota_client::config::BootloaderKind;
use ota_client::store::{FLOOR_FILE, LOCK_FILE, STATE_FILE};
use ota_client::{BundleSource, Client, InstallOptions, NoProgress, Slot};
use ota_client_core::OutcomeKind;
use ota_testkit::errors::assert_said_once;
use ota_testkit::robot::*;

fn plant(link: &Path, victim: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(victim, link).unwrap();
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A link planted at the name of the lock, the state or the floor is refused with a message naming it: its
/// target is neither created, locked, read nor written, and nothing changes until it is removed.
#[test]
fn links_planted_in_the_data_directory_are_refused() {
    let r = Robot::new(Backend::Grub);
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let victim = r.path("victim");
    std::fs::write(&victim, "9.9.9\n").unwrap();
    let dangling = r.path("created-through-a-link");
    let bundle = try_bundle_with_floor(
        &[release_key()],
        "2.0.0",
        Some("2.0.0"),
        COMPATIBLE,
        &[("rootfs", rootfs_image("2.0.0"))],
    )
    .unwrap();
    for name in [LOCK_FILE, STATE_FILE, FLOOR_FILE] {
        for target in [&victim, &dangling] {
            plant(&data.join(name), target);
            let before = r.snapshot();
            let err = r.install(&bundle).unwrap_err().to_string();
            assert!(err.contains("symbolic link") && err.contains(name), "{err}");
            assert_said_once(&err);
            assert_eq!(r.snapshot(), before);
        }
        std::fs::remove_file(data.join(name)).unwrap();
    }
    assert!(!dangling.exists(), "a link's target was created");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "9.9.9\n");
    r.install(&bundle).unwrap();
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::B);
    confirm.unwrap();
    assert_eq!(r.status().security_floor, Some("2.0.0".parse().unwrap()));
    for name in [STATE_FILE, FLOOR_FILE] {
        assert!(!is_link(&data.join(name)), "{name}");
    }
}

/// A store whose writes fail as on a full disk, reading the real environment.
struct FullDisk<S>(S);

impl<S: EnvStore> EnvStore for FullDisk<S> {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        self.0.load()
    }

    fn store(&mut self, _: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let enospc = std::io::Error::from_raw_os_error(28);
        Err(BootEnvError::io(
            "writing",
            PathBuf::from("/boot/env"),
            enospc,
        ))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// After a failed arm: the error says the environment is unchanged and nothing was armed, the records hold no
/// pending trial and a failed install, the written slot stays verified, and the next boot has nothing to undo.
fn assert_nothing_armed(r: &Robot, err: &str, env_before: &Option<Vec<u8>>) {
    assert!(!err.contains("nothing was changed"), "{err}");
    assert!(err.contains("nothing was armed"), "{err}");
    assert_said_once(err);
    let status = r.status();
    assert_eq!(
        status.pending_trial, None,
        "a trial recorded but never armed"
    );
    assert!(
        matches!(
            status.last_install.as_ref().map(|l| &l.outcome),
            Some(OutcomeKind::Failed { .. })
        ),
        "{:?}",
        status.last_install
    );
    assert_eq!(r.slot_state("rootfs", Slot::B), "installed");
    assert_eq!(&r.env_bytes(), env_before);
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::A);
    let actions = confirm.unwrap().actions;
    assert!(
        actions.iter().all(|a| !a.contains("never armed")),
        "{actions:?}"
    );
}

#[test]
fn a_failed_arm_leaves_the_records_matching_the_environment() {
    let r = Robot::new(Backend::Grub);
    let env_before = r.env_bytes();
    let store = FullDisk(GrubEnvFile::new(r.env_path()));
    let mut client = Client::with_backend(r.config(), BootBackend::with_store(Box::new(store)));
    let bundle = r.put("b.otab", &rootfs_bundle("2.0.0"));
    let err = client
        .install(
            &BundleSource::File(bundle),
            &InstallOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert_nothing_armed(&r, &err, &env_before);
}

/// A tmpfs of a few pages, unmounted on drop.
struct TinyMount(PathBuf);

impl TinyMount {
    fn new(at: PathBuf) -> Option<TinyMount> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyMount(at))
    }
}

impl Drop for TinyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The same with a real full disk under the `file` backend's state file (its atomic replace needs a block).
#[test]
fn a_full_boot_disk_leaves_the_records_matching_the_environment() {
    let r = Robot::new(Backend::File);
    let Some(mount) = TinyMount::new(r.path("boot")) else {
        ota_testkit::tools::missing(
            "root, to mount a 64 KiB tmpfs",
            "a_full_boot_disk_leaves_the_records_matching_the_environment",
        );
        return;
    };
    let env = mount.0.join("bootstate");
    if let Some(bytes) = r.env_bytes() {
        std::fs::write(&env, bytes).unwrap();
    }
    // Fill the disk.
    let filler = std::fs::write(mount.0.join("filler"), vec![0u8; 128 * 1024]);
    assert!(filler.is_err(), "the tmpfs is not full");
    let mut config = r.config();
    config.bootloader.kind = BootloaderKind::File {
        state_file: env.clone(),
    };
    let env_before = std::fs::read(&env).ok();
    let bundle = r.put("b.otab", &rootfs_bundle("2.0.0"));
    let err = Client::open(config)
        .unwrap()
        .install(
            &BundleSource::File(bundle),
            &InstallOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(std::fs::read(&env).ok(), env_before);
    assert!(StateFile::new(&env).load().is_ok());
    // The robot's own env (the simulated bootloader's) was never touched either: the checks read it.
    assert_nothing_armed(&r, &err, &r.env_bytes());
    drop(mount);
}

/// The kernel says B although the bootloader armed nothing: confirm refuses to commit it, and mark-good refuses
/// it for the same reason; a slot written and verified but never booted is not marked good either.
#[test]
fn mark_good_refuses_what_confirm_refuses() {
    let r = Robot::new(Backend::File);
    r.install(&rootfs_bundle("2.0.0")).unwrap();
    let mut cleared = r.env_vars();
    cleared.insert("OTA_TRIAL".into(), String::new());
    r.store().store(&cleared).unwrap();
    std::fs::write(r.path("cmdline"), "ota.slot=B\n").unwrap();
    let confirm = r.client().confirm().unwrap_err().to_string();
    let before = r.snapshot();
    let err = r.client().mark_good(None).unwrap_err().to_string();
    assert!(err.contains(&confirm), "{err} / {confirm}");
    assert_eq!(r.slot_state("rootfs", Slot::B), "installed");
    assert_eq!(r.snapshot(), before);

    let r = Robot::new(Backend::Grub);
    let staged = InstallOptions {
        stage_only: true,
        ..InstallOptions::default()
    };
    r.install_bytes(&rootfs_bundle("2.0.0"), &staged).unwrap();
    let err = r.client().mark_good(Some(Slot::B)).unwrap_err().to_string();
    assert!(err.contains("never booted"), "{err}");
    assert_eq!(r.slot_state("rootfs", Slot::B), "installed");

    // Marked bad, it still never ran: a bad state does not make it a failed trial the operator may overrule,
    // in the state file as the CLI reads it back.
    r.client().mark_bad(Some(Slot::B)).unwrap();
    let before = r.snapshot();
    let err = r.client().mark_good(Some(Slot::B)).unwrap_err().to_string();
    assert!(err.contains("never booted"), "{err}");
    assert_eq!(r.slot_state("rootfs", Slot::B), "bad");
    assert_eq!(r.snapshot(), before);
}

/// `ota-client` on failing inputs: one line each, no clause said twice.
#[test]
fn cli_error_lines_say_each_thing_once() {
    let r = Robot::new(Backend::Grub);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ota-client"))
            .arg("--config")
            .arg(&r.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut outputs = vec![
        run(&["install", "/nonexistent/b.otab"]),
        run(&["mark-good", "C"]),
    ];
    // An unreadable and a corrupt environment (a store error under the client's).
    let env = r.env_path();
    std::fs::remove_file(&env).ok();
    std::fs::create_dir(&env).unwrap();
    outputs.push(run(&["install", "/nonexistent/b.otab"]));
    outputs.push(run(&["mark-good"]));
    std::fs::remove_dir(&env).unwrap();
    let mut junk = ota_bootloader::grubenv::encode(&Default::default()).unwrap();
    junk[0] = b'X';
    std::fs::write(&env, &junk).unwrap();
    outputs.push(run(&["confirm"]));
    outputs.push(run(&["mark-bad"]));
    for out in &outputs {
        // Progress lines ("opening ...") may come first; the error is one line.
        let errors: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("ota-client: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert_said_once(errors[0]);
    }
}
