//! The robot's OTA client as a library; the `ota-client` binary is a thin CLI over
//! [`Client`], and a daemon can drive the same methods.
//!
//! * [`client`]: [`Client`] with `install`, `confirm`, `status`, `mark_good`, `mark_bad`,
//!   `take_events`/`ack_events`, `trust_update`; its [`ClientError::kind`] tells a caller
//!   whether to retry, give up or re-authenticate.
//! * [`config`]: the TOML configuration.
//! * [`daemon`]: `ota-client daemon`, the polling loop over [`Client`] (enroll, report,
//!   poll, install, reboot), with [`telemetry`] sent on every poll.
//! * I/O behind small types: [`boot`] (boot environment over `ota-boot-store`'s stores),
//!   [`booted`] (which slot runs), [`slotio`] (slot writers), [`source`] (file/HTTP with
//!   resume, [`readahead`]), [`command`] (health checks, reboot), [`live`] (symlink-switched
//!   classes), [`store`] (state file and writer lock); [`random`] for jitter and temp names.
//!
//! Decisions live in `ota-client-core`; this crate gathers facts and applies them. Files that
//! must survive a power cut are written through `ota_image_io::atomic`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod boot;
pub mod booted;
pub mod client;
pub mod command;
pub mod config;
pub mod daemon;
pub mod identity;
pub mod live;
pub mod random;
pub mod readahead;
pub mod slotio;
pub mod source;
pub mod store;
pub mod telemetry;

pub use client::{
    Client, ClientError, ConfirmReport, Hooks, InstallOptions, InstallReport, NoProgress, Progress,
    SlotStatus, Status, TrialStatus,
};
pub use config::Config;
pub use ota_client_core::Slot;
pub use source::BundleSource;
