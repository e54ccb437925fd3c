//! Filters, late joiners, stage deadlines and soak, `next` and `retry`.

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
    versions: semver::VersionReq,
    stages: Vec<u8>,
    joined: Vec<usize>,
}

impl Fixture {
    fn new(stages: &[u8]) -> Self {
        Fixture {
            tags: tags(&[("site", "w3")]),
            version: "2.0.0".parse().unwrap(),
            versions: ">=1.0, <2.0".parse().unwrap(),
            stages: stages.to_vec(),
            joined: Vec::new(),
        }
    }
    fn plan(&self, state: RolloutState, stage: usize, now: u64) -> Plan<'_> {
        Plan {
            state,
            stages: &self.stages,
            current_stage: stage,
            tags: &self.tags,
            compatible: "acme",
            version: &self.version,
            failure_threshold: 1.0,
            bad_baseline: 0,
            group: None,
            versions: None,
            joined: &self.joined,
            soak_secs: 0,
            deadline_secs: 0,
            start_at: None,
            stage_started_at: 0,
            stage_completed_at: None,
            now,
        }
    }
}

fn initial(rank: u64, status: Option<ReportStatus>) -> Option<Membership> {
    Some(Membership {
        rank,
        status,
        joined: None,
    })
}

#[test]
fn labels_override_reported_tags_and_group_and_versions_filter() {
    let f = Fixture::new(&[100]);
    let mut plan = f.plan(RolloutState::Active, 0, 0);
    let reported = tags(&[("site", "w4")]);
    let labels = tags(&[("site", "w3")]);
    let old: semver::Version = "1.5.0".parse().unwrap();
    let dev = DeviceFacts {
        compatible: "acme",
        tags: &reported,
        labels: &labels,
        current_version: Some(&old),
        group: Some("night"),
    };
    assert!(selects(&plan, &dev));
    let relabelled = tags(&[("site", "w9")]);
    let own = tags(&[("site", "w3")]);
    assert!(!selects(
        &plan,
        &DeviceFacts {
            tags: &own,
            labels: &relabelled,
            ..dev
        }
    ));
    plan.group = Some("day");
    assert!(!selects(&plan, &dev));
    assert_eq!(
        offer(&plan, 1, initial(0, None), &dev),
        Err(NoOffer::TagsDoNotMatch)
    );
    plan.group = Some("night");
    plan.versions = Some(&f.versions);
    assert!(selects(&plan, &dev));
    let newer: semver::Version = "2.1.0".parse().unwrap();
    assert!(!selects(
        &plan,
        &DeviceFacts {
            current_version: Some(&newer),
            ..dev
        }
    ));
    assert!(!selects(
        &plan,
        &DeviceFacts {
            current_version: None,
            ..dev
        }
    ));
}

#[test]
fn nothing_is_offered_before_the_start() {
    let f = Fixture::new(&[100]);
    let mut plan = f.plan(RolloutState::Active, 0, 99);
    plan.start_at = Some(100);
    let old: semver::Version = "1.0.0".parse().unwrap();
    let t = tags(&[("site", "w3")]);
    let dev = DeviceFacts {
        compatible: "acme",
        tags: &t,
        current_version: Some(&old),
        ..Default::default()
    };
    assert_eq!(
        offer(&plan, 1, initial(0, None), &dev),
        Err(NoOffer::NotActive)
    );
    assert_eq!(evaluate(&plan, &[Some(Success)]), None);
    plan.now = 100;
    assert_eq!(offer(&plan, 1, initial(0, None), &dev), Ok(()));
}

#[test]
fn a_deadline_stops_silent_robots_blocking_and_counts_them() {
    let mut f = Fixture::new(&[50, 100]);
    f.joined = vec![];
    let statuses = [Some(Success), None, None, None];
    let mut plan = f.plan(RolloutState::Active, 0, 50);
    plan.deadline_secs = 100;
    plan.stage_started_at = 0;
    assert_eq!(evaluate(&plan, &statuses), None);
    assert_eq!(tally(&plan, &statuses).timed_out, 0);
    plan.now = 100;
    assert_eq!(tally(&plan, &statuses).timed_out, 1);
    assert_eq!(evaluate(&plan, &statuses), Some(Transition::Advance(1)));
    let settled = settle(&plan, &statuses).unwrap();
    assert_eq!(settled.current_stage, 1);
    assert_eq!(settled.stage_started_at, 100);
    // The silent robot of stage 0 still counts as timed out (and stays offered) in stage 1.
    let next = Plan {
        current_stage: 1,
        stage_started_at: 100,
        ..plan.clone()
    };
    assert!(timed_out(&next, 4, initial(1, None).unwrap()));
    assert!(!timed_out(&next, 4, initial(2, None).unwrap()));
    assert_eq!(tally(&next, &statuses).timed_out, 1);
}

#[test]
fn a_complete_stage_soaks_before_the_next() {
    let f = Fixture::new(&[50, 100]);
    let statuses = [Some(Success), None];
    let mut plan = f.plan(RolloutState::Active, 0, 10);
    plan.soak_secs = 60;
    assert_eq!(evaluate(&plan, &statuses), Some(Transition::Soak));
    let soaking = settle(&plan, &statuses).unwrap();
    assert_eq!(
        (soaking.current_stage, soaking.stage_completed_at),
        (0, Some(10))
    );
    plan.stage_completed_at = Some(10);
    plan.now = 69;
    assert_eq!(evaluate(&plan, &statuses), None);
    plan.now = 70;
    assert_eq!(evaluate(&plan, &statuses), Some(Transition::Advance(1)));
    // A retry reopens a soaking stage.
    assert_eq!(evaluate(&plan, &[None, None]), Some(Transition::Reopen));
}

#[test]
fn next_and_retry() {
    let f = Fixture::new(&[50, 100]);
    assert_eq!(next_stage(&f.plan(RolloutState::Active, 0, 0)), Ok(1));
    assert_eq!(next_stage(&f.plan(RolloutState::Paused, 0, 0)), Ok(1));
    assert!(next_stage(&f.plan(RolloutState::Active, 1, 0)).is_err());
    assert!(next_stage(&f.plan(RolloutState::Aborted, 0, 0)).is_err());
    assert!(next_stage(&f.plan(RolloutState::Completed, 0, 0)).is_err());
    let statuses = [Some(Success), Some(Failure), None, Some(RolledBack)];
    assert_eq!(
        retry(RolloutState::Completed, &statuses),
        Ok((vec![1, 3], RolloutState::Active))
    );
    assert_eq!(
        retry(RolloutState::Paused, &statuses),
        Ok((vec![1, 3], RolloutState::Paused))
    );
    assert_eq!(
        retry(RolloutState::Completed, &[Some(Success)]),
        Ok((vec![], RolloutState::Completed))
    );
    assert!(retry(RolloutState::Aborted, &statuses).is_err());
}

fn arb_status() -> impl Strategy<Value = Option<ReportStatus>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(ReportStatus::ALL.to_vec()).prop_map(Some)
    ]
}

proptest! {
    /// No robot outside the filter ever gets an offer, whatever its reported tags, labels, group and version.
    #[test]
    fn no_robot_outside_the_filter_is_offered(
        reported_site in proptest::sample::select(vec!["w3", "w4"]),
        label_site in proptest::option::of(proptest::sample::select(vec!["w3", "w4"])),
        group in proptest::option::of(proptest::sample::select(vec!["a", "b"])),
        want_group in proptest::option::of(proptest::sample::select(vec!["a", "b"])),
        major in 1u64..3,
        with_range in any::<bool>(),
        joined in proptest::option::of(0usize..3),
        stage in 0usize..3,
        status in arb_status(),
    ) {
        let f = Fixture::new(&[10, 50, 100]);
        let mut plan = f.plan(RolloutState::Active, stage, 0);
        plan.group = want_group;
        if with_range { plan.versions = Some(&f.versions); }
        let reported = tags(&[("site", reported_site)]);
        let labels = label_site.map(|s| tags(&[("site", s)])).unwrap_or_default();
        let version = semver::Version::new(major, 0, 0);
        let dev = DeviceFacts {
            compatible: "acme",
            tags: &reported,
            labels: &labels,
            group,
            current_version: Some(&version),
        };
        let m = Membership { rank: 0, status, joined };
        if offer(&plan, 10, Some(m), &dev).is_ok() {
            let site = label_site.unwrap_or(reported_site);
            prop_assert_eq!(site, "w3");
            prop_assert!(want_group.is_none() || want_group == group);
            prop_assert!(!with_range || major == 1);
            prop_assert!(joined.is_none_or(|j| j <= stage));
        }
    }

    /// A member that joins while a stage is under way is never offered in that stage, but is in the next
    /// (or at once in the last stage), and never blocks the stage it joined during.
    #[test]
    fn a_late_joiner_never_enters_the_current_stage(
        stage in 0usize..3,
        statuses in proptest::collection::vec(arb_status(), 0..20),
    ) {
        let mut f = Fixture::new(&[10, 50, 100]);
        let plan = f.plan(RolloutState::Active, stage, 0);
        let join = join_stage(&plan);
        prop_assert_eq!(join, (stage + 1).min(2));
        let late = Membership { rank: statuses.len() as u64, status: None, joined: Some(join) };
        let initial_n = statuses.len() as u64;
        prop_assert_eq!(reached(&plan, initial_n, late), stage == 2);
        let before = tally(&plan, &statuses);
        f.joined = vec![join];
        let mut with_late = statuses.clone();
        with_late.push(None);
        let plan = f.plan(RolloutState::Active, stage, 0);
        let after = tally(&plan, &with_late);
        if stage < 2 {
            prop_assert_eq!(before, after);
            prop_assert_eq!(evaluate(&plan, &with_late).is_some(), evaluate(&f.plan(RolloutState::Active, stage, 0), &with_late).is_some());
            let next = f.plan(RolloutState::Active, join, 0);
            prop_assert!(reached(&next, initial_n, late));
        } else {
            prop_assert_eq!(after.offered, before.offered + 1);
        }
    }

    /// A finished last stage completes at once, whatever its soak (the soak only gates a next stage).
    #[test]
    fn the_last_stage_completes_without_soaking(
        members in 1usize..20,
        soak in 1u64..100,
        now in 0u64..300,
    ) {
        let statuses = vec![Some(Success); members];
        let f = Fixture::new(&[50, 100]);
        let mut plan = f.plan(RolloutState::Active, 1, now);
        plan.soak_secs = soak;
        prop_assert_eq!(evaluate(&plan, &statuses), Some(Transition::Complete));
    }

    /// Deadlines and soak: a stage never advances while a reached member blocks it before the deadline, nor
    /// before its soak has passed.
    #[test]
    fn deadlines_and_soak_gate_advances(
        statuses in proptest::collection::vec(arb_status(), 1..20),
        deadline in 0u64..100,
        soak in 0u64..100,
        completed in proptest::option::of(0u64..200),
        now in 0u64..300,
    ) {
        let f = Fixture::new(&[50, 100]);
        let mut plan = f.plan(RolloutState::Active, 0, now);
        plan.deadline_secs = deadline;
        plan.soak_secs = soak;
        plan.stage_completed_at = completed;
        if let Some(Transition::Advance(_)) = evaluate(&plan, &statuses) {
            let t = tally(&plan, &statuses);
            let all_done = t.terminal == t.offered;
            prop_assert!(all_done || (deadline > 0 && now >= deadline));
            if soak > 0 {
                prop_assert!(completed.is_some_and(|c| now >= c + soak));
            }
        }
    }
}
