//! What a caller hands an operation: install options, a progress receiver, and the test hooks.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ota_client_core::Slot;

use crate::slotio::SlotWriter;

/// Test hooks (all `None` in production).
#[derive(Clone, Default)]
#[allow(clippy::type_complexity)]
pub struct Hooks {
    /// Called at every named checkpoint; returning `true` simulates a power cut there: the
    /// operation stops and nothing more is written by this `Client`.
    pub crash_at: Option<Arc<dyn Fn(&str) -> bool + Send + Sync>>,
    /// Wraps each slot writer (e.g. to stop after N bytes).
    pub wrap_writer: Option<Arc<dyn Fn(Box<dyn SlotWriter>) -> Box<dyn SlotWriter> + Send + Sync>>,
}

/// Receives install progress (a progress bar, a log, or a daemon's reports).
pub trait Progress: Send {
    /// A step of the install began ("verifying bundle", "arming slot B", ...).
    fn phase(&mut self, message: &str);
    /// An image starts streaming into a slot.
    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64);
    /// `n` more bytes were written.
    fn bytes_written(&mut self, n: u64);
    /// The image was written and verified.
    fn image_finished(&mut self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&mut self, _: &str) {}
    fn image_started(&mut self, _: &str, _: &str, _: Slot, _: u64) {}
    fn bytes_written(&mut self, _: u64) {}
    fn image_finished(&mut self) {}
}

/// Install options.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Accept a lower version than the running one.
    pub allow_downgrade: bool,
    /// Run the reboot command once the trial is armed.
    pub reboot: bool,
    /// Set to cancel a download.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Write and verify the standby slots and record them as staged, but arm nothing: a later
    /// [`Client::activate`](super::Client::activate) with the bundle's digest arms them without
    /// downloading again (download ahead of a maintenance window).
    pub stage_only: bool,
    /// The server's rollout says revert: a version lower than the running one is allowed, as long
    /// as it is not below the robot's security floor.
    pub revert: bool,
}
