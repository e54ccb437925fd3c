//! The robot's own say over an offered update: which steps an offer takes and which checks
//! come before each, decided from the offer, what the client already holds and the phases the
//! readiness check gates. Pure: the machine runs the steps one by one and stops at the first
//! check that says wait, so nothing a check gates happens while it says no.
//!
//! Phases: `download` gates fetching the bundle and writing the standby slot; `install` gates
//! arming it (the moment the next boot changes); `reboot` gates the reboot into it, and so does
//! an offer that requires a local confirmation. When the reboot may be held, the bundle is
//! staged first and armed only once every check before the reboot said go, so a robot that
//! loses power while it waits boots what it ran, not the update.

use ota_protocol::device::UpdateOffer;
use ota_protocol::fleet::WaitPhase;

/// The reason reported while an offer waits for `ota-client approve`.
pub const WAITING_FOR_CONFIRMATION: &str = "waiting for confirmation";

/// One step of working on an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run the readiness check for this phase.
    Check(WaitPhase),
    /// Look for the local confirmation of this bundle.
    Approval,
    /// Report `downloading`.
    ReportDownloading,
    /// Download, write and arm (one operation; only when nothing holds the reboot back).
    Install,
    /// Download and write the standby slot without arming it.
    Stage,
    /// Report `staged` (once per offer).
    ReportStaged,
    /// Arm the slot that already holds the bundle.
    Activate,
    /// Report `rebooting` and reboot.
    Reboot,
}

/// What the robot already has of the offered bundle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// It is armed for a trial boot (the robot did not reboot after arming it).
    pub armed: bool,
    /// A slot other than the booted one holds it (staged, or a release it ran before).
    pub in_slot: bool,
    /// `staged` was reported for this offer.
    pub staged_reported: bool,
}

/// The steps for `offer`, in order; the readiness check gates the phases in `gated`.
pub fn plan(offer: &UpdateOffer, held: Held, gated: &[WaitPhase]) -> Vec<Step> {
    let check = |phase: WaitPhase| gated.contains(&phase).then_some(Step::Check(phase));
    let before_reboot = [
        check(WaitPhase::Reboot),
        offer.require_confirmation.then_some(Step::Approval),
    ];
    let mut steps = Vec::new();
    if held.armed {
        // Armed already: only the reboot is left, and only inside the install window.
        if offer.install_allowed {
            steps.extend(before_reboot.into_iter().flatten());
            steps.push(Step::Reboot);
        }
        return steps;
    }
    let reboot_held = before_reboot.iter().any(Option::is_some);
    if !held.in_slot {
        steps.extend(check(WaitPhase::Download));
        steps.push(Step::ReportDownloading);
        if offer.install_allowed && !reboot_held {
            steps.extend(check(WaitPhase::Install));
            steps.extend([Step::Install, Step::Reboot]);
            return steps;
        }
        steps.extend([Step::Stage, Step::ReportStaged]);
    } else if !offer.install_allowed && !held.staged_reported {
        steps.push(Step::ReportStaged);
    }
    if offer.install_allowed {
        steps.extend(check(WaitPhase::Install));
        steps.extend(before_reboot.into_iter().flatten());
        steps.extend([Step::Activate, Step::Reboot]);
    }
    steps
}

/// The log line for an offer about to take `steps`.
pub fn describe(offer: &UpdateOffer, armed: bool, steps: &[Step]) -> String {
    let version = &offer.version;
    let size = format!("rollout {}, {} bytes", offer.rollout_id, offer.size);
    match steps.first() {
        _ if armed && steps.is_empty() => format!(
            "{version} is armed for a trial boot; rebooting into it waits for its install window"
        ),
        Some(Step::Reboot) if armed => {
            format!("{version} is armed for a trial boot but the robot did not reboot: rebooting")
        }
        _ if armed => format!("{version} is armed for a trial boot: checking before rebooting"),
        _ if steps.contains(&Step::Install) => {
            format!("update {version} offered ({size}): downloading and installing")
        }
        _ if steps.contains(&Step::Stage) && !offer.install_allowed => {
            format!("update {version} offered ({size}): downloading it ahead of its install window")
        }
        _ if steps.contains(&Step::Stage) => format!(
            "update {version} offered ({size}): downloading it, to be armed right before the reboot"
        ),
        Some(Step::Activate) => {
            format!("update {version} offered and already in a slot: arming it")
        }
        _ if steps.contains(&Step::Activate) => {
            format!("update {version} offered and already in a slot: checking before arming it")
        }
        _ => format!("update {version} is staged: waiting for its install window"),
    }
}
