//! The fleet daemon's decisions, with no I/O: when to enroll, report, poll, install, reboot,
//! back off or stop.
//!
//! [`DaemonMachine`] is fed an [`Input`] (what the last [`Action`] came to, or that the wait
//! ended or a stop was asked), the time and a random word, and returns the next [`Action`].
//! The agent's daemon only carries actions out; tests drive the machine with a virtual clock.
//! The machine's [`DaemonState`] is saved by the caller before each action whenever
//! [`DaemonMachine::take_changed`] says so, so a power cut never loses a decision.
//!
//! * [`backoff`]: [`Backoff`], bounded full-jitter backoff honouring `Retry-After`.
//! * [`report`]: what is reported for a client event or a step of an offer, and when an
//!   `installing` progress report is due ([`ProgressThrottle`]).
//! * [`state`]: the persisted [`DaemonState`] (identity, the offer worked on).
//! * [`action`]: what the machine is told ([`Input`]) and asks for ([`Action`]).
//! * [`machine`]: [`DaemonMachine`], the loop's decisions.
//!
//! Failures come with the typed [`ErrorKind`] of `ota_protocol::client` (retry / give up /
//! re-authenticate); no decision looks inside an error's text.

pub mod action;
pub mod backoff;
pub mod machine;
pub mod report;
pub mod state;

use std::time::Duration;

pub use action::{Action, Input, InstallResult, Settings};
pub use backoff::{Backoff, MAX_RETRY_AFTER};
pub use machine::DaemonMachine;
pub use ota_protocol::client::ErrorKind;
pub use report::{
    event_offer, event_report, progress_report, status_report, ProgressThrottle, PROGRESS_INTERVAL,
    PROGRESS_STEP,
};
pub use state::{ActiveOffer, DaemonState};

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Routine (a poll without an update).
    Debug,
    /// A step of an update.
    Info,
    /// A retried problem.
    Warn,
    /// A failure that needs an operator.
    Error,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        })
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Cancelled (SIGTERM, Ctrl-C, the caller).
    Stopped,
    /// A trial was armed and the reboot command ran: the robot is going down.
    Rebooted,
}

/// Why an action failed, as the machine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Retry, give up or re-authenticate.
    pub kind: ErrorKind,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The server's own words (its error body) when it answered, else the same as `why`.
    pub message: String,
    /// The whole failure on one line, for the log.
    pub why: String,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `kind` with no server answer.
    pub fn new(kind: ErrorKind, why: impl Into<String>) -> Failure {
        let why = why.into();
        Failure {
            kind,
            status: None,
            message: why.clone(),
            why,
            retry_after: None,
        }
    }

    /// A passing failure (an outage, a busy lock).
    pub fn retry(why: impl Into<String>) -> Failure {
        Failure::new(ErrorKind::Retry, why)
    }

    /// A failure that retrying soon cannot mend.
    pub fn give_up(why: impl Into<String>) -> Failure {
        Failure::new(ErrorKind::GiveUp, why)
    }
}
