//! How a failed cycle is retried ([`Verdict`]), from the typed [`ErrorKind`] of a failure;
//! no decision looks inside an error's text.

use std::time::Duration;

use super::action::{ErrorKind, Failure};

/// How a failed cycle is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Back off, honouring `Retry-After`.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Forget the token and enroll again after a backoff.
    Reenroll(String),
    /// Retrying soon cannot help: wait at least half the longest backoff.
    Permanent(String),
}

impl Verdict {
    pub(super) fn retry(why: String) -> Verdict {
        Verdict::Retry {
            why,
            retry_after: None,
        }
    }

    /// A failed request to the server (other than enrolling).
    pub(super) fn of(f: Failure) -> Verdict {
        match f.kind {
            ErrorKind::Retry => Verdict::Retry {
                why: f.why,
                retry_after: f.retry_after,
            },
            ErrorKind::Reauthenticate => Verdict::Reenroll(format!(
                "the server no longer accepts this device's token ({})",
                f.message
            )),
            ErrorKind::GiveUp => Verdict::Permanent(f.why),
        }
    }

    /// A failed enrollment of `device_id`: what the operator must do, if anything.
    pub(super) fn enroll(f: Failure, device_id: &str) -> Verdict {
        match (f.kind, f.status) {
            (ErrorKind::Retry, _) => Verdict::of(f),
            (ErrorKind::Reauthenticate, _) => Verdict::Permanent(format!(
                "enrollment refused: {} (check [server] enrollment_secret)",
                f.message
            )),
            (ErrorKind::GiveUp, Some(409)) => Verdict::Permanent(format!(
                "enrollment refused: {} (another robot enrolled as {}; an operator must delete that device on the server, or set [server] device_id)",
                f.message, device_id
            )),
            (ErrorKind::GiveUp, Some(_)) => {
                Verdict::Permanent(format!("enrollment refused: {}", f.message))
            }
            // Not the server's answer (the secret file is unreadable): as it is.
            (ErrorKind::GiveUp, None) => Verdict::Permanent(f.why),
        }
    }
}

/// An offer whose install failed: polled again only after a backoff.
pub(super) fn offer_failed(version: &semver::Version) -> Verdict {
    Verdict::retry(format!(
        "the offer of {version} failed; polling again after a backoff"
    ))
}
