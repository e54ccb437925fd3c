//! Telemetry history: the write-behind flush hands the polled devices' telemetry to the recorder
//! (`observe`), closed buckets are stored right after each flush, old ones are downsampled and pruned
//! hourly, and `GET /api/devices/{id}/history` reads them. Nothing here runs on a poll.

use std::sync::Arc;

use ota_protocol::fleet::MetricHistory;

use crate::error::ServiceError;
use crate::fleet::{lock, read, unix_now, Shared};
use crate::history;
use crate::store::DeviceRecord;

/// Closed buckets kept in memory while the database refuses them; beyond this they are dropped (and logged).
const MAX_UNSTORED: usize = 200_000;

/// Records what the flush is about to persist: each device's telemetry, at its last poll.
pub(crate) fn observe(shared: &Shared, batch: &[DeviceRecord]) {
    let mut recorder = lock(&shared.history);
    for d in batch {
        if let (Some(t), Some(telemetry)) = (d.state.last_seen, &d.state.telemetry) {
            recorder.observe(&d.device_id, t, d.state.current_version.as_ref(), telemetry);
        }
    }
}

/// Telemetry history.
#[derive(Clone)]
pub struct HistoryService(pub(crate) Arc<Shared>);

impl HistoryService {
    /// Stores the buckets closed by `now` (with `all`, the open ones too: at shutdown). Returns how many.
    pub async fn flush(&self, now: u64, all: bool) -> Result<usize, ServiceError> {
        let shared = &self.0;
        let rows = lock(&shared.history).take_closed(now, all);
        if rows.is_empty() {
            return Ok(0);
        }
        let count = rows.len();
        let batch = rows.clone();
        if let Err(err) = shared.blocking(move |s| s.save_history(&batch)).await {
            let mut recorder = lock(&shared.history);
            if recorder.unstored() < MAX_UNSTORED {
                recorder.requeue(rows);
            } else {
                tracing::error!("dropping {count} telemetry history buckets: {err}");
            }
            return Err(err);
        }
        Ok(count)
    }

    /// Downsamples the stored history and deletes what is past the retention.
    pub async fn compact(&self, now: u64) -> Result<u64, ServiceError> {
        let retention = self.0.config.history_retention_secs;
        self.0
            .blocking(move |s| s.compact_history(now, retention))
            .await
    }

    /// A device's history of one metric from `since` (default: the last 24 hours), stored and not yet
    /// stored buckets merged.
    pub async fn query(
        &self,
        device_id: &str,
        metric: &str,
        since: Option<u64>,
    ) -> Result<MetricHistory, ServiceError> {
        let shared = &self.0;
        if !read(&shared.fleet).devices.contains_key(device_id) {
            return Err(ServiceError::NotFound(format!("no device '{device_id}'")));
        }
        if metric.is_empty() || metric.len() > history::MAX_NAME {
            return Err(ServiceError::Invalid(format!(
                "metric must be a name of 1-{} characters, e.g. metric=inference_latency_ms",
                history::MAX_NAME
            )));
        }
        let since = since.unwrap_or_else(|| unix_now().saturating_sub(history::FINE_SPAN));
        let (id, name) = (device_id.to_string(), metric.to_string());
        let mut buckets = shared
            .blocking(move |s| s.history(&id, &name, since))
            .await?;
        buckets.extend(lock(&shared.history).unsaved(device_id, metric));
        Ok(MetricHistory {
            device_id: device_id.to_string(),
            metric: metric.to_string(),
            points: history::points(&buckets, since),
        })
    }
}
