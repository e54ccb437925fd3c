//! Why the daemon cannot run at all.

use std::path::PathBuf;

use crate::client::ClientError;

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
    /// `ota-client approve` without a digest while the daemon works on no update.
    #[error("no update is waiting for confirmation; name one with --digest")]
    NothingToApprove,
    /// The robot's identity key cannot be read or made.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The HTTP client cannot be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}
