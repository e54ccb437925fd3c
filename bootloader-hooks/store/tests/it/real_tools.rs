//! The stores against the real tools: grub-editenv (grub-common), fw_printenv/fw_setenv
//! (libubootenv-tool) and mkenvimage (u-boot-tools). A missing tool fails the test under CI
//! and prints a loud SKIPPED line otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use ota_boot_store::{GrubEnvFile, UBootEnv};
use ota_bootloader::env_from_pairs as vars;
use ota_bootloader::uboot::{self, CopyState};
use ota_bootloader::{EnvState, EnvStore};
use ota_testkit::tools::{require, require_all};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn we_read_what_grub_editenv_writes() {
    if !require("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let store = GrubEnvFile::new(&path);
    run(Command::new("grub-editenv").arg(&path).arg("create"));
    assert_eq!(store.load().unwrap(), EnvState::NeverWritten);
    // unsorted sets, an overwrite with a shorter value, an unset
    for args in [
        vec!["set", "zeta=1", "OTA_TRIES=9", "multi=a\nb"],
        vec!["set", "OTA_PRIMARY=A", "gone=x"],
        vec!["set", "zeta=a much longer value", "OTA_TRIES=2"],
        vec!["unset", "gone"],
        vec!["set", "back=c:\\dir\\"],
    ] {
        run(Command::new("grub-editenv").arg(&path).args(args));
    }
    assert_eq!(
        store.load().unwrap(),
        EnvState::Vars(vars(&[
            ("OTA_PRIMARY", "A"),
            ("OTA_TRIES", "2"),
            ("back", "c:\\dir\\"),
            ("multi", "a\nb"),
            ("zeta", "a much longer value"),
        ]))
    );
}

struct UEnv {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    defenv: PathBuf,
}

const SIZE: usize = 0x2000;

fn uenv(redundant: bool) -> UEnv {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("env.img");
    std::fs::write(&dev, vec![0xff; 2 * SIZE]).unwrap();
    let mut cfg_text = format!("# test device\n{} 0x0 {SIZE:#x}\n", dev.display());
    if redundant {
        cfg_text.push_str(&format!("{} {SIZE:#x} {SIZE:#x}\n", dev.display()));
    }
    let cfg = dir.path().join("fw_env.config");
    std::fs::write(&cfg, cfg_text).unwrap();
    let defenv = dir.path().join("u-boot-initial-env");
    std::fs::write(&defenv, "bootcmd=run distro_bootcmd\nbootdelay=2\n").unwrap();
    UEnv {
        _dir: dir,
        cfg,
        defenv,
    }
}

impl UEnv {
    fn store(&self) -> UBootEnv {
        UBootEnv::from_config_file(&self.cfg)
            .unwrap()
            .with_default_env_file(&self.defenv)
            .unwrap()
    }

    fn printenv(&self) -> BTreeMap<String, String> {
        let out = run(Command::new("fw_printenv").arg("-c").arg(&self.cfg));
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn setenv(&self, name: &str, value: Option<&str>) {
        // libubootenv's command line is `name value` (name=value is rejected), `name` alone
        // deletes.
        let mut cmd = Command::new("fw_setenv");
        cmd.arg("-c")
            .arg(&self.cfg)
            .arg("-f")
            .arg(&self.defenv)
            .arg(name);
        if let Some(v) = value {
            cmd.arg(v);
        }
        run(&mut cmd);
    }
}

#[test]
fn fw_printenv_reads_our_env() {
    if !require("fw_printenv") {
        return;
    }
    for redundant in [false, true] {
        let e = uenv(redundant);
        let mut s = e.store();
        let mut expected = vars(&[("bootcmd", "run distro_bootcmd"), ("bootdelay", "2")]);
        // 300 writes wrap the flag byte past 255 in redundant mode
        for n in 0..300 {
            let mut v = expected.clone();
            v.insert("OTA_TRIES".into(), (n % 10).to_string());
            v.insert(
                "OTA_PRIMARY".into(),
                if n % 2 == 0 { "A" } else { "B" }.into(),
            );
            v.insert("args".into(), format!("console=ttyS0,115200 n={n}"));
            s.store(&v).unwrap();
            expected = v;
            if n < 3 || n % 50 == 0 || (250..260).contains(&n) || n == 299 {
                assert_eq!(e.printenv(), expected, "redundant={redundant} write {n}");
            }
        }
    }
}

#[test]
fn we_read_what_fw_setenv_writes() {
    if !require_all(&["fw_setenv", "fw_printenv"]) {
        return;
    }
    for redundant in [false, true] {
        let e = uenv(redundant);
        let s = e.store();
        assert_eq!(s.load().unwrap(), EnvState::NeverWritten);
        e.setenv("OTA_PRIMARY", Some("A"));
        let mut expected = vars(&[
            ("OTA_PRIMARY", "A"),
            ("bootcmd", "run distro_bootcmd"),
            ("bootdelay", "2"),
        ]);
        assert_eq!(s.load().unwrap(), EnvState::Vars(expected.clone()));
        for n in 0..6 {
            e.setenv("OTA_TRIES", Some(&n.to_string()));
            e.setenv("OTA_TRIAL", Some(if n % 2 == 0 { "B" } else { "A" }));
            expected.insert("OTA_TRIES".into(), n.to_string());
            expected.insert(
                "OTA_TRIAL".into(),
                if n % 2 == 0 { "B" } else { "A" }.into(),
            );
            assert_eq!(s.load().unwrap(), EnvState::Vars(expected.clone()), "{n}");
        }
        e.setenv("bootdelay", None);
        expected.remove("bootdelay");
        assert_eq!(s.load().unwrap(), EnvState::Vars(expected.clone()));
        // and we can continue from their env, then they read ours
        let mut ours = e.store();
        expected.insert("OTA_TRIAL".into(), String::new());
        ours.store(&expected).unwrap();
        assert_eq!(
            e.printenv(),
            expected,
            "fw_printenv shows empty values as NAME="
        );
    }
}

#[test]
fn we_read_mkenvimage_output() {
    if !require("mkenvimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("env.txt");
    std::fs::write(
        &input,
        // name order, so the image can be compared byte for byte with ours
        "# factory environment\nOTA_PRIMARY=A\n\nbootargs=console=ttyS0 quiet\nbootcmd=run ota_boot\n",
    )
    .unwrap();
    let expected = vars(&[
        ("OTA_PRIMARY", "A"),
        ("bootargs", "console=ttyS0 quiet"),
        ("bootcmd", "run ota_boot"),
    ]);
    for redundant in [false, true] {
        let img = dir.path().join(format!("env-{redundant}.img"));
        let mut cmd = Command::new("mkenvimage");
        if redundant {
            cmd.arg("-r");
        }
        run(cmd.args(["-s", "0x2000", "-o"]).arg(&img).arg(&input));
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(bytes.len(), 0x2000);
        match uboot::decode_copy(&bytes, redundant) {
            CopyState::Valid { vars: v, .. } => assert_eq!(v, expected),
            other => panic!("{other:?}"),
        }
        // our encoder produces the same bytes mkenvimage does (flag 1 like `-r`)
        let ours = uboot::encode_copy(&expected, 0x2000, redundant.then_some(1)).unwrap();
        assert!(
            ours == bytes,
            "mkenvimage image differs from ours (redundant={redundant})"
        );
        // flashed to a device with a blank second copy, through the store
        if redundant {
            let dev = dir.path().join("dev.img");
            let mut flash = bytes.clone();
            flash.extend(vec![0xff; 0x2000]);
            std::fs::write(&dev, flash).unwrap();
            let cfg = dir.path().join("fw_env.config");
            std::fs::write(
                &cfg,
                format!("{0} 0 0x2000\n{0} 0x2000 0x2000\n", dev.display()),
            )
            .unwrap();
            let s = UBootEnv::from_config_file(&cfg).unwrap();
            assert_eq!(s.load().unwrap(), EnvState::Vars(expected.clone()));
        }
    }
}
