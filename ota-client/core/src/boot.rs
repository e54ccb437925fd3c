//! What the client does after a (re)boot: compares the boot environment, the slot the
//! kernel says it booted, and the client's records. Run at every start of the client, so a
//! restart at any point re-derives the situation instead of trusting memory.

use crate::slot::{BootEnv, ClientState, Slot, SlotState};

/// The situation after a boot, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// Committed slot booted, nothing pending: nothing to do.
    Settled,
    /// A trial is armed and the robot has not rebooted into it yet.
    AwaitingReboot {
        /// The armed slot.
        slot: Slot,
    },
    /// The booted slot is on trial: run the health checks, then commit or fail it.
    TrialBooted {
        /// The booted trial slot.
        slot: Slot,
    },
    /// The booted slot is armed but must never be committed (never verified, known bad or
    /// not installed by this client): fail the trial so the bootloader returns to primary.
    AbortTrial {
        /// The booted slot.
        slot: Slot,
        /// Why.
        reason: String,
    },
    /// The primary booted although a trial was pending: the bootloader fell back.
    RolledBack {
        /// The slot that was on trial.
        slot: Slot,
        /// Why the bootloader fell back.
        reason: String,
    },
    /// The environment already commits the booted trial slot; the records lag behind (the
    /// client stopped between the two writes): finish recording the commit.
    FinishCommit {
        /// The committed slot.
        slot: Slot,
    },
    /// A trial was recorded but never armed (the client stopped in between).
    ArmInterrupted {
        /// The slot that was to be armed.
        slot: Slot,
    },
    /// `OTA_TRIAL` names a slot that is not (or no longer) on trial: clear it.
    ClearStaleTrial {
        /// The slot named.
        slot: Slot,
    },
    /// The booted trial slot was already failed; the next boot returns to the primary.
    AwaitingRebootToPrimary {
        /// The booted (failed) slot.
        booted: Slot,
        /// The primary slot.
        primary: Slot,
    },
    /// The booted slot is neither the primary nor on trial: never commit it.
    Inconsistent {
        /// What does not add up.
        reason: String,
    },
}

/// Reason recorded when the bootloader used up every trial boot.
pub const REASON_TRIES_EXHAUSTED: &str =
    "trial boots exhausted: the new slot never confirmed its health and the bootloader fell back";
/// Reason recorded when a trial boot attempt already happened but the primary runs.
pub const REASON_FELL_BACK: &str =
    "the bootloader fell back to the primary during a trial (the trial kernel failed to load)";

/// Decides what to do after a boot. `boot_classes` are the boot-coupled slot classes.
pub fn decide_on_boot(
    env: &BootEnv,
    booted: Slot,
    state: &ClientState,
    boot_classes: &[String],
) -> BootOutcome {
    let pending = state.pending_trial.as_ref();
    let states = |slot: Slot| -> Vec<SlotState> {
        boot_classes
            .iter()
            .map(|c| state.record(c, slot).state)
            .collect()
    };
    let all_verified = |slot: Slot| states(slot).iter().all(|s| s.verified());
    let any_bad = |slot: Slot| states(slot).contains(&SlotState::Bad);

    if booted == env.primary {
        if let Some(t) = env.trial.filter(|t| *t != env.primary) {
            let ours = pending.is_some_and(|p| p.slot == t);
            if env.tries == 0 {
                if !ours && any_bad(t) {
                    return BootOutcome::ClearStaleTrial { slot: t };
                }
                return BootOutcome::RolledBack {
                    slot: t,
                    reason: REASON_TRIES_EXHAUSTED.into(),
                };
            }
            if ours {
                let armed = pending.map_or(0, |p| p.armed_tries);
                if env.tries < armed {
                    return BootOutcome::RolledBack {
                        slot: t,
                        reason: REASON_FELL_BACK.into(),
                    };
                }
                return BootOutcome::AwaitingReboot { slot: t };
            }
            if all_verified(t) && !any_bad(t) {
                return BootOutcome::AwaitingReboot { slot: t };
            }
            return BootOutcome::ClearStaleTrial { slot: t };
        }
        return match pending {
            Some(p) if p.slot == booted => BootOutcome::FinishCommit { slot: booted },
            Some(p) => BootOutcome::ArmInterrupted { slot: p.slot },
            None => BootOutcome::Settled,
        };
    }

    // Booted a slot other than the primary.
    if env.trial == Some(booted) {
        if pending.is_none_or(|p| p.slot != booted) {
            return BootOutcome::AbortTrial {
                slot: booted,
                reason: format!("slot {booted} is armed but this client did not install it"),
            };
        }
        if any_bad(booted) || !all_verified(booted) {
            let what = states(booted)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/");
            return BootOutcome::AbortTrial {
                slot: booted,
                reason: format!("slot {booted} is {what}: it must not be committed"),
            };
        }
        if let Some(below) = pending
            .and_then(|p| crate::slot::check_floor(&p.version, state.security_floor.as_ref()).err())
        {
            return BootOutcome::AbortTrial {
                slot: booted,
                reason: below.to_string(),
            };
        }
        return BootOutcome::TrialBooted { slot: booted };
    }
    if any_bad(booted) {
        return BootOutcome::AwaitingRebootToPrimary {
            booted,
            primary: env.primary,
        };
    }
    BootOutcome::Inconsistent {
        reason: format!(
            "booted slot {booted} but the committed slot is {} and no trial is armed: not committing",
            env.primary
        ),
    }
}

/// Why `booted` (not on trial) must not be kept as good, if it must not: `confirm` refuses or leaves such a
/// boot ([`BootOutcome::Inconsistent`], [`BootOutcome::AwaitingRebootToPrimary`]), so `mark-good` refuses it
/// for the same reason. `None` for the committed slot.
pub fn never_committed(
    env: &BootEnv,
    booted: Slot,
    state: &ClientState,
    boot_classes: &[String],
) -> Option<String> {
    match decide_on_boot(env, booted, state, boot_classes) {
        BootOutcome::Inconsistent { reason } | BootOutcome::AbortTrial { reason, .. } => Some(reason),
        BootOutcome::AwaitingRebootToPrimary { booted, primary } => Some(format!(
            "slot {booted} failed its trial; the next boot returns to slot {primary}: not marking it good"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::PendingTrial;

    fn classes() -> Vec<String> {
        vec!["rootfs".into()]
    }

    fn env(primary: Slot, trial: Option<Slot>, tries: u8) -> BootEnv {
        BootEnv {
            primary,
            trial,
            tries,
        }
    }

    fn with_trial(slot: Slot, state: SlotState) -> ClientState {
        let mut s = ClientState::default();
        s.record_mut("rootfs", slot.other()).state = SlotState::Good;
        s.record_mut("rootfs", slot).state = state;
        s.pending_trial = Some(PendingTrial {
            slot,
            classes: classes(),
            armed_tries: 3,
            version: "2.0.0".parse().unwrap(),
            bundle_hash: "h".into(),
            live: vec![],
            security_floor: None,
        });
        s
    }

    fn decide(e: BootEnv, booted: Slot, s: &ClientState) -> BootOutcome {
        decide_on_boot(&e, booted, s, &classes())
    }

    #[test]
    fn table() {
        use BootOutcome::*;
        use Slot::{A, B};
        let none = ClientState::default();
        let trial = with_trial(B, SlotState::Installed);
        let mut unrecorded = trial.clone();
        unrecorded.pending_trial = None;
        let bad = with_trial(B, SlotState::Bad);
        let cases: Vec<(BootEnv, Slot, &ClientState, BootOutcome)> = vec![
            (env(A, None, 0), A, &none, Settled),
            (env(B, None, 0), B, &none, Settled),
            // factory: never-written env reads as primary A
            (BootEnv::default(), A, &none, Settled),
            (env(A, Some(B), 3), A, &trial, AwaitingReboot { slot: B }),
            (env(A, Some(B), 2), B, &trial, TrialBooted { slot: B }),
            (env(A, Some(B), 0), B, &trial, TrialBooted { slot: B }),
            (env(A, Some(B), 0), A, &trial, RolledBack { slot: B, reason: REASON_TRIES_EXHAUSTED.into() }),
            (env(A, Some(B), 2), A, &trial, RolledBack { slot: B, reason: REASON_FELL_BACK.into() }),
            (env(B, None, 2), B, &trial, FinishCommit { slot: B }),
            (env(A, None, 0), A, &trial, ArmInterrupted { slot: B }),
            (env(A, Some(B), 2), B, &unrecorded, AbortTrial { slot: B, reason: "slot B is armed but this client did not install it".into() }),
            (env(A, None, 2), B, &none, Inconsistent { reason: "booted slot B but the committed slot is A and no trial is armed: not committing".into() }),
            (env(A, Some(B), 0), A, &bad, RolledBack { slot: B, reason: REASON_TRIES_EXHAUSTED.into() }),
        ];
        for (i, (e, booted, s, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(e, booted, s), want, "case {i}");
        }
    }

    #[test]
    fn never_committed_is_confirms_refusal() {
        use Slot::{A, B};
        let trial = with_trial(B, SlotState::Installed);
        let mut failed = ClientState::default();
        failed.record_mut("rootfs", B).state = SlotState::Bad;
        let cases = [
            (env(A, None, 2), B, &trial, true),
            (env(A, None, 1), B, &failed, true),
            (env(A, None, 0), A, &trial, false),
            (env(B, None, 0), B, &trial, false),
            (env(A, Some(B), 2), A, &trial, false),
        ];
        for (i, (e, booted, s, refused)) in cases.into_iter().enumerate() {
            let why = never_committed(&e, booted, s, &classes());
            assert_eq!(why.is_some(), refused, "case {i}: {why:?}");
            if let BootOutcome::Inconsistent { reason } = decide(e, booted, s) {
                assert_eq!(why, Some(reason), "case {i}: the same words as confirm");
            }
        }
    }

    #[test]
    fn never_commits_unverified_or_bad_slots() {
        for st in [SlotState::Empty, SlotState::Writing, SlotState::Bad] {
            let s = with_trial(Slot::B, st);
            let out = decide(env(Slot::A, Some(Slot::B), 2), Slot::B, &s);
            assert!(
                matches!(out, BootOutcome::AbortTrial { .. }),
                "{st}: {out:?}"
            );
        }
    }

    #[test]
    fn stale_trials_are_cleared_but_verified_external_arms_are_left() {
        let mut failed = ClientState::default();
        failed.record_mut("rootfs", Slot::A).state = SlotState::Good;
        failed.record_mut("rootfs", Slot::B).state = SlotState::Bad;
        // a failed trial already recorded, env still names it
        assert_eq!(
            decide(env(Slot::A, Some(Slot::B), 0), Slot::A, &failed),
            BootOutcome::ClearStaleTrial { slot: Slot::B }
        );
        // an unverified slot armed by someone else is disarmed
        let mut writing = failed.clone();
        writing.record_mut("rootfs", Slot::B).state = SlotState::Writing;
        assert_eq!(
            decide(env(Slot::A, Some(Slot::B), 3), Slot::A, &writing),
            BootOutcome::ClearStaleTrial { slot: Slot::B }
        );
        let mut installed = failed.clone();
        installed.record_mut("rootfs", Slot::B).state = SlotState::Installed;
        assert_eq!(
            decide(env(Slot::A, Some(Slot::B), 3), Slot::A, &installed),
            BootOutcome::AwaitingReboot { slot: Slot::B }
        );
        // after a failed trial the env no longer names it: wait for the reboot
        assert_eq!(
            decide(env(Slot::A, None, 1), Slot::B, &failed),
            BootOutcome::AwaitingRebootToPrimary {
                booted: Slot::B,
                primary: Slot::A
            }
        );
    }
}
