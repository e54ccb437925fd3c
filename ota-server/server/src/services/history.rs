//! Telemetry history: the write-behind flush hands the polled devices' telemetry to the recorder
//! (`observe`), closed buckets are stored right after each flush, old ones are downsampled and pruned
//! hourly, and `GET /api/devices/{id}/history` reads them. Nothing here runs on a poll.

use std::sync::Arc;

use std::collections::BTreeSet;

use ota_protocol::fleet::{DeviceTimeline, GuardHistory, GuardSeries, MetricHistory};

use crate::charts;
use crate::error::ServiceError;
use crate::fleet::{lock, read, unix_now, Shared};
use crate::guards;
use crate::history::{self, Bucket};
use crate::store::DeviceRecord;

/// Reports read for a robot's update events (newest first; a robot rarely sends more in a retention span).
const TIMELINE_REPORTS: usize = 1000;

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

    /// The metrics a device has history of from `since` (default: the last 24 hours), stored or not yet, and
    /// its update events from its stored reports.
    pub async fn timeline(
        &self,
        device_id: &str,
        since: Option<u64>,
    ) -> Result<DeviceTimeline, ServiceError> {
        let shared = &self.0;
        self.known(device_id)?;
        let since = since.unwrap_or_else(|| unix_now().saturating_sub(history::FINE_SPAN));
        let id = device_id.to_string();
        let (stored, reports) = shared
            .blocking(move |s| {
                Ok((
                    s.history_metrics(&id, since)?,
                    s.reports(&id, TIMELINE_REPORTS)?,
                ))
            })
            .await?;
        let unsaved = lock(&shared.history).unsaved_metrics(device_id);
        let metrics: BTreeSet<String> = stored.into_iter().chain(unsaved).collect();
        Ok(DeviceTimeline {
            device_id: device_id.to_string(),
            since,
            metrics: metrics.into_iter().collect(),
            events: charts::update_events(&reports, since),
        })
    }

    /// Each guard of a rollout over time from `since` (default: an hour before it was created, at most the
    /// last 24 hours): its members' stored and not yet stored buckets, compared as the guards compare them.
    pub async fn guard_history(
        &self,
        rollout_id: u64,
        since: Option<u64>,
    ) -> Result<GuardHistory, ServiceError> {
        let shared = &self.0;
        let (rules, revert, created_at, members) = {
            let fleet = read(&shared.fleet);
            let r = fleet
                .rollouts
                .get(&rollout_id)
                .ok_or_else(|| ServiceError::NotFound(format!("no rollout {rollout_id}")))?;
            (
                r.record.aim.guards.clone(),
                r.record.aim.revert,
                r.record.created_at,
                r.members.clone(),
            )
        };
        let since = since.unwrap_or_else(|| {
            let day = unix_now().saturating_sub(history::FINE_SPAN);
            created_at.saturating_sub(history::HOUR).max(day)
        });
        let metrics: BTreeSet<String> = rules
            .iter()
            .map(|r| r.metric.clone())
            .filter(|m| m != guards::ROLLBACKS && m != guards::REBOOTS)
            .collect();
        let ids: Vec<String> = members.iter().map(|m| m.device_id.clone()).collect();
        let wanted: Vec<String> = metrics.iter().cloned().collect();
        let mut buckets: Vec<Vec<Vec<Bucket>>> = shared
            .blocking(move |s| {
                wanted
                    .iter()
                    .map(|metric| {
                        ids.iter()
                            .map(|id| s.history(id, metric, since))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        {
            let recorder = lock(&shared.history);
            for (metric, per_member) in metrics.iter().zip(&mut buckets) {
                for (m, b) in members.iter().zip(per_member.iter_mut()) {
                    b.extend(recorder.unsaved(&m.device_id, metric));
                }
            }
        }
        let guards = rules
            .iter()
            .map(|rule| {
                let of_metric = metrics
                    .iter()
                    .position(|m| *m == rule.metric)
                    .map(|i| &buckets[i]);
                let series: Vec<charts::Member> = members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| charts::Member {
                        device_id: m.device_id.clone(),
                        status: m.status,
                        changed_at: m.updated_at,
                        buckets: of_metric.map_or_else(Vec::new, |b| b[i].clone()),
                    })
                    .collect();
                let mut points = charts::guard_points(rule, &series, revert);
                points.retain(|p| p.at + history::MINUTE > since);
                GuardSeries {
                    rule: rule.clone(),
                    text: guards::format_rule(rule),
                    points,
                }
            })
            .collect();
        Ok(GuardHistory {
            rollout_id,
            since,
            guards,
        })
    }

    fn known(&self, device_id: &str) -> Result<(), ServiceError> {
        if read(&self.0.fleet).devices.contains_key(device_id) {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no device '{device_id}'")))
        }
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
        self.known(device_id)?;
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
