//! Full-system harness: boots the robot image built by `build-image.sh` in QEMU (TCG) under one of two real
//! bootloaders ([`Board`]: OVMF + the project's GRUB fragment inside a standalone GRUB EFI, or U-Boot running
//! the project's boot.scr), one QEMU process per boot (`-no-reboot`), passes each boot's steps through
//! fw_cfg, and reads back what happened: the serial log (which slot and release booted, the exit code of
//! every client call, `status --json`) and the disk itself (the boot environment on the ESP through mtools,
//! partition contents).

#![forbid(unsafe_code)]

pub mod power_cut;
pub mod requirements;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

pub use requirements::{tools_present, vm_tools_present, OVMF_CODE, OVMF_VARS};

/// Where the grubenv lives on the ESP.
pub const ESP_GRUBENV: &str = "::/EFI/BOOT/grubenv";
/// Where U-Boot's two environment copies live on the ESP (`tests/vm/uboot/uboot.config`), in copy order.
pub const ESP_UBOOT_ENV: [&str; 2] = ["::/uboot.env", "::/uboot-redund.env"];
/// U-Boot's `CONFIG_ENV_SIZE` (`tests/vm/uboot/uboot.config`): the size of each copy.
pub const UBOOT_ENV_SIZE: usize = 0x4000;

/// The robot's bootloader: which firmware boots the VM and where the boot environment lives. Everything
/// else (disk layout, slots, bundles, the guest, the client) is the same on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// OVMF + standalone GRUB EFI with `bootloader-hooks/grub/ota.cfg`; grubenv on the ESP; virtio disk.
    Grub,
    /// U-Boot (x86_64, q35; `uboot/build-u-boot.sh`) running `bootloader-hooks/u-boot/boot.cmd` as boot.scr;
    /// the redundant environment in two files on the ESP; AHCI disk (U-Boot reads its env from SCSI).
    UBoot,
}

impl Board {
    /// The name `build-image.sh` (`OTA_VM_BOARD`) and the campaign use.
    pub fn name(self) -> &'static str {
        match self {
            Board::Grub => "grub",
            Board::UBoot => "uboot",
        }
    }

    /// The board called `name` (`grub`, `uboot`).
    pub fn from_name(name: &str) -> Option<Board> {
        [Board::Grub, Board::UBoot]
            .into_iter()
            .find(|b| b.name() == name)
    }

    /// Where the image is built unless `OTA_VM_IMAGE_DIR` says otherwise, and where runs go beside it.
    fn dirs(self) -> (&'static str, &'static str) {
        match self {
            Board::Grub => ("target/vm/image", "runs"),
            Board::UBoot => ("target/vm/uboot-image", "uboot-runs"),
        }
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One partition of the test disk (from `$OUT/layout`).
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// Byte offset in the disk image.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The built artefacts.
#[derive(Debug)]
pub struct Image {
    /// The bootloader the image is built for.
    pub board: Board,
    /// Output directory of build-image.sh.
    pub dir: PathBuf,
    /// Partition table.
    pub parts: BTreeMap<String, Part>,
    /// Scratch directory for per-scenario disks and logs.
    pub runs: PathBuf,
}

impl Image {
    /// Builds the GRUB image with build-image.sh (or reuses it with `OTA_VM_REUSE_IMAGE=1`).
    pub fn build() -> Result<Image> {
        Image::build_for(Board::Grub)
    }

    /// Builds the image for `board` with build-image.sh (or reuses it with `OTA_VM_REUSE_IMAGE=1`).
    pub fn build_for(board: Board) -> Result<Image> {
        let (default_dir, runs_name) = board.dirs();
        let dir = std::env::var_os("OTA_VM_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(default_dir));
        let reuse = std::env::var("OTA_VM_REUSE_IMAGE").is_ok_and(|v| v == "1");
        if !(reuse && dir.join("layout").is_file()) {
            let t = Instant::now();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-image.sh");
            let status = Command::new(&script)
                .arg(&dir)
                .env("OTA_VM_BOARD", board.name())
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            ensure!(status.success(), "{} failed: {status}", script.display());
            eprintln!("image built in {:.1} s", t.elapsed().as_secs_f64());
        }
        let layout = fs::read_to_string(dir.join("layout")).context("reading layout")?;
        let mut parts = BTreeMap::new();
        for line in layout.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() == 3, "bad layout line {line:?}");
            parts.insert(
                f[0].to_owned(),
                Part {
                    offset: f[1].parse()?,
                    size: f[2].parse()?,
                },
            );
        }
        let runs = dir.with_file_name(runs_name);
        fs::create_dir_all(&runs)?;
        Ok(Image {
            board,
            dir,
            parts,
            runs,
        })
    }

    /// A slot image built by build-image.sh (`factory`, `good`, `next`, ...).
    pub fn slot_image(&self, name: &str) -> PathBuf {
        self.dir.join("slots").join(format!("{name}.ext4"))
    }

    /// SHA-256 of a slot image file.
    pub fn slot_sha(&self, name: &str) -> Result<(String, u64)> {
        let path = self.slot_image(name);
        let len = fs::metadata(&path)?.len();
        Ok((sha256_range(&path, 0, len)?, len))
    }

    /// Partition by name.
    pub fn part(&self, name: &str) -> Result<Part> {
        self.parts
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no partition {name}"))
    }

    /// Deletes a passed run's disk and UEFI variables (about 60 MiB each; a campaign makes hundreds).
    /// Its serial logs stay. Failed runs are never discarded, so their disks can be inspected.
    pub fn discard_run(&self, name: &str) -> Result<()> {
        for suffix in ["img", "vars.fd"] {
            let path = self.runs.join(format!("{name}.{suffix}"));
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A new VM whose disk is a copy of `from` (default: the factory disk).
    pub fn vm(&self, name: &str, from: Option<&Path>) -> Result<Vm> {
        let disk = self.runs.join(format!("{name}.img"));
        let vars = self.runs.join(format!("{name}.vars.fd"));
        let src = from
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.join("base.img"));
        copy_file(&src, &disk)?;
        if self.board == Board::Grub {
            fs::copy(OVMF_VARS, &vars).context("copying OVMF vars")?;
        }
        for old in fs::read_dir(&self.runs)? {
            let p = old?.path();
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if n.starts_with(&format!("{name}.boot")) && n.ends_with(".log") {
                fs::remove_file(p)?;
            }
        }
        Ok(Vm {
            name: name.to_owned(),
            board: self.board,
            firmware: self.dir.join("u-boot.rom"),
            disk,
            vars,
            bundles: self.dir.join("bundles.img"),
            runs: self.runs.clone(),
            esp: self.part("esp")?,
            parts: self.parts.clone(),
            boots: 0,
            write_bps: None,
        })
    }
}

/// `cp --reflink=auto --sparse=always SRC DST`.
pub fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    let s = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(src)
        .arg(dst)
        .status()?;
    ensure!(s.success(), "cp {} {} failed", src.display(), dst.display());
    Ok(())
}

/// SHA-256 (hex) of `len` bytes of `path` from `offset`.
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> Result<String> {
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = f.read(&mut buf[..left.min(1 << 20) as usize])?;
        ensure!(n > 0, "{} ends before {offset}+{len}", path.display());
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Wall-clock time of every boot of this process (for the timing summary).
pub static BOOT_MILLIS: AtomicU64 = AtomicU64::new(0);
/// Number of boots of this process.
pub static BOOT_COUNT: AtomicU64 = AtomicU64::new(0);

/// A test robot: its disk, its UEFI variables, the bundle disk.
#[derive(Debug)]
pub struct Vm {
    /// Name (file prefix under runs/).
    pub name: String,
    /// The bootloader.
    pub board: Board,
    /// U-Boot's firmware image (`-bios`; U-Boot board only).
    firmware: PathBuf,
    /// Disk image (the robot's eMMC).
    pub disk: PathBuf,
    vars: PathBuf,
    bundles: PathBuf,
    runs: PathBuf,
    esp: Part,
    parts: BTreeMap<String, Part>,
    /// Boots so far.
    pub boots: u32,
    /// Throttles the robot disk's writes to this many bytes per second (QEMU `throttling.bps-write`): stretches
    /// a bootloader's env write so a power cut can land inside it. None: full speed.
    pub write_bps: Option<u64>,
}

/// When to cut the power during a boot: `delay` after the serial log shows `marker`.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Serial line prefix that starts the clock.
    pub marker: String,
    /// Time from seeing the marker to SIGKILL.
    pub delay: Duration,
    /// Optional second line: its time after the marker is measured (`Boot::span`).
    pub until: Option<String>,
}

/// What one boot did.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The guest's `OTA-VM:` lines and everything else on the serial console (CR removed).
    pub log: String,
    /// Path of the serial log.
    pub log_path: PathBuf,
    /// Wall time of the QEMU process.
    pub secs: f64,
    /// True if the host killed QEMU (power cut) before it exited by itself.
    pub cut: bool,
    /// Seconds from the marker to the end of the process (cut or not), if the marker was seen.
    pub after_marker: Option<f64>,
    /// Seconds from the marker to the `until` line, if both were seen.
    pub span: Option<f64>,
}

impl Boot {
    fn field(&self, key: &str) -> Option<String> {
        let line = self
            .log
            .lines()
            .find(|l| l.starts_with("OTA-VM: boot slot="))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    }
    /// Slot the kernel command line named (`ota.slot=`), if the guest got that far.
    pub fn slot(&self) -> Option<String> {
        self.field("slot")
    }
    /// Release in the booted initramfs.
    pub fn version(&self) -> Option<String> {
        self.field("version")
    }
    /// Release variant (good, unhealthy, panic).
    pub fn variant(&self) -> Option<String> {
        self.field("variant")
    }
    /// Exit code of a step (`install good`, `confirm`, ...) or None if it never finished.
    pub fn rc(&self, step: &str) -> Option<i32> {
        let prefix = format!("OTA-VM: step {step} rc=");
        self.log
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
    }
    /// True if the step started.
    pub fn started(&self, step: &str) -> bool {
        let line = format!("OTA-VM: step {step} start");
        self.log.lines().any(|l| l == line)
    }
    /// True if the guest ran all its steps and powered off normally.
    pub fn done(&self) -> bool {
        self.log.lines().any(|l| l == "OTA-VM: done")
    }
    /// The grubenv variables the guest printed when it powered off (`env-at-exit`).
    pub fn env_at_exit(&self) -> Option<BTreeMap<String, String>> {
        let line = self
            .log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("OTA-VM: env-at-exit "))?;
        Some(
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
    /// The last `status --json` output.
    pub fn status(&self) -> Option<serde_json::Value> {
        let line = self
            .log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("OTA-VM: status-json "))?;
        serde_json::from_str(line).ok()
    }
    /// Client output lines (everything not from the firmware / the harness) for error messages.
    pub fn client_lines(&self) -> String {
        self.log
            .lines()
            .filter(|l| {
                !l.trim().is_empty()
                    && !l.contains("BdsDxe")
                    && !l.starts_with("OTA-VM: status-json")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
    /// Panics with the log unless `cond`.
    pub fn check(&self, cond: bool, what: &str) -> Result<()> {
        if cond {
            Ok(())
        } else {
            bail!(
                "{what}\n--- serial log {} ---\n{}",
                self.log_path.display(),
                self.client_lines()
            )
        }
    }
}

impl Vm {
    /// Boots once with `steps` (`;`-separated: `install NAME`, `confirm`, `status`) and waits for
    /// the guest to power off (or reboot: -no-reboot ends QEMU either way).
    pub fn boot(&mut self, steps: &str) -> Result<Boot> {
        self.boot_inner(steps, None)
    }

    /// Boots and cuts the power as planned (if the guest does not end first).
    pub fn boot_cut(&mut self, steps: &str, cut: &Cut) -> Result<Boot> {
        self.boot_inner(steps, Some(cut))
    }

    fn qemu(&self, steps: &str, log: &Path) -> Result<Child> {
        ensure!(!steps.contains(','), "fw_cfg strings must not contain ','");
        let accel = std::env::var("OTA_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            &accel,
            "-machine",
            "q35",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-m", "512", "-no-reboot"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk,format=raw,file={}{}",
            self.disk.display(),
            self.write_bps
                .map(|b| format!(",throttling.bps-write={b}"))
                .unwrap_or_default()
        ));
        match self.board {
            Board::Grub => {
                cmd.arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        self.vars.display()
                    ))
                    .args(["-device", "virtio-blk-pci,drive=disk,bootindex=0"]);
            }
            Board::UBoot => {
                // q35's AHCI port 0: U-Boot's `scsi 0`, Linux's /dev/sda.
                cmd.arg("-bios")
                    .arg(&self.firmware)
                    .args(["-device", "ide-hd,drive=disk,bus=ide.0"]);
            }
        }
        cmd.arg("-drive")
            .arg(format!(
                "if=none,id=bundles,format=raw,readonly=on,file={}",
                self.bundles.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=bundles"])
            .arg("-fw_cfg")
            .arg(format!("name=opt/ota/cmd,string={steps}"))
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().context("starting qemu-system-x86_64")
    }

    fn boot_inner(&mut self, steps: &str, cut: Option<&Cut>) -> Result<Boot> {
        self.boots += 1;
        let log_path = self
            .runs
            .join(format!("{}.boot{}.log", self.name, self.boots));
        let timeout = Duration::from_secs(env_u64("OTA_VM_BOOT_TIMEOUT", 120));
        let start = Instant::now();
        let mut child = self.qemu(steps, &log_path)?;
        let mut marker_at: Option<Instant> = None;
        let mut span: Option<f64> = None;
        let mut killed = false;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                let log = read_log(&log_path);
                bail!(
                    "{}: boot {} ({steps}) did not end within {timeout:?}\n{}",
                    self.name,
                    self.boots,
                    log
                );
            }
            if let Some(c) = cut {
                match marker_at {
                    None => {
                        if read_log(&log_path)
                            .lines()
                            .any(|l| l.starts_with(&c.marker))
                        {
                            marker_at = Some(Instant::now());
                        }
                    }
                    Some(t) if t.elapsed() >= c.delay => {
                        child.kill().context("killing qemu")?;
                        killed = true;
                        break child.wait()?;
                    }
                    Some(t) => {
                        if let (None, Some(u)) = (span, &c.until) {
                            if read_log(&log_path)
                                .lines()
                                .any(|l| l.starts_with(u.as_str()))
                            {
                                span = Some(t.elapsed().as_secs_f64());
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(if marker_at.is_some() {
                2
            } else {
                20
            }));
        };
        let secs = start.elapsed().as_secs_f64();
        let after_marker = marker_at.map(|t| t.elapsed().as_secs_f64());
        BOOT_MILLIS.fetch_add((secs * 1000.0) as u64, Ordering::Relaxed);
        BOOT_COUNT.fetch_add(1, Ordering::Relaxed);
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        if !killed && !status.success() {
            bail!("{}: qemu failed ({status}): {stderr}", self.name);
        }
        let log = read_log(&log_path);
        let boot = Boot {
            log,
            log_path,
            secs,
            cut: killed,
            after_marker,
            span,
        };
        eprintln!(
            "  [{}] boot {:>2} {:<40} -> slot {} {} ({:.1} s{})  env: {}",
            self.name,
            self.boots,
            steps,
            boot.slot().unwrap_or_else(|| "?".into()),
            boot.version().unwrap_or_default(),
            secs,
            if killed { ", POWER CUT" } else { "" },
            self.env_summary()
        );
        Ok(boot)
    }

    /// Raw bytes of one file on the ESP (mtools path `::/...`), None if it does not exist.
    fn esp_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let tmp = self.runs.join(format!("{}.espfile", self.name));
        let _ = fs::remove_file(&tmp);
        let out = Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(format!("{}@@{}", self.disk.display(), self.esp.offset))
            .arg(path)
            .arg(&tmp)
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("not found") {
                return Ok(None);
            }
            bail!("mcopy {path}: {err}");
        }
        let bytes = fs::read(&tmp)?;
        let _ = fs::remove_file(&tmp);
        Ok(Some(bytes))
    }

    /// Raw bytes of the boot environment on the ESP (grubenv; U-Boot: both copies one after the other),
    /// None if no file exists. Compared to tell whether a boot wrote the environment.
    pub fn env_bytes(&self) -> Result<Option<Vec<u8>>> {
        match self.board {
            Board::Grub => self.esp_file(ESP_GRUBENV),
            Board::UBoot => {
                let mut all: Option<Vec<u8>> = None;
                for copy in ESP_UBOOT_ENV {
                    if let Some(b) = self.esp_file(copy)? {
                        all.get_or_insert_with(Vec::new).extend(b);
                    }
                }
                Ok(all)
            }
        }
    }

    /// The boot environment's variables, decoded by the project's codecs (`ota_bootloader::grubenv::parse`;
    /// U-Boot: the active copy by `ota_bootloader::uboot::active_copy`, U-Boot's and libubootenv's rule).
    /// None: no file, or (U-Boot) both copies blank, i.e. never written.
    pub fn env_vars(&self) -> Result<Option<BTreeMap<String, String>>> {
        use ota_bootloader::uboot::{active_copy, decode_copy, CopyState};
        match self.board {
            Board::Grub => match self.esp_file(ESP_GRUBENV)? {
                None => Ok(None),
                Some(b) => Ok(Some(
                    ota_bootloader::grubenv::parse(&b)
                        .map_err(|e| anyhow!("grubenv does not parse: {e}"))?,
                )),
            },
            Board::UBoot => {
                let mut copies = Vec::new();
                for copy in ESP_UBOOT_ENV {
                    let bytes = self
                        .esp_file(copy)?
                        .ok_or_else(|| anyhow!("no {copy} on the ESP"))?;
                    // A short read (mcopy on a full host disk) would decode as blank: refuse it.
                    ensure!(
                        bytes.len() == UBOOT_ENV_SIZE,
                        "{copy} is {} bytes, not {UBOOT_ENV_SIZE}",
                        bytes.len()
                    );
                    copies.push(decode_copy(&bytes, true));
                }
                match active_copy(&copies) {
                    Some(i) => match &copies[i] {
                        CopyState::Valid { vars, .. } => Ok(Some(vars.clone())),
                        _ => unreachable!("active_copy names a valid copy"),
                    },
                    None if copies.iter().all(|c| *c == CopyState::Blank) => Ok(None),
                    None => bail!("no valid U-Boot environment copy: {copies:?}"),
                }
            }
        }
    }

    /// One variable of the boot environment ("" when unset or never written).
    pub fn var(&self, name: &str) -> Result<String> {
        Ok(self
            .env_vars()?
            .and_then(|m| m.get(name).cloned())
            .unwrap_or_default())
    }

    /// The contract's variables (a U-Boot environment also holds the board's whole default environment).
    fn env_summary(&self) -> String {
        match self.env_vars() {
            Ok(Some(m)) => m
                .iter()
                .filter(|(k, _)| k.starts_with("OTA_"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            Ok(None) => "(never written)".into(),
            Err(e) => format!("({e})"),
        }
    }

    /// Deletes the ESP's grubenv (a factory image whose env was never created; GRUB board).
    pub fn delete_grubenv(&self) -> Result<()> {
        ensure!(
            self.board == Board::Grub,
            "delete_grubenv on a U-Boot robot"
        );
        let s = Command::new("mdel")
            .arg("-i")
            .arg(format!("{}@@{}", self.disk.display(), self.esp.offset))
            .arg(ESP_GRUBENV)
            .status()?;
        ensure!(s.success(), "mdel grubenv failed");
        Ok(())
    }

    /// `fsck.fat -n` on a copy of the ESP: None if clean, else its complaints.
    pub fn esp_fsck(&self) -> Result<Option<String>> {
        let tmp = self.runs.join(format!("{}.esp", self.name));
        let mut src = fs::File::open(&self.disk)?;
        src.seek(SeekFrom::Start(self.esp.offset))?;
        let mut dst = fs::File::create(&tmp)?;
        std::io::copy(&mut src.take(self.esp.size), &mut dst)?;
        drop(dst);
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&tmp)
            .output()
            .context("running fsck.fat")?;
        let _ = fs::remove_file(&tmp);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        // A dirty bit alone is not damage: Linux leaves it set when it was set at mount (after a cut).
        let benign = |l: &str| {
            let l = l.trim();
            l.is_empty()
                || l.starts_with("fsck.fat ")
                || l.contains("Dirty bit is set")
                || l.contains("Automatically removing dirty bit")
                || l.starts_with("Leaving filesystem unchanged")
                || l.contains(" files, ")
        };
        Ok(if out.status.success() || text.lines().all(benign) {
            None
        } else {
            Some(text)
        })
    }

    /// SHA-256 of the first `len` bytes of partition `name`.
    pub fn part_sha(&self, name: &str, len: u64) -> Result<String> {
        let p = self
            .parts
            .get(name)
            .ok_or_else(|| anyhow!("no partition {name}"))?;
        ensure!(len <= p.size, "{len} bytes do not fit partition {name}");
        sha256_range(&self.disk, p.offset, len)
    }

    /// Asserts that slot `slot` (A|B) holds exactly the slot image `image`.
    pub fn expect_slot_content(&self, img: &Image, slot: &str, image: &str) -> Result<()> {
        let (want, len) = img.slot_sha(image)?;
        let part = if slot == "A" { "rootfs_a" } else { "rootfs_b" };
        let got = self.part_sha(part, len)?;
        ensure!(
            got == want,
            "slot {slot} does not hold image {image} (sha {got} != {want})"
        );
        Ok(())
    }
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

/// Prints the boot-time summary of this process.
pub fn timing_summary() -> String {
    let n = BOOT_COUNT.load(Ordering::Relaxed);
    let ms = BOOT_MILLIS.load(Ordering::Relaxed);
    if n == 0 {
        return "no boots".into();
    }
    format!(
        "{n} boots, {:.1} s of VM time, {:.1} s per boot on average",
        ms as f64 / 1000.0,
        ms as f64 / 1000.0 / n as f64
    )
}
