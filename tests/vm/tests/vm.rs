//! Full-system scenarios: a real GRUB (standalone EFI under OVMF, with the project's ota.cfg) or a real
//! U-Boot (running the project's boot.cmd; the `uboot_*` tests) boots the project's ota-client inside Linux
//! in QEMU. Every scenario is asserted from the serial log (which slot and release booted, the client's exit
//! codes and `status --json`) and from the boot environment read back from the disk image. Scenarios 1-4 run
//! on both boards from one body. One QEMU at a time: the tests take a lock. A missing tool (QEMU, OVMF,
//! grub-efi, U-Boot's build tools, the kernel, busybox...) fails every test under CI, naming it, and prints a
//! loud SKIPPED line elsewhere. See README.md.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use anyhow::{ensure, Result};
use ota_vm_tests::{power_cut, timing_summary, tools_present, Board, Boot, Image, Vm};
use serde_json::Value;

static LOCK: Mutex<()> = Mutex::new(());
static GRUB_IMAGE: OnceLock<Image> = OnceLock::new();
static UBOOT_IMAGE: OnceLock<Image> = OnceLock::new();

/// The built GRUB image and the VM lock, or None (after SKIPPED) if a tool the VMs need is missing.
fn setup(name: &str) -> Option<(MutexGuard<'static, ()>, &'static Image)> {
    setup_on(name, Board::Grub)
}

/// The built image of `board` and the VM lock, or None (after SKIPPED) if a tool is missing.
fn setup_on(name: &str, board: Board) -> Option<(MutexGuard<'static, ()>, &'static Image)> {
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !tools_present(board) {
        return None;
    }
    let cell = match board {
        Board::Grub => &GRUB_IMAGE,
        Board::UBoot => &UBOOT_IMAGE,
    };
    let img = cell.get_or_init(|| Image::build_for(board).expect("building the VM image failed"));
    eprintln!("== [{}] {name}", board.name());
    Some((guard, img))
}

fn finish(name: &str, t: Instant) {
    eprintln!(
        "== {name}: {:.1} s (process so far: {})",
        t.elapsed().as_secs_f64(),
        timing_summary()
    );
}

fn env(vm: &Vm) -> Result<BTreeMap<String, String>> {
    Ok(vm.env_vars()?.unwrap_or_default())
}

/// A grubenv variable, "" when unset.
fn get<'a>(e: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    e.get(k).map(String::as_str).unwrap_or("")
}

/// Asserts the contract variables (a missing variable reads as ""; tries "*": any).
fn expect_env(vm: &Vm, primary: &str, trial: &str, tries: &str) -> Result<()> {
    let e = env(vm)?;
    let get = |k: &str| e.get(k).cloned().unwrap_or_default();
    ensure!(
        get("OTA_PRIMARY") == primary && get("OTA_TRIAL") == trial && (tries == "*" || get("OTA_TRIES") == tries),
        "{}: expected OTA_PRIMARY={primary:?} OTA_TRIAL={trial:?} OTA_TRIES={tries:?}, the boot env holds {e:?}",
        vm.name
    );
    Ok(())
}

fn expect_boot(b: &Boot, slot: &str, version: &str) -> Result<()> {
    b.check(
        b.slot().as_deref() == Some(slot) && b.version().as_deref() == Some(version),
        &format!(
            "expected slot {slot} with release {version}, got {:?} {:?}",
            b.slot(),
            b.version()
        ),
    )
}

fn status(b: &Boot) -> Result<Value> {
    b.status()
        .ok_or_else(|| anyhow::anyhow!("no status --json in the log\n{}", b.client_lines()))
}

/// The state of slot `slot` of class rootfs in `status --json`.
fn slot_state(st: &Value, slot: &str) -> String {
    st["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["class"] == "rootfs" && s["slot"] == slot)
        .and_then(|s| s["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Events of `kind` for `slot` in `status --json`.
fn events<'a>(st: &'a Value, kind: &str, slot: &str) -> Vec<&'a Value> {
    st["unreported_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind && e["slot"] == slot)
        .collect()
}

/// 1. Install a signed bundle from A into B, reboot: GRUB boots B on trial, `confirm` commits it, and B
///    stays primary across two more reboots (the second of which also refuses a downgrade: scenario 5's
///    older-version case needs a committed release, the factory slot's release is unknown to the client).
#[test]
fn scenario_1_update_trial_commit() -> Result<()> {
    update_trial_commit(Board::Grub)
}

/// 1 under U-Boot: boot.scr counts the trial (saveenv of the redundant env on FAT), the client commits.
#[test]
fn uboot_1_update_trial_commit() -> Result<()> {
    update_trial_commit(Board::UBoot)
}

fn update_trial_commit(board: Board) -> Result<()> {
    let Some((_g, img)) = setup_on("scenario 1: install, trial boot, commit", board) else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s1", None)?;
    let b = vm.boot("status;install good;status")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(
        b.rc("install good") == Some(0),
        "install of the signed bundle failed",
    )?;
    expect_env(&vm, "A", "B", "3")?;
    vm.expect_slot_content(img, "B", "good")?;
    vm.expect_slot_content(img, "A", "factory")?;

    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "B", "2.0.0")?;
    b.check(
        b.rc("confirm") == Some(0),
        "confirm on the trial boot failed",
    )?;
    expect_env(&vm, "B", "", "2")?;
    let st = status(&b)?;
    ensure!(
        st["primary"] == "B" && st["booted"] == "B",
        "status after commit: {st}"
    );
    ensure!(
        slot_state(&st, "B") == "good",
        "slot B not good after commit: {st}"
    );

    let before = vm.env_bytes()?;
    let b = vm.boot("confirm;install old;status")?;
    expect_boot(&b, "B", "2.0.0")?;
    b.check(
        b.rc("confirm") == Some(0),
        "confirm on the committed slot failed",
    )?;
    b.check(
        matches!(b.rc("install old"), Some(rc) if rc != 0),
        "an older release (1.5.0 < 2.0.0) was installed",
    )?;
    b.check(
        b.log.contains("lower than the installed"),
        "downgrade refused for another reason",
    )?;
    ensure!(
        vm.env_bytes()? == before,
        "a committed boot or a refused install changed the boot env"
    );

    let b = vm.boot("status")?;
    expect_boot(&b, "B", "2.0.0")?;
    ensure!(
        vm.env_bytes()? == before,
        "a committed boot changed the boot env"
    );
    vm.expect_slot_content(img, "B", "good")?;
    img.discard_run(&vm.name)?;
    finish("scenario 1", t);
    Ok(())
}

/// 2. The new release fails its health check: the client marks B bad and reboots, GRUB boots A, and the
///    client on A shows the failed trial with its reason.
#[test]
fn scenario_2_health_check_fails() -> Result<()> {
    health_check_fails(Board::Grub)
}

/// 2 under U-Boot.
#[test]
fn uboot_2_health_check_fails() -> Result<()> {
    health_check_fails(Board::UBoot)
}

fn health_check_fails(board: Board) -> Result<()> {
    let Some((_g, img)) = setup_on("scenario 2: failing health check, rollback", board) else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s2", None)?;
    let b = vm.boot("install unhealthy")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(b.rc("install unhealthy") == Some(0), "install failed")?;
    expect_env(&vm, "A", "B", "3")?;

    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "B", "2.1.0")?;
    b.check(
        b.started("confirm") && b.rc("confirm").is_none() && !b.done(),
        "the client did not reboot after the failed health check",
    )?;
    let e = env(&vm)?;
    ensure!(
        get(&e, "OTA_TRIAL") != "B",
        "B still armed after its failed trial: {e:?}"
    );

    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(
        b.rc("confirm") == Some(0),
        "confirm on A after the rollback failed",
    )?;
    let e = env(&vm)?;
    ensure!(
        matches!(get(&e, "OTA_PRIMARY"), "" | "A"),
        "primary moved: {e:?}"
    );
    ensure!(
        get(&e, "OTA_TRIAL").is_empty(),
        "a trial is still armed: {e:?}"
    );
    let st = status(&b)?;
    ensure!(
        slot_state(&st, "B") == "bad",
        "slot B not recorded bad: {st}"
    );
    let ev = events(&st, "trial_failed", "B");
    ensure!(
        ev.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("robot-services") && r.contains("motor controller"))),
        "no trial_failed event with the health check's reason: {st}"
    );
    vm.expect_slot_content(img, "A", "factory")?;
    img.discard_run(&vm.name)?;
    finish("scenario 2", t);
    Ok(())
}

/// 3. The new release's init dies (kernel panic) before the client runs: every boot of B uses a try, and
///    GRUB falls back to A by itself once they are used up; the client on A records the rollback.
#[test]
fn scenario_3_kernel_panic_falls_back() -> Result<()> {
    kernel_panic_falls_back(Board::Grub)
}

/// 3 under U-Boot: boot.scr counts the tries down and boots A by itself once they are used up.
#[test]
fn uboot_3_kernel_panic_falls_back() -> Result<()> {
    kernel_panic_falls_back(Board::UBoot)
}

fn kernel_panic_falls_back(board: Board) -> Result<()> {
    let Some((_g, img)) = setup_on(
        "scenario 3: panicking release, the bootloader falls back",
        board,
    ) else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s3", None)?;
    let b = vm.boot("install panic")?;
    b.check(b.rc("install panic") == Some(0), "install failed")?;
    expect_env(&vm, "A", "B", "3")?;
    for left in ["2", "1", "0"] {
        let b = vm.boot("confirm;status")?;
        expect_boot(&b, "B", "2.2.0")?;
        b.check(
            b.variant().as_deref() == Some("panic") && !b.started("confirm"),
            "the broken release ran the client",
        )?;
        b.check(
            b.log.contains("Kernel panic"),
            "no kernel panic on the serial console",
        )?;
        expect_env(&vm, "A", "B", left)?;
    }
    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(
        b.rc("confirm") == Some(0),
        "confirm on A after the fallback failed",
    )?;
    let st = status(&b)?;
    ensure!(
        !events(&st, "rolled_back", "B").is_empty(),
        "no rolled_back event for B: {st}"
    );
    ensure!(
        slot_state(&st, "B") == "bad",
        "slot B not recorded bad: {st}"
    );
    let e = env(&vm)?;
    ensure!(
        get(&e, "OTA_TRIAL").is_empty(),
        "trial not cleared after the rollback: {e:?}"
    );
    let before = vm.env_bytes()?;
    let b = vm.boot("status")?;
    expect_boot(&b, "A", "1.0.0")?;
    ensure!(
        vm.env_bytes()? == before,
        "a committed boot changed the boot env"
    );
    img.discard_run(&vm.name)?;
    finish("scenario 3", t);
    Ok(())
}

/// 4. Power cuts during the update (slot write, around arming the trial, during commit): after each the
///    robot boots a good slot with its original content and a fresh update installs.
///    `OTA_VM_POWER_CUTS` (default 9: three of each kind, to fit CI's time; the campaigns by hand in
///    docs/power-cuts.md run hundreds) cuts; the fresh update is also booted and committed after every
///    `OTA_VM_TRIAL_EVERY`-th cut (default 3; 0 = never). `OTA_VM_SEED` fixes the cut times.
#[test]
fn scenario_4_power_cuts() -> Result<()> {
    power_cuts(Board::Grub, "OTA_VM_POWER_CUTS", 9, "OTA_VM_TRIAL_EVERY", 3)
}

/// 4 under U-Boot, with a fourth kind of cut: during U-Boot's own `saveenv` on the trial boot (`count`).
/// `OTA_VM_UBOOT_POWER_CUTS` (default 4: one of each kind, to fit CI's time) cuts, every
/// `OTA_VM_UBOOT_TRIAL_EVERY`-th (default 4) also boots and commits the fresh update. The campaign by hand:
/// `power-cut-campaign.sh --board uboot`.
#[test]
fn uboot_4_power_cuts() -> Result<()> {
    power_cuts(
        Board::UBoot,
        "OTA_VM_UBOOT_POWER_CUTS",
        4,
        "OTA_VM_UBOOT_TRIAL_EVERY",
        4,
    )
}

fn power_cuts(
    board: Board,
    cuts_var: &str,
    cuts_default: u64,
    every_var: &str,
    every_default: u64,
) -> Result<()> {
    let Some((_g, img)) = setup_on("scenario 4: power cuts", board) else {
        return Ok(());
    };
    let t = Instant::now();
    let num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let cuts = num(cuts_var, cuts_default) as u32;
    let every = num(every_var, every_default) as u32;
    let seed = num(
        "OTA_VM_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    );
    eprintln!("seed {seed} (OTA_VM_SEED={seed} repeats these cut times)");
    let sum = power_cut::campaign(img, cuts, seed, every)?;
    eprintln!("{}", sum.line());
    ensure!(
        sum.failures.is_empty(),
        "seed {seed}: {}\n{}",
        sum.line(),
        sum.failures.join("\n")
    );
    ensure!(sum.runs >= cuts, "only {} cuts", sum.runs);
    // The client rewrites an existing grubenv in place, so no cut may leave the FAT ESP damaged.
    ensure!(
        sum.esp_damage == 0,
        "seed {seed}: {} cuts left the ESP's FAT inconsistent",
        sum.esp_damage
    );
    finish("scenario 4", t);
    Ok(())
}

/// 5. A tampered bundle (payload byte / manifest), and a bundle for another `compatible` are refused inside
///    the guest, grubenv is byte-identical, slot A is intact and still boots. (The older-version case runs
///    in scenario 1, on a committed release.)
#[test]
fn scenario_5_bad_bundles_refused() -> Result<()> {
    let Some((_g, img)) = setup("scenario 5: refused bundles") else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s5", None)?;
    let before = vm.env_bytes()?;
    let b = vm.boot("install tampered-payload;install tampered-manifest;install other;status")?;
    expect_boot(&b, "A", "1.0.0")?;
    for bundle in ["tampered-payload", "tampered-manifest", "other"] {
        b.check(
            matches!(b.rc(&format!("install {bundle}")), Some(rc) if rc != 0),
            &format!("bundle {bundle} was accepted"),
        )?;
    }
    b.check(
        b.log.contains("other-robot"),
        "the other-compatible bundle was not refused for its compatible",
    )?;
    ensure!(
        vm.env_bytes()? == before,
        "a refused install changed grubenv"
    );
    let st = status(&b)?;
    ensure!(
        st["trial"].is_null(),
        "a trial is armed after refused installs: {st}"
    );
    ensure!(
        slot_state(&st, "B") != "installed",
        "slot B recorded installed: {st}"
    );
    let b = vm.boot("status")?;
    expect_boot(&b, "A", "1.0.0")?;
    vm.expect_slot_content(img, "A", "factory")?;
    ensure!(vm.env_bytes()? == before, "grubenv changed");
    img.discard_run(&vm.name)?;
    finish("scenario 5", t);
    Ok(())
}

/// 6. A factory-fresh robot whose ESP has no grubenv at all (never written by anyone; GRUB's load_env
///    fails and boots A) takes its first update: the client creates the env, GRUB counts the trial in it
///    (save_env on the client's file) and the update commits. The other scenarios start from a grubenv made
///    by `grub-editenv create`, also never written by the client.
#[test]
fn scenario_6_factory_env_never_written() -> Result<()> {
    let Some((_g, img)) = setup("scenario 6: factory image, no grubenv") else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s6", None)?;
    vm.delete_grubenv()?;
    ensure!(vm.env_bytes()?.is_none(), "grubenv still there");
    let b = vm.boot("status;install good;status")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(
        b.log.contains("OTA-VM: env-at-boot (no grubenv)"),
        "the guest saw a grubenv",
    )?;
    b.check(
        b.rc("install good") == Some(0),
        "first install on a factory robot failed",
    )?;
    let bytes = vm
        .env_bytes()?
        .ok_or_else(|| anyhow::anyhow!("the client did not create grubenv"))?;
    ensure!(
        bytes.len() == 1024,
        "grubenv is {} bytes, GRUB's save_env needs 1024",
        bytes.len()
    );
    expect_env(&vm, "A", "B", "3")?;
    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "B", "2.0.0")?;
    b.check(b.rc("confirm") == Some(0), "confirm failed")?;
    expect_env(&vm, "B", "", "2")?;
    let b = vm.boot("status")?;
    expect_boot(&b, "B", "2.0.0")?;
    img.discard_run(&vm.name)?;
    finish("scenario 6", t);
    Ok(())
}

/// 7. A delta bundle under the real GRUB: the robot takes 2.0.0 (`good`) and commits it, then installs 3.0.0
///    built `--delta-from` good (`delta`): the client rebuilds it into slot A from what slot B already holds plus
///    the bundle's deltas, every chunk checked against the signed index and the whole image against the
///    manifest; GRUB boots A on trial and `confirm` commits it.
#[test]
fn scenario_7_delta_install() -> Result<()> {
    let Some((_g, img)) = setup("scenario 7: delta bundle, trial boot, commit") else {
        return Ok(());
    };
    let t = Instant::now();
    let mut vm = img.vm("s7", None)?;
    let b = vm.boot("install good")?;
    expect_boot(&b, "A", "1.0.0")?;
    b.check(b.rc("install good") == Some(0), "install of good failed")?;
    expect_env(&vm, "A", "B", "3")?;

    // On the trial boot of 2.0.0: commit it, then install 3.0.0 from the delta bundle (its base is 2.0.0,
    // which the state now records for slot B).
    let b = vm.boot("confirm;install delta;status")?;
    expect_boot(&b, "B", "2.0.0")?;
    b.check(b.rc("confirm") == Some(0), "confirm of 2.0.0 failed")?;
    b.check(
        b.rc("install delta") == Some(0),
        "install of the delta bundle failed",
    )?;
    // The client's plan line: what it fetched from the bundle, and that it rebuilt the rest from slot B.
    b.check(
        b.log.lines().any(|l| {
            l.contains(": fetching ")
                && l.contains(" deltas)")
                && l.contains("from the active slot")
        }),
        "the client did not plan the install from the active slot and the deltas",
    )?;
    expect_env(&vm, "B", "A", "3")?;
    vm.expect_slot_content(img, "A", "next")?;
    vm.expect_slot_content(img, "B", "good")?;
    let st = status(&b)?;
    ensure!(st["primary"] == "B", "primary moved before the trial: {st}");

    let b = vm.boot("confirm;status")?;
    expect_boot(&b, "A", "3.0.0")?;
    b.check(
        b.rc("confirm") == Some(0),
        "confirm on the trial boot of the delta-installed release failed",
    )?;
    expect_env(&vm, "A", "", "*")?;
    let st = status(&b)?;
    ensure!(
        st["primary"] == "A" && st["booted"] == "A",
        "status after commit: {st}"
    );
    ensure!(
        slot_state(&st, "A") == "good",
        "slot A not good after commit: {st}"
    );
    let b = vm.boot("status")?;
    expect_boot(&b, "A", "3.0.0")?;
    vm.expect_slot_content(img, "A", "next")?;
    img.discard_run(&vm.name)?;
    finish("scenario 7", t);
    Ok(())
}
