//! The transition table: every change to the client's records and to the boot
//! environment goes through [`step`], which checks the event is allowed in the current
//! situation and returns the new records, the environment to write (if any) and in which
//! order to persist the two so that a power cut between them is recoverable.

mod event;

pub use event::{Context, Event, Order, StepError, Transition, WriteTarget};

use crate::slot::{
    check_floor, raise_floor, BootEnv, ClientState, EventKind, InstallOutcome, LiveTrial,
    OutcomeKind, PendingTrial, Slot, SlotState,
};

fn refuse<T>(msg: impl Into<String>) -> Result<T, StepError> {
    Err(StepError(msg.into()))
}

/// Ends the live trial `t` (kept or undone): its switched classes become `to` with `note`, the trial is cleared
/// and `outcome` recorded as the last install. Returns the slot it switched to, for the event.
fn end_live_trial(
    next: &mut ClientState,
    t: &LiveTrial,
    to: SlotState,
    note: Option<&str>,
    outcome: OutcomeKind,
) -> Option<Slot> {
    for f in &t.flips {
        let rec = next.record_mut(&f.class, f.to);
        rec.state = to;
        rec.note = note.map(str::to_string);
        // A live switch runs the slot at once, kept or not.
        rec.booted_once = true;
    }
    next.live_trial = None;
    let slot = t.flips.first().map(|f| f.to);
    next.last_install = Some(InstallOutcome {
        version: Some(t.version.clone()),
        bundle_hash: Some(t.bundle_hash.clone()),
        slot,
        outcome,
    });
    slot
}

/// Records that what `slot` holds in `classes` ran on this robot (see [`crate::slot::SlotRecord::booted_once`]).
fn ran(state: &mut ClientState, classes: &[String], slot: Slot) {
    for class in classes {
        state.record_mut(class, slot).booted_once = true;
    }
}

/// Records the operator's mark-bad of `slot`: its boot classes become bad with `reason`, and the event is kept.
fn record_marked_bad(next: &mut ClientState, classes: &[String], slot: Slot, reason: &str) {
    set_classes(next, classes, slot, SlotState::Bad, Some(reason));
    next.push_event(EventKind::MarkedBad, Some(slot), None, None, reason);
}

fn set_classes(
    state: &mut ClientState,
    classes: &[String],
    slot: Slot,
    to: SlotState,
    note: Option<&str>,
) {
    for class in classes {
        let rec = state.record_mut(class, slot);
        rec.state = to;
        rec.note = note.map(str::to_string);
    }
}

fn outcome(
    state: &mut ClientState,
    pending: Option<&PendingTrial>,
    slot: Option<Slot>,
    o: OutcomeKind,
) {
    let (version, bundle_hash) = match pending {
        Some(p) => (Some(p.version.clone()), Some(p.bundle_hash.clone())),
        None => state
            .last_install
            .as_ref()
            .map(|l| (l.version.clone(), l.bundle_hash.clone()))
            .unwrap_or_default(),
    };
    state.last_install = Some(InstallOutcome {
        version,
        bundle_hash,
        slot,
        outcome: o,
    });
}

/// Applies `event` to `state` in situation `ctx`, or refuses it.
pub fn step(state: &ClientState, ctx: &Context<'_>, event: Event) -> Result<Transition, StepError> {
    let env = ctx.env;
    let booted = ctx.booted;
    let mut next = state.clone();
    let keep = |state: ClientState| Transition {
        state,
        env: None,
        order: Order::StateFirst,
    };
    let verified = |slot: Slot| {
        ctx.boot_classes
            .iter()
            .all(|c| state.record(c, slot).state.verified())
    };
    let on_trial = env.trial == Some(booted) && booted != env.primary;

    match event {
        Event::WriteStarted {
            targets,
            version,
            bundle_hash,
        } => {
            let mut new_env = None;
            for t in &targets {
                if !t.live && (t.slot == booted || t.slot == env.primary) {
                    return refuse(format!(
                        "refusing to write slot {}: it is the booted or committed slot",
                        t.slot
                    ));
                }
                if t.live
                    && state
                        .live_trial
                        .as_ref()
                        .is_some_and(|l| l.flips.iter().any(|f| f.class == t.class))
                {
                    return refuse(format!(
                        "refusing to write {}: a live trial uses it",
                        t.class
                    ));
                }
                let rec = next.record_mut(&t.class, t.slot);
                rec.state = SlotState::Writing;
                rec.version = None;
                rec.bundle_hash = None;
                rec.note = None;
                rec.security_floor = None;
                rec.bundle_classes.clear();
                rec.booted_once = false;
                if !t.live && env.trial == Some(t.slot) {
                    new_env = Some(BootEnv {
                        trial: None,
                        tries: 0,
                        ..env
                    });
                }
            }
            if state.pending_trial.is_some() {
                return refuse("a trial is pending");
            }
            // The staged bundle is overwritten (or, if elsewhere, no longer the one to offer).
            next.staged = None;
            next.last_install = Some(InstallOutcome {
                version: Some(version),
                bundle_hash: Some(bundle_hash),
                slot: targets.first().map(|t| t.slot),
                outcome: OutcomeKind::Pending,
            });
            Ok(Transition {
                state: next,
                env: new_env,
                order: Order::StateFirst,
            })
        }
        Event::WriteVerified {
            class,
            slot,
            version,
            bundle_hash,
            security_floor,
            bundle_classes,
        } => {
            if state.record(&class, slot).state != SlotState::Writing {
                return refuse(format!("slot {class}/{slot} was not being written"));
            }
            let rec = next.record_mut(&class, slot);
            rec.state = SlotState::Installed;
            rec.version = Some(version);
            rec.bundle_hash = Some(bundle_hash);
            rec.security_floor = security_floor;
            rec.bundle_classes = bundle_classes;
            Ok(keep(next))
        }
        Event::Stage(staged) => {
            if state.pending_trial.is_some() || env.armed_trial().is_some() {
                return refuse("a trial is pending: nothing can be staged");
            }
            let held = |class: &String, slot: Slot| {
                let r = state.record(class, slot);
                r.state == SlotState::Installed
                    && r.bundle_hash.as_deref() == Some(&staged.bundle_hash)
            };
            let boot_ok = staged.boot_slot.is_none_or(|slot| {
                slot != booted
                    && slot != env.primary
                    && ctx.boot_classes.iter().all(|c| held(c, slot))
            });
            let any = state
                .classes
                .keys()
                .any(|c| Slot::ALL.iter().any(|s| held(c, *s)));
            if !boot_ok || !any {
                return refuse(format!(
                    "refusing to stage {}: not every image was fully written and verified",
                    staged.version
                ));
            }
            next.staged = Some(staged);
            Ok(keep(next))
        }
        Event::Activate(trial) => {
            let mut demoted = state.clone();
            reprove(
                &mut demoted,
                &trial.bundle_hash,
                trial
                    .classes
                    .iter()
                    .map(|c| (c.as_str(), trial.slot))
                    .chain(trial.live.iter().map(|f| (f.class.as_str(), f.to))),
            );
            step(&demoted, ctx, Event::ArmTrial(trial))
        }
        Event::ActivateLive(trial) => {
            let mut demoted = state.clone();
            reprove(
                &mut demoted,
                &trial.bundle_hash,
                trial.flips.iter().map(|f| (f.class.as_str(), f.to)),
            );
            step(&demoted, ctx, Event::LiveStarted(trial))
        }
        Event::ArmTrial(trial) => {
            if let Err(below) = check_floor(&trial.version, state.security_floor.as_ref()) {
                return refuse(below.to_string());
            }
            if trial.slot == booted || booted != env.primary {
                return refuse(format!(
                    "cannot arm slot {}: it is running or the robot is not on its primary",
                    trial.slot
                ));
            }
            if state.pending_trial.is_some() || env.armed_trial().is_some() {
                return refuse("a trial is already pending");
            }
            if trial.armed_tries == 0 {
                return refuse("arming with 0 tries would never boot the trial");
            }
            if trial.armed_tries > ota_bootloader::MAX_TRIES {
                // The env stores one digit: the recorded count would disagree with the armed one.
                return refuse(format!(
                    "cannot arm {} tries: the boot env holds at most {}",
                    trial.armed_tries,
                    ota_bootloader::MAX_TRIES
                ));
            }
            let classes_ok = !trial.classes.is_empty()
                && ctx.boot_classes.iter().all(|c| trial.classes.contains(c))
                && trial.classes.iter().all(|c| {
                    let r = state.record(c, trial.slot);
                    r.state == SlotState::Installed
                        && r.bundle_hash.as_deref() == Some(&trial.bundle_hash)
                });
            let live_ok = trial.live.iter().all(|f| {
                let r = state.record(&f.class, f.to);
                r.state == SlotState::Installed
                    && r.bundle_hash.as_deref() == Some(&trial.bundle_hash)
            });
            if !classes_ok || !live_ok {
                return refuse(format!(
                    "refusing to arm slot {}: not every image was fully written and verified",
                    trial.slot
                ));
            }
            // Not `BootEnv::arm_trial`, which clamps to `MAX_TRIES`: the armed env and the
            // recorded `armed_tries` must agree, or `decide_on_boot` sees a spent try.
            let new_env = BootEnv {
                trial: Some(trial.slot),
                tries: trial.armed_tries,
                ..env
            };
            next.pending_trial = Some(trial);
            next.staged = None;
            Ok(Transition {
                state: next,
                env: Some(new_env),
                order: Order::StateFirst,
            })
        }
        Event::Commit | Event::FinishCommit => {
            let commit = matches!(event, Event::Commit);
            let Some(p) = state.pending_trial.clone().filter(|p| p.slot == booted) else {
                return refuse(format!(
                    "no trial of the booted slot {booted} is recorded: not committing"
                ));
            };
            if commit && !on_trial {
                return refuse(format!(
                    "slot {booted} is not booted on trial: not committing"
                ));
            }
            if let (true, Err(below)) = (
                commit,
                check_floor(&p.version, state.security_floor.as_ref()),
            ) {
                return refuse(below.to_string());
            }
            if !commit && (env.primary != booted || env.armed_trial().is_some()) {
                return refuse("the environment does not commit the booted slot");
            }
            if !verified(booted)
                || p.classes
                    .iter()
                    .any(|c| !state.record(c, booted).state.verified())
            {
                return refuse(format!(
                    "slot {booted} was never fully written and verified: not committing"
                ));
            }
            set_classes(&mut next, &p.classes, booted, SlotState::Good, None);
            ran(&mut next, &p.classes, booted);
            for f in &p.live {
                let rec = next.record_mut(&f.class, f.to);
                if rec.state == SlotState::Installed {
                    rec.state = SlotState::Good;
                }
            }
            next.pending_trial = None;
            next.security_floor =
                raise_floor(state.security_floor.as_ref(), p.security_floor.as_ref());
            outcome(&mut next, Some(&p), Some(booted), OutcomeKind::Succeeded);
            next.push_event(
                EventKind::Committed,
                Some(booted),
                Some(p.version.clone()),
                Some(p.bundle_hash.clone()),
                "",
            );
            Ok(Transition {
                state: next,
                env: commit.then_some(env.commit(booted)),
                order: Order::EnvFirst,
            })
        }
        Event::TrialFailed { reason } => {
            if !on_trial {
                return refuse(format!("slot {booted} is not booted on trial"));
            }
            fail_slot(
                &mut next,
                ctx.boot_classes,
                booted,
                EventKind::TrialFailed,
                &reason,
                false,
            );
            Ok(Transition {
                state: next,
                env: Some(env.clear_trial()),
                order: Order::StateFirst,
            })
        }
        Event::RolledBack { reason } => {
            let Some(t) = env
                .trial
                .filter(|t| *t != env.primary && booted == env.primary)
            else {
                return refuse("no trial to roll back");
            };
            fail_slot(
                &mut next,
                ctx.boot_classes,
                t,
                EventKind::RolledBack,
                &reason,
                true,
            );
            Ok(Transition {
                state: next,
                env: Some(env.clear_trial()),
                order: Order::StateFirst,
            })
        }
        Event::ArmInterrupted => {
            let Some(p) = state.pending_trial.clone() else {
                return refuse("no trial is recorded");
            };
            if env.trial == Some(p.slot) || booted == p.slot {
                return refuse("the recorded trial was armed");
            }
            next.pending_trial = None;
            let reason = "interrupted before the trial boot was armed: install again";
            outcome(
                &mut next,
                Some(&p),
                Some(p.slot),
                OutcomeKind::Failed {
                    reason: reason.into(),
                },
            );
            next.push_event(
                EventKind::InstallFailed,
                Some(p.slot),
                Some(p.version),
                Some(p.bundle_hash),
                reason,
            );
            Ok(keep(next))
        }
        Event::ClearStaleTrial => {
            let Some(t) = env.trial else {
                return refuse("no trial to clear");
            };
            if t == booted
                || state
                    .pending_trial
                    .as_ref()
                    .is_some_and(|p| p.slot == t && t != env.primary && env.tries > 0)
            {
                return refuse(format!("the trial of slot {t} is live"));
            }
            Ok(Transition {
                state: next,
                env: Some(env.clear_trial()),
                order: Order::StateFirst,
            })
        }
        Event::LiveStarted(trial) => {
            if state.live_trial.is_some() {
                return refuse("a live trial is already in progress");
            }
            if let Err(below) = check_floor(&trial.version, state.security_floor.as_ref()) {
                return refuse(below.to_string());
            }
            for f in &trial.flips {
                let r = state.record(&f.class, f.to);
                if r.state != SlotState::Installed
                    || r.bundle_hash.as_deref() != Some(&trial.bundle_hash)
                {
                    return refuse(format!(
                        "refusing to switch {} to slot {}: it was not fully written and verified",
                        f.class, f.to
                    ));
                }
            }
            if next
                .staged
                .as_ref()
                .is_some_and(|s| s.bundle_hash == trial.bundle_hash)
            {
                next.staged = None;
            }
            next.live_trial = Some(trial);
            Ok(keep(next))
        }
        Event::LiveCommitted => {
            let Some(t) = state.live_trial.clone() else {
                return refuse("no live trial in progress");
            };
            let slot = end_live_trial(&mut next, &t, SlotState::Good, None, OutcomeKind::Succeeded);
            next.security_floor =
                raise_floor(state.security_floor.as_ref(), t.security_floor.as_ref());
            next.push_event(
                EventKind::LiveCommitted,
                slot,
                Some(t.version),
                Some(t.bundle_hash),
                "",
            );
            Ok(keep(next))
        }
        Event::LiveFailed {
            reason,
            interrupted,
        } => {
            let Some(t) = state.live_trial.clone() else {
                return refuse("no live trial in progress");
            };
            let failed = OutcomeKind::Failed {
                reason: reason.clone(),
            };
            let slot = end_live_trial(&mut next, &t, SlotState::Bad, Some(&reason), failed);
            let kind = if interrupted {
                EventKind::LiveInterrupted
            } else {
                EventKind::LiveFailed
            };
            next.push_event(kind, slot, Some(t.version), Some(t.bundle_hash), reason);
            Ok(keep(next))
        }
        Event::InstallFailed {
            reason,
            version,
            bundle_hash,
        } => {
            let slot = state.last_install.as_ref().and_then(|l| l.slot);
            next.last_install = Some(InstallOutcome {
                version: version.clone(),
                bundle_hash: bundle_hash.clone(),
                slot,
                outcome: OutcomeKind::Failed {
                    reason: reason.clone(),
                },
            });
            next.push_event(EventKind::InstallFailed, slot, version, bundle_hash, reason);
            Ok(keep(next))
        }
        Event::MarkGood { slot } => {
            if slot == booted && on_trial {
                return step(state, ctx, Event::Commit);
            }
            if slot == booted {
                // The booted slot is good only where `confirm` would keep it: the same decision refuses both.
                if let Some(why) =
                    crate::boot::never_committed(&env, booted, state, ctx.boot_classes)
                {
                    return refuse(why);
                }
                set_classes(&mut next, ctx.boot_classes, slot, SlotState::Good, None);
                ran(&mut next, ctx.boot_classes, slot);
                return Ok(keep(next));
            }
            for c in ctx.boot_classes {
                let r = state.record(c, slot);
                let once_verified = r.bundle_hash.is_some()
                    && !matches!(r.state, SlotState::Writing | SlotState::Empty);
                if !once_verified && r.state != SlotState::Good {
                    return refuse(format!(
                        "slot {slot} ({c}) is {}: it was never fully written and verified",
                        r.state
                    ));
                }
                // Verified but never armed or booted (also once marked bad since): only a trial boot proves it
                // (`activate` arms one). A failed trial did run, so an operator may overrule it.
                if r.state == SlotState::Installed || (r.state == SlotState::Bad && !r.booted_once)
                {
                    return refuse(format!(
                        "slot {slot} ({c}) was written and verified but never booted: activate it and let its trial boot prove it"
                    ));
                }
            }
            set_classes(&mut next, ctx.boot_classes, slot, SlotState::Good, None);
            Ok(keep(next))
        }
        Event::MarkBad { slot } => {
            let reason = "marked bad by an operator";
            if slot == booted && on_trial {
                return step(
                    state,
                    ctx,
                    Event::TrialFailed {
                        reason: reason.into(),
                    },
                );
            }
            if slot == booted {
                let other = slot.other();
                if !ctx
                    .boot_classes
                    .iter()
                    .all(|c| state.record(c, other).state == SlotState::Good)
                {
                    let st = ctx
                        .boot_classes
                        .iter()
                        .map(|c| state.record(c, other).state.to_string())
                        .collect::<Vec<_>>()
                        .join("/");
                    return refuse(format!(
                        "refusing to mark the running slot {slot} bad: the other slot {other} is {st}, not known good, and would be the only slot left to boot"
                    ));
                }
                // Falling back is a revert: never below the floor (an unknown version neither).
                if let Some(floor) = &state.security_floor {
                    let below = ctx.boot_classes.iter().find_map(|c| {
                        let v = state.record(c, other).version;
                        v.as_ref()
                            .is_none_or(|v| v < floor)
                            .then(|| v.map_or("an unknown version".into(), |v| v.to_string()))
                    });
                    if let Some(v) = below {
                        return refuse(format!(
                            "refusing to mark the running slot {slot} bad: the other slot {other} holds {v}, below this robot's security floor {floor}"
                        ));
                    }
                }
                record_marked_bad(&mut next, ctx.boot_classes, slot, reason);
                ran(&mut next, ctx.boot_classes, slot);
                return Ok(Transition {
                    state: next,
                    env: Some(BootEnv {
                        primary: other,
                        trial: None,
                        tries: 0,
                    }),
                    order: Order::StateFirst,
                });
            }
            if slot == env.primary {
                return refuse(format!(
                    "refusing to mark the committed slot {slot} bad while slot {booted} runs on trial: confirm or mark-bad the trial first"
                ));
            }
            record_marked_bad(&mut next, ctx.boot_classes, slot, reason);
            if next.pending_trial.as_ref().is_some_and(|p| p.slot == slot) {
                next.pending_trial = None;
            }
            if next
                .staged
                .as_ref()
                .is_some_and(|s| s.boot_slot == Some(slot))
            {
                next.staged = None;
            }
            let new_env = (env.trial == Some(slot)).then_some(env.clear_trial());
            Ok(Transition {
                state: next,
                env: new_env,
                order: Order::StateFirst,
            })
        }
    }
}

/// An activated slot is re-proven by its trial: a known-good record of the bundle goes back to
/// `Installed` (verified, not yet healthy on this run), so arming keeps its one rule (only
/// `Installed` slots of the bundle are armed) and a `Bad` or rewritten slot is never armed.
fn reprove<'a>(
    state: &mut ClientState,
    bundle_hash: &str,
    slots: impl Iterator<Item = (&'a str, Slot)>,
) {
    for (class, slot) in slots {
        let rec = state.record_mut(class, slot);
        if rec.state == SlotState::Good && rec.bundle_hash.as_deref() == Some(bundle_hash) {
            rec.state = SlotState::Installed;
        }
    }
}

/// Marks a trial slot bad, ends the pending trial and records why.
fn fail_slot(
    next: &mut ClientState,
    boot_classes: &[String],
    slot: Slot,
    kind: EventKind,
    reason: &str,
    rollback: bool,
) {
    let pending = next.pending_trial.take().filter(|p| p.slot == slot);
    for c in boot_classes {
        let rec = next.record_mut(c, slot);
        if rec.state.verified() || rec.state == SlotState::Bad {
            rec.state = SlotState::Bad;
            rec.note = Some(reason.to_string());
            // A failed trial ran (its health checks failed); a rollback may not have loaded its kernel at all.
            rec.booted_once |= !rollback;
        }
    }
    let o = if rollback {
        OutcomeKind::RolledBack {
            reason: reason.into(),
        }
    } else {
        OutcomeKind::Failed {
            reason: reason.into(),
        }
    };
    outcome(next, pending.as_ref(), Some(slot), o);
    let (version, hash) = match &pending {
        Some(p) => (Some(p.version.clone()), Some(p.bundle_hash.clone())),
        None => (None, None),
    };
    next.push_event(kind, Some(slot), version, hash, reason);
}
