//! Alerts and maintenance scores, carried out: each tick gathers the fleet's [`Facts`] (and every robot's
//! maintenance [`Inputs`]), lets the pure rules decide ([`crate::alerts`], [`crate::maintenance`]), stores what
//! changed, tells the dashboards (`alerts_changed`) and queues webhook notices. The replica holding the lease
//! decides and writes; the others read the open alerts from the store, so every replica serves the same list,
//! metrics and events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ota_protocol::admin::{Admission, Event};
use ota_protocol::alerts::{Alert, AlertNotice, AlertsChanged};
use tokio::sync::mpsc;

use crate::alerts::track::{self, AlertRecord, Changes};
use crate::alerts::webhook::{self, Outcome, Sender};
use crate::alerts::{self, Facts, PendingFacts, RobotFacts, RolloutFacts};
use crate::error::ServiceError;
use crate::fleet::{lock, read, Shared};
use crate::maintenance::{self, Inputs};

/// Window of the reports the maintenance score counts.
const REPORT_WINDOW: u64 = 30 * 86_400;
/// Window of the battery history the capacity trend is fitted on.
const TREND_WINDOW: u64 = 30 * 86_400;
/// How often the capacity trends are refitted from the stored history (one query per robot reporting a
/// capacity).
const TREND_EVERY: u64 = 3600;

/// What the alert service keeps between ticks.
#[derive(Default)]
struct Memory {
    /// Open alerts, most urgent first.
    open: Vec<AlertRecord>,
    /// Capacity loss per 30 days by device, and when they were fitted.
    trends: (u64, HashMap<String, f64>),
    /// Whether the open set was read once (the first tick always tells the dashboards).
    loaded: bool,
}

/// Alerts, acknowledgements, maintenance scores and the webhook.
pub struct AlertService {
    shared: Arc<Shared>,
    memory: Mutex<Memory>,
    webhook: OnceLock<mpsc::UnboundedSender<AlertNotice>>,
}

impl AlertService {
    /// The service over the shared working set.
    pub fn new(shared: Arc<Shared>) -> Self {
        AlertService {
            shared,
            memory: Mutex::default(),
            webhook: OnceLock::new(),
        }
    }

    /// The open alerts, most urgent first.
    pub fn list(&self) -> Vec<Alert> {
        lock(&self.memory)
            .open
            .iter()
            .map(AlertRecord::to_alert)
            .collect()
    }

    /// The `ota_alerts` and `ota_alert` families.
    pub fn render_metrics(&self) -> String {
        alerts::metrics::render(&lock(&self.memory).open)
    }

    /// Acknowledges an open alert for `by`.
    pub async fn ack(&self, id: &str, by: &str, now: u64) -> Result<Alert, ServiceError> {
        let (key, who) = (id.to_string(), by.to_string());
        let stored = self
            .shared
            .blocking(move |s| s.ack_alert(&key, &who, now))
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no open alert '{id}'; it may have cleared (GET /api/alerts lists the open ones)"
                ))
            })?;
        let mut memory = lock(&self.memory);
        if let Some(a) = memory.open.iter_mut().find(|a| a.id == stored.id) {
            a.acknowledged = stored.acknowledged.clone();
        }
        self.emit(&memory.open);
        Ok(stored.to_alert())
    }

    fn emit(&self, open: &[AlertRecord]) {
        self.shared.emit(Event::AlertsChanged(AlertsChanged {
            open: open.len() as u64,
            unacknowledged: open.iter().filter(|a| a.acknowledged.is_none()).count() as u64,
        }));
    }

    /// Starts delivering notices to the webhook through `sender` (a second call does nothing).
    pub fn start_webhook(&self, url: String, secret: String, sender: Arc<dyn Sender>) {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.webhook.set(tx).is_ok() {
            tokio::spawn(deliver(rx, url, secret, sender));
        }
    }

    /// One evaluation at `now`: maintenance scores, then the alert rules.
    pub async fn tick(&self, now: u64) -> Result<(), ServiceError> {
        self.refresh_trends(now).await?;
        let tally = self
            .shared
            .blocking(move |s| s.report_tally(now.saturating_sub(REPORT_WINDOW)))
            .await?;
        self.score(&tally, now);
        let pending = self
            .shared
            .blocking(|s| s.identities())
            .await?
            .into_iter()
            .filter(|i| i.admission == Admission::Pending)
            .map(|i| PendingFacts {
                id: i.device_id,
                requested_at: i.requested_at,
            })
            .collect();
        let facts = Facts {
            pending,
            ..self.facts()
        };
        let conditions = alerts::conditions(&facts, &self.shared.config.alerts.thresholds, now);
        let stored = self.shared.blocking(|s| s.open_alerts()).await?;
        let (open, changes) = if self.shared.leads() {
            let changes = track::reconcile(&stored, &conditions, now);
            if !changes.is_empty() {
                let batch = changes.clone();
                self.shared.blocking(move |s| s.save_alerts(&batch)).await?;
            }
            (track::apply(&stored, &changes), changes)
        } else {
            (
                track::apply(&stored, &Changes::default()),
                Changes::default(),
            )
        };
        self.notify(&changes, now);
        let mut memory = lock(&self.memory);
        if !memory.loaded || memory.open != open {
            self.emit(&open);
        }
        memory.open = open;
        memory.loaded = true;
        Ok(())
    }

    fn notify(&self, changes: &Changes, now: u64) {
        let Some(queue) = self.webhook.get() else {
            return;
        };
        let notices = changes
            .opened
            .iter()
            .map(|a| ("opened", a))
            .chain(changes.cleared.iter().map(|a| ("cleared", a)));
        for (event, a) in notices {
            let _ = queue.send(AlertNotice {
                event: event.into(),
                alert: a.to_alert(),
                at: now,
            });
        }
    }

    /// The robots' and rollouts' facts from memory.
    fn facts(&self) -> Facts {
        let fleet = read(&self.shared.fleet);
        let robots = fleet
            .devices
            .values()
            .map(|d| {
                let r = &lock(d).record;
                RobotFacts {
                    id: r.device_id.clone(),
                    enrolled_at: r.enrolled_at,
                    last_seen: r.state.last_seen,
                    last_status: r.state.last_status.as_ref().map(|s| (s.status, s.at)),
                    waiting_since: r.state.waiting.as_ref().and_then(|w| {
                        r.state
                            .last_seen
                            .map(|seen| seen.saturating_sub(w.for_secs))
                    }),
                    freeze: r.state.freeze_alarm.as_ref().map(|f| f.reason),
                    maintenance_score: r.state.maintenance_score,
                }
            })
            .collect();
        let rollouts = fleet
            .rollouts
            .values()
            .map(|r| RolloutFacts {
                id: r.record.rollout_id,
                name: r.record.name.clone(),
                state: r.record.state,
                pause_reason: r.record.pause_reason.clone(),
                breach_at: r.record.aim.breach.as_ref().map(|b| b.at),
            })
            .collect();
        Facts {
            robots,
            rollouts,
            pending: Vec::new(),
        }
    }

    /// Sets every robot's maintenance score.
    fn score(&self, tally: &[crate::store::alerts::ReportTally], now: u64) {
        let rule = &self.shared.config.alerts.rule;
        let tally: HashMap<&str, _> = tally.iter().map(|t| (t.device_id.as_str(), t)).collect();
        let trends = lock(&self.memory).trends.1.clone();
        let fleet = read(&self.shared.fleet);
        let recorder = lock(&self.shared.history);
        for (id, d) in &fleet.devices {
            let mut d = lock(d);
            let t = tally.get(id.as_str());
            let inputs = Inputs {
                seen: d.record.state.last_seen.is_some(),
                metrics: d
                    .record
                    .state
                    .telemetry
                    .as_ref()
                    .map(|t| t.metrics.clone())
                    .unwrap_or_default(),
                capacity_loss_per_30d: trends.get(id).copied(),
                failures: t.map_or(0, |t| t.failures),
                rollbacks: t.map_or(0, |t| t.rollbacks),
                reboots: recorder
                    .device(id)
                    .map_or(0, |r| r.boots_since(now.saturating_sub(7 * 86_400))),
            };
            d.record.state.maintenance_score = maintenance::score(&inputs, rule);
        }
    }

    /// Refits the battery capacity trends from the stored history, at most every [`TREND_EVERY`].
    async fn refresh_trends(&self, now: u64) -> Result<(), ServiceError> {
        if lock(&self.memory).trends.0 + TREND_EVERY > now {
            return Ok(());
        }
        let ids: Vec<String> = read(&self.shared.fleet)
            .devices
            .iter()
            .filter(|(_, d)| {
                lock(d)
                    .record
                    .state
                    .telemetry
                    .as_ref()
                    .is_some_and(|t| t.metrics.contains_key(maintenance::METRIC_CAPACITY))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let since = now.saturating_sub(TREND_WINDOW);
        let trends = self
            .shared
            .blocking(move |s| {
                let mut out = HashMap::new();
                for id in ids {
                    let buckets = s.history(&id, maintenance::METRIC_CAPACITY, since)?;
                    let samples: Vec<(u64, f64)> =
                        buckets.iter().map(|b| (b.at, b.mean())).collect();
                    if let Some(t) = maintenance::capacity_trend(&samples) {
                        out.insert(id, t);
                    }
                }
                Ok(out)
            })
            .await?;
        lock(&self.memory).trends = (now, trends);
        Ok(())
    }
}

/// Delivers notices one at a time, in order, each retried on [`webhook::retry_delay`]'s schedule.
async fn deliver(
    mut queue: mpsc::UnboundedReceiver<AlertNotice>,
    url: String,
    secret: String,
    sender: Arc<dyn Sender>,
) {
    while let Some(notice) = queue.recv().await {
        let body = webhook::body(&notice);
        let signature = webhook::signature(secret.as_bytes(), &body);
        let mut attempt = 1;
        loop {
            let Some(delay) = webhook::retry_delay(attempt) else {
                tracing::error!(
                    "alert webhook {url}: gave up on alert {} after {} attempts",
                    notice.alert.id,
                    attempt - 1
                );
                break;
            };
            tokio::time::sleep(delay).await;
            let answer = sender.post(&url, body.clone(), signature.clone()).await;
            let status = answer.as_ref().ok().copied();
            match webhook::outcome(status) {
                Outcome::Delivered => break,
                Outcome::Refused => {
                    tracing::error!(
                        "alert webhook {url} refused alert {} with {status:?}; not retried",
                        notice.alert.id
                    );
                    break;
                }
                Outcome::Retry => {
                    let why = answer.map_or_else(|e| e, |s| format!("status {s}"));
                    tracing::warn!(
                        "alert webhook {url}: attempt {attempt} failed ({why}); will retry"
                    );
                }
            }
            attempt += 1;
        }
    }
}
