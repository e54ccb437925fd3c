//! Retention, pure: which bundles `ota-server bundles prune` deletes. A bundle any rollout names — active,
//! paused, finished or aborted — is kept, as hawkBit keeps a distribution set a rollout used (it only
//! soft-deletes one) and Mender refuses to delete an artifact a deployment uses: the rollout's history, its
//! revert and the server's own working set (a rollout is loaded with its bundle) need the bundle. A bundle
//! uploaded less than the minimum age ago is kept too, so one just published for a rollout not yet created
//! survives a prune. Reports and cleared alerts past `reports_retention_days` go at the hourly compaction.

use std::collections::BTreeSet;

/// One published bundle, as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleAge {
    /// Bundle id.
    pub id: String,
    /// Upload time.
    pub uploaded_at: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What a prune deletes and keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Bundles to delete, by id.
    pub delete: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// Kept: a rollout names them.
    pub in_use: u64,
    /// Kept: younger than the minimum age.
    pub recent: u64,
}

/// The default minimum age, in days.
pub const DEFAULT_MIN_AGE_DAYS: u64 = 7;

/// Decides a prune at `now`: `used` are the bundle ids rollouts name.
pub fn plan_prune(
    bundles: &[BundleAge],
    used: &BTreeSet<String>,
    now: u64,
    min_age_secs: u64,
) -> PrunePlan {
    let mut plan = PrunePlan::default();
    for b in bundles {
        if used.contains(&b.id) {
            plan.in_use += 1;
        } else if now.saturating_sub(b.uploaded_at) < min_age_secs {
            plan.recent += 1;
        } else {
            plan.delete.push(b.id.clone());
            plan.bytes += b.size;
        }
    }
    plan.delete.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Never a bundle a rollout uses or a young one; every other bundle; each counted once.
        #[test]
        fn keeps_exactly_the_used_and_the_young(
            bundles in proptest::collection::btree_map(0u8..50, (0u64..1000, 0u64..100, any::<bool>()), 0..30),
            now in 0u64..2000, min_age in 0u64..1000,
        ) {
            let list: Vec<BundleAge> = bundles.iter().map(|(id, (at, size, _))| BundleAge { id: id.to_string(), uploaded_at: *at, size: *size }).collect();
            let used: BTreeSet<String> = bundles.iter().filter(|(_, (_, _, u))| *u).map(|(id, _)| id.to_string()).collect();
            let plan = plan_prune(&list, &used, now, min_age);
            prop_assert_eq!(plan.delete.len() as u64 + plan.in_use + plan.recent, list.len() as u64);
            for b in &list {
                let deleted = plan.delete.contains(&b.id);
                prop_assert_eq!(deleted, !used.contains(&b.id) && now.saturating_sub(b.uploaded_at) >= min_age);
            }
            let bytes: u64 = list.iter().filter(|b| plan.delete.contains(&b.id)).map(|b| b.size).sum();
            prop_assert_eq!(plan.bytes, bytes);
        }
    }
}
