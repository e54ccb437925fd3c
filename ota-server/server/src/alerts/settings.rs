//! The alert, maintenance and retention settings: `ota-server serve` flags (so config-file keys, listed in
//! docs/server-config.md) and what they become.

use std::time::Duration;

use crate::maintenance::Rule;

use super::Thresholds;

/// `serve`'s alert, maintenance-score and report-retention flags.
#[derive(clap::Args, Clone, Debug)]
pub struct AlertArgs {
    /// Raise an `offline` alert for a robot not seen for this many seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_offline_after_secs: u64,
    /// Raise a `waiting` alert for a robot waiting on its readiness check (or a confirmation) this many
    /// seconds.
    #[arg(long, default_value_t = 14_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_waiting_after_secs: u64,
    /// Evaluate the alerts and maintenance scores this often, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub alert_interval_ms: u64,
    /// POST each alert that opens or clears to this URL (JSON, signed with --alert-webhook-secret).
    #[arg(long, value_name = "URL")]
    pub alert_webhook_url: Option<String>,
    /// Key of the webhook's HMAC-SHA256 signature header X-OTA-Signature (at least 16 characters).
    #[arg(long, env = "OTA_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// File holding the webhook secret (instead of --alert-webhook-secret).
    #[arg(long, conflicts_with = "alert_webhook_secret", value_name = "FILE")]
    pub alert_webhook_secret_file: Option<std::path::PathBuf>,
    /// Raise a `maintenance_due` alert above this maintenance score (0-100; docs/maintenance.md).
    #[arg(long, default_value_t = 70.0)]
    pub maintenance_alert_score: f64,
    /// Weight of battery wear in the maintenance score.
    #[arg(long, default_value_t = 3.0)]
    pub maintenance_weight_battery: f64,
    /// Weight of failed updates (last 30 days) in the maintenance score.
    #[arg(long, default_value_t = 2.0)]
    pub maintenance_weight_errors: f64,
    /// Weight of reboots in the maintenance score.
    #[arg(long, default_value_t = 1.0)]
    pub maintenance_weight_reboots: f64,
    /// Weight of rollbacks (last 30 days) in the maintenance score.
    #[arg(long, default_value_t = 2.0)]
    pub maintenance_weight_rollbacks: f64,
    /// Weight of operating hours in the maintenance score.
    #[arg(long, default_value_t = 1.0)]
    pub maintenance_weight_hours: f64,
    /// Operating hours between services (the hours component is full there).
    #[arg(long, default_value_t = 5000.0)]
    pub maintenance_service_hours: f64,
    /// Charge cycles the robots' batteries are rated for.
    #[arg(long, default_value_t = 1000.0)]
    pub maintenance_rated_cycles: f64,
    /// Delete device reports older than this many days (the hourly compaction; 0: keep them).
    #[arg(long, default_value_t = 365)]
    pub reports_retention_days: u64,
}

/// What the flags say.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    /// Rule thresholds.
    pub thresholds: Thresholds,
    /// How often the alerts tick runs.
    pub interval: Duration,
    /// The webhook and its secret.
    pub webhook: Option<(String, String)>,
    /// The maintenance score's rule.
    pub rule: Rule,
    /// Reports older than this are deleted (`None`: kept).
    pub reports_retention_secs: Option<u64>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            thresholds: Thresholds::default(),
            interval: Duration::from_secs(10),
            webhook: None,
            rule: Rule::default(),
            reports_retention_secs: Some(365 * 86_400),
        }
    }
}

/// A webhook given without a usable secret, or a weight that is no number.
#[derive(Debug, thiserror::Error)]
pub enum AlertSettingsError {
    /// URL without secret, or the reverse.
    #[error("--alert-webhook-url and --alert-webhook-secret (or --alert-webhook-secret-file) go together")]
    Half,
    /// Secret too short.
    #[error("the alert webhook secret must be at least {min} characters long")]
    ShortSecret {
        /// The least accepted.
        min: usize,
    },
    /// Not an http(s) URL.
    #[error("--alert-webhook-url must be an http:// or https:// URL, not '{0}'")]
    Url(String),
    /// A weight or limit below zero or not finite.
    #[error("--{0} must be a number of 0 or more")]
    Negative(&'static str),
}

impl AlertArgs {
    /// The settings, with the webhook secret read from its file if given that way.
    pub fn settings(&self, secret: Option<String>) -> Result<AlertSettings, AlertSettingsError> {
        let webhook = match (&self.alert_webhook_url, secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(AlertSettingsError::Url(url.clone()));
                }
                let min = crate::tokens::MIN_SECRET_LEN;
                if secret.trim().len() < min {
                    return Err(AlertSettingsError::ShortSecret { min });
                }
                Some((url.clone(), secret.trim().to_string()))
            }
            _ => return Err(AlertSettingsError::Half),
        };
        let numbers = [
            ("maintenance-alert-score", self.maintenance_alert_score),
            (
                "maintenance-weight-battery",
                self.maintenance_weight_battery,
            ),
            ("maintenance-weight-errors", self.maintenance_weight_errors),
            (
                "maintenance-weight-reboots",
                self.maintenance_weight_reboots,
            ),
            (
                "maintenance-weight-rollbacks",
                self.maintenance_weight_rollbacks,
            ),
            ("maintenance-weight-hours", self.maintenance_weight_hours),
            ("maintenance-service-hours", self.maintenance_service_hours),
            ("maintenance-rated-cycles", self.maintenance_rated_cycles),
        ];
        if let Some((name, _)) = numbers.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            return Err(AlertSettingsError::Negative(name));
        }
        Ok(AlertSettings {
            thresholds: Thresholds {
                offline_after_secs: self.alert_offline_after_secs,
                waiting_after_secs: self.alert_waiting_after_secs,
                maintenance_score: self.maintenance_alert_score,
            },
            interval: Duration::from_millis(self.alert_interval_ms),
            webhook,
            rule: Rule {
                battery: self.maintenance_weight_battery,
                errors: self.maintenance_weight_errors,
                reboots: self.maintenance_weight_reboots,
                rollbacks: self.maintenance_weight_rollbacks,
                hours: self.maintenance_weight_hours,
                service_hours: self.maintenance_service_hours,
                rated_cycles: self.maintenance_rated_cycles,
                ..Rule::default()
            },
            reports_retention_secs: (self.reports_retention_days > 0)
                .then(|| self.reports_retention_days * 86_400),
        })
    }
}
