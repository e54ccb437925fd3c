use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use ReportStatus::*;

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Fixture {
    tags: BTreeMap<String, String>,
    version: semver::Version,
    stages: Vec<u8>,
}

impl Fixture {
    fn new(stages: &[u8]) -> Self {
        Fixture {
            tags: tags(&[("site", "w3")]),
            version: "2.0.0".parse().unwrap(),
            stages: stages.to_vec(),
        }
    }
    fn plan(&self, state: RolloutState, stage: usize) -> Plan<'_> {
        Plan {
            state,
            stages: &self.stages,
            current_stage: stage,
            tags: &self.tags,
            compatible: "acme",
            version: &self.version,
            failure_threshold: 0.2,
            bad_baseline: 0,
            group: None,
            versions: None,
            joined: &[],
            soak_secs: 0,
            deadline_secs: 0,
            start_at: None,
            stage_started_at: 0,
            stage_completed_at: None,
            now: 0,
        }
    }
}

fn member(rank: u64, status: Option<ReportStatus>) -> Option<Membership> {
    Some(Membership {
        rank,
        status,
        joined: None,
    })
}

#[test]
fn stage_sizes_round_up_and_cap_at_the_target_set() {
    assert_eq!(stage_size(0, 5), 0);
    assert_eq!(stage_size(5, 5), 1);
    assert_eq!(stage_size(5, 25), 2);
    assert_eq!(stage_size(5, 100), 5);
    assert_eq!(stage_size(100, 5), 5);
    assert_eq!(stage_size(101, 5), 6);
    assert_eq!(stage_size(10_000, 100), 10_000);
    assert_eq!(stage_size(7, 200), 7);
}

#[test]
fn offers_follow_the_stage() {
    let f = Fixture::new(&[20, 60, 100]);
    let t = tags(&[("site", "w3"), ("model", "x")]);
    let old: semver::Version = "1.0.0".parse().unwrap();
    let dev = DeviceFacts {
        compatible: "acme",
        tags: &t,
        current_version: Some(&old),
        ..Default::default()
    };
    let p0 = f.plan(RolloutState::Active, 0);
    assert_eq!(offer(&p0, 5, member(0, None), &dev), Ok(()));
    assert_eq!(
        offer(&p0, 5, member(1, None), &dev),
        Err(NoOffer::LaterStage)
    );
    let p1 = f.plan(RolloutState::Active, 1);
    assert_eq!(offer(&p1, 5, member(2, None), &dev), Ok(()));
    assert_eq!(
        offer(&p1, 5, member(3, None), &dev),
        Err(NoOffer::LaterStage)
    );
    let p2 = f.plan(RolloutState::Completed, 2);
    assert_eq!(offer(&p2, 5, member(4, None), &dev), Ok(()));
    assert_eq!(
        offer(&p2, 5, member(5, None), &dev),
        Err(NoOffer::NotTargeted)
    );
    assert_eq!(offer(&p2, 5, None, &dev), Err(NoOffer::NotTargeted));
}

#[test]
fn each_reason_for_no_offer() {
    let f = Fixture::new(&[100]);
    let good_tags = tags(&[("site", "w3")]);
    let bad_tags = tags(&[("site", "w4")]);
    let old: semver::Version = "1.0.0".parse().unwrap();
    let dev = DeviceFacts {
        compatible: "acme",
        tags: &good_tags,
        current_version: Some(&old),
        ..Default::default()
    };
    let active = f.plan(RolloutState::Active, 0);
    assert_eq!(
        offer(&f.plan(RolloutState::Paused, 0), 1, member(0, None), &dev),
        Err(NoOffer::NotActive)
    );
    assert_eq!(
        offer(&f.plan(RolloutState::Aborted, 0), 1, member(0, None), &dev),
        Err(NoOffer::NotActive)
    );
    let moved = DeviceFacts {
        tags: &bad_tags,
        ..dev
    };
    assert_eq!(
        offer(&active, 1, member(0, None), &moved),
        Err(NoOffer::TagsDoNotMatch)
    );
    let other = DeviceFacts {
        compatible: "other",
        ..dev
    };
    assert_eq!(
        offer(&active, 1, member(0, None), &other),
        Err(NoOffer::Incompatible)
    );
    let updated = DeviceFacts {
        current_version: Some(&f.version),
        ..dev
    };
    assert_eq!(
        offer(&active, 1, member(0, None), &updated),
        Err(NoOffer::AlreadyOnVersion)
    );
    for finished in [Success, Failure, RolledBack] {
        assert_eq!(
            offer(&active, 1, member(0, Some(finished)), &dev),
            Err(NoOffer::Finished)
        );
    }
    for under_way in [Downloading, Installing, Rebooting] {
        assert_eq!(offer(&active, 1, member(0, Some(under_way)), &dev), Ok(()));
    }
    let unknown = DeviceFacts {
        current_version: None,
        ..dev
    };
    assert_eq!(offer(&active, 1, member(0, None), &unknown), Ok(()));
}

#[test]
fn selection_needs_every_tag_and_compatible_and_an_other_version() {
    let f = Fixture::new(&[100]);
    let plan = f.plan(RolloutState::Active, 0);
    let old: semver::Version = "1.0.0".parse().unwrap();
    let more = tags(&[("site", "w3"), ("x", "y")]);
    let none = tags(&[]);
    assert!(selects(
        &plan,
        &DeviceFacts {
            compatible: "acme",
            tags: &more,
            current_version: Some(&old),
            ..Default::default()
        }
    ));
    assert!(!selects(
        &plan,
        &DeviceFacts {
            compatible: "acme",
            tags: &none,
            current_version: Some(&old),
            ..Default::default()
        }
    ));
    assert!(!selects(
        &plan,
        &DeviceFacts {
            compatible: "nope",
            tags: &more,
            current_version: Some(&old),
            ..Default::default()
        }
    ));
    assert!(!selects(
        &plan,
        &DeviceFacts {
            compatible: "acme",
            tags: &more,
            current_version: Some(&f.version),
            ..Default::default()
        }
    ));
    assert!(tags_match(&tags(&[]), &none));
}

#[test]
fn ordering_is_stable_and_seeded() {
    let ids: Vec<String> = (0..50).map(|i| format!("robot-{i}")).collect();
    let a = order_targets("seed", ids.clone());
    let b = order_targets("seed", ids.iter().rev().cloned().collect());
    assert_eq!(a, b);
    assert_ne!(a, order_targets("other seed", ids.clone()));
    assert_ne!(a, ids, "ranking should not be alphabetical");
}

#[test]
fn stage_advances_when_all_offered_devices_finished() {
    let f = Fixture::new(&[20, 60, 100]);
    let p0 = f.plan(RolloutState::Active, 0);
    let mut statuses = vec![None; 5];
    assert_eq!(evaluate(&p0, &statuses), None);
    statuses[0] = Some(Rebooting);
    assert_eq!(evaluate(&p0, &statuses), None);
    statuses[0] = Some(Success);
    assert_eq!(evaluate(&p0, &statuses), Some(Transition::Advance(1)));
    let p1 = f.plan(RolloutState::Active, 1);
    statuses[1] = Some(Success);
    assert_eq!(evaluate(&p1, &statuses), None);
    statuses[2] = Some(Success);
    assert_eq!(evaluate(&p1, &statuses), Some(Transition::Advance(2)));
    let p2 = f.plan(RolloutState::Active, 2);
    statuses[3] = Some(Success);
    statuses[4] = Some(Success);
    assert_eq!(evaluate(&p2, &statuses), Some(Transition::Complete));
    assert_eq!(
        evaluate(&f.plan(RolloutState::Completed, 2), &statuses),
        None
    );
    assert_eq!(evaluate(&f.plan(RolloutState::Paused, 0), &statuses), None);
}

#[test]
fn failures_past_the_threshold_pause() {
    let f = Fixture::new(&[40, 100]);
    let p = f.plan(RolloutState::Active, 0);
    // 10 devices, stage 0 = 4 offered; threshold 0.2 -> more than 0.8 bad devices pauses.
    let mut statuses = vec![None; 10];
    statuses[0] = Some(RolledBack);
    match evaluate(&p, &statuses) {
        Some(Transition::AutoPause(reason)) => assert!(reason.contains("1 of 4"), "{reason}"),
        other => panic!("expected a pause, got {other:?}"),
    }
    // A resume acknowledges the failures seen so far.
    let resumed = Plan {
        bad_baseline: 1,
        ..p.clone()
    };
    assert_eq!(evaluate(&resumed, &statuses), None);
    statuses[1] = Some(Success);
    statuses[2] = Some(Success);
    statuses[3] = Some(Success);
    assert_eq!(evaluate(&resumed, &statuses), Some(Transition::Advance(1)));
    // Failures of devices beyond the reached stage cannot exist; statuses there are ignored.
    let lenient = Plan {
        failure_threshold: 1.0,
        ..p
    };
    statuses[0] = Some(Failure);
    statuses[1] = Some(Failure);
    assert_eq!(evaluate(&lenient, &statuses), Some(Transition::Advance(1)));
}

#[test]
fn an_empty_target_set_completes() {
    let f = Fixture::new(&[5, 100]);
    assert_eq!(
        evaluate(&f.plan(RolloutState::Active, 0), &[]),
        Some(Transition::Advance(1))
    );
    assert_eq!(
        evaluate(&f.plan(RolloutState::Active, 1), &[]),
        Some(Transition::Complete)
    );
}

#[test]
fn downloads_follow_offers_but_survive_a_pause() {
    let f = Fixture::new(&[20, 100]);
    assert!(may_download(
        &f.plan(RolloutState::Active, 0),
        5,
        member(0, None)
    ));
    assert!(may_download(
        &f.plan(RolloutState::Paused, 0),
        5,
        member(0, Some(Downloading))
    ));
    assert!(!may_download(
        &f.plan(RolloutState::Aborted, 0),
        5,
        member(0, None)
    ));
    assert!(!may_download(
        &f.plan(RolloutState::Active, 0),
        5,
        member(1, None)
    ));
    assert!(!may_download(&f.plan(RolloutState::Active, 0), 5, None));
}

#[test]
fn stage_and_threshold_validation() {
    assert!(validate_stages(&[5, 25, 100]).is_ok());
    assert!(validate_stages(&[100]).is_ok());
    assert!(validate_stages(&[]).is_err());
    assert!(validate_stages(&[5, 5, 100]).is_err());
    assert!(validate_stages(&[50, 25, 100]).is_err());
    assert!(validate_stages(&[0, 100]).is_err());
    assert!(validate_stages(&[5, 25])
        .unwrap_err()
        .contains("last stage"));
    assert!(validate_stages(&[5, 101]).is_err());
    assert!(validate_threshold(0.0).is_ok() && validate_threshold(1.0).is_ok());
    assert!(
        validate_threshold(-0.1).is_err()
            && validate_threshold(1.5).is_err()
            && validate_threshold(f64::NAN).is_err()
    );
}

fn arb_stages() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::btree_set(1u8..100, 0..5).prop_map(|set| {
        let mut v: Vec<u8> = set.into_iter().collect();
        v.push(100);
        v
    })
}

fn arb_status() -> impl Strategy<Value = Option<ReportStatus>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(ReportStatus::ALL.to_vec()).prop_map(Some)
    ]
}

fn arb_state() -> impl Strategy<Value = RolloutState> {
    proptest::sample::select(RolloutState::ALL.to_vec())
}

proptest! {
    /// Over a whole fleet: offers go only to matching devices of the target set, never beyond the stage's share,
    /// never to a device on the version, and never while paused or aborted.
    #[test]
    fn offers_respect_every_rule(
        stages in arb_stages(),
        stage_pick in 0usize..8,
        state in arb_state(),
        fleet in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), arb_status()), 0..40),
    ) {
        let f = Fixture { stages, ..Fixture::new(&[100]) };
        let stage = stage_pick % f.stages.len();
        let plan = f.plan(state, stage);
        let old: semver::Version = "1.0.0".parse().unwrap();
        let matching = tags(&[("site", "w3")]);
        let elsewhere = tags(&[("site", "elsewhere")]);
        // (targeted, tags still match, compatible, on the version already, status)
        let targeted = fleet.iter().filter(|d| d.0).count() as u64;
        let mut rank = 0;
        let mut offers = 0u64;
        for (is_target, tag_ok, compat_ok, on_version, status) in &fleet {
            let membership = if *is_target { rank += 1; member(rank - 1, *status) } else { None };
            let dev = DeviceFacts {
                compatible: if *compat_ok { "acme" } else { "other" },
                tags: if *tag_ok { &matching } else { &elsewhere },
                current_version: Some(if *on_version { &f.version } else { &old }),
            ..Default::default()
            };
            if offer(&plan, targeted, membership, &dev).is_ok() {
                offers += 1;
                prop_assert!(*is_target && *tag_ok && *compat_ok && !*on_version);
                prop_assert!(matches!(state, RolloutState::Active | RolloutState::Completed));
                prop_assert!(membership.unwrap().rank < stage_size(targeted, f.stages[stage]));
                prop_assert!(!status.is_some_and(ReportStatus::is_terminal));
            }
        }
        prop_assert!(offers <= stage_size(targeted, f.stages[stage]));
    }

    /// Applying transitions until none is left terminates, never goes past the last stage, never leaves a
    /// paused/aborted/completed state by itself, and pauses exactly when the threshold is passed.
    #[test]
    fn transitions_are_monotonic_and_terminate(
        stages in arb_stages(),
        statuses in proptest::collection::vec(arb_status(), 0..60),
        threshold in 0.0f64..=1.0,
        state in arb_state(),
    ) {
        let f = Fixture { stages, ..Fixture::new(&[100]) };
        let mut plan = f.plan(state, 0);
        plan.failure_threshold = threshold;
        let mut steps = 0;
        while let Some(t) = evaluate(&plan, &statuses) {
            steps += 1;
            prop_assert!(steps <= f.stages.len() + 1);
            prop_assert_eq!(plan.state, RolloutState::Active);
            let tally = tally(&plan, &statuses);
            match t {
                Transition::Advance(next) => {
                    prop_assert_eq!(next, plan.current_stage + 1);
                    prop_assert_eq!(tally.terminal, tally.offered);
                    plan.current_stage = next;
                }
                Transition::Complete => {
                    prop_assert_eq!(plan.current_stage, f.stages.len() - 1);
                    plan.state = RolloutState::Completed;
                }
                Transition::AutoPause(_) => {
                    prop_assert!(tally.bad as f64 > threshold * tally.offered as f64);
                    plan.state = RolloutState::Paused;
                }
                Transition::Soak | Transition::Reopen => prop_assert!(false, "no soak configured"),
            }
        }
        prop_assert!(plan.current_stage < f.stages.len());
        if state != RolloutState::Active {
            prop_assert_eq!(steps, 0);
        }
    }

    #[test]
    fn stage_size_is_monotonic_and_bounded(n in 0u64..1_000_000, a in 0u8..=100, b in 0u8..=100) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(stage_size(n, lo) <= stage_size(n, hi));
        prop_assert!(stage_size(n, hi) <= n);
        prop_assert_eq!(stage_size(n, 100), n);
        if n > 0 && lo > 0 { prop_assert!(stage_size(n, lo) >= 1); }
    }
}

fn arb_action() -> impl Strategy<Value = RolloutAction> {
    proptest::sample::select(vec![
        RolloutAction::Pause,
        RolloutAction::Resume,
        RolloutAction::Abort,
    ])
}

#[test]
fn manual_actions() {
    use RolloutState::*;
    assert_eq!(
        control(RolloutAction::Pause, Active),
        Control::Become(Paused, Some("paused by an operator".into()))
    );
    assert_eq!(
        control(RolloutAction::Resume, Paused),
        Control::Become(Active, None)
    );
    assert_eq!(
        control(RolloutAction::Abort, Completed),
        Control::Become(Aborted, None)
    );
    assert_eq!(control(RolloutAction::Pause, Completed), Control::Refused);
    assert_eq!(control(RolloutAction::Resume, Aborted), Control::Refused);
    assert_eq!(control(RolloutAction::Abort, Aborted), Control::Unchanged);
}

proptest! {
    /// Only a success says what a device runs (the reported version); a revert to another version then selects
    /// it, whatever its last poll said.
    #[test]
    fn a_success_says_what_a_device_runs(
        status in proptest::sample::select(ReportStatus::ALL.to_vec()),
        reported in 0u64..4,
        polled in 0u64..4,
    ) {
        let reported = semver::Version::new(reported, 0, 0);
        let polled = semver::Version::new(polled, 0, 0);
        let runs = runs_after_report(status, Some(&reported));
        prop_assert_eq!(runs, (status == Success).then_some(&reported));
        prop_assert_eq!(runs_after_report(status, None), None);
        let f = Fixture::new(&[100]);
        let labels = tags(&[]);
        let device = DeviceFacts {
            compatible: "acme",
            tags: &f.tags,
            current_version: runs.or(Some(&polled)),
            labels: &labels,
            group: None,
        };
        let revert = f.plan(RolloutState::Active, 0);
        let runs_it = device.current_version == Some(&f.version);
        prop_assert_eq!(selects(&revert, &device), !runs_it);
    }

    /// A finished status stays finished: only another final status replaces it; any report of an unfinished
    /// device is taken as is.
    #[test]
    fn a_finished_status_stays_finished(old in arb_status(), reported in proptest::sample::select(ReportStatus::ALL.to_vec())) {
        let new = member_status_after(old, reported);
        prop_assert!(new.is_some());
        if old.is_some_and(ReportStatus::is_terminal) {
            prop_assert!(new.is_some_and(ReportStatus::is_terminal));
            if !reported.is_terminal() { prop_assert_eq!(new, old); }
        }
        if reported.is_terminal() || !old.is_some_and(ReportStatus::is_terminal) {
            prop_assert_eq!(new, Some(reported));
        }
    }

    /// Manual actions: repeating one changes nothing, an aborted rollout is never revived, pause and resume
    /// only move between active and paused.
    #[test]
    fn manual_actions_are_idempotent_and_abort_is_final(action in arb_action(), state in arb_state()) {
        match control(action, state) {
            Control::Unchanged => prop_assert!(matches!(
                (action, state),
                (RolloutAction::Pause, RolloutState::Paused)
                    | (RolloutAction::Resume, RolloutState::Active)
                    | (RolloutAction::Abort, RolloutState::Aborted)
            )),
            Control::Become(next, reason) => {
                prop_assert_ne!(state, RolloutState::Aborted);
                prop_assert_eq!(control(action, next), Control::Unchanged);
                prop_assert_eq!(reason.is_some(), next == RolloutState::Paused);
                if action != RolloutAction::Abort {
                    prop_assert!(matches!(state, RolloutState::Active | RolloutState::Paused));
                }
            }
            Control::Refused => {
                prop_assert!(action != RolloutAction::Abort);
                prop_assert!(matches!(state, RolloutState::Aborted | RolloutState::Completed));
            }
        }
    }

    /// Settling reaches a fixpoint (no transition left) and changes only an active rollout.
    #[test]
    fn settle_reaches_a_fixpoint(
        stages in arb_stages(),
        stage_pick in 0usize..8,
        state in arb_state(),
        statuses in proptest::collection::vec(arb_status(), 0..40),
    ) {
        let f = Fixture { stages, ..Fixture::new(&[100]) };
        let plan = f.plan(state, stage_pick % f.stages.len());
        match settle(&plan, &statuses) {
            None => prop_assert_eq!(evaluate(&plan, &statuses), None),
            Some(settled) => {
                prop_assert_eq!(state, RolloutState::Active);
                prop_assert!(settled.current_stage >= plan.current_stage);
                prop_assert_eq!(settled.pause_reason.is_some(), settled.state == RolloutState::Paused);
                let after = Plan { state: settled.state, current_stage: settled.current_stage, ..plan.clone() };
                prop_assert_eq!(evaluate(&after, &statuses), None);
            }
        }
    }
}
