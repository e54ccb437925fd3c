//! Every decision of the OTA client, with no I/O: no files, no network, no clock.
//!
//! The agent crate (`ota-client`) gathers facts (the verified manifest, the configuration,
//! the boot environment, the booted slot, the persisted [`ClientState`]), asks this crate
//! what to do, and applies the answer. Keeping the decisions here makes them deterministic
//! and testable exhaustively (see `tests/`):
//!
//! * [`slot`]: slots and the boot environment (the boot contract's [`Slot`] and [`BootEnv`],
//!   from `ota-bootloader`), per-slot states and the persisted [`ClientState`].
//! * [`plan`]: [`plan_install`], every check that must pass before the first byte is written.
//! * [`boot`]: [`decide_on_boot`], what the client does after a (re)boot.
//! * [`machine`]: [`step`], the one transition table for every state change, returning the
//!   new state and the boot environment to write.
//! * [`activate`]: [`plan_activation`], arming a slot that already holds a bundle (staged, or
//!   a release committed before) without downloading it again.
//! * [`resume`]: [`resume::resume_point`], which part of an interrupted download a restarted install keeps.
//! * [`daemon`]: [`daemon::DaemonMachine`], the fleet daemon's loop (enroll, report, poll,
//!   install, reboot, back off) fed inputs and the time, returning actions.
//! * [`freshness`]: [`freshness::Freshness`], freeze and replay detection from signed timestamps with no
//!   trusted clock (a time floor that only rises, staleness in the robot's own uptime).
//!
//! Invariants enforced here (and property-tested): a slot is armed for a trial boot only
//! after it was fully written and verified; only the booted trial slot is ever committed;
//! the primary slot changes only on that commit or on an operator's `mark-bad` towards a
//! slot known to be good; nothing below the robot's security floor (the highest floor of any
//! committed bundle, raised only at commit) is ever armed, switched to or committed.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activate;
pub mod boot;
pub mod daemon;
pub mod freshness;
pub mod machine;
pub mod plan;
pub mod resume;
pub mod slot;

pub use activate::{plan_activation, Activation};
pub use boot::{decide_on_boot, BootOutcome};
pub use machine::{step, Context, Event, Order, StepError, Transition, WriteTarget};
pub use plan::{
    plan_install, ClassFacts, ConfigFacts, DeviceFacts, ImageFacts, InstallOptions, InstallPlan,
    ManifestFacts, PlannedWrite, Refusal,
};
pub use slot::{
    check_floor, parse_operator_slot, raise_floor, BelowFloor, BootEnv, ClassSlots, ClientState,
    EventKind, InstallOutcome, LiveFlip, LiveTrial, OutcomeKind, PendingTrial, ReportEvent, Slot,
    SlotRecord, SlotState, StagedBundle,
};
