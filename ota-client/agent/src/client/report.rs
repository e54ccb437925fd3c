//! What operations return: install and confirm reports, and the robot's status.

use ota_client_core::{InstallOutcome, LiveFlip, LiveTrial, PendingTrial, ReportEvent, Slot};
use serde::Serialize;

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstallReport {
    /// The boot slot was written and armed for a trial boot.
    TrialArmed {
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
        /// The armed slot.
        slot: Slot,
        /// Trial boots armed.
        tries: u8,
        /// Live classes switched when the trial is committed.
        live_classes: Vec<String>,
        /// Whether the reboot command was run.
        rebooting: bool,
    },
    /// Stage only: the standby slots were written and verified, nothing was armed or switched;
    /// [`Client::activate`](super::Client::activate) with `bundle_hash` arms them later.
    Staged {
        /// Release version.
        version: semver::Version,
        /// Bundle identity (SHA-256 of the signed manifest): what `activate` is given.
        bundle_hash: String,
        /// The boot slot written, if the bundle has boot-coupled images.
        slot: Option<Slot>,
    },
    /// Live classes were switched and passed their health checks.
    LiveSwitched {
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
        /// The switches.
        flips: Vec<LiveFlip>,
    },
}

/// What `confirm` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfirmReport {
    /// The booted slot.
    pub booted: Slot,
    /// One line per action taken, for the journal.
    pub actions: Vec<String>,
    /// Whether the reboot command was run.
    pub rebooted: bool,
}

/// A pending trial boot as seen in the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialStatus {
    /// The slot named by `OTA_TRIAL`.
    pub slot: Slot,
    /// Trial boots left.
    pub tries_left: u8,
}

/// One slot in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// Slot class.
    pub class: String,
    /// Slot.
    pub slot: Slot,
    /// Device or file.
    pub device: String,
    /// good, bad, trying, installed, writing, empty.
    pub state: String,
    /// Release version.
    pub version: Option<semver::Version>,
    /// Bundle identity.
    pub bundle_hash: Option<String>,
    /// Why it is in its state.
    pub note: Option<String>,
    /// Booted (boot classes) or pointed at by the link (live classes).
    pub active: bool,
    /// Live class.
    pub live: bool,
}

/// Everything `status` reports (also the daemon's inventory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This robot's product string.
    pub compatible: String,
    /// The booted slot, if known.
    pub booted: Option<Slot>,
    /// The committed slot, if the environment is readable.
    pub primary: Option<Slot>,
    /// A trial named by the environment.
    pub trial: Option<TrialStatus>,
    /// Problems reading the booted slot, environment or state.
    pub errors: Vec<String>,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
    /// The trial the client armed and has not resolved.
    pub pending_trial: Option<PendingTrial>,
    /// A live trial in progress.
    pub live_trial: Option<LiveTrial>,
    /// The last install's outcome.
    pub last_install: Option<InstallOutcome>,
    /// Events (rollbacks, failures, commits) not yet reported.
    pub unreported_events: Vec<ReportEvent>,
    /// The digest of the bundle a stage-only install left in the standby slots, until it is
    /// activated or overwritten (what the daemon reports as `PollRequest.staged`).
    pub staged: Option<String>,
    /// The robot's security floor: the highest floor of any committed bundle; nothing below it
    /// is installed, activated or reverted to.
    pub security_floor: Option<semver::Version>,
    /// The version of the trust root bundles are verified against (the kept root or the image's, whichever
    /// is newer); `None` when it cannot be loaded (the reason is in `errors`).
    pub trust_version: Option<u64>,
}
