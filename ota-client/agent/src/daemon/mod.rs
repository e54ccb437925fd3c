//! `ota-client daemon`: the polling half of the client.
//!
//! Enrolls once (the token is kept in `DATA_DIR/device-token`, mode 0600; the enrollment
//! `request_id` is persisted before it is sent, so a retry gets the same token), then loops:
//!
//! 1. report the client's unreported events (commits, rollbacks, failures) and acknowledge
//!    each only after the server accepted it, under a stable `report_id`, so a power cut
//!    never loses or duplicates a report;
//! 2. poll with inventory and telemetry;
//! 3. on an offer: report `downloading`, install through [`crate::Client::install`] exactly like
//!    `ota-client install` (HTTP download with the device's bearer token, resumed after
//!    dropped connections), report `installing` progress (throttled), then `rebooting`, and
//!    reboot. After the reboot `ota-client confirm` commits or rolls back and the next
//!    daemon start reports what happened. The robot has its own say: the `[readiness]` check
//!    (`readiness`) gates the download, the install and the reboot; outside its install window
//!    an offer is only staged (downloaded and written, not armed) and armed later without a
//!    second download; a rollout may require `ota-client approve` ([`approve`]) before the
//!    reboot. What holds an update back is reported in the next poll.
//!
//! Every decision (when to poll, back off, retry, give up, enroll again, report, install,
//! reboot) is `ota_client_core::daemon::DaemonMachine`'s; this module only carries them out:
//! [`clock`] (time and jitter), `log` (sink, `daemon.log`, the tail of failure reports),
//! `files` (saved state and token), `freshness` (freeze and replay detection from the server's
//! signed timestamps), `api` (the typed API client), `progress` (installing
//! reports), `readiness` (the check), `approval` (the confirmation file), `hooks`, `error`
//! and `run` (the loop). [`run`] is a library function with an
//! injectable [`Clock`] and reboot hook so tests and demos run many robots in one process.

mod api;
mod approval;
pub mod clock;
mod error;
mod files;
mod freshness;
mod hooks;
mod log;
mod progress;
mod readiness;
mod run;
mod watchdog;

pub use approval::{approve, Approval, APPROVAL_FILE};
pub use clock::{Clock, ScaledClock, SystemClock};
pub use error::DaemonError;
pub use files::{default_device_id, enrolled_device_id, STATE_FILE, TOKEN_FILE};
pub use freshness::{freshness_status, FreshnessStatus, FRESHNESS_FILE};
pub use hooks::{DaemonHooks, LogSink, RebootHook};
pub use log::{LOG_FILE, LOG_FILE_MAX};
pub use ota_client_core::daemon::{Exit, Level};
pub use run::{run, run_client};
