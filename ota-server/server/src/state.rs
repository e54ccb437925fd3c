//! [`AppState`]: the services a request handler calls, plus what belongs to the serving process (the
//! device-request limit, the shutdown signal, the event stream).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ota_protocol::admin::Event;
use tokio::sync::{broadcast, watch};

use crate::config::{Config, Secrets};
use crate::error::{ServiceError, StoreError};
use crate::fleet::Shared;
use crate::metrics::{Gauges, Metrics};
use crate::services::bundles::BundleService;
use crate::services::devices::DeviceService;
use crate::services::history::HistoryService;
use crate::services::rollouts::RolloutService;
use crate::services::sites::SiteService;
use crate::services::trust::TrustService;
use crate::services::watch::WatchService;
use crate::store::Store;
use crate::timestamp::Timestamper;
use crate::tokens::Caller;

/// Everything a request handler needs.
pub struct AppState {
    /// Users, sessions, API tokens, the audit trail.
    pub accounts: crate::accounts::service::AccountService,
    /// Devices and telemetry.
    pub devices: DeviceService,
    /// Staged rollouts.
    pub rollouts: RolloutService,
    /// Published bundles.
    pub bundles: BundleService,
    /// Telemetry history.
    pub history: HistoryService,
    /// Health-guard evaluation.
    pub watch: WatchService,
    /// The fleet's rotated trust roots.
    pub trust: TrustService,
    /// Alerts, acknowledgements, maintenance scores, the webhook.
    pub alerts: crate::services::alerts::AlertService,
    /// Deleting unused bundles and old reports.
    pub retention: crate::services::retention::RetentionService,
    /// Site plans for the map.
    pub sites: SiteService,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    inflight: AtomicUsize,
    /// Signs the freshness timestamps; unset: polls carry none.
    timestamper: OnceLock<Timestamper>,
}

/// Holds one slot of the device-request concurrency limit.
pub struct InflightGuard<'a>(&'a AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Builds the state from a store, loading the working set.
    pub fn new(
        config: Config,
        secrets: Secrets,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, StoreError> {
        let shared = Arc::new(Shared::load(config, secrets, store)?);
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(AppState {
            accounts: crate::accounts::service::AccountService::new(shared.clone()),
            devices: DeviceService(shared.clone()),
            rollouts: RolloutService(shared.clone()),
            bundles: BundleService(shared.clone()),
            history: HistoryService(shared.clone()),
            watch: WatchService::new(shared.clone()),
            trust: TrustService(shared.clone()),
            alerts: crate::services::alerts::AlertService::new(shared.clone()),
            retention: crate::services::retention::RetentionService(shared.clone()),
            sites: SiteService(shared.clone()),
            shared,
            shutdown,
            inflight: AtomicUsize::new(0),
            timestamper: OnceLock::new(),
        }))
    }

    /// Starts signing timestamps with `t`; only the first call counts (`false` for a later one).
    pub fn set_timestamper(&self, t: Timestamper) -> bool {
        self.timestamper.set(t).is_ok()
    }

    /// The current signed timestamp, naming the newest trust root version the server publishes; `None`
    /// without a timestamp key.
    pub fn timestamp(&self) -> Option<Arc<serde_json::Value>> {
        let t = self.timestamper.get()?;
        let trust_version = crate::services::trust::poll_version(&self.shared)
            .unwrap_or(self.shared.config.trust.version);
        Some(t.current(crate::fleet::unix_now(), trust_version))
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The counters and gauges in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let devices = self.devices.list();
        let mut text = crate::metrics::render(
            &self.shared.metrics,
            &Gauges {
                pending_writes: self.devices.pending_writes(),
                devices: self.devices.count(),
                bundles: self.bundles.count(),
                rollouts_by_state: self.rollouts.count_by_state(),
                devices_by_version: crate::metrics::fleet::devices_by_version(
                    devices.iter().map(|d| d.current_version.as_ref()),
                ),
                freeze_alarms: crate::metrics::fleet::freeze_alarms(
                    devices.iter().map(|d| d.freeze_alarm.as_ref()),
                ),
                rollouts: crate::metrics::fleet::rollout_progress(&self.rollouts.list()),
                lease_held: self.shared.leads(),
            },
        );
        text.push_str(&self.alerts.render_metrics());
        text
    }

    /// Identifies the caller of a bearer token: a user's session or API token, a device, or the bootstrap
    /// admin token (only while no user exists).
    pub fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        use crate::accounts::{API_TOKEN_PREFIX, SESSION_PREFIX};
        if token.starts_with(SESSION_PREFIX) || token.starts_with(API_TOKEN_PREFIX) {
            return self.accounts.authenticate(token);
        }
        let caller = self.devices.authenticate(token)?;
        if matches!(caller, Caller::User(_)) {
            self.accounts.bootstrap_allowed()?;
        }
        Ok(caller)
    }

    /// Persists pending device state (the write-behind flush) and the telemetry history buckets closed by now.
    pub async fn flush(&self) -> Result<usize, ServiceError> {
        let count = self.devices.flush().await?;
        self.history.flush(crate::fleet::unix_now(), false).await?;
        Ok(count)
    }

    /// Subscribes to events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived responses (event streams) to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Takes a slot of the device-request limit, or says to back off.
    pub fn enter_device_request(&self) -> Result<InflightGuard<'_>, ServiceError> {
        let now = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = InflightGuard(&self.inflight);
        if now > self.shared.config.max_inflight_device_requests {
            self.shared
                .metrics
                .backoff_503
                .fetch_add(1, Ordering::Relaxed);
            return Err(ServiceError::Busy {
                retry_after_secs: u64::from(self.shared.config.poll_jitter_secs.max(1)),
                message: "server busy; retry after the Retry-After delay".into(),
            });
        }
        Ok(guard)
    }
}
