//! Counters and the Prometheus text exposition for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use ota_protocol::device::ReportStatus;

/// Monotonic counters.
#[derive(Default, Debug)]
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
}

impl Metrics {
    /// Counts a report.
    pub fn report(&self, status: ReportStatus) {
        if let Some(i) = ReportStatus::ALL.iter().position(|s| *s == status) {
            self.reports[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One metric family: its HELP and TYPE lines, then one sample per `(labels, value)`, where
/// `labels` is empty or a rendered label set such as `status="ok"`.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The single unlabelled sample of a family.
fn value(v: impl TryInto<u64>) -> [(String, u64); 1] {
    [(String::new(), v.try_into().unwrap_or(u64::MAX))]
}

/// A sample labelled `key="label"`.
fn labelled(key: &str, label: &str, v: u64) -> (String, u64) {
    (format!("{key}=\"{label}\""), v)
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
    pub rollouts_by_state: BTreeMap<&'static str, u64>,
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(m: &Metrics, gauges: &Gauges) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let counter = "counter";
    let gauge = "gauge";
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "ota_polls_total",
        counter,
        "Device polls answered.",
        value(get(&m.polls)),
    );
    family(
        o,
        "ota_offers_total",
        counter,
        "Polls answered with an update offer.",
        value(get(&m.offers)),
    );
    family(
        o,
        "ota_reports_total",
        counter,
        "Device status reports stored, by status.",
        ReportStatus::ALL
            .iter()
            .zip(&m.reports)
            .map(|(status, count)| labelled("status", status.as_str(), get(count))),
    );
    family(
        o,
        "ota_enrollments_total",
        counter,
        "Device enrollments (retries included).",
        value(get(&m.enrollments)),
    );
    family(
        o,
        "ota_uploads_total",
        counter,
        "Bundle uploads by result.",
        [
            labelled("result", "accepted", get(&m.uploads_accepted)),
            labelled("result", "deduplicated", get(&m.uploads_deduplicated)),
            labelled("result", "rejected", get(&m.uploads_rejected)),
        ],
    );
    family(
        o,
        "ota_downloads_total",
        counter,
        "Bundle download requests answered (a range install makes several: probe, head, index, parts).",
        value(get(&m.downloads)),
    );
    family(
        o,
        "ota_backoff_total",
        counter,
        "Requests told to back off, by status code.",
        [
            labelled("code", "429", get(&m.backoff_429)),
            labelled("code", "503", get(&m.backoff_503)),
        ],
    );
    family(
        o,
        "ota_write_behind_flushes_total",
        counter,
        "Write-behind flushes of device state.",
        value(get(&m.flushes)),
    );
    family(
        o,
        "ota_write_behind_pending",
        gauge,
        "Devices whose poll state awaits the next flush.",
        value(gauges.pending_writes),
    );
    family(
        o,
        "ota_devices",
        gauge,
        "Enrolled devices.",
        value(gauges.devices),
    );
    family(
        o,
        "ota_bundles",
        gauge,
        "Published bundles.",
        value(gauges.bundles),
    );
    family(
        o,
        "ota_rollouts",
        gauge,
        "Rollouts by state.",
        gauges
            .rollouts_by_state
            .iter()
            .map(|(s, n)| labelled("state", s, *n)),
    );
    out
}
