//! `/metrics`: the counters the services bump, the request latency histograms, the process metrics and the
//! fleet gauges, rendered by the `prometheus` crate in the Prometheus text format (version 0.0.4).
//!
//! The services count with plain atomics (a poll is one `fetch_add`, no registry lookup); a scrape copies them
//! into a registry of its own. The latency histograms and the process collector live in one registry for the
//! server's life. Which rollouts and versions get a series is decided by the pure functions of [`fleet`].

pub mod fleet;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ota_protocol::device::ReportStatus;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub use fleet::{DeviceVersions, RolloutProgress};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds: 0.5 ms to ~8 s, doubling (a poll answers in well under a
/// millisecond; an upload of a large bundle takes seconds).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192,
];

/// Counters, and the registry of what lives as long as the server (latency histograms, process metrics).
#[derive(Debug)]
pub struct Metrics {
    /// Polls answered.
    pub polls: AtomicU64,
    /// Polls answered with an offer.
    pub offers: AtomicU64,
    /// Reports per status, in [`ReportStatus::ALL`] order.
    pub reports: [AtomicU64; ReportStatus::ALL.len()],
    /// Enrollments (including retries).
    pub enrollments: AtomicU64,
    /// Uploads stored.
    pub uploads_accepted: AtomicU64,
    /// Uploads of a bundle already stored.
    pub uploads_deduplicated: AtomicU64,
    /// Uploads refused.
    pub uploads_rejected: AtomicU64,
    /// Download responses started.
    pub downloads: AtomicU64,
    /// 429 answers.
    pub backoff_429: AtomicU64,
    /// 503 answers.
    pub backoff_503: AtomicU64,
    /// Write-behind flushes.
    pub flushes: AtomicU64,
    latency: HistogramVec,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "ota_http_request_duration_seconds",
                "Time from a request's arrival to its response headers, by route template, method and status class.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .unwrap_or_else(|e| unreachable!("the latency histogram's options are constant: {e}"));
        let registry = Registry::new();
        let register = |c: Box<dyn Collector>| {
            registry
                .register(c)
                .unwrap_or_else(|e| unreachable!("each collector is registered once: {e}"));
        };
        register(Box::new(latency.clone()));
        #[cfg(target_os = "linux")]
        register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            polls: AtomicU64::new(0),
            offers: AtomicU64::new(0),
            reports: Default::default(),
            enrollments: AtomicU64::new(0),
            uploads_accepted: AtomicU64::new(0),
            uploads_deduplicated: AtomicU64::new(0),
            uploads_rejected: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            backoff_429: AtomicU64::new(0),
            backoff_503: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            latency,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a report.
    pub fn report(&self, status: ReportStatus) {
        if let Some(i) = ReportStatus::ALL.iter().position(|s| *s == status) {
            self.reports[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one answered request: `route` is the router's path template (bounded: one per route, plus
    /// `unmatched`), `method` one of the few the routes use.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.latency
            .with_label_values(&[route, method, status_class(status)])
            .observe(elapsed.as_secs_f64());
    }
}

/// `2xx`, `4xx`, ...: the status label of the latency histograms (a class, so the series stay few).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Current values of the gauges (read from the working set by the caller).
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Devices whose poll state awaits the next flush.
    pub pending_writes: usize,
    /// Enrolled devices.
    pub devices: usize,
    /// Published bundles.
    pub bundles: usize,
    /// Rollouts per state name.
    pub rollouts_by_state: std::collections::BTreeMap<&'static str, u64>,
    /// Devices per running version (from [`fleet::devices_by_version`]).
    pub devices_by_version: DeviceVersions,
    /// Progress of the active and the most recent rollouts (from [`fleet::rollout_progress`]).
    pub rollouts: Vec<RolloutProgress>,
    /// Whether this replica holds the lease of the once-only jobs (stage starts, guards); always when alone.
    pub lease_held: bool,
    /// Devices with a freeze alarm per reason (from [`fleet::freeze_alarms`]).
    pub freeze_alarms: std::collections::BTreeMap<&'static str, u64>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("constant metric options: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("constant metric options: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
    g
}

fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The counters and fleet gauges of one scrape, as metric families.
fn snapshot(m: &Metrics, gauges: &Gauges) -> Vec<MetricFamily> {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let r = Registry::new();
    let no_labels: &[&str] = &[];
    counter(&r, "ota_polls_total", "Device polls answered.", &[])
        .with_label_values(no_labels)
        .inc_by(get(&m.polls));
    counter(
        &r,
        "ota_offers_total",
        "Polls answered with an update offer.",
        &[],
    )
    .with_label_values(no_labels)
    .inc_by(get(&m.offers));
    let reports = counter(
        &r,
        "ota_reports_total",
        "Device status reports stored, by status.",
        &["status"],
    );
    for (status, count) in ReportStatus::ALL.iter().zip(&m.reports) {
        reports
            .with_label_values(&[status.as_str()])
            .inc_by(get(count));
    }
    counter(
        &r,
        "ota_enrollments_total",
        "Device enrollments (retries included).",
        &[],
    )
    .with_label_values(no_labels)
    .inc_by(get(&m.enrollments));
    let uploads = counter(
        &r,
        "ota_uploads_total",
        "Bundle uploads by result.",
        &["result"],
    );
    for (result, count) in [
        ("accepted", &m.uploads_accepted),
        ("deduplicated", &m.uploads_deduplicated),
        ("rejected", &m.uploads_rejected),
    ] {
        uploads.with_label_values(&[result]).inc_by(get(count));
    }
    counter(
        &r,
        "ota_downloads_total",
        "Bundle download requests answered (a range install makes several: probe, head, index, parts).",
        &[],
    )
    .with_label_values(no_labels)
    .inc_by(get(&m.downloads));
    let backoff = counter(
        &r,
        "ota_backoff_total",
        "Requests told to back off, by status code.",
        &["code"],
    );
    for (code, count) in [("429", &m.backoff_429), ("503", &m.backoff_503)] {
        backoff.with_label_values(&[code]).inc_by(get(count));
    }
    counter(
        &r,
        "ota_write_behind_flushes_total",
        "Write-behind flushes of device state.",
        &[],
    )
    .with_label_values(no_labels)
    .inc_by(get(&m.flushes));
    gauge(
        &r,
        "ota_write_behind_pending",
        "Devices whose poll state awaits the next flush.",
        &[],
    )
    .with_label_values(no_labels)
    .set(int(gauges.pending_writes));
    gauge(&r, "ota_devices", "Enrolled devices.", &[])
        .with_label_values(no_labels)
        .set(int(gauges.devices));
    gauge(&r, "ota_bundles", "Published bundles.", &[])
        .with_label_values(no_labels)
        .set(int(gauges.bundles));
    gauge(
        &r,
        "ota_lease_held",
        "1 on the replica that runs the once-only jobs (stage starts, deadlines, health guards), else 0.",
        &[],
    )
    .with_label_values(no_labels)
    .set(i64::from(gauges.lease_held));
    let rollouts = gauge(&r, "ota_rollouts", "Rollouts by state.", &["state"]);
    for (state, n) in &gauges.rollouts_by_state {
        rollouts.with_label_values(&[state]).set(int(*n));
    }
    let by_version = gauge(
        &r,
        "ota_devices_by_version",
        "Enrolled devices by the version they run (the most common versions; the rest as \"other\", none reported yet as \"unknown\").",
        &["version"],
    );
    for (version, n) in &gauges.devices_by_version.0 {
        by_version.with_label_values(&[version]).set(int(*n));
    }
    let frozen = gauge(
        &r,
        "ota_devices_freeze_alarm",
        "Devices whose last poll reported a freeze alarm, by reason (stale, replayed, invalid): no fresh signed timestamp reaches them.",
        &["reason"],
    );
    for (reason, n) in &gauges.freeze_alarms {
        frozen.with_label_values(&[reason]).set(int(*n));
    }
    let progress = gauge(
        &r,
        "ota_rollout_devices",
        "Devices of a rollout by outcome (targeted, updated, failed, rolled_back): active and paused rollouts and the most recent finished ones.",
        &["rollout", "outcome"],
    );
    let state = gauge(
        &r,
        "ota_rollout_state",
        "1 for the state each rollout of ota_rollout_devices is in.",
        &["rollout", "state"],
    );
    for p in &gauges.rollouts {
        let id = p.rollout_id.to_string();
        for (outcome, n) in p.outcomes() {
            progress.with_label_values(&[&id, outcome]).set(int(n));
        }
        state.with_label_values(&[&id, p.state.as_str()]).set(1);
    }
    r.gather()
}

/// Renders every metric in the Prometheus text format (version 0.0.4): the counters and gauges first, in a
/// fixed order, then the latency histograms and the process metrics.
pub fn render(m: &Metrics, gauges: &Gauges) -> String {
    let mut families = snapshot(m, gauges);
    // `gather` sorts by name; the text keeps the order operators know (counters, then gauges).
    families.sort_by_key(|f| {
        ORDER
            .iter()
            .position(|n| *n == f.name())
            .unwrap_or(ORDER.len())
    });
    families.extend(m.registry.gather());
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .unwrap_or_else(|e| unreachable!("the text encoder writes to memory: {e}"));
    String::from_utf8(out).unwrap_or_else(|e| unreachable!("the text format is UTF-8: {e}"))
}

/// The order of the families of [`snapshot`] in the text.
const ORDER: [&str; 17] = [
    "ota_polls_total",
    "ota_offers_total",
    "ota_reports_total",
    "ota_enrollments_total",
    "ota_uploads_total",
    "ota_downloads_total",
    "ota_backoff_total",
    "ota_write_behind_flushes_total",
    "ota_write_behind_pending",
    "ota_devices",
    "ota_bundles",
    "ota_lease_held",
    "ota_rollouts",
    "ota_devices_by_version",
    "ota_devices_freeze_alarm",
    "ota_rollout_devices",
    "ota_rollout_state",
];

/// A scrape token too short to resist guessing.
#[derive(Debug, thiserror::Error)]
#[error("the metrics token must be at least {min} characters long (it has {len})")]
pub struct ShortScrapeToken {
    /// Its length.
    pub len: usize,
    /// The least accepted.
    pub min: usize,
}

/// The hash `Config::metrics_token_hash` keeps of a scrape token, if one is given.
pub fn scrape_token_hash(token: Option<String>) -> Result<Option<[u8; 32]>, ShortScrapeToken> {
    let min = crate::tokens::MIN_SECRET_LEN;
    token
        .map(|t| match t.trim() {
            t if t.len() < min => Err(ShortScrapeToken { len: t.len(), min }),
            t => Ok(crate::tokens::hash_token(t)),
        })
        .transpose()
}

#[cfg(test)]
mod tests;
