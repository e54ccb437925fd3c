//! Retention, carried out: deleting the bundles [`crate::retention::plan_prune`] picks (row first, in a
//! transaction that re-checks no rollout names it, then the blob; a blob left by a failure there is an orphan
//! the bundle store's sweep removes), and deleting old reports and cleared alerts.

use std::collections::BTreeSet;
use std::sync::Arc;

use ota_protocol::alerts::{PruneRequest, PruneResponse};

use crate::cluster::Subject;
use crate::error::ServiceError;
use crate::fleet::{read, write, Shared};
use crate::retention::{plan_prune, BundleAge, DEFAULT_MIN_AGE_DAYS};
use crate::store::alerts::BundleDeletion;

/// Bundle pruning and report retention.
#[derive(Clone)]
pub struct RetentionService(pub(crate) Arc<Shared>);

impl RetentionService {
    /// Deletes (or with `dry_run`, lists) the bundles no rollout names, older than the minimum age.
    pub async fn prune_bundles(
        &self,
        req: &PruneRequest,
        now: u64,
    ) -> Result<PruneResponse, ServiceError> {
        let shared = &self.0;
        let min_age = req.min_age_days.unwrap_or(DEFAULT_MIN_AGE_DAYS) * 86_400;
        // Under the writer lock: no rollout of this replica is created on a bundle being deleted (the store's
        // transaction re-checks for the other replicas').
        let _writer = shared.writer.lock().await;
        let plan = {
            let fleet = read(&shared.fleet);
            let bundles: Vec<BundleAge> = fleet
                .bundles
                .values()
                .map(|b| BundleAge {
                    id: b.bundle_id.clone(),
                    uploaded_at: b.uploaded_at,
                    size: b.size,
                })
                .collect();
            let used: BTreeSet<String> = fleet
                .rollouts
                .values()
                .map(|r| r.record.bundle_id.clone())
                .collect();
            plan_prune(&bundles, &used, now, min_age)
        };
        let mut answer = PruneResponse {
            dry_run: req.dry_run,
            deleted: Vec::new(),
            freed_bytes: 0,
            kept_in_use: plan.in_use,
            kept_recent: plan.recent,
        };
        if req.dry_run {
            answer.deleted = plan.delete;
            answer.freed_bytes = plan.bytes;
            return Ok(answer);
        }
        for id in plan.delete {
            let key = id.clone();
            match shared.blocking(move |s| s.delete_bundle(&key)).await? {
                BundleDeletion::InUse => {
                    answer.kept_in_use += 1;
                    continue;
                }
                BundleDeletion::Missing => {}
                BundleDeletion::Deleted => {}
            }
            let removed = write(&shared.fleet).bundles.remove(&id);
            shared.announce(Subject::Bundle(id.clone()), false);
            if let Err(e) = shared.config.bundle_store.delete(&id).await {
                tracing::warn!("bundle {id}: row deleted, blob left for the store's sweep: {e}");
            }
            tracing::info!("pruned bundle {id}");
            answer.freed_bytes += removed.map_or(0, |b| b.size);
            answer.deleted.push(id);
        }
        Ok(answer)
    }

    /// Deletes reports and cleared alerts older than `reports_retention_days`; 0 rows when retention is off.
    pub async fn prune_reports(&self, now: u64) -> Result<u64, ServiceError> {
        let Some(keep) = self.0.config.alerts.reports_retention_secs else {
            return Ok(0);
        };
        let before = now.saturating_sub(keep);
        self.0.blocking(move |s| s.prune_reports(before)).await
    }
}
