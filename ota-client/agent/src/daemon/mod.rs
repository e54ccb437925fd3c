//! `ota-client daemon`: the polling half of the client.
//!
//! Enrolls once (the token is kept in `DATA_DIR/device-token`, mode 0600; the enrollment
//! `request_id` is persisted before it is sent, so a retry gets the same token), then loops:
//!
//! 1. report the client's unreported events (commits, rollbacks, failures) and acknowledge
//!    each only after the server accepted it, under a stable `report_id`, so a power cut
//!    never loses or duplicates a report;
//! 2. poll with inventory and telemetry;
//! 3. on an offer: report `downloading`, install through [`Client::install`] exactly like
//!    `ota-client install` (HTTP download with the device's bearer token, resumed after
//!    dropped connections), report `installing` progress (throttled), then `rebooting`, and
//!    reboot. After the reboot `ota-client confirm` commits or rolls back and the next
//!    daemon start reports what happened.
//!
//! Every decision (when to poll, back off, retry, give up, enroll again, report, install,
//! reboot) is `ota_client_core::daemon::DaemonMachine`'s; this module only carries them out:
//! [`clock`] (time and jitter), `log` (sink, `daemon.log`, the tail of failure reports),
//! `files` (saved state and token), `api` (the typed API client), `progress` (installing
//! reports) and `run` (the loop). [`run`] is a library function with an injectable [`Clock`]
//! and reboot hook so tests and demos run many robots in one process.

mod api;
pub mod clock;
mod files;
mod log;
mod progress;
mod run;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use clock::{Clock, ScaledClock, SystemClock};
pub use files::{default_device_id, enrolled_device_id, STATE_FILE, TOKEN_FILE};
pub use log::{LOG_FILE, LOG_FILE_MAX};
pub use ota_client_core::daemon::{Exit, Level};

use crate::client::{Client, ClientError};
use crate::config::Config;

/// Why the daemon cannot run at all (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No `[server]` section.
    #[error("{} has no [server] section: add url and enrollment_secret (or enrollment_secret_file) to run the daemon", .0.display())]
    NoServer(PathBuf),
    /// No usable device id.
    #[error("cannot determine this robot's device id ({0}); set [server] device_id")]
    DeviceId(String),
    /// A file of the daemon.
    #[error("{op} {}: {error}", path.display())]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The daemon's state file is damaged.
    #[error("daemon state {} is corrupt ({detail}); move it away to enroll again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The client cannot be opened.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The HTTP client cannot be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}

/// Where log lines go.
pub type LogSink = Arc<dyn Fn(Level, &str) + Send + Sync>;
/// A reboot performed instead of the configured reboot command.
pub type RebootHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the daemon's surroundings provide.
#[derive(Clone)]
pub struct DaemonHooks {
    /// Time and jitter.
    pub clock: Arc<dyn Clock>,
    /// Reboots the robot; `None`: run the configured `reboot_command`.
    pub reboot: Option<RebootHook>,
    /// Log lines.
    pub log: LogSink,
}

impl Default for DaemonHooks {
    fn default() -> Self {
        DaemonHooks {
            clock: Arc::new(SystemClock),
            reboot: None,
            log: Arc::new(|level, line| {
                if level >= Level::Info {
                    eprintln!("ota-client daemon: {level}: {line}");
                }
            }),
        }
    }
}

/// Runs the daemon for `config` until `cancel` is set ([`Exit::Stopped`]) or a reboot was
/// started ([`Exit::Rebooted`]).
pub fn run(
    config: Config,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    run_client(Client::open(config)?, hooks, cancel)
}

/// [`run`] over an already opened client (e.g. one made with [`Client::with_backend`]).
pub fn run_client(
    client: Client,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    run::Daemon::open(client, hooks, cancel)?.run()
}
