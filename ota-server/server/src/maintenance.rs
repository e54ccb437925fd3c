//! The maintenance score, pure: how much a robot needs a person's attention for wear and faults, 0 (like new)
//! to 100 (service it now), from what it reports and what the server knows. No I/O, no clock: the alerts
//! service gathers the [`Inputs`] and calls [`score`]. The rule, its defaults and a worked example are in
//! docs/maintenance.md; the weights and limits are `ota-server serve` flags ([`crate::alerts::AlertArgs`]).
//!
//! Each component is a wear fraction in [0, 1]; the score is their weighted mean × 100 over the components
//! known for this robot (a robot without a battery metric is judged on the rest). A robot that never polled,
//! or reports none of the wear metrics ([`METRIC_CAPACITY`], [`METRIC_CYCLES`], [`METRIC_HOURS`]), has no
//! score: its failures and rollbacks alone are what the fleet table's health column shows already.

use std::collections::BTreeMap;

/// Telemetry metric: battery capacity as a share of its design capacity (state of health), percent.
pub const METRIC_CAPACITY: &str = "battery_capacity_percent";
/// Telemetry metric: full charge cycles the battery went through.
pub const METRIC_CYCLES: &str = "battery_cycles";
/// Telemetry metric: the robot's operating hours (odometer of its drive or compute).
pub const METRIC_HOURS: &str = "operating_hours";

/// The weights and the limits at which a component counts as fully worn.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Weight of battery wear.
    pub battery: f64,
    /// Weight of failed updates.
    pub errors: f64,
    /// Weight of reboots.
    pub reboots: f64,
    /// Weight of rollbacks.
    pub rollbacks: f64,
    /// Weight of operating hours.
    pub hours: f64,
    /// Capacity (percent of design) at which a battery counts as worn out.
    pub end_of_life_capacity: f64,
    /// Charge cycles a battery is rated for.
    pub rated_cycles: f64,
    /// Failed updates in the window that count as fully worn.
    pub errors_full: f64,
    /// Boots in the window that count as fully worn.
    pub reboots_full: f64,
    /// Rollbacks in the window that count as fully worn.
    pub rollbacks_full: f64,
    /// Operating hours between services.
    pub service_hours: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            battery: 3.0,
            errors: 2.0,
            reboots: 1.0,
            rollbacks: 2.0,
            hours: 1.0,
            end_of_life_capacity: 70.0,
            rated_cycles: 1000.0,
            errors_full: 5.0,
            reboots_full: 10.0,
            rollbacks_full: 3.0,
            service_hours: 5000.0,
        }
    }
}

/// What the server knows of one robot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Whether it ever polled (no score before).
    pub seen: bool,
    /// Its latest reported metrics ([`METRIC_CAPACITY`], [`METRIC_CYCLES`], [`METRIC_HOURS`]).
    pub metrics: BTreeMap<String, f64>,
    /// Its battery capacity's loss rate in percent points per 30 days, from the telemetry history
    /// ([`capacity_trend`]); a battery losing capacity faster is nearer its end than its level says.
    pub capacity_loss_per_30d: Option<f64>,
    /// Failed updates in the window (the last 30 days of reports).
    pub failures: u64,
    /// Rollbacks in the window.
    pub rollbacks: u64,
    /// Boots the server saw in its recent telemetry.
    pub reboots: u64,
}

/// The components of a score (`None`: unknown for this robot), each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Components {
    /// Battery wear.
    pub battery: Option<f64>,
    /// Failed updates.
    pub errors: Option<f64>,
    /// Reboots.
    pub reboots: Option<f64>,
    /// Rollbacks.
    pub rollbacks: Option<f64>,
    /// Operating hours.
    pub hours: Option<f64>,
}

fn fraction(value: f64, full: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 0.0;
    }
    if !full.is_finite() || full <= 0.0 {
        return 1.0;
    }
    (value / full).min(1.0)
}

/// Each component's wear for a robot.
pub fn components(inputs: &Inputs, rule: &Rule) -> Components {
    let wear = [METRIC_CAPACITY, METRIC_CYCLES, METRIC_HOURS];
    if !inputs.seen || !wear.iter().any(|m| inputs.metrics.contains_key(*m)) {
        return Components::default();
    }
    let capacity = inputs.metrics.get(METRIC_CAPACITY).copied();
    let cycles = inputs.metrics.get(METRIC_CYCLES).copied();
    let capacity_wear = capacity.map(|c| {
        let span = 100.0 - rule.end_of_life_capacity;
        // Projected over the next 30 days at the measured loss rate.
        let ahead = c - inputs.capacity_loss_per_30d.unwrap_or(0.0).max(0.0);
        fraction(100.0 - ahead, span)
    });
    let cycle_wear = cycles.map(|n| fraction(n, rule.rated_cycles));
    let battery = match (capacity_wear, cycle_wear) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Components {
        battery,
        errors: Some(fraction(inputs.failures as f64, rule.errors_full)),
        reboots: Some(fraction(inputs.reboots as f64, rule.reboots_full)),
        rollbacks: Some(fraction(inputs.rollbacks as f64, rule.rollbacks_full)),
        hours: inputs
            .metrics
            .get(METRIC_HOURS)
            .map(|h| fraction(*h, rule.service_hours)),
    }
}

/// The score, 0-100 with one decimal; `None` when the robot never polled, reports no wear metric, or every
/// known component has weight 0.
pub fn score(inputs: &Inputs, rule: &Rule) -> Option<f64> {
    let c = components(inputs, rule);
    let parts = [
        (c.battery, rule.battery),
        (c.errors, rule.errors),
        (c.reboots, rule.reboots),
        (c.rollbacks, rule.rollbacks),
        (c.hours, rule.hours),
    ];
    let (mut sum, mut weights) = (0.0, 0.0);
    for (value, weight) in parts {
        let weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        if let Some(v) = value {
            sum += v * weight;
            weights += weight;
        }
    }
    (weights > 0.0).then(|| ((sum / weights) * 1000.0).round() / 10.0)
}

/// Loss of battery capacity in percent points per 30 days from `(time, mean capacity)` samples (a
/// least-squares slope, negated: a falling capacity gives a positive loss); `None` with fewer than two
/// samples or less than a day between the first and the last.
pub fn capacity_trend(samples: &[(u64, f64)]) -> Option<f64> {
    let samples: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|&(t, v)| (t as f64, v))
        .collect();
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    if samples.len() < 2 || (last - first).abs() < 86_400.0 {
        return None;
    }
    let n = samples.len() as f64;
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mv = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mt) * (s.1 - mv)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mt).powi(2)).sum();
    (var > 0.0).then(|| -cov / var * 30.0 * 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs() -> impl Strategy<Value = Inputs> {
        (
            proptest::option::of(0.0f64..=100.0),
            proptest::option::of(0.0f64..5000.0),
            proptest::option::of(0.0f64..20000.0),
            proptest::option::of(-5.0f64..20.0),
            0u64..20,
            0u64..20,
            0u64..40,
        )
            .prop_map(|(cap, cycles, hours, trend, f, r, b)| {
                let mut metrics = BTreeMap::new();
                if let Some(v) = cap {
                    metrics.insert(METRIC_CAPACITY.to_string(), v);
                }
                if let Some(v) = cycles {
                    metrics.insert(METRIC_CYCLES.to_string(), v);
                }
                if let Some(v) = hours {
                    metrics.insert(METRIC_HOURS.to_string(), v);
                }
                Inputs {
                    seen: true,
                    metrics,
                    capacity_loss_per_30d: trend,
                    failures: f,
                    rollbacks: r,
                    reboots: b,
                }
            })
    }

    proptest! {
        /// Always 0-100, and `None` exactly for a robot never seen or without a wear metric.
        #[test]
        fn bounded_and_known_once_seen_with_a_wear_metric(i in inputs()) {
            let known = !i.metrics.is_empty();
            match score(&i, &Rule::default()) {
                Some(s) => prop_assert!(known && (0.0..=100.0).contains(&s), "{s}"),
                None => prop_assert!(!known),
            }
            prop_assert_eq!(score(&Inputs { seen: false, ..i }, &Rule::default()), None);
        }

        /// More failures, rollbacks, reboots, hours or cycles, or less capacity, never lower the score.
        #[test]
        fn more_wear_never_lowers_it(i in inputs(), more in 1u64..5, less in 0.1f64..30.0) {
            let rule = Rule::default();
            let Some(base) = score(&i, &rule) else { return Ok(()) };
            let worse = [
                Inputs { failures: i.failures + more, ..i.clone() },
                Inputs { rollbacks: i.rollbacks + more, ..i.clone() },
                Inputs { reboots: i.reboots + more, ..i.clone() },
            ];
            for w in worse {
                prop_assert!(score(&w, &rule).unwrap() >= base);
            }
            for (metric, delta) in [(METRIC_HOURS, more as f64), (METRIC_CYCLES, more as f64), (METRIC_CAPACITY, -less)] {
                if let Some(v) = i.metrics.get(metric) {
                    let mut w = i.clone();
                    w.metrics.insert(metric.to_string(), v + delta);
                    prop_assert!(score(&w, &rule).unwrap() >= base, "{metric}");
                }
            }
        }

        /// A component of weight 0 does not count, whatever its value.
        #[test]
        fn weight_zero_ignores_a_component(i in inputs(), f in 0u64..50) {
            let rule = Rule { errors: 0.0, ..Rule::default() };
            prop_assert_eq!(score(&i, &rule), score(&Inputs { failures: f, ..i.clone() }, &rule));
        }

        /// A robot without wear scores 0; with every component fully worn, 100.
        #[test]
        fn the_ends(weights in proptest::collection::vec(0.1f64..10.0, 5)) {
            let rule = Rule { battery: weights[0], errors: weights[1], reboots: weights[2], rollbacks: weights[3], hours: weights[4], ..Rule::default() };
            let new = Inputs { seen: true, metrics: BTreeMap::from([(METRIC_CAPACITY.to_string(), 100.0)]), ..Inputs::default() };
            prop_assert_eq!(score(&new, &rule), Some(0.0));
            let worn = Inputs {
                seen: true,
                metrics: BTreeMap::from([(METRIC_CAPACITY.to_string(), 60.0), (METRIC_HOURS.to_string(), 9000.0)]),
                capacity_loss_per_30d: None,
                failures: 9, rollbacks: 9, reboots: 99,
            };
            prop_assert_eq!(score(&worn, &rule), Some(100.0));
        }

        /// A steady linear loss is measured as that loss.
        #[test]
        fn trend_of_a_line(loss in 0.0f64..10.0, start in 50.0f64..100.0, days in 2u64..60) {
            let samples: Vec<(u64, f64)> = (0..=days)
                .map(|d| (d * 86_400, start - loss * d as f64 / 30.0))
                .collect();
            let t = capacity_trend(&samples).unwrap();
            prop_assert!((t - loss).abs() < 1e-6, "{t} vs {loss}");
        }
    }

    /// The worked example of docs/maintenance.md.
    #[test]
    fn the_documented_example() {
        let i = Inputs {
            seen: true,
            metrics: BTreeMap::from([
                (METRIC_CAPACITY.to_string(), 82.0),
                (METRIC_CYCLES.to_string(), 450.0),
                (METRIC_HOURS.to_string(), 2500.0),
            ]),
            capacity_loss_per_30d: Some(3.0),
            failures: 1,
            rollbacks: 1,
            reboots: 4,
        };
        // battery max(21/30, 0.45) = 0.7; errors 0.2; reboots 0.4; rollbacks 0.333; hours 0.5
        // (3×0.7 + 2×0.2 + 1×0.4 + 2×0.3333 + 1×0.5) / 9 = 4.0667 / 9 = 0.4519
        assert_eq!(score(&i, &Rule::default()), Some(45.2));
        assert_eq!(capacity_trend(&[(0, 80.0)]), None);
        assert_eq!(capacity_trend(&[(0, 80.0), (3600, 70.0)]), None);
    }
}
