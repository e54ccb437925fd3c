//! [`ClientError`]: why an operation failed, and what a caller (the daemon) should do about it.

use std::io;

use ota_bootloader::BootEnvError;
use ota_bundle_format::BundleError;
use ota_client_core::{Refusal, Slot, StepError};
use ota_protocol::client::ErrorKind;

use crate::booted::BootedError;
use crate::live::LinkError;
use crate::source::SourceError;
use crate::store::StoreError;

/// Why an operation failed. Every message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The data directory, state file or lock.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The boot environment cannot be read (a corrupt one is never overwritten): the operation stopped before
    /// changing anything. (A failed write is [`ClientError::EnvWrite`], which says what did change.)
    #[error("{0}; nothing was changed")]
    BootEnv(#[from] BootEnvError),
    /// The boot environment could not be written; what it and the records hold now.
    #[error("{error}; {outcome}")]
    EnvWrite {
        /// The store's error.
        error: BootEnvError,
        /// What the client found and did after the failure.
        outcome: EnvOutcome,
    },
    /// The booted slot is unknown.
    #[error(transparent)]
    Booted(#[from] BootedError),
    /// The installed trust root cannot be loaded.
    #[error(transparent)]
    Trust(#[from] ota_keys::TrustRootError),
    /// A rotated trust root was refused.
    #[error("trust root update refused: {0}")]
    Rotation(#[from] ota_keys::RotationError),
    /// The bundle cannot be fetched.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The bundle failed verification.
    #[error("bundle refused: {0}")]
    Bundle(#[from] BundleError),
    /// The download failed while the bundle was being read: not a verdict on the bundle.
    #[error("{error}")]
    Download {
        /// The reader's error (it names the download's).
        error: BundleError,
        /// What the download decided about it.
        kind: ErrorKind,
    },
    /// The planner refused the install. (Not a `source`: the message already says it, and
    /// error chains would print it twice.)
    #[error("install refused: {0}")]
    Refused(Refusal),
    /// The transition table refused the operation (the message says it, as above).
    #[error("refused: {0}")]
    Step(StepError),
    /// A slot device or file.
    #[error("slot {class}/{slot} ({path}): {detail}")]
    Slot {
        /// Slot class.
        class: String,
        /// Slot.
        slot: Slot,
        /// Device or file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A live class's symlink.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A live update failed its health checks and was switched back.
    #[error("live update switched back to the previous slot: {0}")]
    LiveFailed(String),
    /// A trial boot failed its health checks.
    #[error("trial boot of slot {slot} failed and the trial was cleared: {reason}")]
    TrialFailed {
        /// The failed slot.
        slot: Slot,
        /// Why.
        reason: String,
    },
    /// The booted slot is neither the primary nor on trial.
    #[error("{0}")]
    Inconsistent(String),
    /// A command (reboot, service restart) failed.
    #[error("command `{command}` failed ({status}): {output}")]
    Command {
        /// argv joined.
        command: String,
        /// How it ended.
        status: String,
        /// Its last output line.
        output: String,
    },
    /// A file the operator named.
    #[error("{op} {path}: {error}")]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        error: io::Error,
    },
    /// A chunk read from the active slot no longer has the bytes the update planned with.
    #[error("the active slot {class} changed while the update read it (chunk at offset {offset}); nothing was armed")]
    ActiveSlotChanged {
        /// Slot class.
        class: String,
        /// Offset of the chunk in the active slot.
        offset: u64,
    },
    /// The active slot could not be read to reuse its chunks.
    #[error("cannot read the active slot {class} to reuse its chunks: {detail}")]
    ActiveSlotUnreadable {
        /// Slot class.
        class: String,
        /// Why.
        detail: String,
    },
    /// A test hook cut the power here (never happens outside tests).
    #[error("simulated power cut at {0}")]
    PowerCut(String),
}

/// After a failed environment write: what the environment holds and whether the records match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOutcome {
    /// Read back unchanged; nothing had been recorded ahead of it.
    Unchanged,
    /// Read back unchanged; the records written ahead of it (e.g. a trial to arm) were put back.
    RecordsRestored,
    /// Read back unchanged, but the records written ahead of it could not be put back.
    RecordsAhead(String),
    /// Read back changed (a partial write): the next `confirm` reconciles the records with it.
    Changed,
    /// Cannot be read back.
    Unreadable(String),
}

impl std::fmt::Display for EnvOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvOutcome::Unchanged => f.write_str("the boot environment was not changed"),
            EnvOutcome::RecordsRestored => f.write_str(
                "the boot environment was not changed, and the records were put back to match it (nothing was armed)",
            ),
            EnvOutcome::RecordsAhead(why) => write!(
                f,
                "the boot environment was not changed, but the records written before it could not be put back ({why}): \
                 run `ota-client confirm` once the disk is fixed"
            ),
            EnvOutcome::Changed => f.write_str(
                "the boot environment was partly changed: run `ota-client confirm` to reconcile the records with it",
            ),
            EnvOutcome::Unreadable(why) => write!(
                f,
                "the boot environment cannot be read back ({why}): fix it, then run `ota-client confirm`"
            ),
        }
    }
}

impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> Self {
        ClientError::Refused(r)
    }
}

impl From<StepError> for ClientError {
    fn from(e: StepError) -> Self {
        ClientError::Step(e)
    }
}

impl ClientError {
    /// What a caller (the daemon) should do about it. The kind was decided where the error was
    /// built: by the download for [`ClientError::Source`] and [`ClientError::Download`]; another
    /// writer holding the lock is passing; everything else (a refused or corrupt bundle, a
    /// failing slot, a boot environment that cannot be read) stays as it is until someone acts.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Source(e) => e.kind(),
            ClientError::Download { kind, .. } => *kind,
            ClientError::Store(StoreError::Locked { .. }) => ErrorKind::Retry,
            ClientError::Store(_)
            | ClientError::BootEnv(_)
            | ClientError::EnvWrite { .. }
            | ClientError::Booted(_)
            | ClientError::Trust(_)
            | ClientError::Rotation(_)
            | ClientError::Bundle(_)
            | ClientError::Refused(_)
            | ClientError::Step(_)
            | ClientError::Slot { .. }
            | ClientError::Link(_)
            | ClientError::LiveFailed(_)
            | ClientError::TrialFailed { .. }
            | ClientError::Inconsistent(_)
            | ClientError::Command { .. }
            | ClientError::File { .. }
            | ClientError::ActiveSlotChanged { .. }
            | ClientError::ActiveSlotUnreadable { .. }
            | ClientError::PowerCut(_) => ErrorKind::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_the_one_decided_where_the_error_was_built() {
        let gave_up = SourceError::GaveUp {
            url: "u".into(),
            attempts: 3,
            last: "x".into(),
        };
        assert_eq!(ClientError::Source(gave_up).kind(), ErrorKind::Retry);
        assert_eq!(
            ClientError::Source(SourceError::Cancelled).kind(),
            ErrorKind::Retry
        );
        let forbidden = SourceError::Permanent {
            url: "u".into(),
            status: 403,
            hint: "h",
        };
        assert_eq!(ClientError::Source(forbidden).kind(), ErrorKind::GiveUp);
        let reading = || BundleError::io("reading the bundle", io::ErrorKind::Other.into());
        for kind in [
            ErrorKind::Retry,
            ErrorKind::GiveUp,
            ErrorKind::Reauthenticate,
        ] {
            let mid_stream = ClientError::Download {
                error: reading(),
                kind,
            };
            assert_eq!(mid_stream.kind(), kind);
        }
        // A bundle error the download did not cause is a verdict, whatever it wraps.
        assert_eq!(ClientError::Bundle(reading()).kind(), ErrorKind::GiveUp);
        let locked = StoreError::Locked {
            path: "/var/lib/ota/lock".into(),
        };
        assert_eq!(ClientError::Store(locked).kind(), ErrorKind::Retry);
        let corrupt = StoreError::Corrupt {
            path: "/var/lib/ota/state.json".into(),
            detail: "d".into(),
        };
        assert_eq!(ClientError::Store(corrupt).kind(), ErrorKind::GiveUp);
        assert_eq!(
            ClientError::Inconsistent("x".into()).kind(),
            ErrorKind::GiveUp
        );
    }
}
