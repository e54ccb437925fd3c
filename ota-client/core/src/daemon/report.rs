//! What the daemon tells the server: the report for a client event, for a step of an offer,
//! and when a progress report is due.

use std::time::Duration;

use ota_protocol::device::{ReportRequest, ReportStatus};

use super::state::{ActiveOffer, DaemonState};
use crate::slot::{EventKind, ReportEvent};

/// Progress reports: at most one per this many percent of an image...
pub const PROGRESS_STEP: u8 = 20;
/// ...and at most one per this interval.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The offer an event belongs to: the active one if the event names its bundle (an install
/// failure recorded before the bundle was known belongs to it too).
pub fn event_offer<'a>(state: &'a DaemonState, ev: &ReportEvent) -> Option<&'a ActiveOffer> {
    state.active.as_ref().filter(|a| match &ev.bundle_hash {
        Some(h) => *h == a.manifest_digest,
        None => ev.kind == EventKind::InstallFailed,
    })
}

/// The report of a client event, under a stable id (a resend after a power cut is the same
/// report). `log_tail` is left for the caller to fill when the status is bad.
pub fn event_report(state: &DaemonState, ev: &ReportEvent) -> ReportRequest {
    let active = event_offer(state, ev);
    let reason = if ev.reason.trim().is_empty() {
        "no reason recorded".to_string()
    } else {
        ev.reason.clone()
    };
    let (status, error, why) = match ev.kind {
        EventKind::Committed | EventKind::LiveCommitted => (ReportStatus::Success, None, None),
        EventKind::TrialFailed | EventKind::RolledBack => {
            (ReportStatus::RolledBack, None, Some(reason))
        }
        EventKind::LiveFailed | EventKind::LiveInterrupted | EventKind::InstallFailed => {
            (ReportStatus::Failure, Some(reason), None)
        }
        EventKind::MarkedBad => (
            ReportStatus::Failure,
            Some(format!(
                "slot {} was marked bad: {reason}",
                ev.slot.map_or("?".into(), |s| s.to_string())
            )),
            None,
        ),
    };
    ReportRequest {
        report_id: format!("event-{}-{}", state.instance, ev.id),
        rollout_id: active.map(|a| a.rollout_id),
        version: ev
            .version
            .clone()
            .or_else(|| active.map(|a| a.version.clone())),
        manifest_digest: ev
            .bundle_hash
            .clone()
            .or_else(|| active.map(|a| a.manifest_digest.clone())),
        status,
        progress_percent: None,
        error,
        log_tail: None,
        reason: why,
    }
}

/// The report of one step of an offer (`downloading`, `rebooting`, a failure the client
/// could not record), one id per offer and step.
pub fn status_report(
    instance: &str,
    offer: &ActiveOffer,
    status: ReportStatus,
    progress: Option<u8>,
    error: Option<String>,
) -> ReportRequest {
    ReportRequest {
        report_id: format!(
            "status-{instance}-{}-{}-{}",
            offer.rollout_id,
            short(&offer.manifest_digest),
            status.as_str()
        ),
        rollout_id: Some(offer.rollout_id),
        version: Some(offer.version.clone()),
        manifest_digest: Some(offer.manifest_digest.clone()),
        status,
        progress_percent: progress,
        error,
        log_tail: None,
        reason: None,
    }
}

/// An `installing` progress report of the `image`-th image (1-based).
pub fn progress_report(
    instance: &str,
    offer: &ActiveOffer,
    image: usize,
    percent: u8,
) -> ReportRequest {
    ReportRequest {
        report_id: format!(
            "progress-{instance}-{}-{}-{image}-{percent}",
            offer.rollout_id,
            short(&offer.manifest_digest),
        ),
        rollout_id: Some(offer.rollout_id),
        version: Some(offer.version.clone()),
        manifest_digest: Some(offer.manifest_digest.clone()),
        status: ReportStatus::Installing,
        progress_percent: Some(percent),
        error: None,
        log_tail: None,
        reason: None,
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Throttles `installing` reports: one per [`PROGRESS_STEP`] percent of an image and per
/// [`PROGRESS_INTERVAL`], plus 0 and 100 % of each image. Time is the caller's (a
/// `Duration` since any fixed start), so tests need no clock.
#[derive(Debug, Clone, Default)]
pub struct ProgressThrottle {
    image: usize,
    size: u64,
    written: u64,
    last_step: u8,
    last_sent: Option<Duration>,
}

impl ProgressThrottle {
    /// The images started so far (the current image's 1-based number).
    pub fn image(&self) -> usize {
        self.image
    }

    /// An image of `size` bytes starts: report 0 %.
    pub fn image_started(&mut self, size: u64, now: Duration) -> Option<u8> {
        self.image += 1;
        self.size = size;
        self.written = 0;
        self.last_step = 0;
        self.sent(0, now)
    }

    /// `n` more bytes were written: the percentage to report, if one is due.
    pub fn bytes_written(&mut self, n: u64, now: Duration) -> Option<u8> {
        self.written += n;
        if self.size == 0 {
            return None;
        }
        let percent = (self.written.saturating_mul(100) / self.size).min(100) as u8;
        let step = percent / PROGRESS_STEP * PROGRESS_STEP;
        let due = self
            .last_sent
            .is_none_or(|t| now.saturating_sub(t) >= PROGRESS_INTERVAL);
        if step > self.last_step && due {
            self.last_step = step;
            return self.sent(step, now);
        }
        None
    }

    /// The image is complete: report 100 % unless that was reported.
    pub fn image_finished(&mut self, now: Duration) -> Option<u8> {
        if self.last_step < 100 {
            self.last_step = 100;
            return self.sent(100, now);
        }
        None
    }

    /// The report went out (or gave up) at `now`: the interval counts from here, so a slow
    /// server is not sent the next one at once.
    pub fn mark_sent(&mut self, now: Duration) {
        self.last_sent = Some(now);
    }

    fn sent(&mut self, percent: u8, now: Duration) -> Option<u8> {
        self.last_sent = Some(now);
        Some(percent)
    }
}
