//! The machine's vocabulary: what it is told ([`Input`], [`Failure`]) and what it asks for
//! ([`Action`], [`Exit`], log lines of a [`Level`]).

use std::time::Duration;

use ota_protocol::device::{PollResponse, ReportRequest, ReportStatus, UpdateOffer};
use ota_protocol::fleet::WaitPhase;

pub use ota_protocol::client::ErrorKind;

use crate::slot::{ReportEvent, Slot};

/// What the machine is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The id this robot enrolls as.
    pub device_id: String,
    /// The server, for log lines.
    pub server_url: String,
    /// The first backoff.
    pub backoff_initial: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
    /// The phases the robot's readiness check gates (empty: it has none).
    pub gates: Vec<WaitPhase>,
}

/// What happened: the first input is [`Input::Start`]; each later one answers the last
/// [`Action`] (or says the caller was asked to stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The daemon starts.
    Start,
    /// The last action succeeded (and had nothing to tell).
    Done,
    /// [`Action::ListEvents`]: the client's unreported events, oldest first.
    Events(Vec<ReportEvent>),
    /// [`Action::Poll`]: the server's answer; `armed` if the client already has the offered
    /// bundle armed for a trial boot (the robot did not reboot after arming it).
    Polled {
        /// The answer.
        response: PollResponse,
        /// The offered bundle is armed.
        armed: bool,
        /// A slot other than the booted one holds the offered bundle (staged, or a release the
        /// robot ran before): arm it instead of downloading.
        held: bool,
    },
    /// [`Action::CheckReady`]: the readiness check's answer.
    Ready(Readiness),
    /// [`Action::CheckApproval`]: whether `ota-client approve` confirmed the bundle.
    Approved(bool),
    /// [`Action::Install`], [`Action::Stage`], [`Action::Activate`]: how it ended.
    Installed(InstallResult),
    /// The last action failed.
    Failed(Failure),
    /// [`Action::Wait`]: the wait is over.
    Woke,
    /// A stop was asked (fed instead of carrying out an [`Action::interruptible`] action).
    Cancelled,
}

/// What the robot's readiness check said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Go ahead.
    Go,
    /// Not now, and why (the check's first output line, or why it could not run).
    Wait(String),
}

/// How an install, a staging or an activation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallResult {
    /// [`Action::Stage`]: written and verified in the standby slot, not armed.
    Staged,
    /// [`Action::Activate`]: no slot holds the bundle after all; it has to be downloaded.
    NotHeld,
    /// Written, verified and armed: reboot.
    TrialArmed {
        /// The slot armed.
        slot: Slot,
    },
    /// Live classes switched and healthy: nothing to reboot.
    LiveSwitched {
        /// The classes switched.
        classes: Vec<String>,
    },
    /// It failed.
    Failed {
        /// Why; a `Retry` kind is an outage, not a verdict on the update.
        failure: Failure,
        /// It was interrupted by a stop.
        cancelled: bool,
        /// The events the client recorded during the install (e.g. `InstallFailed`).
        new_events: Vec<ReportEvent>,
    },
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the device token (a new identity, or the server refused the token).
    ForgetToken,
    /// Enroll with the state's `device_id` and `enroll_request_id`; keep the token.
    Enroll,
    /// Read the client's unreported events: answer [`Input::Events`].
    ListEvents,
    /// Send a report.
    Send {
        /// The report (its `log_tail` is the caller's to fill).
        request: ReportRequest,
        /// Attach the log's tail.
        attach_log: bool,
    },
    /// Acknowledge client event `id` (the server has it, or it is not a report).
    Ack {
        /// The event.
        id: u64,
    },
    /// Poll with inventory and telemetry: answer [`Input::Polled`].
    Poll,
    /// Install the offer (progress reports are the caller's): answer [`Input::Installed`].
    Install(UpdateOffer),
    /// Download the offer and write the standby slot without arming it (install options
    /// `stage_only`): answer [`Input::Installed`] ([`InstallResult::Staged`]).
    Stage(UpdateOffer),
    /// Arm the slot that already holds the offer's bundle, without downloading: answer
    /// [`Input::Installed`] ([`InstallResult::TrialArmed`] or [`InstallResult::NotHeld`]).
    Activate(UpdateOffer),
    /// Run the readiness check for `phase` with the offer's details: answer [`Input::Ready`].
    CheckReady {
        /// The step it gates.
        phase: WaitPhase,
        /// The offer, for the check's environment.
        offer: UpdateOffer,
    },
    /// Look for a local confirmation of this bundle: answer [`Input::Approved`].
    CheckApproval {
        /// The bundle's identity.
        manifest_digest: String,
    },
    /// Reboot the robot.
    Reboot,
    /// Wait `delay` (until `until`, on the time given to the machine), then [`Input::Woke`].
    Wait {
        /// How long.
        delay: Duration,
        /// When it ends.
        until: Duration,
    },
    /// Stop the daemon.
    Exit(Exit),
}

impl Action {
    /// Whether a stop asked for before this action is carried out ends the daemon instead
    /// ([`Input::Cancelled`]). Local bookkeeping and the reboot sequence are not interrupted.
    pub fn interruptible(&self) -> bool {
        match self {
            Action::Enroll | Action::ListEvents | Action::Poll | Action::Install(_) => true,
            Action::Stage(_) | Action::Activate(_) => true,
            Action::CheckReady { .. } | Action::CheckApproval { .. } => true,
            Action::Wait { .. } => true,
            Action::Send { request, .. } => request.status != ReportStatus::Rebooting,
            Action::ForgetToken | Action::Ack { .. } | Action::Reboot | Action::Exit(_) => false,
        }
    }
}

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
