//! What [`step`](super::step) is given and returns: the events, the situation they are checked
//! against, and the transition (new records, environment, persisting order).

use crate::slot::{BootEnv, ClientState, LiveTrial, PendingTrial, Slot, StagedBundle};

/// One slot to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTarget {
    /// Slot class.
    pub class: String,
    /// Target slot.
    pub slot: Slot,
    /// Whether the class is live (symlink-switched).
    pub live: bool,
}

/// Something that happened or that the client wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Install: the target slots are about to be written (they become unbootable first).
    WriteStarted {
        /// The slots.
        targets: Vec<WriteTarget>,
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
    },
    /// Install: one slot was fully written, synced and verified.
    WriteVerified {
        /// Slot class.
        class: String,
        /// Slot.
        slot: Slot,
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
        /// The bundle's security floor.
        security_floor: Option<semver::Version>,
        /// Every slot class of the bundle.
        bundle_classes: Vec<String>,
    },
    /// Install: record the trial and arm the bootloader.
    ArmTrial(PendingTrial),
    /// Stage-only install: every slot was verified; record the bundle as staged, arm nothing.
    Stage(StagedBundle),
    /// Activate: arm a slot that already holds the bundle (staged, or a release committed
    /// before) for a trial boot, as [`Event::ArmTrial`] does once it is re-proven.
    Activate(PendingTrial),
    /// Activate a live-only bundle already in the inactive live slots, as [`Event::LiveStarted`].
    ActivateLive(LiveTrial),
    /// Confirm: the booted trial slot is healthy (or an operator marked it good).
    Commit,
    /// Confirm: the environment already commits the booted slot; record it.
    FinishCommit,
    /// Confirm/operator: the booted trial slot failed; clear the trial.
    TrialFailed {
        /// Why.
        reason: String,
    },
    /// Confirm: the bootloader fell back from the trial slot.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// Confirm: a recorded trial was never armed.
    ArmInterrupted,
    /// Confirm: `OTA_TRIAL` names a slot that is not on trial.
    ClearStaleTrial,
    /// Live install: about to switch symlinks.
    LiveStarted(LiveTrial),
    /// Live install: the switched slots are healthy.
    LiveCommitted,
    /// Live install: health failed (or the trial was interrupted); switched back.
    LiveFailed {
        /// Why.
        reason: String,
        /// Whether a power cut/restart interrupted it (vs. a failed check).
        interrupted: bool,
    },
    /// Install failed before arming anything.
    InstallFailed {
        /// Why.
        reason: String,
        /// Release version, if known.
        version: Option<semver::Version>,
        /// Bundle identity, if known.
        bundle_hash: Option<String>,
    },
    /// Operator: `slot` is good.
    MarkGood {
        /// The slot.
        slot: Slot,
    },
    /// Operator: `slot` is bad.
    MarkBad {
        /// The slot.
        slot: Slot,
    },
}

/// Which of the two writes goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Persist the records, then write the environment.
    StateFirst,
    /// Write the environment, then persist the records.
    EnvFirst,
}

/// The result of an allowed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new records.
    pub state: ClientState,
    /// The environment to write, if it changes.
    pub env: Option<BootEnv>,
    /// Persisting order.
    pub order: Order,
}

/// Why an event is not allowed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

/// The facts `step` checks events against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context<'a> {
    /// The boot environment now.
    pub env: BootEnv,
    /// The booted slot.
    pub booted: Slot,
    /// The boot-coupled slot classes.
    pub boot_classes: &'a [String],
}
