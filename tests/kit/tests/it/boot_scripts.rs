//! The shipped scripts, run by the `sim` interpreters, agree with `select_boot` on every
//! combination of the contract variables, and behave as the contract says over reboots.

use std::collections::BTreeMap;

use ota_boot_store::{GrubEnvFile, StateFile};
use ota_bootloader::{
    select_boot, BootEnv, EnvState, EnvStore, Slot, OTA_PRIMARY, OTA_TRIAL, OTA_TRIES,
};
use ota_testkit::sim::{self, Loader, SimBoot, SimOptions};

type Runner = fn(&BTreeMap<String, String>, &SimOptions) -> SimBoot;

fn grub(env: &BTreeMap<String, String>, opts: &SimOptions) -> SimBoot {
    sim::run_grub(Some(env), opts).unwrap()
}

fn uboot(env: &BTreeMap<String, String>, opts: &SimOptions) -> SimBoot {
    sim::run_uboot(env, opts).unwrap()
}

const RUNNERS: [(&str, Runner); 2] = [("grub", grub), ("u-boot", uboot)];

fn all_envs() -> Vec<BTreeMap<String, String>> {
    let primary = [
        None,
        Some("A"),
        Some("B"),
        Some("C"),
        Some("a"),
        Some("AB"),
        Some("-n"),
    ];
    let trial = [
        None,
        Some(""),
        Some("A"),
        Some("B"),
        Some("C"),
        Some("b"),
        Some(" B"),
        Some("="),
    ];
    let mut tries: Vec<Option<String>> = vec![None];
    tries.extend((0..=9).map(|d| Some(d.to_string())));
    tries.extend(["10", "-1", "x", " 3", "03", "1 ", "0x2"].map(|s| Some(s.to_string())));
    let mut out = Vec::new();
    for p in primary {
        for t in trial {
            for n in &tries {
                let mut env = BTreeMap::from([("foreign".to_string(), "keep me".to_string())]);
                if let Some(p) = p {
                    env.insert(OTA_PRIMARY.into(), p.into());
                }
                if let Some(t) = t {
                    env.insert(OTA_TRIAL.into(), t.into());
                }
                if let Some(n) = n {
                    env.insert(OTA_TRIES.into(), n.clone());
                }
                out.push(env);
            }
        }
    }
    out
}

#[test]
fn scripts_agree_with_select_boot_on_every_combination() {
    let envs = all_envs();
    assert_eq!(envs.len(), 7 * 8 * 18);
    for (name, run) in RUNNERS {
        for env in &envs {
            let want = select_boot(env);
            let got = run(env, &SimOptions::default());
            assert_eq!(got.booted, Some(want.boot), "{name} {env:?}");
            assert_eq!(got.attempts, vec![want.boot], "{name} {env:?}");
            assert_eq!(got.saved_env, want.updated_vars, "{name} {env:?}");
            let cmdline = got.cmdline.unwrap();
            assert!(
                cmdline.contains(&format!("ota.slot={}", want.boot)),
                "{name} {cmdline}"
            );
            // The in-boot fallback: break the chosen kernel.
            let broken = SimOptions {
                broken_kernels: vec![want.boot],
                ..SimOptions::default()
            };
            let fb = run(env, &broken);
            assert_eq!(fb.booted, want.fallback, "{name} fallback {env:?}");
            assert_eq!(fb.saved_env, want.updated_vars, "{name} fallback {env:?}");
        }
    }
}

#[test]
fn never_written_env_boots_a() {
    let empty = BTreeMap::new();
    for (name, run) in RUNNERS {
        let got = run(&empty, &SimOptions::default());
        assert_eq!((got.booted, got.saved_env), (Some(Slot::A), None), "{name}");
    }
    // GRUB with no grubenv file at all
    let got = sim::run_grub(None, &SimOptions::default()).unwrap();
    assert_eq!((got.booted, got.saved_env), (Some(Slot::A), None));
}

#[test]
fn committed_boots_never_write() {
    for (name, run) in RUNNERS {
        for p in ["A", "B"] {
            let env = BootEnv::default()
                .commit(p.parse().unwrap())
                .applied_to(&BTreeMap::new());
            for _ in 0..3 {
                let got = run(&env, &SimOptions::default());
                assert_eq!(got.booted, Some(p.parse().unwrap()), "{name}");
                assert_eq!(got.saved_env, None, "{name}: committed boot wrote the env");
            }
        }
    }
}

#[test]
fn trial_with_three_tries_boots_trial_three_times_then_primary_forever() {
    for (name, run) in RUNNERS {
        let mut env = BootEnv::default()
            .arm_trial(Slot::B, 3)
            .applied_to(&BTreeMap::from([("keep".to_string(), "x".to_string())]));
        let mut booted = Vec::new();
        for _ in 0..8 {
            let got = run(&env, &SimOptions::default());
            booted.push(got.booted.unwrap());
            if let Some(saved) = got.saved_env {
                env = saved;
            }
        }
        use Slot::{A, B};
        assert_eq!(booted, [B, B, B, A, A, A, A, A], "{name}");
        assert_eq!(
            env[OTA_TRIAL], "B",
            "{name}: the client clears the trial, not the loader"
        );
        assert_eq!(env[OTA_TRIES], "0");
        assert_eq!(env["keep"], "x");
    }
}

#[test]
fn failed_save_never_boots_an_uncounted_trial() {
    let env = BootEnv::default()
        .arm_trial(Slot::B, 2)
        .applied_to(&BTreeMap::new());
    let opts = SimOptions {
        save_fails: true,
        ..SimOptions::default()
    };
    for (name, run) in RUNNERS {
        let got = run(&env, &opts);
        assert_eq!((got.booted, got.saved_env), (Some(Slot::A), None), "{name}");
    }
    // An exactly full grubenv block still takes the decrement (same length, in place).
    let mut full = env.clone();
    let mut len = 0;
    while ota_bootloader::grubenv::encode(&full).is_ok() {
        len += 1;
        full.insert("filler".into(), "x".repeat(len));
    }
    full.insert("filler".into(), "x".repeat(len - 1));
    let mut decremented = full.clone();
    decremented.insert(OTA_TRIES.into(), "1".into());
    let got = sim::run_grub(Some(&full), &SimOptions::default()).unwrap();
    assert_eq!(got.booted, Some(Slot::B));
    assert_eq!(got.saved_env, Some(decremented));
}

#[test]
fn grub_config_variables_reach_the_kernel_line() {
    let env = BootEnv::default()
        .arm_trial(Slot::B, 1)
        .applied_to(&BTreeMap::new());
    let opts = SimOptions {
        preset: BTreeMap::from([
            ("ota_B_dev".to_string(), "(hd1,gpt7)".to_string()),
            ("ota_B_root".to_string(), "/dev/nvme0n1p7".to_string()),
            ("ota_cmdline".to_string(), "console=ttyS0 quiet".to_string()),
            (
                "ota_env_file".to_string(),
                "(hd0,gpt1)/EFI/BOOT/grubenv".to_string(),
            ),
        ]),
        ..SimOptions::default()
    };
    let got = sim::run_grub(Some(&env), &opts).unwrap();
    assert_eq!(
        got.cmdline.as_deref(),
        Some("root=/dev/nvme0n1p7 console=ttyS0 quiet ota.slot=B")
    );
    let got = sim::run_uboot(&env, &SimOptions::default()).unwrap();
    assert_eq!(
        got.cmdline.as_deref(),
        Some("root=/dev/mmcblk0p3 rootwait ro ota.slot=B")
    );
}

#[test]
fn simulator_rejects_what_it_does_not_model() {
    let opts = SimOptions::default();
    let env = BTreeMap::new();
    assert!(sim::run_grub_script("regexp x y\n", Some(&env), &opts).is_err());
    assert!(sim::run_grub_script("if [ a = b ; then\nfi\n", Some(&env), &opts).is_err());
    assert!(sim::run_uboot_script("setexpr x 1 + 1\n", &env, &opts).is_err());
    // a menu entry that loads slot A's kernel with ota.slot=B is caught
    let bad = "set ota_A_dev=(hd0,gpt2)\nexport ota_A_dev\nmenuentry x --id e {\n linux \"${ota_A_dev}/k\" ota.slot=B\n}\n";
    assert!(sim::run_grub_script(bad, Some(&env), &opts).is_err());
    // a menu entry reading a variable that was never exported sees nothing
    let unexported =
        "set ota_A_dev=(hd0,gpt2)\nmenuentry x --id e {\n linux \"${ota_A_dev}/k\" ota.slot=A\n}\n";
    assert!(sim::run_grub_script(unexported, Some(&env), &opts).is_err());
}

#[test]
fn simulated_robot_reboots_through_stores() {
    let dir = tempfile::tempdir().unwrap();
    let mut grubenv = GrubEnvFile::new(dir.path().join("grubenv"));
    let mut file = StateFile::new(dir.path().join("state"));
    let stores: [(&mut dyn EnvStore, Loader); 2] =
        [(&mut grubenv, Loader::Grub), (&mut file, Loader::UBoot)];
    for (store, loader) in stores {
        let opts = SimOptions::default();
        assert_eq!(
            sim::reboot(store, loader, &opts).unwrap().booted,
            Some(Slot::A)
        );
        assert_eq!(store.load().unwrap(), EnvState::NeverWritten);
        // the client arms B for 2 tries
        let vars = store.load().unwrap().into_vars();
        store
            .store(
                &BootEnv::from_vars(&vars)
                    .arm_trial(Slot::B, 2)
                    .applied_to(&vars),
            )
            .unwrap();
        assert_eq!(
            sim::reboot(store, loader, &opts).unwrap().booted,
            Some(Slot::B)
        );
        // the client confirms
        let vars = store.load().unwrap().into_vars();
        assert_eq!(vars[OTA_TRIES], "1");
        store
            .store(&BootEnv::from_vars(&vars).commit(Slot::B).applied_to(&vars))
            .unwrap();
        for _ in 0..3 {
            assert_eq!(
                sim::reboot(store, loader, &opts).unwrap().booted,
                Some(Slot::B)
            );
        }
    }
}
