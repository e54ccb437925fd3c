//! Property tests of the security floor, stage-only installs and activation against the real
//! boot contract (`ota_bootloader::select_boot`). Whatever the sequence of installs (normal,
//! stage-only, reverts), activations, reboots, power cuts between any two writes, kernels that
//! fail to load and health results: nothing below the robot's floor is ever armed or committed
//! (nor becomes the primary), the floor never drops, a staged slot is never bootable until it is
//! activated, and activation arms only a slot whose recorded digest is the one asked for.

use std::collections::BTreeMap;

use ota_bootloader::select_boot;
use ota_client_core::machine::Context;
use ota_client_core::*;
use proptest::prelude::*;

fn v(major: u64) -> semver::Version {
    semver::Version::new(major, 0, 0)
}

fn boot_classes() -> Vec<String> {
    vec!["rootfs".to_string()]
}

fn config() -> ConfigFacts {
    let mut classes = BTreeMap::new();
    classes.insert(
        "rootfs".to_string(),
        ClassFacts {
            live: false,
            size_a: 100,
            size_b: 100,
        },
    );
    ConfigFacts {
        compatible: "robot".into(),
        classes,
        tries: 2,
        state_space_needed: 0,
    }
}

/// A release: its version and signed floor; its digest names both.
#[derive(Debug, Clone, Copy)]
struct Release {
    version: u64,
    floor: Option<u64>,
}

impl Release {
    fn hash(&self) -> String {
        format!("v{}-floor{:?}", self.version, self.floor)
    }

    fn manifest(&self) -> ManifestFacts {
        ManifestFacts {
            version: v(self.version),
            compatible: "robot".into(),
            bundle_hash: self.hash(),
            security_floor: self.floor.map(v),
            images: vec![ImageFacts {
                name: "rootfs.img".into(),
                slot_class: "rootfs".into(),
                size: 10,
            }],
        }
    }
}

/// Few distinct releases, so histories often meet the same digest again (a staged or older
/// release still in the other slot).
fn release() -> impl Strategy<Value = Release> {
    (1u64..5, 0u64..3).prop_map(|(version, floor)| Release {
        version,
        // none, the version itself, or one below it
        floor: (floor > 0).then(|| version + 1 - floor.min(version)),
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// An install; the power is cut after `steps` of its persisted writes (none: it finishes).
    Install {
        release: Release,
        stage_only: bool,
        revert: bool,
        steps: Option<u8>,
    },
    /// Activation of a release's digest; power cut after `steps` writes.
    Activate {
        release: Release,
        revert: bool,
        steps: Option<u8>,
    },
    /// Activation of whatever the other slot holds (what a revert rollout asks for).
    ActivateOther {
        revert: bool,
    },
    /// Arming what the other slot holds directly, past the planner (a buggy or hostile
    /// caller): the transition table alone must hold the floor.
    RawArmOther,
    /// Arming any release in any slot past the planner: refused unless the slot holds it.
    RawArm {
        release: Release,
        slot: Slot,
    },
    Reboot,
    RebootKernelFails,
    /// `confirm` with the given health result.
    Confirm(bool),
    MarkBad(Slot),
}

fn op() -> impl Strategy<Value = Op> {
    let steps = proptest::option::weighted(0.3, 0u8..3);
    prop_oneof![
        4 => (release(), any::<bool>(), any::<bool>(), steps.clone()).prop_map(
            |(release, stage_only, revert, steps)| Op::Install { release, stage_only, revert, steps }
        ),
        3 => (release(), any::<bool>(), steps).prop_map(|(release, revert, steps)| Op::Activate {
            release,
            revert,
            steps
        }),
        2 => any::<bool>().prop_map(|revert| Op::ActivateOther { revert }),
        2 => Just(Op::RawArmOther),
        1 => (release(), prop_oneof![Just(Slot::A), Just(Slot::B)])
            .prop_map(|(release, slot)| Op::RawArm { release, slot }),
        3 => Just(Op::Reboot),
        1 => Just(Op::RebootKernelFails),
        4 => any::<bool>().prop_map(Op::Confirm),
        1 => prop_oneof![Just(Slot::A), Just(Slot::B)].prop_map(Op::MarkBad),
    ]
}

struct Robot {
    state: ClientState,
    vars: BTreeMap<String, String>,
    booted: Slot,
    /// The power was cut: nothing more is written until the next boot.
    dead: bool,
}

impl Robot {
    fn factory() -> Robot {
        let mut state = ClientState::default();
        state.adopt_running(&boot_classes(), Slot::A, &Default::default());
        Robot {
            state,
            vars: BTreeMap::new(),
            booted: Slot::A,
            dead: false,
        }
    }

    fn env(&self) -> BootEnv {
        BootEnv::from_vars(&self.vars)
    }

    fn device(&self) -> DeviceFacts {
        DeviceFacts {
            booted: self.booted,
            env: self.env(),
            live_active: BTreeMap::new(),
            state_dir_free: 1 << 20,
        }
    }

    fn reboot(&mut self, kernel_fails: bool) {
        self.dead = false;
        let d = select_boot(&self.vars);
        if let Some(updated) = d.updated_vars {
            self.vars = updated;
        }
        match (kernel_fails, d.fallback) {
            (false, _) => self.booted = d.boot,
            (true, Some(fallback)) => self.booted = fallback,
            (true, None) => self.reboot(false),
        }
    }

    /// Applies an event as the agent does: each of its (at most two) writes is one step of
    /// `budget`; a budget that runs out is a power cut. `Ok(false)`: refused.
    fn apply(&mut self, event: Event, budget: &mut Option<u8>) -> Result<bool, TestCaseError> {
        if self.dead {
            return Ok(false);
        }
        let cls = boot_classes();
        let ctx = Context {
            env: self.env(),
            booted: self.booted,
            boot_classes: &cls,
        };
        let Ok(t) = step(&self.state, &ctx, event) else {
            return Ok(false);
        };
        // The two writes in the prescribed order: `None` is the state, `Some` the environment.
        let writes = match (t.order, t.env) {
            (_, None) => vec![None],
            (Order::StateFirst, Some(e)) => vec![None, Some(e)],
            (Order::EnvFirst, Some(e)) => vec![Some(e), None],
        };
        for write in writes {
            if let Some(left) = budget {
                if *left == 0 {
                    self.dead = true;
                    return Ok(false);
                }
                *left -= 1;
            }
            match write {
                None => self.state = t.state.clone(),
                Some(e) => e.apply(&mut self.vars),
            }
        }
        Ok(true)
    }

    fn install(
        &mut self,
        release: Release,
        stage_only: bool,
        revert: bool,
        mut budget: Option<u8>,
    ) -> Result<(), TestCaseError> {
        let options = InstallOptions {
            revert,
            ..InstallOptions::default()
        };
        let planned = plan_install(
            &release.manifest(),
            &config(),
            &self.state,
            &self.device(),
            options,
        );
        if let Some(floor) = &self.state.security_floor {
            if v(release.version) < *floor {
                prop_assert!(
                    matches!(planned, Err(Refusal::BelowFloor(_))),
                    "planned {:?} below the floor {}",
                    release,
                    floor
                );
            }
        }
        let Ok(plan) = planned else { return Ok(()) };
        let slot = plan.writes[0].slot;
        let started = Event::WriteStarted {
            targets: vec![WriteTarget {
                class: "rootfs".into(),
                slot,
                live: false,
            }],
            version: plan.version.clone(),
            bundle_hash: plan.bundle_hash.clone(),
        };
        if !self.apply(started, &mut budget)? {
            return Ok(());
        }
        let verified = Event::WriteVerified {
            class: "rootfs".into(),
            slot,
            version: plan.version.clone(),
            bundle_hash: plan.bundle_hash.clone(),
            security_floor: plan.security_floor.clone(),
            bundle_classes: plan.bundle_classes.clone(),
        };
        if !self.apply(verified, &mut budget)? {
            return Ok(());
        }
        let last = if stage_only {
            Event::Stage(StagedBundle {
                version: plan.version.clone(),
                bundle_hash: plan.bundle_hash.clone(),
                boot_slot: plan.boot_slot,
            })
        } else {
            Event::ArmTrial(PendingTrial {
                slot,
                classes: plan.boot_classes.clone(),
                armed_tries: plan.tries,
                version: plan.version.clone(),
                bundle_hash: plan.bundle_hash.clone(),
                live: vec![],
                security_floor: plan.security_floor.clone(),
            })
        };
        let applied = self.apply(last, &mut budget)?;
        if stage_only && applied {
            prop_assert_eq!(self.env().armed_trial(), None, "staging armed a slot");
        }
        Ok(())
    }

    fn activate(
        &mut self,
        release: Release,
        revert: bool,
        mut budget: Option<u8>,
    ) -> Result<(), TestCaseError> {
        let options = InstallOptions {
            revert,
            ..InstallOptions::default()
        };
        let planned = plan_activation(
            &release.hash(),
            &config(),
            &self.state,
            &self.device(),
            options,
        );
        let Ok(Some(Activation::Boot(trial))) = planned else {
            prop_assert!(!matches!(planned, Ok(Some(Activation::Live(_)))));
            return Ok(());
        };
        let slot = trial.slot;
        let before = self.state.clone();
        if self.apply(Event::Activate(trial), &mut budget)?
            && self.env().armed_trial() == Some(slot)
        {
            let r = before.record("rootfs", slot);
            prop_assert_eq!(r.bundle_hash, Some(release.hash()), "armed another bundle");
            prop_assert!(r.state.verified(), "armed a {} slot", r.state);
            prop_assert_eq!(self.state.staged.clone(), None);
        }
        Ok(())
    }

    fn confirm(&mut self, healthy: bool) -> Result<(), TestCaseError> {
        let out = decide_on_boot(&self.env(), self.booted, &self.state, &boot_classes());
        let event = match out {
            BootOutcome::TrialBooted { .. } if healthy => Event::Commit,
            BootOutcome::TrialBooted { .. } => Event::TrialFailed {
                reason: "health".into(),
            },
            BootOutcome::AbortTrial { reason, .. } => Event::TrialFailed { reason },
            BootOutcome::RolledBack { reason, .. } => Event::RolledBack { reason },
            BootOutcome::FinishCommit { .. } => Event::FinishCommit,
            BootOutcome::ArmInterrupted { .. } => Event::ArmInterrupted,
            BootOutcome::ClearStaleTrial { .. } => Event::ClearStaleTrial,
            _ => return Ok(()),
        };
        self.apply(event, &mut None)?;
        Ok(())
    }

    /// The release the non-booted slot was written from, if any.
    fn other_release(&self) -> Option<Release> {
        let rec = self.state.record("rootfs", self.booted.other());
        let hash = rec.bundle_hash?;
        (1u64..5)
            .flat_map(|version| {
                [None, Some(version), Some(version.saturating_sub(1).max(1))]
                    .map(|floor| Release { version, floor })
            })
            .find(|r| r.hash() == hash)
    }

    fn version(&self, slot: Slot) -> Option<semver::Version> {
        self.state.record("rootfs", slot).version
    }

    /// The floor's promises, checked after every operation.
    fn check(&self, floor_before: Option<&semver::Version>) -> Result<(), TestCaseError> {
        let floor = self.state.security_floor.as_ref();
        prop_assert!(floor >= floor_before, "the floor dropped");
        let env = self.env();
        if let Some(floor) = floor {
            let primary = self.version(env.primary);
            prop_assert!(
                primary.as_ref().is_some_and(|p| p >= floor),
                "primary {} holds {:?}, below the floor {}",
                env.primary,
                primary,
                floor
            );
            if let Some(armed) = env.armed_trial() {
                let armed_version = self.version(armed);
                prop_assert!(
                    armed_version.as_ref().is_some_and(|a| a >= floor),
                    "armed {} holds {:?}, below the floor {}",
                    armed,
                    armed_version,
                    floor
                );
            }
        }
        if let Some(p) = &self.state.pending_trial {
            prop_assert!(check_floor(&p.version, floor).is_ok(), "pending {:?}", p);
            // Armed (or about to be) only where the recorded digest is the trial's.
            let r = self.state.record("rootfs", p.slot);
            if env.armed_trial() == Some(p.slot) || r.state == SlotState::Installed {
                prop_assert_eq!(r.bundle_hash.as_deref(), Some(p.bundle_hash.as_str()));
            }
        }
        if let Some(staged) = &self.state.staged {
            if let Some(slot) = staged.boot_slot {
                prop_assert_ne!(env.armed_trial(), Some(slot), "a staged slot is armed");
                prop_assert_ne!(env.primary, slot, "a staged slot is the primary");
                prop_assert_ne!(self.booted, slot, "a staged slot booted");
                let r = self.state.record("rootfs", slot);
                prop_assert_eq!(r.bundle_hash.as_deref(), Some(staged.bundle_hash.as_str()));
                prop_assert_eq!(r.state, SlotState::Installed);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_below_the_floor_is_ever_armed_or_committed(ops in proptest::collection::vec(op(), 1..50)) {
        let mut r = Robot::factory();
        for op in ops {
            let floor_before = r.state.security_floor.clone();
            match op {
                Op::Install { release, stage_only, revert, steps } => {
                    r.install(release, stage_only, revert, steps)?
                }
                Op::Activate { release, revert, steps } => r.activate(release, revert, steps)?,
                Op::ActivateOther { revert } => {
                    if let Some(release) = r.other_release() {
                        r.activate(release, revert, None)?;
                    }
                }
                Op::RawArmOther => {
                    if let Some(release) = r.other_release() {
                        let trial = PendingTrial {
                            slot: r.booted.other(),
                            classes: boot_classes(),
                            armed_tries: 2,
                            version: v(release.version),
                            bundle_hash: release.hash(),
                            live: vec![],
                            security_floor: release.floor.map(v),
                        };
                        r.apply(Event::Activate(trial), &mut None)?;
                    }
                }
                Op::RawArm { release, slot } => {
                    let trial = PendingTrial {
                        slot,
                        classes: boot_classes(),
                        armed_tries: 2,
                        version: v(release.version),
                        bundle_hash: release.hash(),
                        live: vec![],
                        security_floor: release.floor.map(v),
                    };
                    r.apply(Event::Activate(trial), &mut None)?;
                }
                Op::Reboot => r.reboot(false),
                Op::RebootKernelFails => r.reboot(true),
                Op::Confirm(healthy) => r.confirm(healthy)?,
                Op::MarkBad(slot) => {
                    r.apply(Event::MarkBad { slot }, &mut None)?;
                }
            }
            r.check(floor_before.as_ref())?;
        }
    }

    #[test]
    fn a_committed_floor_refuses_every_lower_version(
        (floor, lower) in (2u64..6).prop_flat_map(|f| (Just(f), 1..f)),
        revert in any::<bool>(),
    ) {
        let mut r = Robot::factory();
        // an old release in B, committed; then the security fix in A, committed
        let old = Release { version: lower, floor: None };
        r.install(old, false, false, None)?;
        r.reboot(false);
        r.confirm(true)?;
        prop_assert_eq!(r.env().primary, Slot::B);
        let fix = Release { version: floor, floor: Some(floor) };
        r.install(fix, false, false, None)?;
        // armed, not committed: the floor is not raised yet, the old release may still run
        prop_assert_eq!(r.state.security_floor.clone(), None);
        r.reboot(false);
        r.confirm(true)?;
        prop_assert_eq!(r.state.security_floor.clone(), Some(v(floor)));
        // B still holds the old release, verified and good: activating it is refused, revert or not
        let options = InstallOptions { revert, allow_downgrade: true };
        let err = plan_activation(&old.hash(), &config(), &r.state, &r.device(), options).unwrap_err();
        prop_assert_eq!(
            err.to_string(),
            format!("version {lower}.0.0 is below this robot's security floor {floor}.0.0: refusing it, whatever the server says")
        );
        let err = plan_install(&old.manifest(), &config(), &r.state, &r.device(), options).unwrap_err();
        prop_assert!(matches!(err, Refusal::BelowFloor(_)));
        // and the operator cannot fall back to it with mark-bad
        let cls = boot_classes();
        let ctx = Context { env: r.env(), booted: r.booted, boot_classes: &cls };
        let err = step(&r.state, &ctx, Event::MarkBad { slot: Slot::A }).unwrap_err();
        prop_assert!(err.to_string().contains("below this robot's security floor"), "{}", err);
    }
}

#[test]
fn a_failed_trial_of_a_floor_raising_release_falls_back_and_keeps_the_old_floor() {
    let mut r = Robot::factory();
    r.install(
        Release {
            version: 3,
            floor: Some(3),
        },
        false,
        false,
        None,
    )
    .unwrap();
    r.reboot(false);
    r.confirm(false).unwrap();
    r.reboot(false);
    r.confirm(true).unwrap();
    assert_eq!(r.booted, Slot::A);
    assert_eq!(r.state.security_floor, None);
    // the old release may still be replaced by any version
    assert!(plan_install(
        &Release {
            version: 1,
            floor: None
        }
        .manifest(),
        &config(),
        &r.state,
        &r.device(),
        InstallOptions::default()
    )
    .is_ok());
}

#[test]
fn staged_then_activated_without_downloading_and_reverted_to_the_previous_release() {
    let mut r = Robot::factory();
    let one = Release {
        version: 1,
        floor: None,
    };
    let two = Release {
        version: 2,
        floor: Some(1),
    };
    r.install(one, false, false, None).unwrap();
    r.reboot(false);
    r.confirm(true).unwrap();
    // stage 2 into A: verified, recorded, not armed, and reboots keep running 1
    r.install(two, true, false, None).unwrap();
    let staged = r.state.staged.clone().unwrap();
    assert_eq!(
        (staged.bundle_hash.as_str(), staged.boot_slot),
        (two.hash().as_str(), Some(Slot::A))
    );
    assert_eq!(r.env().armed_trial(), None);
    r.reboot(false);
    r.confirm(true).unwrap();
    assert_eq!(r.booted, Slot::B);
    // another digest is not held: the caller would download it
    let other = plan_activation(
        "another",
        &config(),
        &r.state,
        &r.device(),
        InstallOptions::default(),
    );
    assert_eq!(other, Ok(None));
    r.activate(two, false, None).unwrap();
    assert_eq!(r.env().armed_trial(), Some(Slot::A));
    assert_eq!(r.state.staged, None);
    r.reboot(false);
    r.confirm(true).unwrap();
    assert_eq!(
        (r.booted, r.state.security_floor.clone()),
        (Slot::A, Some(v(1)))
    );
    // B still holds 1, good: a revert arms it without a download; without revert it is a downgrade
    let plain = plan_activation(
        &one.hash(),
        &config(),
        &r.state,
        &r.device(),
        InstallOptions::default(),
    );
    assert!(matches!(plain, Err(Refusal::Downgrade { .. })), "{plain:?}");
    r.activate(one, true, None).unwrap();
    assert_eq!(r.env().armed_trial(), Some(Slot::B));
    assert_eq!(
        r.state.record("rootfs", Slot::B).state,
        SlotState::Installed
    );
    r.reboot(false);
    r.confirm(true).unwrap();
    assert_eq!(r.booted, Slot::B);
    assert_eq!(r.state.record("rootfs", Slot::B).state, SlotState::Good);
    // a slot that failed its trial is never activated again
    r.activate(two, false, None).unwrap();
    r.reboot(false);
    r.confirm(false).unwrap();
    r.reboot(false);
    r.confirm(true).unwrap();
    assert_eq!(r.state.record("rootfs", Slot::A).state, SlotState::Bad);
    let again = plan_activation(
        &two.hash(),
        &config(),
        &r.state,
        &r.device(),
        InstallOptions::default(),
    );
    assert_eq!(again, Ok(None));
}

#[test]
fn a_live_only_bundle_is_activated_as_a_live_trial() {
    let mut c = config();
    c.classes.insert(
        "model".into(),
        ClassFacts {
            live: true,
            size_a: 10,
            size_b: 10,
        },
    );
    let mut state = ClientState::default();
    state.adopt_running(&boot_classes(), Slot::A, &Default::default());
    let rec = state.record_mut("model", Slot::B);
    rec.state = SlotState::Installed;
    rec.version = Some(v(2));
    rec.bundle_hash = Some("m2".into());
    rec.bundle_classes = vec!["model".into()];
    let device = DeviceFacts {
        booted: Slot::A,
        env: BootEnv::default(),
        live_active: [("model".to_string(), Slot::A)].into(),
        state_dir_free: 1 << 20,
    };
    let planned = plan_activation("m2", &c, &state, &device, InstallOptions::default()).unwrap();
    let Some(Activation::Live(trial)) = planned else {
        panic!("{planned:?}")
    };
    assert_eq!(
        trial.flips,
        vec![LiveFlip {
            class: "model".into(),
            from: Slot::A,
            to: Slot::B
        }]
    );
    // a bundle recorded with a class whose slot was overwritten since is not held any more
    state.record_mut("model", Slot::B).bundle_classes = vec!["model".into(), "extra".into()];
    assert_eq!(
        plan_activation("m2", &c, &state, &device, InstallOptions::default()),
        Ok(None)
    );
}
