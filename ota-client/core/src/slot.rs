//! The slot model and the client's persisted state.
//!
//! The boot environment says which slot boots; this state says what each slot *holds*
//! (written? verified? found healthy?). Both are needed: the environment alone cannot tell
//! a verified slot from a half-written one, and the state alone cannot tell what the
//! bootloader did while the client was not running.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One of the two slots of every slot class: the boot contract's slot, so the core, the
/// agent and the bootloader backends all speak of one type. It serializes as `"A"`/`"B"`.
pub use ota_bootloader::Slot;

/// The boot contract variables (`OTA_PRIMARY`, `OTA_TRIAL`, `OTA_TRIES`) as the bootloader
/// reads them: the contract's own type, so the core decides on exactly what
/// [`ota_bootloader::select_boot`] sees. Its `Default` is a never-written environment
/// (primary A, no trial). It is not persisted by the client (the state file holds no copy).
pub use ota_bootloader::BootEnv;

/// Parses a slot as typed by an operator: `A`/`B`, also lowercase. (Environment values and
/// the state file are strict: see [`Slot::from_env_value`].)
pub fn parse_operator_slot(text: &str) -> Option<Slot> {
    match text {
        "A" | "a" => Some(Slot::A),
        "B" | "b" => Some(Slot::B),
        _ => None,
    }
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Nothing known to be in it (a factory standby slot).
    #[default]
    Empty,
    /// Being written, or a write was interrupted: never bootable.
    Writing,
    /// Fully written and verified (size and SHA-256), not yet proven healthy.
    Installed,
    /// Booted and confirmed healthy (or the factory slot the robot runs).
    Good,
    /// Failed its trial, was rolled back, or was marked bad.
    Bad,
}

impl SlotState {
    /// Whether the slot's bytes were fully written and verified at some point and have not
    /// been touched since: the only slots that may ever be armed or fallen back to.
    pub fn verified(self) -> bool {
        matches!(self, SlotState::Installed | SlotState::Good)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotState::Empty => "empty",
            SlotState::Writing => "writing",
            SlotState::Installed => "installed",
            SlotState::Good => "good",
            SlotState::Bad => "bad",
        })
    }
}

/// What the client knows about one slot of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Its state.
    pub state: SlotState,
    /// Release version of the bundle it was written from (unknown for factory content).
    pub version: Option<semver::Version>,
    /// The bundle's identity (SHA-256 of the signed manifest).
    pub bundle_hash: Option<String>,
    /// Why it is in its state, when that matters (e.g. why it is bad).
    pub note: Option<String>,
    /// The bundle's signed security floor, raised into the robot's floor when the bundle is
    /// committed (also when it is activated again later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<semver::Version>,
    /// Every slot class of the bundle it was written from: a slot holds "exactly that bundle"
    /// only if each of them still does (empty in records written before this was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundle_classes: Vec<String>,
    /// Whether what the slot holds now ever ran on this robot: booted on trial, committed, or running when the
    /// client first saw it. A `Bad` slot forgets how it became bad; this tells a failed trial (which an operator
    /// may overrule with `mark-good`) from a slot that was only written and never ran (which `mark-good` refuses,
    /// as `confirm` would). Cleared when the slot is written again; absent (false) in older state files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub booted_once: bool,
}

/// Both slots of a class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSlots {
    /// Slot A.
    pub a: SlotRecord,
    /// Slot B.
    pub b: SlotRecord,
}

impl ClassSlots {
    /// The record of `slot`.
    pub fn get(&self, slot: Slot) -> &SlotRecord {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The record of `slot`, mutably.
    pub fn get_mut(&mut self, slot: Slot) -> &mut SlotRecord {
        match slot {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }
}

/// A trial boot the client armed (recorded *before* arming, so a power cut in between is
/// recognised as "armed nothing").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTrial {
    /// The boot slot on trial.
    pub slot: Slot,
    /// The boot-coupled classes written into it.
    pub classes: Vec<String>,
    /// `OTA_TRIES` as armed: fewer left while booted on the primary means a trial boot
    /// already happened and the bootloader fell back.
    pub armed_tries: u8,
    /// Release version.
    pub version: semver::Version,
    /// Bundle identity.
    pub bundle_hash: String,
    /// Live classes written alongside, switched when the trial is committed.
    pub live: Vec<LiveFlip>,
    /// The bundle's security floor, raised into the robot's at commit (not before: the trial
    /// may still fall back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<semver::Version>,
}

/// One live class switched by its symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveFlip {
    /// The slot class.
    pub class: String,
    /// The slot active before.
    pub from: Slot,
    /// The slot switched to.
    pub to: Slot,
}

/// A live update being tried (recorded before the first symlink flip, so an interrupted
/// trial is flipped back at the next start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTrial {
    /// The classes being switched.
    pub flips: Vec<LiveFlip>,
    /// Release version.
    pub version: semver::Version,
    /// Bundle identity.
    pub bundle_hash: String,
    /// The bundle's security floor, raised into the robot's when the switch is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<semver::Version>,
}

/// A bundle written and verified into the standby slots without being armed (a stage-only
/// install): activating it later arms it without downloading again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedBundle {
    /// Release version.
    pub version: semver::Version,
    /// Bundle identity (SHA-256 of the signed manifest): what activation is asked for.
    pub bundle_hash: String,
    /// The boot slot written, if the bundle has boot-coupled images.
    pub boot_slot: Option<Slot>,
}

/// How the last install ended (so far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Written; the trial boot has not been confirmed yet.
    Pending,
    /// Committed (boot) or kept (live).
    Succeeded,
    /// Refused, failed while writing, or failed its health checks.
    Failed {
        /// Why.
        reason: String,
    },
    /// The bootloader fell back to the primary slot.
    RolledBack {
        /// Why.
        reason: String,
    },
}

/// The last install attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallOutcome {
    /// Release version (unknown when the bundle could not be read).
    pub version: Option<semver::Version>,
    /// Bundle identity (unknown when the bundle could not be read).
    pub bundle_hash: Option<String>,
    /// The target slot, once planned.
    pub slot: Option<Slot>,
    /// The result.
    #[serde(flatten)]
    pub outcome: OutcomeKind,
}

/// What happened, for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A trial boot was committed.
    Committed,
    /// A trial boot failed its health checks (or was marked bad).
    TrialFailed,
    /// The bootloader fell back to the primary slot.
    RolledBack,
    /// A live update was switched and kept.
    LiveCommitted,
    /// A live update failed its health checks and was switched back.
    LiveFailed,
    /// A live trial was interrupted (power cut, restart) and switched back.
    LiveInterrupted,
    /// An install failed before arming anything.
    InstallFailed,
    /// An operator marked a slot bad.
    MarkedBad,
}

/// One event not yet taken by a reporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEvent {
    /// Monotonic id (per robot).
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
    /// The slot concerned.
    pub slot: Option<Slot>,
    /// Release version concerned.
    pub version: Option<semver::Version>,
    /// Bundle identity concerned.
    pub bundle_hash: Option<String>,
    /// Why (empty for successes).
    pub reason: String,
}

/// Everything the client persists between runs (and across reboots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// Per slot class.
    pub classes: BTreeMap<String, ClassSlots>,
    /// A boot trial armed by the client and not yet resolved.
    pub pending_trial: Option<PendingTrial>,
    /// A live trial in progress.
    pub live_trial: Option<LiveTrial>,
    /// The last install attempt.
    pub last_install: Option<InstallOutcome>,
    /// Events not yet taken by a reporter.
    pub events: Vec<ReportEvent>,
    /// The id of the next event.
    pub next_event_id: u64,
    /// The highest security floor of any bundle committed on this robot: nothing below it is
    /// ever armed, switched to or committed again. Raised only at commit, never lowered. (The
    /// agent also keeps a copy outside this file, so losing the state does not lose the floor.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<semver::Version>,
    /// The bundle a stage-only install left in the standby slots, until it is activated or
    /// overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedBundle>,
}

/// Why a version may not run on this robot: below its security floor. One line naming both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version} is below this robot's security floor {floor}: refusing it, whatever the server says")]
pub struct BelowFloor {
    /// The refused version.
    pub version: semver::Version,
    /// The robot's floor.
    pub floor: semver::Version,
}

/// Checks `version` against the robot's `floor` (no floor: anything goes).
pub fn check_floor(
    version: &semver::Version,
    floor: Option<&semver::Version>,
) -> Result<(), BelowFloor> {
    match floor {
        Some(floor) if version < floor => Err(BelowFloor {
            version: version.clone(),
            floor: floor.clone(),
        }),
        _ => Ok(()),
    }
}

/// The higher of two floors: floors only ever rise.
pub fn raise_floor(
    floor: Option<&semver::Version>,
    by: Option<&semver::Version>,
) -> Option<semver::Version> {
    floor.max(by).cloned()
}

/// Bound on stored unreported events, so a robot that is never polled cannot fill its disk.
pub const MAX_EVENTS: usize = 64;

impl ClientState {
    /// The record of `class`/`slot` (an empty record if unknown).
    pub fn record(&self, class: &str, slot: Slot) -> SlotRecord {
        self.classes
            .get(class)
            .map(|c| c.get(slot).clone())
            .unwrap_or_default()
    }

    /// The record of `class`/`slot`, created if missing.
    pub fn record_mut(&mut self, class: &str, slot: Slot) -> &mut SlotRecord {
        self.classes
            .entry(class.to_string())
            .or_default()
            .get_mut(slot)
    }

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push_event(
        &mut self,
        kind: EventKind,
        slot: Option<Slot>,
        version: Option<semver::Version>,
        bundle_hash: Option<String>,
        reason: impl Into<String>,
    ) {
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.events.push(ReportEvent {
            id,
            kind,
            slot,
            version,
            bundle_hash,
            reason: reason.into(),
        });
        if self.events.len() > MAX_EVENTS {
            let excess = self.events.len() - MAX_EVENTS;
            self.events.drain(..excess);
        }
    }

    /// The state of a robot whose client never ran (or whose state was lost), adopting what
    /// is running: the booted slot of every boot-coupled class and the active slot of every
    /// live class are the factory software, hence good. Known records are kept as they are.
    pub fn adopt_running(
        &mut self,
        boot_classes: &[String],
        booted: Slot,
        live_active: &BTreeMap<String, Slot>,
    ) {
        let running = boot_classes
            .iter()
            .map(|c| (c.clone(), booted))
            .chain(live_active.iter().map(|(c, s)| (c.clone(), *s)));
        for (class, slot) in running {
            let rec = self.record_mut(&class, slot);
            if rec.state == SlotState::Empty {
                rec.state = SlotState::Good;
                rec.booted_once = true;
                rec.note = Some("running when the client first saw it".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_slot_accepts_lowercase() {
        assert_eq!(parse_operator_slot("A"), Some(Slot::A));
        assert_eq!(parse_operator_slot("a"), Some(Slot::A));
        assert_eq!(parse_operator_slot("B"), Some(Slot::B));
        assert_eq!(parse_operator_slot("b"), Some(Slot::B));
        for bad in ["", "C", " A", "AB"] {
            assert_eq!(parse_operator_slot(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn state_file_slots_stay_a_and_b() {
        let flip = LiveFlip {
            class: "model".into(),
            from: Slot::A,
            to: Slot::B,
        };
        let json = serde_json::to_string(&flip).unwrap();
        assert_eq!(json, r#"{"class":"model","from":"A","to":"B"}"#);
        assert_eq!(serde_json::from_str::<LiveFlip>(&json).unwrap(), flip);
    }
}
