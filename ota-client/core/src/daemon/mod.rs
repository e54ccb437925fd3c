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
//! * [`gates`]: the steps of an offer and the robot's own checks before each ([`plan`]).
//! * [`machine`]: [`DaemonMachine`], the loop's decisions.
//! * [`say_once`]: [`SayOnce`], a warning repeated every poll logged once per distinct cause.
//!
//! Failures come with the typed [`ErrorKind`] of `ota_protocol::client` (retry / give up /
//! re-authenticate); no decision looks inside an error's text.

pub mod action;
pub mod backoff;
pub mod gates;
mod hold;
pub mod machine;
mod phase;
pub mod report;
pub mod say_once;
pub mod state;
mod verdict;

pub use action::{
    Action, ErrorKind, Exit, Failure, Input, InstallResult, Level, Readiness, Settings,
};
pub use backoff::{Backoff, MAX_RETRY_AFTER};
pub use gates::{plan, Held, Step, WAITING_FOR_CONFIRMATION};
pub use machine::DaemonMachine;
pub use report::{
    event_offer, event_report, progress_report, status_report, ProgressThrottle, PROGRESS_INTERVAL,
    PROGRESS_STEP,
};
pub use say_once::{ChainRefused, SayOnce};
pub use state::{ActiveOffer, DaemonState};
