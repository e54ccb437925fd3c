//! Counters and the Prometheus text exposition for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use ota_protocol::device::ReportStatus;

use crate::state::AppState;

/// Monotonic counters.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Polls answered.
    pub polls: AtomicU64,
    /// Polls answered with an offer.
    pub offers: AtomicU64,
    /// Reports per status, in [`ReportStatus::ALL`] order.
    pub reports: [AtomicU64; 6],
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(state: &AppState) -> String {
    let m = &state.metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    family(
        &mut out,
        "ota_polls_total",
        "counter",
        "Device polls answered.",
    );
    let _ = writeln!(out, "ota_polls_total {}", get(&m.polls));
    family(
        &mut out,
        "ota_offers_total",
        "counter",
        "Polls answered with an update offer.",
    );
    let _ = writeln!(out, "ota_offers_total {}", get(&m.offers));
    family(
        &mut out,
        "ota_reports_total",
        "counter",
        "Device status reports stored, by status.",
    );
    for (status, count) in ReportStatus::ALL.iter().zip(&m.reports) {
        let _ = writeln!(
            out,
            "ota_reports_total{{status=\"{}\"}} {}",
            status.as_str(),
            get(count)
        );
    }
    family(
        &mut out,
        "ota_enrollments_total",
        "counter",
        "Device enrollments (retries included).",
    );
    let _ = writeln!(out, "ota_enrollments_total {}", get(&m.enrollments));
    family(
        &mut out,
        "ota_uploads_total",
        "counter",
        "Bundle uploads by result.",
    );
    let _ = writeln!(
        out,
        "ota_uploads_total{{result=\"accepted\"}} {}",
        get(&m.uploads_accepted)
    );
    let _ = writeln!(
        out,
        "ota_uploads_total{{result=\"deduplicated\"}} {}",
        get(&m.uploads_deduplicated)
    );
    let _ = writeln!(
        out,
        "ota_uploads_total{{result=\"rejected\"}} {}",
        get(&m.uploads_rejected)
    );
    family(
        &mut out,
        "ota_downloads_total",
        "counter",
        "Bundle downloads started.",
    );
    let _ = writeln!(out, "ota_downloads_total {}", get(&m.downloads));
    family(
        &mut out,
        "ota_backoff_total",
        "counter",
        "Requests told to back off, by status code.",
    );
    let _ = writeln!(
        out,
        "ota_backoff_total{{code=\"429\"}} {}",
        get(&m.backoff_429)
    );
    let _ = writeln!(
        out,
        "ota_backoff_total{{code=\"503\"}} {}",
        get(&m.backoff_503)
    );
    family(
        &mut out,
        "ota_write_behind_flushes_total",
        "counter",
        "Write-behind flushes of device state.",
    );
    let _ = writeln!(out, "ota_write_behind_flushes_total {}", get(&m.flushes));
    family(
        &mut out,
        "ota_write_behind_pending",
        "gauge",
        "Devices whose poll state awaits the next flush.",
    );
    let _ = writeln!(out, "ota_write_behind_pending {}", state.pending_writes());
    family(&mut out, "ota_devices", "gauge", "Enrolled devices.");
    let _ = writeln!(out, "ota_devices {}", state.device_count());
    family(&mut out, "ota_bundles", "gauge", "Published bundles.");
    let _ = writeln!(out, "ota_bundles {}", state.bundle_count());
    family(&mut out, "ota_rollouts", "gauge", "Rollouts by state.");
    for (s, n) in state.rollout_states() {
        let _ = writeln!(out, "ota_rollouts{{state=\"{s}\"}} {n}");
    }
    out
}
