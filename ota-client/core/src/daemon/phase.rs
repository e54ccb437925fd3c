//! Where the machine is in its cycle ([`Phase`]), what follows the event reports ([`Then`])
//! and the offer being worked on ([`Run`]): pure data.

use std::collections::VecDeque;
use std::time::Duration;

use ota_protocol::device::UpdateOffer;

use super::action::Exit;
use super::gates::Step;
use super::verdict::Verdict;
use crate::slot::ReportEvent;

/// What follows the event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Then {
    Poll,
    Fail(Verdict),
}

/// Where the machine is: which action's answer it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    /// Forgetting the token for a new identity.
    NewIdentity {
        warn: bool,
    },
    /// Forgetting the token after a 401.
    Reenroll(String),
    Enrolling,
    Listing(Then),
    Sending {
        queue: VecDeque<ReportEvent>,
        id: u64,
        what: String,
        version: String,
        ends_offer: bool,
        then: Then,
    },
    Acking {
        queue: VecDeque<ReportEvent>,
        id: u64,
        suppressed: bool,
        ends_offer: bool,
        then: Then,
    },
    Polling,
    /// Working on an offer: doing one step, the rest to follow.
    Offer(Run, Step),
    ReportingFailure(semver::Version),
    AnnouncingReboot(semver::Version),
    Rebooting(semver::Version),
    Waiting,
    Exited(Exit),
}

/// An offer being worked on in this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) offer: UpdateOffer,
    pub(super) steps: VecDeque<Step>,
    /// The wait before the next poll, once the steps are done or held.
    pub(super) poll_delay: Duration,
    /// Downloaded in this cycle (an activation that finds nothing does not download again).
    pub(super) downloaded: bool,
}
