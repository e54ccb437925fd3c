//! The rollouts active during the run: one to the canary ring (its polls carry an offer, as before) and the rest
//! aimed like an operator's: tag and version filters, several stages with soak and deadline, and health guards
//! on the metrics the simulated robots report. They make the server's per-poll rollout decisions and its guard
//! tick work over many active rollouts, not one.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_protocol::fleet::{GuardRule, GuardStat, StageRules, TargetFilter};

use crate::traffic::{COMPATIBLE, MODELS, SITES};

/// The version rollout `k` ships (`1.1.k`).
fn version(k: usize) -> String {
    format!("1.1.{k}")
}

/// What rollout `k` of `count` is: `0` goes to the whole canary ring in one stage; the others each aim at one
/// site and robot model (and ring, past 40), first 2 % of it (so about as many polls carry an offer as with the canary alone), with
/// guards on latency and error rate, and every other one also on a version range.
pub(crate) fn request(k: usize, bundle_id: &str) -> CreateRolloutRequest {
    if k == 0 {
        return CreateRolloutRequest {
            bundle_id: bundle_id.into(),
            tags: BTreeMap::from([("ring".to_string(), "canary".to_string())]),
            stages: Some(vec![100]),
            failure_threshold: Some(0.5),
            name: Some("ota-loadgen canary".into()),
            ..Default::default()
        };
    }
    let site = format!("warehouse-{}", k % SITES);
    let model = MODELS[(k / SITES) % MODELS.len()];
    CreateRolloutRequest {
        bundle_id: bundle_id.into(),
        stages: Some(vec![2, 50, 100]),
        failure_threshold: Some(0.2),
        name: Some(format!("ota-loadgen {model}s of {site}")),
        filter: Some(TargetFilter {
            tags: {
                let mut tags = BTreeMap::from([
                    ("site".to_string(), site),
                    ("model".to_string(), model.to_string()),
                ]);
                // Past one rollout per site and model, the next ones aim at the main ring of each.
                if k >= SITES * MODELS.len() {
                    tags.insert("ring".to_string(), "main".to_string());
                }
                tags
            },
            group: None,
            versions: k
                .is_multiple_of(2)
                .then(|| ">=1.0.0, <1.1.0".parse().expect("a valid range")),
        }),
        rules: StageRules {
            soak_secs: 600,
            deadline_secs: 3600,
        },
        guards: vec![
            GuardRule {
                metric: "inference_latency_ms".into(),
                stat: GuardStat::P95,
                max: Some(250.0),
                max_increase_percent: Some(20.0),
                min_robots: 3,
            },
            GuardRule {
                metric: "error_rate".into(),
                stat: GuardStat::Mean,
                max: Some(0.05),
                max_increase_percent: None,
                min_robots: 3,
            },
        ],
        watch_secs: 3600,
        ..Default::default()
    }
}

/// Publishes one signed bundle per rollout and creates `count` rollouts. Returns the devices targeted by the
/// canary rollout and by all of them. Setup, not load: the typed API client (blocking, so run it off the async
/// workers).
pub(crate) fn create(
    base: &str,
    admin: &str,
    key: &ota_keys::SecretKey,
    count: usize,
) -> anyhow::Result<(u64, u64)> {
    let api = ApiClient::new(&ClientOptions::new(base))?
        .with_token(admin)
        .with_timeout(Duration::from_secs(60));
    let (mut canary, mut total) = (0, 0);
    for k in 0..count {
        let image = ota_testkit::robot::noise(0x9E37_79B9_7F4A_7C15 + k as u64, 64 * 1024);
        let bundle =
            ota_testkit::robot::try_bundle_with(key, &version(k), COMPATIBLE, &[("rootfs", image)])
                .context("building a rollout bundle")?;
        let published = api.publish_bytes(bundle).context("publishing a bundle")?;
        let info = api
            .create_rollout(&request(k, &published.bundle_id))
            .with_context(|| format!("creating rollout {} of {count}", k + 1))?;
        if k == 0 {
            canary = info.counts.targeted;
        }
        total += info.counts.targeted;
    }
    Ok((canary, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_rollout_is_the_canary_and_the_others_are_aimed_and_guarded() {
        let canary = request(0, "b");
        assert_eq!(canary.tags.get("ring").map(String::as_str), Some("canary"));
        assert_eq!(canary.stages, Some(vec![100]));
        let mut aims = std::collections::BTreeSet::new();
        for k in 1..50 {
            let r = request(k, "b");
            let filter = r.filter.clone().expect("a filter");
            assert!(filter.tags.contains_key("site") && filter.tags.contains_key("model"));
            assert_eq!(filter.versions.is_some(), k.is_multiple_of(2));
            assert_eq!(r.guards.len(), 2);
            assert!(
                aims.insert(filter.tags),
                "rollout {k} aims where another does"
            );
        }
    }
}
