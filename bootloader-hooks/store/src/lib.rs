//! Where the boot environment lives: the file and device stores behind
//! [`ota_bootloader::EnvStore`], so the OTA client does not care which bootloader the robot
//! has. The formats themselves are the pure codecs of `ota-bootloader`; this crate only moves
//! their bytes to and from storage.
//!
//! * [`GrubEnvFile`]: GRUB's `grubenv`, rewritten in place once it exists (FAT-safe).
//! * [`UBootEnv`]: the U-Boot environment on a block device or file, one or two copies, as
//!   described by `fw_env.config`.
//! * [`StateFile`]: the plain `file` backend for custom bootloaders and tests.
//!
//! Whole files are replaced through `ota_image_io::atomic` (random temp name, no link
//! followed, fsync, rename, fsync of the directory). Stores do not lock: the caller
//! serialises load-modify-store cycles.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod files;
mod uboot;

use std::io::ErrorKind;
use std::path::Path;

use ota_bootloader::BootEnvError;
use ota_image_io::atomic::{self, FileError};

pub use files::{GrubEnvFile, StateFile};
pub use uboot::UBootEnv;

/// Mode of an environment file the stores create (grub-editenv's).
const ENV_FILE_MODE: u32 = 0o644;

/// Replaces `path` by `bytes` so that a power cut leaves the old or the new file.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), BootEnvError> {
    atomic::write_atomically(path, bytes, ENV_FILE_MODE)
        .map_err(|FileError { op, path, source }| BootEnvError::Io { op, path, source })
}

/// Reads a whole file; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BootEnvError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BootEnvError::io("reading", path, e)),
    }
}
