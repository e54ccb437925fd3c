//! Property tests of the transition table against the real boot contract: every reboot runs
//! `ota_bootloader::select_boot` over the environment variables, and every environment the
//! client writes goes through `BootEnv::apply`, as the agent's backend does. Whatever the
//! order of events, reboots, power cuts and kernels failing to load, the robot only ever
//! boots a verified slot, only the booted trial slot is committed, and the primary moves
//! only on that commit (or on an operator's mark-bad towards a known-good slot).

use std::collections::BTreeMap;

use ota_bootloader::select_boot;
use ota_client_core::machine::Context;
use ota_client_core::*;
use proptest::prelude::*;

const HASH: &str = "bundle";

fn classes() -> Vec<String> {
    vec!["rootfs".to_string()]
}

#[derive(Debug, Clone)]
enum Op {
    Event(EventSpec),
    /// The bootloader runs (power cut or reboot).
    Reboot,
    /// The bootloader runs and the kernel it picked fails to load: it boots the fallback
    /// entry if it has one (a trial boot falls back to the primary in the same boot).
    RebootKernelFails,
    /// `confirm` runs with the given health result.
    Confirm(bool),
}

#[derive(Debug, Clone)]
enum EventSpec {
    WriteStarted(Slot),
    WriteVerified(Slot),
    Arm(Slot, u8),
    Commit,
    FinishCommit,
    TrialFailed,
    RolledBack,
    ArmInterrupted,
    ClearStaleTrial,
    MarkGood(Slot),
    MarkBad(Slot),
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![Just(Slot::A), Just(Slot::B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        slot().prop_map(|s| Op::Event(EventSpec::WriteStarted(s))),
        slot().prop_map(|s| Op::Event(EventSpec::WriteVerified(s))),
        // Mostly 1..=3 tries; sometimes 0 or more than the env can hold (both refused).
        (slot(), prop_oneof![8 => 0u8..4, 1 => 9u8..12])
            .prop_map(|(s, t)| Op::Event(EventSpec::Arm(s, t))),
        Just(Op::Event(EventSpec::Commit)),
        Just(Op::Event(EventSpec::FinishCommit)),
        Just(Op::Event(EventSpec::TrialFailed)),
        Just(Op::Event(EventSpec::RolledBack)),
        Just(Op::Event(EventSpec::ArmInterrupted)),
        Just(Op::Event(EventSpec::ClearStaleTrial)),
        slot().prop_map(|s| Op::Event(EventSpec::MarkGood(s))),
        slot().prop_map(|s| Op::Event(EventSpec::MarkBad(s))),
        Just(Op::Reboot),
        Just(Op::Reboot),
        Just(Op::RebootKernelFails),
        any::<bool>().prop_map(Op::Confirm),
    ]
}

fn event(spec: &EventSpec) -> Event {
    let v: semver::Version = "2.0.0".parse().unwrap();
    match spec {
        EventSpec::WriteStarted(s) => Event::WriteStarted {
            targets: vec![machine::WriteTarget {
                class: "rootfs".into(),
                slot: *s,
                live: false,
            }],
            version: v,
            bundle_hash: HASH.into(),
        },
        EventSpec::WriteVerified(s) => Event::WriteVerified {
            class: "rootfs".into(),
            slot: *s,
            version: v,
            bundle_hash: HASH.into(),
            security_floor: None,
            bundle_classes: classes(),
        },
        EventSpec::Arm(s, t) => Event::ArmTrial(PendingTrial {
            slot: *s,
            classes: classes(),
            armed_tries: *t,
            version: v,
            bundle_hash: HASH.into(),
            live: vec![],
            security_floor: None,
        }),
        EventSpec::Commit => Event::Commit,
        EventSpec::FinishCommit => Event::FinishCommit,
        EventSpec::TrialFailed => Event::TrialFailed { reason: "x".into() },
        EventSpec::RolledBack => Event::RolledBack { reason: "x".into() },
        EventSpec::ArmInterrupted => Event::ArmInterrupted,
        EventSpec::ClearStaleTrial => Event::ClearStaleTrial,
        EventSpec::MarkGood(s) => Event::MarkGood { slot: *s },
        EventSpec::MarkBad(s) => Event::MarkBad { slot: *s },
    }
}

/// What `confirm` does for each outcome.
fn confirm_event(outcome: &BootOutcome, healthy: bool) -> Option<Event> {
    match outcome {
        BootOutcome::TrialBooted { .. } if healthy => Some(Event::Commit),
        BootOutcome::TrialBooted { .. } => Some(Event::TrialFailed {
            reason: "health".into(),
        }),
        BootOutcome::AbortTrial { reason, .. } => Some(Event::TrialFailed {
            reason: reason.clone(),
        }),
        BootOutcome::RolledBack { reason, .. } => Some(Event::RolledBack {
            reason: reason.clone(),
        }),
        BootOutcome::FinishCommit { .. } => Some(Event::FinishCommit),
        BootOutcome::ArmInterrupted { .. } => Some(Event::ArmInterrupted),
        BootOutcome::ClearStaleTrial { .. } => Some(Event::ClearStaleTrial),
        _ => None,
    }
}

struct Robot {
    state: ClientState,
    /// The boot environment as stored: what the bootloader reads and saves.
    vars: BTreeMap<String, String>,
    booted: Slot,
    /// Per slot (A, B): whether its current content was ever booted (the model's truth, kept apart from the
    /// client's records).
    ran: [bool; 2],
}

fn idx(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl Robot {
    fn factory() -> Robot {
        let mut state = ClientState::default();
        state.adopt_running(&classes(), Slot::A, &Default::default());
        Robot {
            state,
            // a never-written environment (primary A)
            vars: BTreeMap::new(),
            booted: Slot::A,
            ran: [true, false],
        }
    }

    /// The contract variables as the client reads them.
    fn env(&self) -> BootEnv {
        BootEnv::from_vars(&self.vars)
    }

    /// The bootloader runs `select_boot`, saves what it updates and boots its choice, or,
    /// if that kernel fails to load, its fallback (when it has none, the robot stays down
    /// and the next power-on runs the bootloader again).
    fn reboot(&mut self, kernel_fails: bool) {
        let d = select_boot(&self.vars);
        if let Some(updated) = d.updated_vars {
            self.vars = updated;
        }
        match (kernel_fails, d.fallback) {
            (false, _) => self.booted = d.boot,
            (true, Some(fallback)) => self.booted = fallback,
            (true, None) => return self.reboot(false),
        }
        self.ran[idx(self.booted)] = true;
    }

    fn rec(&self, slot: Slot) -> SlotState {
        self.state.record("rootfs", slot).state
    }

    /// Applies an event and checks the invariants of the transition.
    fn apply(&mut self, ev: Event) -> Result<(), TestCaseError> {
        let cls = classes();
        let env = self.env();
        let ctx = Context {
            env,
            booted: self.booted,
            boot_classes: &cls,
        };
        let is_commit = matches!(ev, Event::Commit | Event::MarkGood { .. });
        let is_mark_bad = matches!(ev, Event::MarkBad { .. });
        let Ok(t) = step(&self.state, &ctx, ev.clone()) else {
            return Ok(());
        };
        // mark-good keeps only what confirm would keep: the committed slot or a booted trial, never a slot that
        // was verified but not booted.
        if let Event::MarkGood { slot } = &ev {
            let slot = *slot;
            let on_trial = env.trial == Some(self.booted) && self.booted != env.primary;
            if slot == self.booted && !on_trial {
                prop_assert_eq!(
                    self.booted,
                    env.primary,
                    "marked good a booted slot neither committed nor on trial"
                );
            }
            if slot != self.booted {
                prop_assert_ne!(
                    self.rec(slot),
                    SlotState::Installed,
                    "marked good a slot never booted"
                );
            }
            if slot != self.booted && self.rec(slot) != SlotState::Good {
                prop_assert!(
                    self.ran[idx(slot)],
                    "marked good a {} slot whose content never booted",
                    self.rec(slot)
                );
            }
        }
        if let Some(new_env) = t.env {
            if let Some(armed) = new_env.armed_trial() {
                if env.armed_trial() != Some(armed) {
                    prop_assert_eq!(
                        self.rec(armed),
                        SlotState::Installed,
                        "armed an unverified slot: {:?}",
                        ev
                    );
                }
            }
            if new_env.primary != env.primary {
                if is_commit {
                    prop_assert_eq!(
                        new_env.primary,
                        self.booted,
                        "committed a slot that is not booted"
                    );
                    prop_assert_eq!(
                        env.trial,
                        Some(self.booted),
                        "committed a slot not on trial"
                    );
                } else {
                    prop_assert!(is_mark_bad, "primary moved on {:?}", ev);
                    prop_assert_eq!(
                        self.rec(new_env.primary),
                        SlotState::Good,
                        "mark-bad fell back to a slot not known good"
                    );
                }
            }
            prop_assert!(
                new_env.primary == self.booted || new_env.primary == env.primary || is_mark_bad
            );
        }
        if let Event::Commit | Event::FinishCommit = ev {
            prop_assert_eq!(t.state.record("rootfs", self.booted).state, SlotState::Good);
        }
        if let Event::WriteStarted { targets, .. } = &ev {
            for target in targets {
                self.ran[idx(target.slot)] = false;
            }
        }
        self.state = t.state;
        if let Some(e) = t.env {
            e.apply(&mut self.vars);
            prop_assert_eq!(
                self.env(),
                e,
                "the written environment reads back differently"
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_only_ever_boot_verified_slots(ops in proptest::collection::vec(op(), 1..60)) {
        let mut r = Robot::factory();
        for op in ops {
            match op {
                Op::Event(spec) => r.apply(event(&spec))?,
                Op::Reboot | Op::RebootKernelFails => {
                    r.reboot(matches!(op, Op::RebootKernelFails));
                    let st = r.rec(r.booted);
                    prop_assert!(
                        st.verified() || (st == SlotState::Bad && r.booted == r.env().primary),
                        "booted slot {} in state {}", r.booted, st
                    );
                    prop_assert!(st != SlotState::Writing && st != SlotState::Empty);
                }
                Op::Confirm(healthy) => {
                    let out = decide_on_boot(&r.env(), r.booted, &r.state, &classes());
                    if let Some(ev) = confirm_event(&out, healthy) {
                        let cls = classes();
                        let ctx = Context { env: r.env(), booted: r.booted, boot_classes: &cls };
                        prop_assert!(step(&r.state, &ctx, ev.clone()).is_ok(), "confirm's own event refused: {:?} for {:?}", ev, out);
                        r.apply(ev)?;
                    }
                    // confirm is idempotent once settled
                    let again = decide_on_boot(&r.env(), r.booted, &r.state, &classes());
                    if matches!(out, BootOutcome::TrialBooted { .. } if healthy) {
                        prop_assert_eq!(again, BootOutcome::Settled);
                    }
                }
            }
        }
    }

    #[test]
    fn a_full_install_always_commits_or_returns_to_the_old_slot(
        healthy in any::<bool>(),
        skip_confirm_boots in 0u8..5,
        kernel_fails in any::<bool>(),
        tries in 1u8..4,
    ) {
        let mut r = Robot::factory();
        r.apply(event(&EventSpec::WriteStarted(Slot::B)))?;
        r.apply(event(&EventSpec::WriteVerified(Slot::B)))?;
        r.apply(event(&EventSpec::Arm(Slot::B, tries)))?;
        prop_assert_eq!(r.env().armed_trial(), Some(Slot::B));
        // boots that die before confirm (kernel panic, power cut)
        for _ in 0..skip_confirm_boots {
            r.reboot(false);
        }
        // the first boot that reaches confirm may be the bootloader's fallback
        r.reboot(kernel_fails);
        let out = decide_on_boot(&r.env(), r.booted, &r.state, &classes());
        if let Some(ev) = confirm_event(&out, healthy) {
            r.apply(ev)?;
        }
        r.reboot(false);
        let out = decide_on_boot(&r.env(), r.booted, &r.state, &classes());
        if let Some(ev) = confirm_event(&out, healthy) {
            r.apply(ev)?;
        }
        let trial_booted = skip_confirm_boots < tries;
        let committed = healthy && trial_booted && !kernel_fails;
        prop_assert_eq!(r.booted, if committed { Slot::B } else { Slot::A });
        prop_assert_eq!(r.env().primary, r.booted);
        prop_assert_eq!(r.env().armed_trial(), None);
        prop_assert_eq!(r.rec(Slot::B), if committed { SlotState::Good } else { SlotState::Bad });
        prop_assert!(r.state.pending_trial.is_none());
        let rolled_back = if !trial_booted {
            Some(boot::REASON_TRIES_EXHAUSTED)
        } else if kernel_fails {
            // the failed boot spent a try; the primary runs with tries left, or none
            Some(if tries - skip_confirm_boots > 1 {
                boot::REASON_FELL_BACK
            } else {
                boot::REASON_TRIES_EXHAUSTED
            })
        } else {
            None
        };
        let outcome = r.state.last_install.as_ref().map(|l| &l.outcome);
        if let Some(reason) = rolled_back {
            prop_assert_eq!(outcome, Some(&OutcomeKind::RolledBack { reason: reason.into() }));
        } else if committed {
            prop_assert_eq!(outcome, Some(&OutcomeKind::Succeeded));
        }
        // ordinary reboots of the committed slot change nothing, not even the environment
        for _ in 0..3 {
            let d = select_boot(&r.vars);
            prop_assert_eq!((d.boot, d.fallback, d.updated_vars), (r.booted, None, None));
            prop_assert_eq!(decide_on_boot(&r.env(), r.booted, &r.state, &classes()), BootOutcome::Settled);
        }
    }
}

#[test]
fn mark_bad_falls_back_only_to_a_good_slot() {
    let mut r = Robot::factory();
    let cls = classes();
    let ctx = Context {
        env: r.env(),
        booted: Slot::A,
        boot_classes: &cls,
    };
    let err = step(&r.state, &ctx, Event::MarkBad { slot: Slot::A }).unwrap_err();
    assert!(err.to_string().contains("not known good"), "{err}");
    r.state.record_mut("rootfs", Slot::B).state = SlotState::Good;
    let t = step(&r.state, &ctx, Event::MarkBad { slot: Slot::A }).unwrap();
    assert_eq!(t.env.unwrap().primary, Slot::B);
    assert_eq!(t.state.record("rootfs", Slot::A).state, SlotState::Bad);
}

#[test]
fn mark_good_refuses_never_written_slots() {
    let r = Robot::factory();
    let cls = classes();
    let ctx = Context {
        env: r.env(),
        booted: Slot::A,
        boot_classes: &cls,
    };
    let err = step(&r.state, &ctx, Event::MarkGood { slot: Slot::B }).unwrap_err();
    assert!(err.to_string().contains("never fully written"), "{err}");
}

/// A slot written and verified but never armed, then marked bad, is still a slot that never ran: mark-good
/// refuses it as it refuses the `Installed` slot (a `Bad` state alone does not say whether it ever booted). A
/// trial that booted and failed may be overruled.
#[test]
fn mark_good_refuses_a_slot_marked_bad_that_never_ran() {
    let mut r = Robot::factory();
    r.apply(event(&EventSpec::WriteStarted(Slot::B))).unwrap();
    r.apply(event(&EventSpec::WriteVerified(Slot::B))).unwrap();
    r.apply(event(&EventSpec::MarkBad(Slot::B))).unwrap();
    assert_eq!(r.rec(Slot::B), SlotState::Bad);
    let cls = classes();
    let ctx = |r: &Robot| Context {
        env: r.env(),
        booted: r.booted,
        boot_classes: &cls,
    };
    let err = step(&r.state, &ctx(&r), Event::MarkGood { slot: Slot::B }).unwrap_err();
    assert!(err.to_string().contains("never booted"), "{err}");

    // The same slot armed, booted and failed its health checks: it ran, the operator may keep it.
    r.apply(event(&EventSpec::WriteStarted(Slot::B))).unwrap();
    r.apply(event(&EventSpec::WriteVerified(Slot::B))).unwrap();
    r.apply(event(&EventSpec::Arm(Slot::B, 3))).unwrap();
    r.reboot(false);
    assert_eq!(r.booted, Slot::B);
    r.apply(event(&EventSpec::TrialFailed)).unwrap();
    r.reboot(false);
    assert_eq!((r.booted, r.rec(Slot::B)), (Slot::A, SlotState::Bad));
    step(&r.state, &ctx(&r), Event::MarkGood { slot: Slot::B }).unwrap();

    // Writing it again forgets that it ran.
    r.apply(event(&EventSpec::WriteStarted(Slot::B))).unwrap();
    r.apply(event(&EventSpec::WriteVerified(Slot::B))).unwrap();
    r.apply(event(&EventSpec::MarkBad(Slot::B))).unwrap();
    assert!(step(&r.state, &ctx(&r), Event::MarkGood { slot: Slot::B }).is_err());
}

/// State files written before `booted_once` was kept still load (it reads as false), and a record that never
/// ran writes no such key.
#[test]
fn booted_once_defaults_in_older_state_files() {
    let rec: SlotRecord = serde_json::from_str(
        r#"{"state":"bad","version":"2.0.0","bundle_hash":"h","note":"marked bad by an operator"}"#,
    )
    .unwrap();
    assert!(!rec.booted_once);
    assert!(!serde_json::to_string(&rec).unwrap().contains("booted_once"));
    let ran = SlotRecord {
        booted_once: true,
        ..rec
    };
    let json = serde_json::to_string(&ran).unwrap();
    assert_eq!(serde_json::from_str::<SlotRecord>(&json).unwrap(), ran);
}

#[test]
fn arming_requires_the_verified_bundle() {
    let mut r = Robot::factory();
    r.apply(event(&EventSpec::WriteStarted(Slot::B))).unwrap();
    let cls = classes();
    let ctx = Context {
        env: r.env(),
        booted: Slot::A,
        boot_classes: &cls,
    };
    assert!(step(&r.state, &ctx, event(&EventSpec::Arm(Slot::B, 3))).is_err());
    r.apply(event(&EventSpec::WriteVerified(Slot::B))).unwrap();
    let ctx = Context {
        env: r.env(),
        booted: Slot::A,
        boot_classes: &cls,
    };
    assert!(step(&r.state, &ctx, event(&EventSpec::Arm(Slot::B, 0))).is_err());
    let err = step(&r.state, &ctx, event(&EventSpec::Arm(Slot::B, 10))).unwrap_err();
    assert!(err.to_string().contains("at most 9"), "{err}");
    assert!(step(&r.state, &ctx, event(&EventSpec::Arm(Slot::B, 9))).is_ok());
    assert!(step(&r.state, &ctx, event(&EventSpec::Arm(Slot::A, 3))).is_err());
    let t = step(&r.state, &ctx, event(&EventSpec::Arm(Slot::B, 3))).unwrap();
    assert_eq!(
        t.order,
        Order::StateFirst,
        "the trial must be recorded before it is armed"
    );
    assert_eq!(t.env.unwrap().armed_trial(), Some(Slot::B));
}

#[test]
fn state_round_trips_through_json() {
    let mut r = Robot::factory();
    r.apply(event(&EventSpec::WriteStarted(Slot::B))).unwrap();
    r.apply(event(&EventSpec::WriteVerified(Slot::B))).unwrap();
    r.apply(event(&EventSpec::Arm(Slot::B, 3))).unwrap();
    let json = serde_json::to_string(&r.state).unwrap();
    let back: ClientState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r.state);
}
