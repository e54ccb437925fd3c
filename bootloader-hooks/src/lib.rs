//! The bootloader side of the OTA A/B update system, as pure code: the boot contract and the
//! boot environment formats of GRUB and U-Boot, bytes in, bytes out. No file or device I/O:
//! the stores that read and write environments live in `ota-boot-store`, so the client's
//! decision core links only this. (The simulator that runs the shipped scripts lives in the
//! test kit, `ota_testkit::sim`.)
//!
//! * [`contract`]: the variables (`OTA_PRIMARY`, `OTA_TRIAL`, `OTA_TRIES`), [`Slot`],
//!   [`BootEnv`] and [`select_boot`], the single Rust statement of the boot selection.
//! * [`grubenv`], [`uboot`], [`statefile`]: pure codecs, byte-compatible with
//!   `grub-editenv` and libubootenv (`fw_printenv`/`fw_setenv`).
//! * [`EnvStore`] and [`EnvState`]: the interface every store implements.
//!
//! Threat model: a power cut at any instant leaves a robot that boots a good slot; a slot
//! that was never fully written is never armed or fallen back to; boots are counted only
//! while a slot is on trial.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod contract;
mod env;
mod error;
pub mod grubenv;
pub mod statefile;
pub mod uboot;

pub use contract::{
    select_boot, BootDecision, BootEnv, ParseSlotError, Slot, CMDLINE_PARAM, CONTRACT_VARS,
    MAX_TRIES, OTA_PRIMARY, OTA_TRIAL, OTA_TRIES,
};
pub use env::{env_from_pairs, EnvState, EnvStore};
pub use error::{BootEnvError, CodecError};
pub use uboot::{FwEnvConfig, FwEnvDevice};
