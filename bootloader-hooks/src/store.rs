//! Where the boot environment lives: small I/O types behind one trait, so the OTA client
//! does not care which bootloader the robot has.
//!
//! Every store follows the same rules: a missing/blank environment is
//! [`EnvState::NeverWritten`] (boot A, accept the first update); a damaged one is an error
//! and is never overwritten with defaults; writes are atomic wherever the medium allows.
//! Stores do not lock: the caller serialises load-modify-store cycles.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::BootEnvError;
use crate::uboot::{self, CopyState, FwEnvConfig, FwEnvDevice};
use crate::{grubenv, statefile};

/// What a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvState {
    /// Nothing was ever written (missing file, blank flash, empty grubenv): a factory
    /// image. The bootloader boots slot A.
    NeverWritten,
    /// The variables currently stored.
    Vars(BTreeMap<String, String>),
}

impl EnvState {
    /// The variables, empty when never written.
    pub fn into_vars(self) -> BTreeMap<String, String> {
        match self {
            EnvState::NeverWritten => BTreeMap::new(),
            EnvState::Vars(v) => v,
        }
    }
}

/// A boot environment the OTA client reads and writes.
pub trait EnvStore {
    /// Reads the environment. Corrupt data is an error, never "defaults".
    fn load(&self) -> Result<EnvState, BootEnvError>;
    /// Replaces the whole environment by `vars` (callers keep foreign variables by
    /// loading, changing and storing the full map).
    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError>;
    /// A human-readable name for logs ("GRUB environment /boot/grub/grubenv").
    fn describe(&self) -> String;
}

/// An environment from literal `(name, value)` pairs: factory defaults, tools and tests.
pub fn env_from_pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Replaces `path` by `bytes` so that a power cut leaves the old or the new file: temp file
/// in the same directory, fsync, rename over, fsync the directory.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), BootEnvError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| BootEnvError::io("writing", path, ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".ota-tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| BootEnvError::io("creating", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| BootEnvError::io("writing", &tmp, e))?;
        f.sync_all()
            .map_err(|e| BootEnvError::io("syncing", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| BootEnvError::io("renaming into", path, e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BootEnvError::io("syncing directory", &dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Overwrites an existing file of the same length from offset 0 and syncs it, touching no
/// filesystem metadata but the timestamps.
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), BootEnvError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| BootEnvError::io("opening", path, e))?;
    f.write_all(bytes)
        .map_err(|e| BootEnvError::io("writing", path, e))?;
    f.sync_all()
        .map_err(|e| BootEnvError::io("syncing", path, e))
}

/// Reads a whole file; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BootEnvError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BootEnvError::io("reading", path, e)),
    }
}

/// GRUB's environment block file (e.g. `/boot/grub/grubenv` or `/boot/efi/EFI/BOOT/grubenv`).
///
/// An existing block is rewritten in place, the way GRUB's own `save_env` does: same file, same
/// clusters, same size, so no filesystem metadata changes. That matters on a FAT ESP, where a
/// power cut during a temp-file + rename left a directory entry pointing at a freed cluster
/// (found by the QEMU power-cut tests; `fsck.fat -a` would then truncate the env). The variables
/// the client changes sit in the block's first 512-byte sector, which storage writes atomically.
/// Only a missing file (a factory image) is created, by temp file + rename.
#[derive(Debug, Clone)]
pub struct GrubEnvFile {
    /// The grubenv file.
    pub path: PathBuf,
}

impl GrubEnvFile {
    /// A store for the grubenv at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        GrubEnvFile { path: path.into() }
    }
}

impl EnvStore for GrubEnvFile {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(EnvState::NeverWritten);
        };
        let vars = grubenv::parse(&bytes).map_err(|e| e.context(self.describe()))?;
        Ok(if vars.is_empty() {
            EnvState::NeverWritten
        } else {
            EnvState::Vars(vars)
        })
    }

    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let block = grubenv::encode(vars).map_err(|e| e.context(self.describe()))?;
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() && meta.len() == block.len() as u64 => {
                rewrite_in_place(&self.path, &block)
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(BootEnvError::io("inspecting", &self.path, e))
            }
            _ => write_file_atomically(&self.path, &block),
        }
    }

    fn describe(&self) -> String {
        format!("GRUB environment {}", self.path.display())
    }
}

/// The `file` backend ([`statefile`] format) for custom bootloaders and tests.
#[derive(Debug, Clone)]
pub struct StateFile {
    /// The state file.
    pub path: PathBuf,
}

impl StateFile {
    /// A store for the state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }
}

impl EnvStore for StateFile {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        match read_optional(&self.path)? {
            None => Ok(EnvState::NeverWritten),
            Some(bytes) => statefile::parse(&bytes)
                .map(EnvState::Vars)
                .map_err(|e| e.context(self.describe())),
        }
    }

    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let bytes = statefile::encode(vars).map_err(|e| e.context(self.describe()))?;
        write_file_atomically(&self.path, &bytes)
    }

    fn describe(&self) -> String {
        format!("boot state file {}", self.path.display())
    }
}

/// The U-Boot environment on a block device or file, as described by `fw_env.config`.
///
/// Redundant (two copies) writes are power-safe: the inactive copy is rewritten with the
/// next flag and fsynced, so a torn write leaves the old copy active. A single copy is
/// rewritten in place and is NOT power-safe: a power cut during the write leaves a copy
/// that fails its CRC (U-Boot then boots its built-in defaults, i.e. slot A, and `load`
/// reports it as corrupt). Use two copies on robots.
///
/// Raw MTD (`/dev/mtd*`) and UBI volumes need erase/update ioctls: use libubootenv there.
#[derive(Debug, Clone)]
pub struct UBootEnv {
    config: FwEnvConfig,
    source: Option<PathBuf>,
    default_env: Option<BTreeMap<String, String>>,
}

impl UBootEnv {
    /// A store for a parsed configuration.
    pub fn new(config: FwEnvConfig) -> Self {
        UBootEnv {
            config,
            source: None,
            default_env: None,
        }
    }

    /// A store for the `fw_env.config` file at `path`.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, BootEnvError> {
        let path = path.as_ref();
        let mut env = UBootEnv::new(FwEnvConfig::load(path)?);
        env.source = Some(path.to_path_buf());
        Ok(env)
    }

    /// The board's default environment, written underneath the caller's variables when the
    /// environment was never written (like `fw_setenv -f`). Without it such a write fails
    /// with [`BootEnvError::NoDefaultEnv`]: U-Boot would lose its built-in `bootcmd`.
    pub fn with_default_env(mut self, vars: BTreeMap<String, String>) -> Self {
        self.default_env = Some(vars);
        self
    }

    /// Like [`with_default_env`](Self::with_default_env), read from a `u-boot-initial-env`
    /// style file (`name=value` lines).
    pub fn with_default_env_file(self, path: impl AsRef<Path>) -> Result<Self, BootEnvError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| BootEnvError::io("reading default environment", path, e))?;
        Ok(self.with_default_env(uboot::parse_env_text(&text)))
    }

    /// The configuration in use.
    pub fn config(&self) -> &FwEnvConfig {
        &self.config
    }

    fn check_device(dev: &FwEnvDevice) -> Result<(), BootEnvError> {
        let s = dev.path.to_string_lossy();
        if s.starts_with("/dev/mtd") || s.starts_with("/dev/ubi") {
            return Err(BootEnvError::Unsupported {
                path: dev.path.clone(),
                detail: "raw MTD flash and UBI volumes need erase/update ioctls; \
                         use libubootenv (fw_setenv) on this board"
                    .into(),
            });
        }
        Ok(())
    }

    fn read_copy(&self, dev: &FwEnvDevice) -> Result<Vec<u8>, BootEnvError> {
        Self::check_device(dev)?;
        let mut f = File::open(&dev.path).map_err(|e| BootEnvError::io("opening", &dev.path, e))?;
        f.seek(SeekFrom::Start(dev.offset))
            .map_err(|e| BootEnvError::io("seeking", &dev.path, e))?;
        let mut buf = vec![0; dev.env_size];
        f.read_exact(&mut buf).map_err(|e| {
            BootEnvError::io(
                "reading the U-Boot environment (device shorter than offset + size?) from",
                &dev.path,
                e,
            )
        })?;
        Ok(buf)
    }

    fn write_copy(&self, dev: &FwEnvDevice, bytes: &[u8]) -> Result<(), BootEnvError> {
        Self::check_device(dev)?;
        let mut f = OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .map_err(|e| BootEnvError::io("opening for writing", &dev.path, e))?;
        f.seek(SeekFrom::Start(dev.offset))
            .map_err(|e| BootEnvError::io("seeking", &dev.path, e))?;
        f.write_all(bytes)
            .map_err(|e| BootEnvError::io("writing", &dev.path, e))?;
        f.sync_all()
            .map_err(|e| BootEnvError::io("syncing", &dev.path, e))
    }

    fn copies(&self) -> Result<Vec<CopyState>, BootEnvError> {
        let redundant = self.config.redundant();
        self.config
            .devices
            .iter()
            .map(|d| Ok(uboot::decode_copy(&self.read_copy(d)?, redundant)))
            .collect()
    }

    fn corrupt(&self, copies: &[CopyState]) -> BootEnvError {
        let detail = copies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let state = match c {
                    CopyState::Blank => "blank".to_string(),
                    CopyState::Invalid(why) => why.clone(),
                    CopyState::Valid { .. } => "valid".to_string(),
                };
                format!("copy {i}: {state}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        BootEnvError::corrupt(
            self.describe(),
            format!("no valid copy ({detail}); refusing to guess or rewrite it"),
        )
    }
}

impl EnvStore for UBootEnv {
    fn load(&self) -> Result<EnvState, BootEnvError> {
        let copies = self.copies()?;
        if let Some(i) = uboot::active_copy(&copies) {
            if let CopyState::Valid { vars, .. } = &copies[i] {
                return Ok(EnvState::Vars(vars.clone()));
            }
        }
        if copies.iter().all(|c| *c == CopyState::Blank) {
            return Ok(EnvState::NeverWritten);
        }
        Err(self.corrupt(&copies))
    }

    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let copies = self.copies()?;
        let active = uboot::active_copy(&copies);
        let mut to_write = vars.clone();
        if active.is_none() {
            if !copies.iter().all(|c| *c == CopyState::Blank) {
                return Err(self.corrupt(&copies));
            }
            let Some(defaults) = &self.default_env else {
                return Err(BootEnvError::NoDefaultEnv {
                    what: self.describe(),
                });
            };
            to_write = defaults.clone();
            to_write.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let size = self.config.env_size();
        if !self.config.redundant() {
            let bytes = uboot::encode_copy(&to_write, size, None)
                .map_err(|e| e.context(self.describe()))?;
            return self.write_copy(&self.config.devices[0], &bytes);
        }
        // Blank flash reads as flag 0xff on copy 0, so like libubootenv the first write
        // goes to copy 1 with flag 0.
        let (target, flag) = active
            .and_then(|i| match &copies[i] {
                CopyState::Valid { flag, .. } => Some((1 - i, uboot::next_flag(*flag))),
                _ => None,
            })
            .unwrap_or((1, uboot::next_flag(0xff)));
        let bytes = uboot::encode_copy(&to_write, size, Some(flag))
            .map_err(|e| e.context(self.describe()))?;
        self.write_copy(&self.config.devices[target], &bytes)
    }

    fn describe(&self) -> String {
        let devs = self
            .config
            .devices
            .iter()
            .map(|d| format!("{}@{:#x}", d.path.display(), d.offset))
            .collect::<Vec<_>>()
            .join(" + ");
        match &self.source {
            Some(cfg) => format!("U-Boot environment {devs} (from {})", cfg.display()),
            None => format!("U-Boot environment {devs}"),
        }
    }
}
