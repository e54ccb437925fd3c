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
mod fsio;
mod uboot;

pub use files::{GrubEnvFile, StateFile};
pub use uboot::UBootEnv;
