//! Power cuts: QEMU is killed (SIGKILL, the disk keeps exactly what the guest had written) at random
//! moments of an update inside the guest, then the robot must boot a good slot with its original content
//! (no brick) and take a fresh update (no strand).
//!
//! The kinds of cut, in rotation:
//! * `write`:  during `ota-client install` (streaming, decoding, writing the standby slot, verifying);
//! * `arm`:    around the end of the install, where the trial is armed in the boot env (just before and just
//!   after the slot flip);
//! * `commit`: during `ota-client confirm` on the trial boot (health check, commit of the new primary);
//! * `count` (U-Boot board only): while U-Boot's boot.scr saves the decremented `OTA_TRIES` on the trial
//!   boot (`saveenv` into the FAT file), from its `Saving Environment to FAT` to `OTA: booting slot`, with
//!   the disk's writes throttled so the write lasts about a second (`Summary::in_saveenv` counts the cuts
//!   whose serial log ends inside it: `Saving Environment` without `OK`).
//!
//! The windows come from an uncut calibration run of the same steps.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::{copy_file, Board, Boot, Cut, Image};

/// The kinds of cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// During the slot write.
    Write,
    /// Around arming the trial (env write, slot flip).
    Arm,
    /// During confirm / commit on the trial boot.
    Commit,
    /// During the bootloader's own env write that counts the trial try (U-Boot's serial log shows it).
    Count,
}

impl Kind {
    /// The kinds a board's campaign rotates through: GRUB prints nothing to time its `save_env` by.
    pub fn for_board(board: Board) -> &'static [Kind] {
        match board {
            Board::Grub => &[Kind::Write, Kind::Arm, Kind::Commit],
            Board::UBoot => &[Kind::Write, Kind::Arm, Kind::Commit, Kind::Count],
        }
    }
}

/// Outcome of a campaign.
#[derive(Debug, Default)]
pub struct Summary {
    /// Cuts made (QEMU killed before the guest finished).
    pub runs: u32,
    /// No slot booted after the cut, or a slot booted with content it should not have.
    pub bricks: u32,
    /// A slot booted but a fresh update failed.
    pub strands: u32,
    /// Per kind: cuts after which the robot came back on the old slot / on the new slot.
    pub old_slot: [u32; 4],
    /// See `old_slot`.
    pub new_slot: [u32; 4],
    /// Cuts after which `fsck.fat -n` found the ESP damaged (after the clean verify boot).
    pub esp_damage: u32,
    /// Cuts that landed inside U-Boot's `saveenv` (its serial log ends in `Saving Environment to FAT...`).
    pub in_saveenv: u32,
    /// One line per failure.
    pub failures: Vec<String>,
}

impl Summary {
    /// One-line report.
    pub fn line(&self) -> String {
        let count = match (self.old_slot[3], self.new_slot[3]) {
            (0, 0) => String::new(),
            (old, new) => format!(
                ", count {old}/{new} ({} inside U-Boot's saveenv)",
                self.in_saveenv
            ),
        };
        format!(
            "power cuts: runs={} bricks={} strands={} esp_damage={} | came back on old/new slot: write {}/{}, arm {}/{}, commit {}/{}{count}",
            self.runs,
            self.bricks,
            self.strands,
            self.esp_damage,
            self.old_slot[0],
            self.new_slot[0],
            self.old_slot[1],
            self.new_slot[1],
            self.old_slot[2],
            self.new_slot[2]
        )
    }
}

/// xorshift64*: reproducible cut times from a printed seed, no dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// Calibrated durations and the trial-armed disk.
#[derive(Debug)]
pub struct Calibration {
    /// Seconds from `step install good start` to `step install good rc=` on the serial log.
    pub install_secs: f64,
    /// Seconds from `step confirm start` to `step confirm rc=`.
    pub confirm_secs: f64,
    /// U-Boot: seconds from `## Executing script` to `OTA: booting slot` on a trial boot (0: not measured).
    pub count_secs: f64,
    /// Disk with `good` installed into B and armed (state right after an uncut install).
    pub armed_disk: std::path::PathBuf,
}

/// Runs the uncut install and confirm once to measure the windows (2 boots).
pub fn calibrate(img: &Image) -> Result<Calibration> {
    let mut vm = img.vm("cut-calibrate", None)?;
    let marker = Cut {
        marker: "OTA-VM: step install good start".into(),
        delay: Duration::from_secs(3600),
        until: Some("OTA-VM: step install good rc=".into()),
    };
    let b = vm.boot_cut("install good", &marker)?;
    b.check(
        b.rc("install good") == Some(0),
        "calibration install failed",
    )?;
    let install_secs = b.span.context("install markers not seen")?;
    ensure!(
        vm.var("OTA_TRIAL")? == "B",
        "calibration install did not arm B"
    );
    let armed_disk = img.runs.join("cut-armed.img");
    copy_file(&vm.disk, &armed_disk)?;
    let marker = Cut {
        marker: "OTA-VM: step confirm start".into(),
        delay: Duration::from_secs(3600),
        until: Some("OTA-VM: step confirm rc=".into()),
    };
    let b = vm.boot_cut("confirm", &marker)?;
    b.check(
        b.slot().as_deref() == Some("B") && b.rc("confirm") == Some(0),
        "calibration confirm failed",
    )?;
    let confirm_secs = b.span.context("confirm markers not seen")?;
    let mut count_secs = 0.0;
    if img.board == Board::UBoot {
        // One more trial boot of the armed disk, to time boot.scr around its saveenv.
        let mut vm = img.vm("cut-calibrate-count", Some(&armed_disk))?;
        vm.write_bps = Some(COUNT_WRITE_BPS);
        let b = vm.boot_cut("status", &count_marker(3600.0))?;
        b.check(
            b.slot().as_deref() == Some("B"),
            "calibration trial boot did not boot B",
        )?;
        count_secs = b.span.context("boot.scr markers not seen")?;
        img.discard_run(&vm.name)?;
    }
    eprintln!(
        "calibration: install window {install_secs:.2} s, confirm window {confirm_secs:.2} s, count window {count_secs:.2} s"
    );
    Ok(Calibration {
        install_secs,
        confirm_secs,
        count_secs,
        armed_disk,
    })
}

/// U-Boot's `saveenv` starting (it prints this before writing) to boot.scr's line before loading the kernel.
const COUNT_MARKER: &str = "Saving Environment to FAT";
/// Disk write speed on `count` boots: U-Boot's 16 KiB env write (plus FAT and directory sectors) takes
/// about a second instead of a few milliseconds, longer than the harness's reaction to the marker, so a
/// cut uniform in the window lands inside the write most of the time.
const COUNT_WRITE_BPS: u64 = 24 * 1024;

fn count_marker(delay: f64) -> Cut {
    Cut {
        marker: COUNT_MARKER.into(),
        delay: Duration::from_secs_f64(delay),
        until: Some("OTA: booting slot".into()),
    }
}

/// The expected content of the booted slot: (slot image name) for a (slot, release) pair.
fn expected_image(slot: &str, version: &str) -> Option<&'static str> {
    match (slot, version) {
        ("A", "1.0.0") => Some("factory"),
        ("B", "2.0.0") => Some("good"),
        _ => None,
    }
}

/// One cut and the checks after it. `trial_check`: also boot the freshly armed update and confirm it.
pub fn one_cut(
    img: &Image,
    cal: &mut Calibration,
    kind: Kind,
    rng: &mut Rng,
    trial_check: bool,
    sum: &mut Summary,
) -> Result<bool> {
    let (from, steps, marker, delay) = match kind {
        Kind::Write => (
            None,
            "install good",
            "OTA-VM: step install good start",
            rng.range(0.0, cal.install_secs),
        ),
        Kind::Arm => (
            None,
            "install good",
            "OTA-VM: step install good start",
            // the env write and the flip are in the last part of the install: just before and after it
            (cal.install_secs + rng.range(-0.4, 0.25)).max(0.0),
        ),
        Kind::Commit => (
            Some(cal.armed_disk.as_path()),
            "confirm",
            "OTA-VM: step confirm start",
            rng.range(0.0, cal.confirm_secs),
        ),
        Kind::Count => (
            Some(cal.armed_disk.as_path()),
            "confirm",
            COUNT_MARKER,
            rng.range(0.0, cal.count_secs),
        ),
    };
    let name = run_name(sum);
    let mut vm = img.vm(&name, from)?;
    if kind == Kind::Count {
        vm.write_bps = Some(COUNT_WRITE_BPS);
    }
    let cut = Cut {
        marker: marker.into(),
        delay: Duration::from_secs_f64(delay),
        until: None,
    };
    let b = vm.boot_cut(steps, &cut)?;
    vm.write_bps = None;
    if !b.cut {
        // The guest finished before the planned moment (the calibration boot ran slower than this
        // one): not a power cut. Shrink the window so the next try lands inside it.
        match kind {
            Kind::Write | Kind::Arm => cal.install_secs = cal.install_secs.min(delay) * 0.95,
            Kind::Commit => cal.confirm_secs = cal.confirm_secs.min(delay) * 0.95,
            // The script always ends in a kernel boot, so this boot was cut: nothing to shrink.
            Kind::Count => {}
        }
        return Ok(false);
    }
    sum.runs += 1;
    let k = kind as usize;
    if b.log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.starts_with("Saving Environment to FAT") && !l.contains("OK"))
    {
        sum.in_saveenv += 1;
    }
    eprintln!("    {kind:?} cut {delay:.2} s after the marker");

    // 1. A good slot boots, with its original content; the client confirms / records, then takes a
    //    fresh update (3.0.0 is newer than both releases).
    let after = match vm.boot("confirm;status;install next;status") {
        Ok(b) => b,
        Err(e) => {
            sum.bricks += 1;
            sum.failures.push(format!(
                "{name}: BRICK ({kind:?} cut at {delay:.2} s): {e:#}"
            ));
            return Ok(true);
        }
    };
    let slot = after.slot().unwrap_or_default();
    let version = after.version().unwrap_or_default();
    let content = match expected_image(&slot, &version) {
        Some(image) => vm.expect_slot_content(img, &slot, image).map(|()| image),
        None => Err(anyhow::anyhow!(
            "booted slot {slot:?} release {version:?}: not a good slot"
        )),
    };
    if let Err(e) = content {
        sum.bricks += 1;
        sum.failures.push(format!(
            "{name}: BRICK ({kind:?} cut at {delay:.2} s): {e:#}\n{}",
            after.client_lines()
        ));
        return Ok(true);
    }
    if slot == "A" {
        sum.old_slot[k] += 1;
    } else {
        sum.new_slot[k] += 1;
    }
    let standby = if slot == "A" { "B" } else { "A" };
    let strand = |why: String, b: &Boot| {
        format!(
            "{name}: STRAND ({kind:?} cut at {delay:.2} s, booted {slot}): {why}\n{}",
            b.client_lines()
        )
    };
    if after.rc("install next") != Some(0) {
        sum.strands += 1;
        sum.failures
            .push(strand("fresh install of 3.0.0 failed".into(), &after));
        return Ok(true);
    }
    // The ESP after the clean verify boot: a cut during a FAT rename can leave it inconsistent.
    let mut host_env = vm.env_vars();
    if let Some(report) = vm.esp_fsck()? {
        sum.esp_damage += 1;
        let first: Vec<&str> = report
            .lines()
            .filter(|l| !l.contains("Dirty bit"))
            .take(6)
            .collect();
        eprintln!(
            "    ESP DAMAGE ({kind:?} cut at {delay:.2} s): {}",
            first.join(" | ")
        );
        if host_env.is_err() {
            // mtools refuses the damaged FAT; the guest printed the env it saw when powering off
            host_env = Ok(after.env_at_exit());
        }
    }
    let e = host_env?.unwrap_or_default();
    let get = |k: &str| e.get(k).cloned().unwrap_or_default();
    let (trial, tries) = (get("OTA_TRIAL"), get("OTA_TRIES"));
    if trial != standby || tries != "3" {
        sum.strands += 1;
        sum.failures.push(strand(
            format!("install did not arm {standby}: OTA_TRIAL={trial:?} OTA_TRIES={tries:?}"),
            &after,
        ));
        return Ok(true);
    }
    if let Err(e) = vm.expect_slot_content(img, standby, "next") {
        sum.strands += 1;
        sum.failures.push(strand(format!("{e:#}"), &after));
        return Ok(true);
    }
    // 2. Optionally: the fresh update boots on trial and commits.
    if trial_check {
        let t = vm.boot("confirm;status")?;
        let e = match vm.env_vars() {
            Ok(e) => e,
            Err(_) => t.env_at_exit(),
        }
        .unwrap_or_default();
        let ok = t.slot().as_deref() == Some(standby)
            && t.version().as_deref() == Some("3.0.0")
            && t.rc("confirm") == Some(0)
            && e.get("OTA_PRIMARY").map(String::as_str) == Some(standby)
            && e.get("OTA_TRIAL").is_none_or(String::is_empty);
        if !ok {
            sum.strands += 1;
            sum.failures.push(strand(
                "the fresh update did not boot and commit".into(),
                &t,
            ));
        }
    }
    Ok(true)
}

/// The run (file prefix under runs/) of the next cut.
fn run_name(sum: &Summary) -> String {
    format!("cut{}", sum.runs + sum.failures.len() as u32)
}

/// Runs `cuts` power cuts (kinds in rotation). `trial_every`: boot the fresh update after every n-th cut.
pub fn campaign(img: &Image, cuts: u32, seed: u64, trial_every: u32) -> Result<Summary> {
    let mut cal = calibrate(img)?;
    let mut rng = Rng::new(seed);
    let mut sum = Summary::default();
    let kinds = Kind::for_board(img.board);
    let mut attempts = 0u32;
    while sum.runs < cuts {
        attempts += 1;
        ensure!(
            attempts <= cuts * 4,
            "too many boots ended before their planned cut"
        );
        let kind = kinds[sum.runs as usize % kinds.len()];
        let trial_check = trial_every > 0 && (sum.runs + 1) % trial_every == 0;
        let name = run_name(&sum);
        let (failures, esp_damage) = (sum.failures.len(), sum.esp_damage);
        one_cut(img, &mut cal, kind, &mut rng, trial_check, &mut sum)?;
        if sum.failures.len() == failures && sum.esp_damage == esp_damage {
            img.discard_run(&name)?;
        }
    }
    if sum.failures.is_empty() && sum.esp_damage == 0 {
        img.discard_run("cut-calibrate")?;
        img.discard_run("cut-armed")?;
    }
    Ok(sum)
}
