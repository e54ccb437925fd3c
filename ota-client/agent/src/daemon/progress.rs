//! Throttled `installing` reports while a bundle streams into the slots (best effort: the
//! outcome is what matters, and a slow server must not stall the write for long). When a
//! report is due is decided by `ota_client_core::daemon::ProgressThrottle`.

use std::time::Instant;

use ota_client_core::daemon::{progress_report, ActiveOffer, Level, ProgressThrottle};
use ota_protocol::client::ApiClient;

use super::clock::Clock;
use super::log::Log;
use crate::client::Progress;
use crate::Slot;

pub(super) struct Reporter<'a> {
    /// The device's client with the short progress timeout.
    pub(super) api: ApiClient,
    pub(super) log: &'a Log,
    pub(super) clock: &'a dyn Clock,
    pub(super) start: Instant,
    pub(super) instance: &'a str,
    pub(super) offer: ActiveOffer,
    pub(super) throttle: ProgressThrottle,
}

impl Reporter<'_> {
    fn send(&mut self, percent: Option<u8>) {
        let Some(percent) = percent else { return };
        let req = progress_report(self.instance, &self.offer, self.throttle.image(), percent);
        if let Err(e) = self.api.report(&req) {
            self.log
                .line(Level::Debug, &format!("progress report not sent: {e}"));
        }
        let now = self.now();
        self.throttle.mark_sent(now);
    }

    fn now(&self) -> std::time::Duration {
        self.clock.now().saturating_duration_since(self.start)
    }
}

impl Progress for Reporter<'_> {
    fn phase(&mut self, message: &str) {
        self.log.line(Level::Debug, message);
    }

    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64) {
        self.log.line(
            Level::Info,
            &format!("writing {image} ({size} bytes) into {class} slot {slot}"),
        );
        let due = self.throttle.image_started(size, self.now());
        self.send(due);
    }

    fn bytes_written(&mut self, n: u64) {
        let due = self.throttle.bytes_written(n, self.now());
        self.send(due);
    }

    fn image_finished(&mut self) {
        let due = self.throttle.image_finished(self.now());
        self.send(due);
    }
}
