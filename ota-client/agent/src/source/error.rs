//! [`SourceError`]: why a bundle could not be read, and whether trying again later can help.

use std::io;
use std::path::PathBuf;

use ota_protocol::client::ErrorKind;

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A local file cannot be opened.
    #[error("cannot open bundle {}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The server says the bundle is not there or not for us: retrying cannot help.
    #[error("download of {url} failed: HTTP {status}: {hint}")]
    Permanent {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// What to do.
        hint: &'static str,
    },
    /// Retries exhausted.
    #[error("download of {url} failed after {attempts} attempts without progress: {last}")]
    GaveUp {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The download cannot continue without splicing two different files.
    #[error("download of {url} cannot resume: {detail}; run the install again")]
    CannotResume {
        /// The URL.
        url: String,
        /// What did not match.
        detail: String,
    },
    /// The HTTP client cannot be set up (bad CA file, ...).
    #[error("cannot set up HTTP: {0}")]
    Setup(String),
    /// Cancelled by the caller.
    #[error("download cancelled")]
    Cancelled,
}

impl SourceError {
    /// What a caller should do about it, decided here where each case is known: an outage (the
    /// retries ran out without progress) or a cancelled download is worth trying again later; the
    /// server refusing the bundle is its verdict (401 asks for new credentials); a missing local file,
    /// a changed file on the server or a broken setup stays broken.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::GaveUp { .. } | SourceError::Cancelled => ErrorKind::Retry,
            SourceError::Permanent { status: 401, .. } => ErrorKind::Reauthenticate,
            SourceError::Permanent { .. }
            | SourceError::File { .. }
            | SourceError::CannotResume { .. }
            | SourceError::Setup(_) => ErrorKind::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permanent(status: u16) -> SourceError {
        SourceError::Permanent {
            url: "u".into(),
            status,
            hint: "h",
        }
    }

    #[test]
    fn outages_are_retried_verdicts_are_not() {
        let gave_up = SourceError::GaveUp {
            url: "u".into(),
            attempts: 3,
            last: "x".into(),
        };
        assert_eq!(gave_up.kind(), ErrorKind::Retry);
        assert_eq!(SourceError::Cancelled.kind(), ErrorKind::Retry);
        assert_eq!(permanent(401).kind(), ErrorKind::Reauthenticate);
        for status in [403, 404, 410, 416, 302] {
            assert_eq!(permanent(status).kind(), ErrorKind::GiveUp, "{status}");
        }
        let resume = SourceError::CannotResume {
            url: "u".into(),
            detail: "d".into(),
        };
        assert_eq!(resume.kind(), ErrorKind::GiveUp);
        assert_eq!(SourceError::Setup("s".into()).kind(), ErrorKind::GiveUp);
        let file = SourceError::File {
            path: "/b".into(),
            error: io::ErrorKind::NotFound.into(),
        };
        assert_eq!(file.kind(), ErrorKind::GiveUp);
    }
}
