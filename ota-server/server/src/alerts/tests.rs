//! The alert rules and their tracking over a virtual clock.

use proptest::prelude::*;

use super::track::{apply, reconcile, AlertRecord};
use super::*;

const NOW: u64 = 100_000;

fn robot(id: &str) -> RobotFacts {
    RobotFacts {
        id: id.into(),
        enrolled_at: 0,
        last_seen: Some(NOW),
        ..RobotFacts::default()
    }
}

fn kinds(c: &[Condition]) -> Vec<AlertKind> {
    c.iter().map(|c| c.kind).collect()
}

#[test]
fn each_rule_fires_on_its_fact() {
    let t = Thresholds::default();
    let now = NOW;
    let mut facts = Facts::default();
    facts.robots.push(RobotFacts {
        last_status: Some((ReportStatus::RolledBack, NOW - 100)),
        ..robot("a")
    });
    facts.robots.push(RobotFacts {
        waiting_since: Some(now - t.waiting_after_secs - 1),
        ..robot("b")
    });
    facts.robots.push(RobotFacts {
        freeze: Some(FreezeReason::Stale),
        ..robot("c")
    });
    facts.robots.push(RobotFacts {
        maintenance_score: Some(80.0),
        ..robot("d")
    });
    facts.robots.push(robot("fine"));
    facts.rollouts.push(RolloutFacts {
        id: 3,
        name: "r".into(),
        state: RolloutState::Paused,
        pause_reason: Some("2 of 4 failed".into()),
        breach_at: None,
    });
    facts.rollouts.push(RolloutFacts {
        id: 4,
        name: "manual".into(),
        state: RolloutState::Paused,
        pause_reason: None,
        breach_at: None,
    });
    facts.pending.push(PendingFacts {
        id: "new".into(),
        requested_at: 5,
    });
    let c = conditions(&facts, &t, now);
    assert_eq!(
        kinds(&c),
        vec![
            AlertKind::RolledBack,
            AlertKind::Waiting,
            AlertKind::FreezeAlarm,
            AlertKind::MaintenanceDue,
            AlertKind::PendingAdmission,
            AlertKind::RolloutPaused,
        ]
    );
    assert!(
        c[5].message.contains("paused by failures"),
        "{}",
        c[5].message
    );
    // Offline: past the threshold, not at it.
    let later = NOW + t.offline_after_secs;
    let only = Facts {
        robots: vec![robot("fine")],
        ..Facts::default()
    };
    assert!(conditions(&only, &t, later).is_empty());
    assert_eq!(
        kinds(&conditions(&only, &t, later + 1)),
        vec![AlertKind::Offline]
    );
}

/// A fleet over a virtual clock: each step, robots poll or not, roll back or succeed.
#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Poll(usize),
    RollBack(usize),
    Succeed(usize),
    Ack,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..3000).prop_map(Step::Advance),
        (0usize..3).prop_map(Step::Poll),
        (0usize..3).prop_map(Step::RollBack),
        (0usize..3).prop_map(Step::Succeed),
        Just(Step::Ack),
    ]
}

proptest! {
    /// Whatever happens: the open set is exactly the conditions holding (one alert each); ids are unique
    /// over the whole run (an alert that clears and comes back is new, so an ack never carries over); an
    /// alert's since and id never change while it is open; re-evaluating unchanged facts changes nothing.
    #[test]
    fn tracking_follows_the_conditions(steps in proptest::collection::vec(step(), 1..60)) {
        let t = Thresholds::default();
        let mut now = 10_000u64;
        let mut robots: Vec<RobotFacts> = (0..3).map(|i| RobotFacts { last_seen: Some(now), ..robot(&format!("r{i}")) }).collect();
        let mut open: Vec<AlertRecord> = Vec::new();
        let mut ever: Vec<String> = Vec::new();
        for s in steps {
            match s {
                Step::Advance(d) => now += d,
                Step::Poll(i) => robots[i].last_seen = Some(now),
                Step::RollBack(i) => { now += 1; robots[i].last_status = Some((ReportStatus::RolledBack, now)); robots[i].last_seen = Some(now); }
                Step::Succeed(i) => { now += 1; robots[i].last_status = Some((ReportStatus::Success, now)); robots[i].last_seen = Some(now); }
                Step::Ack => if let Some(a) = open.first_mut() {
                    a.acknowledged = Some(Acknowledgement { by: "op".into(), at: now });
                },
            }
            let facts = Facts { robots: robots.clone(), ..Facts::default() };
            let conds = conditions(&facts, &t, now);
            let changes = reconcile(&open, &conds, now);
            prop_assert!(changes.updated.is_empty(), "messages are stable while a condition lasts");
            for o in &changes.opened {
                prop_assert!(!ever.contains(&o.id), "id {} reused", o.id);
                prop_assert!(o.acknowledged.is_none());
                ever.push(o.id.clone());
            }
            let next = apply(&open, &changes);
            for a in &next {
                if let Some(before) = open.iter().find(|b| b.id == a.id) {
                    prop_assert_eq!(before.since, a.since);
                    prop_assert_eq!(&before.acknowledged, &a.acknowledged);
                }
            }
            prop_assert_eq!(next.len(), conds.len());
            for c in &conds {
                prop_assert_eq!(next.iter().filter(|a| a.kind == c.kind && a.target == c.target && a.episode == c.episode).count(), 1);
            }
            prop_assert!(reconcile(&next, &conds, now).is_empty());
            open = next;
        }
    }

    /// Conditions never lie about time: nothing starts after now, and a robot seen within the threshold is
    /// never offline.
    #[test]
    fn offline_only_past_the_threshold(seen in 0u64..100_000, now in 0u64..200_000, th in 1u64..50_000) {
        let t = Thresholds { offline_after_secs: th, ..Thresholds::default() };
        let facts = Facts { robots: vec![RobotFacts { last_seen: Some(seen), ..robot("x") }], ..Facts::default() };
        let c = conditions(&facts, &t, now);
        prop_assert_eq!(!c.is_empty(), now.saturating_sub(seen) > th);
        for c in c {
            prop_assert!(c.since <= now.max(seen));
        }
    }
}

use ota_protocol::alerts::Acknowledgement;

#[test]
fn ids_are_stable_and_depend_on_the_occurrence() {
    let a = track::alert_id(AlertKind::Offline, &AlertTarget::Robot("r".into()), 5, 5);
    assert_eq!(a.len(), 16);
    assert_eq!(
        a,
        track::alert_id(AlertKind::Offline, &AlertTarget::Robot("r".into()), 5, 5)
    );
    assert_ne!(
        a,
        track::alert_id(AlertKind::Offline, &AlertTarget::Robot("r".into()), 5, 6)
    );
}

#[test]
fn metrics_lines() {
    let conds = conditions(
        &Facts {
            robots: vec![RobotFacts {
                last_status: Some((ReportStatus::RolledBack, 9)),
                ..robot("r1")
            }],
            ..Facts::default()
        },
        &Thresholds::default(),
        1000,
    );
    let open = reconcile(&[], &conds, 1000).opened;
    let text = metrics::render(&open);
    assert!(
        text.contains(r#"ota_alerts{kind="rolled_back",severity="warning"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ota_alerts{kind="offline",severity="warning"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ota_alert{acknowledged="false",kind="rolled_back",severity="warning",target="robot/r1"} 1"#
        ),
        "{text}"
    );
}
