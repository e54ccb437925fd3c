use proptest::prelude::*;

use super::*;
use crate::history::MINUTE;

fn report(at: u64, status: ReportStatus, version: &str) -> ReportRecord {
    ReportRecord {
        report_id: format!("r-{at}"),
        rollout_id: Some(3),
        version: Some(version.parse().unwrap()),
        manifest_digest: None,
        status,
        progress_percent: None,
        error: None,
        log_tail: None,
        reason: None,
        received_at: at,
    }
}

fn member(id: &str, status: Option<ReportStatus>, at: u64, values: &[(u64, f64)]) -> Member {
    Member {
        device_id: id.into(),
        status,
        changed_at: at,
        buckets: values.iter().map(|&(t, v)| Bucket::sample(t, v)).collect(),
    }
}

#[test]
fn update_events_are_installs_and_outcomes_oldest_first() {
    let reports = [
        report(500, ReportStatus::RolledBack, "2.0.0"),
        report(400, ReportStatus::Success, "2.0.0"),
        report(400, ReportStatus::Installing, "2.0.1"),
        report(300, ReportStatus::Rebooting, "2.0.0"),
        report(200, ReportStatus::Installing, "2.0.0"),
        report(200, ReportStatus::Downloading, "2.0.0"),
        report(150, ReportStatus::Downloading, "2.0.0"),
        report(50, ReportStatus::Failure, "1.9.0"),
    ];
    let events = update_events(&reports, 100);
    let got: Vec<(u64, ReportStatus)> = events.iter().map(|e| (e.at, e.status)).collect();
    assert_eq!(
        got,
        [
            (200, ReportStatus::Installing),
            (400, ReportStatus::Installing),
            (400, ReportStatus::Success),
            (500, ReportStatus::RolledBack)
        ]
    );
    assert_eq!(events[2].version.as_ref().unwrap().to_string(), "2.0.0");
    assert_eq!(events[2].rollout_id, Some(3));
}

#[test]
fn members_move_to_the_updated_side_when_they_report_success() {
    let rule = guards::parse_rule("lat:mean>+10%").unwrap();
    let members = [
        member(
            "a",
            Some(ReportStatus::Success),
            120,
            &[(60, 40.0), (120, 80.0), (180, 90.0)],
        ),
        member("b", None, 0, &[(60, 42.0), (120, 44.0), (180, 46.0)]),
        member("c", Some(ReportStatus::Failure), 60, &[(120, 50.0)]),
    ];
    let points = guard_points(&rule, &members, false);
    let sides: Vec<(u64, u32, u32)> = points
        .iter()
        .map(|p| (p.at, p.updated_robots, p.baseline_robots))
        .collect();
    assert_eq!(sides, [(60, 0, 2), (120, 1, 2), (180, 1, 1)]);
    let values: Vec<(Option<f64>, Option<f64>)> =
        points.iter().map(|p| (p.updated, p.baseline)).collect();
    assert_eq!(
        values,
        [
            (None, Some(41.0)),
            (Some(80.0), Some(47.0)),
            (Some(90.0), Some(46.0))
        ]
    );
    // The limit is the guard's: 10 % over the baseline.
    assert!((points[1].limit.unwrap() - 51.7).abs() < 1e-9);
    // A revert compares against its fixed bound only.
    let revert = guard_points(&rule, &members, true);
    assert!(revert
        .iter()
        .all(|p| p.baseline.is_none() && p.limit.is_none()));
    assert_eq!(
        revert.len(),
        2,
        "no point where no updated robot has a value"
    );
}

#[test]
fn rollbacks_count_per_install_and_reboots_have_no_history() {
    let rule = guards::parse_rule("rollbacks:max>0").unwrap();
    let members = [
        member("a", Some(ReportStatus::Success), 100, &[]),
        member("b", Some(ReportStatus::RolledBack), 200, &[]),
        member("c", None, 0, &[]),
    ];
    let points = guard_points(&rule, &members, false);
    let got: Vec<(u64, Option<f64>, u32)> = points
        .iter()
        .map(|p| (p.at, p.updated, p.updated_robots))
        .collect();
    assert_eq!(got, [(100, Some(0.0), 1), (200, Some(1.0), 2)]);
    assert_eq!(points[1].limit, Some(0.0));
    let reboots = guards::parse_rule("reboots:max>2").unwrap();
    assert!(guard_points(&reboots, &members, false).is_empty());
}

fn members() -> impl Strategy<Value = Vec<Member>> {
    let one = (
        proptest::option::of(prop_oneof![
            Just(ReportStatus::Success),
            Just(ReportStatus::Failure),
            Just(ReportStatus::RolledBack)
        ]),
        0u64..10,
        proptest::collection::vec((0u64..10, -100.0f64..100.0), 0..6),
    );
    proptest::collection::vec(one, 0..8).prop_map(|ms| {
        ms.into_iter()
            .enumerate()
            .map(|(i, (status, at, values))| Member {
                device_id: format!("r{i}"),
                status,
                changed_at: at * MINUTE,
                buckets: values
                    .into_iter()
                    .map(|(t, v)| Bucket::sample(t * MINUTE, v))
                    .collect(),
            })
            .collect()
    })
}

proptest! {
    /// Each point counts every member with a value in its bucket once, on the side its status then puts it,
    /// and says what the guards would say about the same values.
    #[test]
    fn points_agree_with_the_guards(ms in members(), min in 1u32..3, revert in any::<bool>()) {
        let mut rule = guards::parse_rule("lat:p95>50,+20%").unwrap();
        rule.min_robots = min;
        let points = guard_points(&rule, &ms, revert);
        let mut starts: Vec<u64> = ms.iter().flat_map(|m| m.buckets.iter().map(|b| b.at)).collect();
        starts.sort_unstable();
        starts.dedup();
        for p in &points {
            let mut sides = Sides::default();
            for m in &ms {
                let values: Vec<f64> = m.buckets.iter().filter(|b| b.at == p.at).map(|b| b.sum).collect();
                if values.is_empty() {
                    continue;
                }
                let value = values.iter().sum::<f64>() / values.len() as f64;
                let o = Observed { device_id: m.device_id.clone(), value };
                if m.status == Some(ReportStatus::Success) && m.changed_at < p.at + MINUTE {
                    sides.updated.push(o);
                } else if !revert {
                    sides.baseline.push(o);
                }
            }
            prop_assert_eq!(p.updated_robots as usize, sides.updated.len());
            prop_assert_eq!(p.baseline_robots as usize, sides.baseline.len());
            let c = guards::compare(&rule, &sides);
            prop_assert_eq!((p.updated, p.baseline, p.limit), (c.updated, c.baseline, c.limit));
            let breached = matches!((p.updated, p.limit), (Some(u), Some(l)) if u > l);
            prop_assert_eq!(breached, guards::check(&rule, &sides, p.at).is_some());
        }
        if !revert {
            prop_assert_eq!(points.iter().map(|p| p.at).collect::<Vec<_>>(), starts);
        }
    }
}
