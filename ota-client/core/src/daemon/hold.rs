//! What a robot that holds an offer back reports in its polls: the phase, its reason and how
//! long it has waited (counted from the first "wait" for that phase of that bundle).

use std::time::Duration;

use ota_protocol::fleet::{WaitPhase, Waiting};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    digest: String,
    phase: WaitPhase,
    reason: String,
    since: Duration,
}

/// The offer held back, if one is, and the [`Waiting`] the next poll carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Holds {
    hold: Option<Hold>,
    waiting: Option<Waiting>,
}

impl Holds {
    /// Nothing is offered: nothing waits.
    pub(super) fn clear(&mut self) {
        self.hold = None;
    }

    /// The bundle `digest` is offered: a hold of another bundle is over.
    pub(super) fn offered(&mut self, digest: &str) {
        if self.hold.as_ref().is_some_and(|h| h.digest != digest) {
            self.hold = None;
        }
    }

    /// Whether an offer is held back (its next poll asks again).
    pub(super) fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// A check of `phase` said go.
    pub(super) fn go(&mut self, phase: WaitPhase) {
        if self.hold.as_ref().is_some_and(|h| h.phase == phase) {
            self.hold = None;
        }
    }

    /// A check of `phase` said wait at `now`; whether that is news (a new phase, bundle or
    /// reason) rather than the same answer again.
    pub(super) fn hold(
        &mut self,
        now: Duration,
        digest: &str,
        phase: WaitPhase,
        reason: &str,
    ) -> bool {
        let same = self
            .hold
            .as_ref()
            .filter(|h| h.digest == digest && h.phase == phase);
        let since = same.map_or(now, |h| h.since);
        let news = same.is_none_or(|h| h.reason != reason);
        self.hold = Some(Hold {
            digest: digest.to_string(),
            phase,
            reason: reason.to_string(),
            since,
        });
        news
    }

    /// A poll is asked for at `now`: what it reports.
    pub(super) fn report(&mut self, now: Duration) {
        self.waiting = self.hold.as_ref().map(|h| Waiting {
            phase: h.phase,
            reason: h.reason.clone(),
            for_secs: now.saturating_sub(h.since).as_secs(),
        });
    }

    /// What the last poll asked for reports.
    pub(super) fn waiting(&self) -> Option<&Waiting> {
        self.waiting.as_ref()
    }
}
