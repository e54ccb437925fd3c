//! Health guards, pure: given a rollout's rules and each robot's recent value of a metric, on the updated side
//! and on the not-yet-updated side, say whether a rule is breached and what the rollout does about it. No I/O,
//! no clock (time is a parameter). The watch service (`services::watch`) gathers the values and applies the
//! decision.
//!
//! A rule (`metric:stat>bound` or `metric:stat>+N%`) is breached when the statistic over the updated robots
//! exceeds the fixed bound, or exceeds the same statistic over the not-yet-updated robots by more than N % of
//! it. Until `min_robots` updated robots (and as many on the other side, for the comparison) have a value, the
//! rule says nothing.

use ota_protocol::admin::RolloutState;
use ota_protocol::fleet::{GuardBreach, GuardRule, GuardStat};

/// Pseudo-metric: 1 for an updated robot that rolled back in this rollout, else 0.
pub const ROLLBACKS: &str = "rollbacks";
/// Pseudo-metric: boots of a robot since its update (not counting the update's own), from uptime resets.
pub const REBOOTS: &str = "reboots";
/// Most robots a breach names.
pub const MAX_NAMED: usize = 20;
/// Most rules per rollout.
pub const MAX_RULES: usize = 16;

/// One robot's value of a rule's metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Device id.
    pub device_id: String,
    /// Its recent value.
    pub value: f64,
}

/// The values a rule is judged on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sides {
    /// Robots that reported success in this rollout.
    pub updated: Vec<Observed>,
    /// Targeted robots not updated yet (empty for a revert: only the fixed bound applies).
    pub baseline: Vec<Observed>,
}

/// The statistic over `values` (finite ones); `None` when there are none. p95 is the nearest-rank percentile.
pub fn stat(stat: GuardStat, values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    Some(match stat {
        GuardStat::Mean => v.iter().sum::<f64>() / v.len() as f64,
        GuardStat::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        GuardStat::P95 => {
            v.sort_by(f64::total_cmp);
            let rank = (0.95 * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        }
    })
}

fn finite(side: &[Observed]) -> Vec<f64> {
    side.iter()
        .map(|o| o.value)
        .filter(|v| v.is_finite())
        .collect()
}

/// What a rule compares, from the robots' values: its statistic over each side (`None` with fewer than
/// `min_robots` values there) and the limit the updated side must stay under (the fixed bound or the rise over
/// the baseline, the lower; `None` when neither applies yet). The evaluator and the history charts share it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The statistic over the updated robots.
    pub updated: Option<f64>,
    /// The statistic over the not-yet-updated robots.
    pub baseline: Option<f64>,
    /// The limit.
    pub limit: Option<f64>,
}

/// The [`Comparison`] of one rule over `sides`.
pub fn compare(rule: &GuardRule, sides: &Sides) -> Comparison {
    let min = rule.min_robots.max(1) as usize;
    let side = |s: &[Observed]| {
        let values = finite(s);
        (values.len() >= min)
            .then(|| stat(rule.stat, &values))
            .flatten()
    };
    let baseline = side(&sides.baseline);
    let relative_limit = rule
        .max_increase_percent
        .zip(baseline)
        .map(|(pct, b)| b + b.abs() * pct / 100.0);
    Comparison {
        updated: side(&sides.updated),
        baseline,
        limit: [rule.max, relative_limit]
            .into_iter()
            .flatten()
            .reduce(f64::min),
    }
}

/// Judges one rule at time `at`: the breach, or `None` (healthy, or not enough robots yet).
pub fn check(rule: &GuardRule, sides: &Sides, at: u64) -> Option<GuardBreach> {
    let Comparison {
        updated: u,
        baseline,
        limit,
    } = compare(rule, sides);
    let (u, limit) = (u?, limit?);
    if u <= limit {
        return None;
    }
    let mut worst: Vec<&Observed> = sides
        .updated
        .iter()
        .filter(|o| o.value.is_finite() && o.value > limit)
        .collect();
    worst.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then(a.device_id.cmp(&b.device_id))
    });
    Some(GuardBreach {
        rule: rule.clone(),
        updated: u,
        baseline,
        robots: worst
            .into_iter()
            .take(MAX_NAMED)
            .map(|o| o.device_id.clone())
            .collect(),
        at,
    })
}

/// The first breached rule, in the order configured.
pub fn first_breach(
    rules: &[GuardRule],
    mut sides: impl FnMut(&GuardRule) -> Sides,
    at: u64,
) -> Option<GuardBreach> {
    rules.iter().find_map(|r| check(r, &sides(r), at))
}

/// Whether the guards of a rollout in `state` are watching at `now`: while it is active, and for `watch_secs`
/// after it completed.
pub fn watching(state: RolloutState, completed_at: Option<u64>, watch_secs: u64, now: u64) -> bool {
    match state {
        RolloutState::Active => true,
        RolloutState::Completed => completed_at.is_some_and(|c| now < c.saturating_add(watch_secs)),
        RolloutState::Paused | RolloutState::Aborted => false,
    }
}

/// What the evaluator does to a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing.
    Keep,
    /// Pause it with this reason and record the breach.
    Pause {
        /// The pause reason (names the rule, the metric, the values and the robots).
        reason: String,
        /// The breach to store.
        breach: GuardBreach,
    },
}

/// The decision for a rollout in `state` (watching or not, see [`watching`]) given the breach found, if any:
/// a breach of a watched rollout always pauses it; one that is not watched is left alone.
pub fn decide(watched: bool, breach: Option<GuardBreach>) -> Decision {
    match breach {
        Some(breach) if watched => Decision::Pause {
            reason: describe(&breach),
            breach,
        },
        _ => Decision::Keep,
    }
}

fn stat_name(stat: GuardStat) -> &'static str {
    match stat {
        GuardStat::P95 => "p95",
        GuardStat::Mean => "mean",
        GuardStat::Max => "max",
    }
}

fn number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A rule as written on the command line: `metric:stat>bound`, `metric:stat>+N%`, both bounds joined by `,`,
/// and `@N` for `min_robots` other than 1.
pub fn format_rule(rule: &GuardRule) -> String {
    let bounds: Vec<String> = [
        rule.max.map(number),
        rule.max_increase_percent
            .map(|p| format!("+{}%", number(p))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut text = format!(
        "{}:{}>{}",
        rule.metric,
        stat_name(rule.stat),
        bounds.join(",")
    );
    if rule.min_robots > 1 {
        text.push_str(&format!("@{}", rule.min_robots));
    }
    text
}

/// The pause reason of a breach: rule, metric, both values and the robots.
pub fn describe(b: &GuardBreach) -> String {
    let stat = stat_name(b.rule.stat);
    let baseline = b.baseline.map_or(String::new(), |v| {
        format!(" vs {} on robots not yet updated", number(v))
    });
    let robots = if b.robots.is_empty() {
        String::new()
    } else {
        format!("; robots: {}", b.robots.join(", "))
    };
    format!(
        "guard {} breached: {stat} {} of updated robots is {}{baseline}{robots}",
        format_rule(&b.rule),
        b.rule.metric,
        number(b.updated)
    )
}

/// Checks a rollout's rules: a metric name, at least one bound, finite bounds, at most [`MAX_RULES`].
pub fn validate(rules: &[GuardRule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} guards per rollout"));
    }
    for r in rules {
        if r.metric.is_empty() || r.metric.len() > crate::history::MAX_NAME {
            return Err(format!(
                "guard metric names must be 1-{} characters",
                crate::history::MAX_NAME
            ));
        }
        if r.max.is_none() && r.max_increase_percent.is_none() {
            return Err(format!(
                "guard on {} needs a bound: `max` or `max_increase_percent` (e.g. {0}:p95>+20%)",
                r.metric
            ));
        }
        if r.max.is_some_and(|v| !v.is_finite())
            || r.max_increase_percent
                .is_some_and(|v| !v.is_finite() || v < 0.0)
        {
            return Err(format!(
                "guard on {}: bounds must be finite numbers and the increase not negative",
                r.metric
            ));
        }
        if r.min_robots == 0 {
            return Err(format!(
                "guard on {}: min_robots must be at least 1",
                r.metric
            ));
        }
    }
    Ok(())
}

/// Parses a command-line guard: `METRIC[:STAT]>BOUND[,BOUND][@MIN_ROBOTS]` where STAT is `p95` (default),
/// `mean` or `max`, and BOUND is a number (fixed bound) or `+N%` (rise over the robots not yet updated).
/// Examples: `inference_latency_ms:p95>+20%`, `error_rate:mean>0.05`, `rollbacks:max>0`.
pub fn parse_rule(text: &str) -> Result<GuardRule, String> {
    let usage = || {
        format!(
            "guard {text:?} must read METRIC[:STAT]>BOUND, e.g. inference_latency_ms:p95>+20% or \
             error_rate:mean>0.05 (STAT: p95, mean, max; BOUND: a number or +N%; @N for min robots)"
        )
    };
    let (left, right) = text.split_once('>').ok_or_else(usage)?;
    let (metric, stat) = match left.split_once(':') {
        Some((m, s)) => (m.trim(), s.trim()),
        None => (left.trim(), "p95"),
    };
    let stat = match stat {
        "p95" => GuardStat::P95,
        "mean" => GuardStat::Mean,
        "max" => GuardStat::Max,
        _ => return Err(usage()),
    };
    let (bounds, min_robots) = match right.split_once('@') {
        Some((b, n)) => (b, n.trim().parse::<u32>().map_err(|_| usage())?),
        None => (right, 1),
    };
    let mut rule = GuardRule {
        metric: metric.to_string(),
        stat,
        max: None,
        max_increase_percent: None,
        min_robots,
    };
    for bound in bounds.split(',').map(str::trim) {
        if let Some(pct) = bound.strip_prefix('+').and_then(|b| b.strip_suffix('%')) {
            rule.max_increase_percent = Some(pct.trim().parse().map_err(|_| usage())?);
        } else {
            rule.max = Some(bound.parse().map_err(|_| usage())?);
        }
    }
    validate(std::slice::from_ref(&rule))?;
    Ok(rule)
}

#[cfg(test)]
mod tests;
