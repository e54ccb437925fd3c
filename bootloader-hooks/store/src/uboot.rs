//! The U-Boot environment store: one or two copies on a block device or in a file, at the
//! places `fw_env.config` names.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ota_bootloader::uboot::{self, CopyState, FwEnvConfig, FwEnvDevice};
use ota_bootloader::{BootEnvError, EnvState, EnvStore};
use ota_image_io::atomic::open_device_or_file;

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
        let text = std::fs::read_to_string(path)
            .map_err(|e| BootEnvError::io("reading U-Boot env config", path, e))?;
        let mut env = UBootEnv::new(FwEnvConfig::parse(&text, path)?);
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
        // A device, a file, or a link to a device (udev's names); never a link to a file elsewhere.
        let mut f = open_device_or_file(&dev.path, OpenOptions::new().write(true))
            .map_err(crate::fsio::file_error)?;
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
