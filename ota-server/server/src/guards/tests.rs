use proptest::prelude::*;

use super::*;

fn side(values: &[f64]) -> Vec<Observed> {
    values
        .iter()
        .enumerate()
        .map(|(i, &value)| Observed {
            device_id: format!("r{i}"),
            value,
        })
        .collect()
}

fn sides(updated: &[f64], baseline: &[f64]) -> Sides {
    Sides {
        updated: side(updated),
        baseline: side(baseline)
            .into_iter()
            .map(|mut o| {
                o.device_id = format!("b{}", o.device_id);
                o
            })
            .collect(),
    }
}

fn rule(text: &str) -> GuardRule {
    parse_rule(text).unwrap()
}

#[test]
fn parses_the_documented_forms() {
    let r = rule("inference_latency_ms:p95>+20%");
    assert_eq!(r.metric, "inference_latency_ms");
    assert_eq!(r.stat, GuardStat::P95);
    assert_eq!(
        (r.max, r.max_increase_percent, r.min_robots),
        (None, Some(20.0), 1)
    );
    let r = rule("error_rate:mean>0.05");
    assert_eq!((r.stat, r.max), (GuardStat::Mean, Some(0.05)));
    let r = rule("rollbacks:max>0");
    assert_eq!(
        (r.metric.as_str(), r.stat, r.max),
        ("rollbacks", GuardStat::Max, Some(0.0))
    );
    let r = rule("cpu_percent>90,+50%@3");
    assert_eq!(
        (r.stat, r.max, r.max_increase_percent, r.min_robots),
        (GuardStat::P95, Some(90.0), Some(50.0), 3)
    );
    assert_eq!(format_rule(&r), "cpu_percent:p95>90,+50%@3");
    for text in [
        "inference_latency_ms:p95>+20%",
        "error_rate:mean>0.05",
        "rollbacks:max>0",
    ] {
        assert_eq!(format_rule(&rule(text)), text);
    }
}

#[test]
fn refuses_what_it_cannot_read_naming_the_form() {
    for bad in [
        "latency",
        "latency:p50>3",
        "latency:p95>fast",
        ":p95>3",
        "x>+a%",
        "x>1@0",
        "x>-5%",
    ] {
        let err = parse_rule(bad).unwrap_err();
        assert!(
            err.contains("METRIC[:STAT]>BOUND")
                || err.contains("min_robots")
                || err.contains("1-64"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn p95_is_the_nearest_rank() {
    let values: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(stat(GuardStat::P95, &values), Some(95.0));
    assert_eq!(stat(GuardStat::P95, &[3.0]), Some(3.0));
    assert_eq!(stat(GuardStat::Mean, &[1.0, 3.0]), Some(2.0));
    assert_eq!(stat(GuardStat::Max, &[1.0, f64::NAN, 3.0]), Some(3.0));
    assert_eq!(stat(GuardStat::Max, &[]), None);
}

#[test]
fn a_latency_rise_over_the_old_robots_breaches_and_names_the_slow_ones() {
    let r = rule("inference_latency_ms:p95>+20%");
    let b = check(&r, &sides(&[9999.0, 41.0, 9000.0], &[40.0, 42.0]), 7).unwrap();
    assert_eq!(b.updated, 9999.0);
    assert_eq!(b.baseline, Some(42.0));
    assert_eq!(b.robots, ["r0", "r2"]);
    assert_eq!(b.at, 7);
    let reason = describe(&b);
    assert!(reason.contains("inference_latency_ms:p95>+20%"), "{reason}");
    assert!(reason.contains("9999") && reason.contains("42"), "{reason}");
    assert!(reason.contains("r0, r2"), "{reason}");
    assert!(
        check(&r, &sides(&[45.0, 41.0], &[40.0, 42.0]), 7).is_none(),
        "within 20 %"
    );
    assert!(
        check(&r, &sides(&[9999.0], &[]), 7).is_none(),
        "no baseline: a relative rule cannot judge"
    );
}

#[test]
fn a_fixed_bound_needs_no_baseline() {
    let r = rule("error_rate:mean>0.05");
    assert!(check(&r, &sides(&[0.9, 0.9], &[]), 1).is_some());
    assert!(check(&r, &sides(&[0.01, 0.02], &[]), 1).is_none());
}

#[test]
fn only_active_rollouts_and_completed_ones_in_their_watch_period_are_watched() {
    assert!(watching(RolloutState::Active, None, 0, 10));
    assert!(watching(RolloutState::Completed, Some(100), 60, 159));
    assert!(!watching(RolloutState::Completed, Some(100), 60, 160));
    assert!(!watching(RolloutState::Completed, None, 60, 0));
    assert!(!watching(RolloutState::Paused, None, 60, 0));
    assert!(!watching(RolloutState::Aborted, None, 60, 0));
}

#[test]
fn validation_names_the_missing_bound() {
    let mut r = rule("x>1");
    r.max = None;
    assert!(validate(&[r]).unwrap_err().contains("needs a bound"));
}

fn stats() -> impl Strategy<Value = GuardStat> {
    prop_oneof![
        Just(GuardStat::P95),
        Just(GuardStat::Mean),
        Just(GuardStat::Max)
    ]
}

fn values(max: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1e4f64..1e4, 0..max)
}

fn any_rule() -> impl Strategy<Value = GuardRule> {
    (
        stats(),
        proptest::option::of(-1e4f64..1e4),
        proptest::option::of(0f64..500.0),
        1u32..6,
    )
        .prop_filter("a bound", |(_, m, p, _)| m.is_some() || p.is_some())
        .prop_map(|(stat, max, max_increase_percent, min_robots)| GuardRule {
            metric: "m".into(),
            stat,
            max,
            max_increase_percent,
            min_robots,
        })
}

proptest! {
    /// A breach found for a watched rollout always pauses it, and the reason names the rule and metric.
    #[test]
    fn a_breached_guard_always_pauses(rule in any_rule(), up in values(12), base in values(12), at in 0u64..1000) {
        if let Some(breach) = check(&rule, &sides(&up, &base), at) {
            match decide(true, Some(breach.clone())) {
                Decision::Pause { reason, breach: stored } => {
                    prop_assert_eq!(stored, breach);
                    prop_assert!(reason.contains(&format_rule(&rule)));
                }
                Decision::Keep => prop_assert!(false, "a breach did not pause"),
            }
        }
        prop_assert_eq!(decide(true, None), Decision::Keep);
    }

    /// Fewer updated robots than min_robots: never a breach.
    #[test]
    fn no_breach_below_min_robots(rule in any_rule(), up in values(12), base in values(12)) {
        if up.len() < rule.min_robots as usize {
            prop_assert!(check(&rule, &sides(&up, &base), 0).is_none());
        }
    }

    /// Lowering a bound never turns a breach into health (monotonic in the fixed bound and the rise).
    #[test]
    fn monotonic_in_the_bound(rule in any_rule(), up in values(12), base in values(12), lower in 0f64..1e4) {
        let s = sides(&up, &base);
        if check(&rule, &s, 0).is_some() {
            let mut tighter = rule.clone();
            tighter.max = rule.max.map(|m| m - lower);
            tighter.max_increase_percent = rule.max_increase_percent.map(|p| (p - lower).max(0.0));
            prop_assert!(check(&tighter, &s, 0).is_some());
        }
    }

    /// A breach's updated value really exceeds a configured limit, and it names only robots above it.
    #[test]
    fn a_breach_is_real(rule in any_rule(), up in values(30), base in values(12)) {
        if let Some(b) = check(&rule, &sides(&up, &base), 0) {
            let over_max = rule.max.is_some_and(|m| b.updated > m);
            let over_rise = rule.max_increase_percent.zip(b.baseline).is_some_and(|(p, base)| b.updated > base + base.abs() * p / 100.0);
            prop_assert!(over_max || over_rise);
            prop_assert!(b.robots.len() <= MAX_NAMED);
            prop_assert!(!b.robots.is_empty(), "the robots at the statistic are above the limit");
        }
    }

    /// Anything the formatter writes, the parser reads back.
    #[test]
    fn format_then_parse_round_trips(rule in any_rule()) {
        let mut r = rule;
        r.max = r.max.map(|m| (m * 1000.0).round() / 1000.0);
        r.max_increase_percent = r.max_increase_percent.map(|m| (m * 1000.0).round() / 1000.0);
        prop_assert_eq!(parse_rule(&format_rule(&r)).unwrap(), r);
    }
}
