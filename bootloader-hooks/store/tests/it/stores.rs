//! Store behaviour: never-written, corrupt, atomic and torn writes, planted links.

use std::collections::BTreeMap;
use std::path::Path;

use ota_boot_store::{GrubEnvFile, StateFile, UBootEnv};
use ota_bootloader::env_from_pairs as vars;
use ota_bootloader::uboot::{self, CopyState};
use ota_bootloader::{BootEnv, BootEnvError, EnvState, EnvStore, FwEnvConfig, Slot};

fn blank(path: &Path, len: usize) {
    std::fs::write(path, vec![0xff; len]).unwrap();
}

fn uboot(dir: &Path, redundant: bool, size: usize) -> UBootEnv {
    let dev = dir.join("env.img");
    blank(&dev, 2 * size);
    let mut cfg = format!("{} 0x0 {size:#x}\n", dev.display());
    if redundant {
        cfg.push_str(&format!("{} {size} {size:#x}\n", dev.display()));
    }
    let cfg_path = dir.join("fw_env.config");
    std::fs::write(&cfg_path, cfg).unwrap();
    UBootEnv::from_config_file(&cfg_path)
        .unwrap()
        .with_default_env(vars(&[("bootcmd", "run ota")]))
}

#[test]
fn grubenv_file_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut s = GrubEnvFile::new(&path);
    assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
    // grub-install's empty block is also "never written"
    std::fs::write(
        &path,
        ota_bootloader::grubenv::encode(&BTreeMap::new()).unwrap(),
    )
    .unwrap();
    assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
    let v = vars(&[("OTA_PRIMARY", "B"), ("saved_entry", "x")]);
    s.store(&v).unwrap();
    assert_eq!(s.load().unwrap(), EnvState::Vars(v));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp file left behind");

    std::fs::write(&path, b"# GRUB Environment Block\n").unwrap();
    let err = s.load().unwrap_err();
    assert!(matches!(err, BootEnvError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // Too large: never writes more than the block.
    let big = vars(&[("x", &"y".repeat(1000))]);
    assert!(matches!(s.store(&big), Err(BootEnvError::TooLarge { .. })));
}

#[test]
fn grubenv_is_rewritten_in_place_once_it_exists() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut s = GrubEnvFile::new(&path);
    // A factory image without the file: created (by rename).
    s.store(&BootEnv::default().applied_to(&BTreeMap::new()))
        .unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let before = std::fs::read(&path).unwrap();
    // Later writes keep the same file (no new directory entry or clusters on a FAT ESP), and the
    // client's variables only ever change bytes of the first 512-byte sector.
    let armed = BootEnv::default()
        .arm_trial(Slot::B, 3)
        .applied_to(&vars(&[("saved_entry", "ota_A")]));
    s.store(&armed).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), 1024);
    assert_eq!(before[512..], after[512..], "second sector unchanged");
    assert_eq!(s.load().unwrap(), EnvState::Vars(armed));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp file left behind");
}

#[test]
fn state_file_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot-state");
    let mut s = StateFile::new(&path);
    assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
    let v = BootEnv::default()
        .arm_trial(Slot::B, 3)
        .applied_to(&vars(&[("keep", "me")]));
    s.store(&v).unwrap();
    assert_eq!(s.load().unwrap(), EnvState::Vars(v));
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.iter().position(|&b| b == b'3').unwrap();
    bytes[i] = b'9';
    std::fs::write(&path, &bytes).unwrap();
    let err = s.load().unwrap_err();
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
}

/// A whole-file store never writes through a link planted beside the env: not at the name its
/// temp file used to have (`.NAME.ota-tmp`, opened with truncate before the shared atomic
/// writer), and not at the env path itself (the link is replaced, its target untouched).
#[test]
fn file_stores_do_not_follow_planted_links() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let v = BootEnv::default()
        .arm_trial(Slot::B, 3)
        .applied_to(&BTreeMap::new());
    let stores: [(&str, Box<dyn EnvStore>); 2] = [
        (
            "boot-state",
            Box::new(StateFile::new(dir.path().join("boot-state"))),
        ),
        (
            "grubenv",
            Box::new(GrubEnvFile::new(dir.path().join("grubenv"))),
        ),
    ];
    for (name, mut store) in stores {
        let planted = dir.path().join(format!(".{name}.ota-tmp"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        store.store(&v).unwrap();
        assert_eq!(store.load().unwrap(), EnvState::Vars(v.clone()), "{name}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}");
        std::fs::remove_file(&planted).unwrap();

        let env = dir.path().join(name);
        std::fs::remove_file(&env).unwrap();
        std::os::unix::fs::symlink(&victim, &env).unwrap();
        store.store(&v).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}");
        assert!(!std::fs::symlink_metadata(&env)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(store.load().unwrap(), EnvState::Vars(v.clone()), "{name}");
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["boot-state", "grubenv", "victim"],
        "temp file left behind"
    );
}

/// A link at the grubenv's path is never rewritten in place, even when its target has exactly the size of an
/// environment block (another grubenv, say): the link is replaced and the target keeps its bytes.
#[test]
fn grubenv_link_to_a_block_sized_file_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("other-grubenv");
    let original = ota_bootloader::grubenv::encode(&vars(&[("keep", "me")])).unwrap();
    std::fs::write(&victim, &original).unwrap();
    let env = dir.path().join("grubenv");
    std::os::unix::fs::symlink(&victim, &env).unwrap();
    let mut store = GrubEnvFile::new(&env);
    let armed = BootEnv::default()
        .arm_trial(Slot::B, 3)
        .applied_to(&BTreeMap::new());
    store.store(&armed).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), original);
    assert!(!std::fs::symlink_metadata(&env)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(store.load().unwrap(), EnvState::Vars(armed));
}

/// A U-Boot environment file named in `fw_env.config` that is a link to a file elsewhere is refused (links to
/// devices, udev's names, are fine): the target keeps its bytes and the error names the path and the link.
#[test]
fn uboot_env_link_to_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let size = 0x400;
    let victim = dir.path().join("victim");
    blank(&victim, 2 * size);
    let dev = dir.path().join("env.img");
    std::os::unix::fs::symlink(&victim, &dev).unwrap();
    let cfg_path = dir.path().join("fw_env.config");
    std::fs::write(&cfg_path, format!("{} 0x0 {size:#x}\n", dev.display())).unwrap();
    let mut s = UBootEnv::from_config_file(&cfg_path)
        .unwrap()
        .with_default_env(vars(&[("bootcmd", "run ota")]));
    let err = s.store(&vars(&[("OTA_PRIMARY", "B")])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("symbolic link") && text.contains("env.img"),
        "{text}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), vec![0xff; 2 * size]);
}

#[test]
fn uboot_never_written_needs_default_env() {
    let dir = tempfile::tempdir().unwrap();
    for redundant in [false, true] {
        let s = uboot(dir.path(), redundant, 0x400);
        assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
        let mut without = UBootEnv::new(s.config().clone());
        let err = without.store(&vars(&[("OTA_PRIMARY", "A")])).unwrap_err();
        assert!(matches!(err, BootEnvError::NoDefaultEnv { .. }), "{err}");
        assert_eq!(s.load().unwrap(), EnvState::NeverWritten, "nothing written");
        let mut s = s;
        s.store(&vars(&[("OTA_PRIMARY", "A")])).unwrap();
        assert_eq!(
            s.load().unwrap(),
            EnvState::Vars(vars(&[("OTA_PRIMARY", "A"), ("bootcmd", "run ota")]))
        );
        // Zeroed storage is blank too.
        std::fs::write(dir.path().join("env.img"), vec![0; 0x800]).unwrap();
        assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
    }
}

#[test]
fn uboot_corrupt_is_reported_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    for redundant in [false, true] {
        let mut s = uboot(dir.path(), redundant, 0x400);
        s.store(&vars(&[("a", "1")])).unwrap();
        s.store(&vars(&[("a", "2")])).unwrap();
        let dev = dir.path().join("env.img");
        let mut img = std::fs::read(&dev).unwrap();
        // damage every copy's data
        img[10] ^= 0x55;
        img[0x400 + 10] ^= 0x55;
        std::fs::write(&dev, &img).unwrap();
        let err = s.load().unwrap_err();
        assert!(matches!(err, BootEnvError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("env.img"), "{err}");
        assert!(s.store(&vars(&[("a", "3")])).is_err());
        assert_eq!(
            std::fs::read(&dev).unwrap(),
            img,
            "a corrupt env must not be rewritten"
        );
    }
}

#[test]
fn uboot_redundant_alternates_copies() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = uboot(dir.path(), true, 0x400);
    let dev = dir.path().join("env.img");
    let mut expected_copy = 1;
    let mut expected_flag: u8 = 0;
    for n in 0..300 {
        let v = vars(&[("n", &n.to_string())]);
        s.store(&v).unwrap();
        let img = std::fs::read(&dev).unwrap();
        let copy = &img[expected_copy * 0x400..(expected_copy + 1) * 0x400];
        match uboot::decode_copy(copy, true) {
            CopyState::Valid { flag, vars: got } => {
                assert_eq!(flag, expected_flag, "write {n}");
                assert!(got.contains_key("n"));
            }
            other => panic!("write {n}: {other:?}"),
        }
        assert_eq!(s.load().unwrap().into_vars()["n"], n.to_string());
        expected_copy = 1 - expected_copy;
        expected_flag = expected_flag.wrapping_add(1);
    }
}

/// Tears a write at every byte offset of the copy: the device holds the first `t` bytes of
/// the new copy and the old bytes after them. `load` must return the old or the new
/// variables, never an error or a mix.
#[test]
fn uboot_redundant_torn_write_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let size = 0x400;
    let mut s = uboot(dir.path(), true, size);
    let dev = dir.path().join("env.img");
    let gen1 = vars(&[("OTA_PRIMARY", "A"), ("bootcmd", "run ota"), ("gen", "1")]);
    let gen2 = BootEnv::from_vars(&gen1)
        .arm_trial(Slot::B, 3)
        .applied_to(&gen1);
    let mut gen3 = gen2.clone();
    gen3.insert("gen".into(), "3".into());
    // two generations on disk, so the copy being overwritten holds real older data
    s.store(&gen1).unwrap();
    s.store(&gen2).unwrap();
    let before = std::fs::read(&dev).unwrap();
    s.store(&gen3).unwrap();
    let after = std::fs::read(&dev).unwrap();
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let start = changed[0] / size * size;
    assert!(
        changed.iter().all(|&i| i >= start && i < start + size),
        "one copy written"
    );
    let (mut old, mut new) = (0, 0);
    for t in 0..=size {
        let mut torn = before.clone();
        torn[start..start + t].copy_from_slice(&after[start..start + t]);
        std::fs::write(&dev, &torn).unwrap();
        match s.load() {
            Ok(EnvState::Vars(v)) if v == gen2 => old += 1,
            Ok(EnvState::Vars(v)) if v == gen3 => new += 1,
            other => panic!("torn at {t}: {other:?}"),
        }
    }
    assert!(old > 0 && new > 0);
    // After a torn write the next store still succeeds and wins.
    let mut torn = before.clone();
    torn[start..start + size / 2].copy_from_slice(&after[start..start + size / 2]);
    std::fs::write(&dev, &torn).unwrap();
    s.store(&gen3).unwrap();
    assert_eq!(s.load().unwrap(), EnvState::Vars(gen3));
}

/// Documents the limit: a single copy torn mid-write is reported as corrupt.
#[test]
fn uboot_single_copy_torn_write_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = uboot(dir.path(), false, 0x400);
    let dev = dir.path().join("env.img");
    s.store(&vars(&[("gen", "1")])).unwrap();
    let before = std::fs::read(&dev).unwrap();
    s.store(&vars(&[("gen", "2")])).unwrap();
    let after = std::fs::read(&dev).unwrap();
    let mut torn = before.clone();
    torn[..2].copy_from_slice(&after[..2]);
    std::fs::write(&dev, &torn).unwrap();
    assert!(matches!(s.load(), Err(BootEnvError::Corrupt { .. })));
}

#[test]
fn uboot_rejects_short_device_and_mtd() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("short.img");
    blank(&dev, 100);
    let cfg =
        FwEnvConfig::parse(&format!("{} 0 0x400\n", dev.display()), Path::new("cfg")).unwrap();
    let err = UBootEnv::new(cfg).load().unwrap_err();
    assert!(matches!(err, BootEnvError::Io { .. }), "{err}");
    let mtd = FwEnvConfig::parse("/dev/mtd1 0 0x400\n", Path::new("cfg")).unwrap();
    assert!(matches!(
        UBootEnv::new(mtd).load(),
        Err(BootEnvError::Unsupported { .. })
    ));
}
