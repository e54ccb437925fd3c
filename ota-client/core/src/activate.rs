//! Activation: arming a slot that already holds a bundle (staged ahead of a maintenance window,
//! or a release committed before and still in the other slot), so a robot switches without
//! downloading. The same rules as an install apply: nothing pending, never below the floor, a
//! lower version only for a revert (or the operator's override).

use crate::plan::{check_version, settled, ConfigFacts, DeviceFacts, InstallOptions, Refusal};
use crate::slot::{check_floor, ClientState, LiveFlip, LiveTrial, PendingTrial, Slot, SlotRecord};

/// What activating a held bundle does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Arm the boot slot (with the live classes switched at its commit).
    Boot(PendingTrial),
    /// Switch live classes only.
    Live(LiveTrial),
}

/// Plans the activation of the bundle `bundle_hash`: `Ok(None)` when no non-running slot holds
/// exactly that bundle (every class it was written to still verified with its digest), so the
/// caller downloads it instead.
pub fn plan_activation(
    bundle_hash: &str,
    config: &ConfigFacts,
    state: &ClientState,
    device: &DeviceFacts,
    options: InstallOptions,
) -> Result<Option<Activation>, Refusal> {
    let held = |class: &str, slot: Slot| -> Option<SlotRecord> {
        let r = state.record(class, slot);
        (r.state.verified() && r.bundle_hash.as_deref() == Some(bundle_hash)).then_some(r)
    };
    let boot_classes = config.boot_classes();
    let trial_slot = device.booted.other();
    let active = |class: &str| device.live_active.get(class).copied().unwrap_or(Slot::A);
    // Each class of the bundle, where it would come from: the boot trial slot or the live
    // class's inactive slot.
    let candidate = |class: &str| -> Option<(Slot, SlotRecord)> {
        let facts = config.classes.get(class)?;
        let slot = if facts.live {
            active(class).other()
        } else {
            trial_slot
        };
        held(class, slot).map(|r| (slot, r))
    };
    let found: Vec<(String, Slot, SlotRecord)> = config
        .classes
        .keys()
        .filter_map(|c| candidate(c).map(|(s, r)| (c.clone(), s, r)))
        .collect();
    let Some((_, _, first)) = found.first() else {
        return Ok(None);
    };
    // The bundle's classes as recorded when it was written; older records did not keep them,
    // then what is found is taken as the bundle.
    let wanted: Vec<String> = if first.bundle_classes.is_empty() {
        found.iter().map(|(c, _, _)| c.clone()).collect()
    } else {
        first.bundle_classes.clone()
    };
    let all_held = wanted.iter().all(|c| found.iter().any(|(f, _, _)| f == c));
    let touches_boot = boot_classes.iter().any(|c| wanted.contains(c));
    let boot_complete = boot_classes.iter().all(|c| wanted.contains(c));
    let (Some(version), true) = (first.version.clone(), all_held) else {
        return Ok(None);
    };
    if touches_boot && !boot_complete {
        return Ok(None);
    }
    settled(state, device)?;
    check_floor(&version, state.security_floor.as_ref())?;
    let currents: Vec<_> = wanted
        .iter()
        .map(|c| {
            let live = config.classes.get(c).is_some_and(|f| f.live);
            let from = if live { active(c) } else { device.booted };
            state.record(c, from).version
        })
        .collect();
    check_version(&version, &currents, options)?;
    let live: Vec<LiveFlip> = found
        .iter()
        .filter(|(c, _, _)| wanted.contains(c) && config.classes[c].live)
        .map(|(c, to, _)| LiveFlip {
            class: c.clone(),
            from: to.other(),
            to: *to,
        })
        .collect();
    Ok(Some(if touches_boot {
        Activation::Boot(PendingTrial {
            slot: trial_slot,
            classes: boot_classes,
            armed_tries: config.tries,
            version,
            bundle_hash: bundle_hash.to_string(),
            live,
            security_floor: first.security_floor.clone(),
        })
    } else {
        Activation::Live(LiveTrial {
            flips: live,
            version,
            bundle_hash: bundle_hash.to_string(),
            security_floor: first.security_floor.clone(),
        })
    }))
}
