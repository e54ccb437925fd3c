//! The one typed client of the server's HTTP API, used by the robot's daemon, `ota-bundle publish`, the
//! `ota-server` admin subcommands, the demo and the tests.
//!
//! [`ErrorKind`] and [`ErrorKind::for_status`] are pure and always available, so code that only decides what
//! to do about a failure needs no HTTP stack. The blocking `ApiClient` (reqwest, rustls) is behind the cargo
//! feature `client`, so the server's wire types stay dependency-light.
//!
//! Every failure is an `ApiError` whose `kind` says what the caller should do:
//! connection errors, timeouts, 408/425/429/5xx → [`ErrorKind::Retry`] (honouring `Retry-After`);
//! 401 → [`ErrorKind::Reauthenticate`]; any other 4xx or a local mistake (bad URL, CA file) →
//! [`ErrorKind::GiveUp`]. Its message is the server's [`ErrorBody`](crate::ErrorBody) when there is one.

/// What a caller should do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The failure is passing (no answer, overload, server error): try again later, after `Retry-After` if given.
    Retry,
    /// Trying again with the same request cannot help (bad request, not found, conflict, local setup).
    GiveUp,
    /// The token is unknown, revoked or expired: get a new one (a device enrolls again).
    Reauthenticate,
}

impl ErrorKind {
    /// The kind of a non-2xx HTTP status.
    pub fn for_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Reauthenticate,
            408 | 425 | 429 | 500..=599 => ErrorKind::Retry,
            _ => ErrorKind::GiveUp,
        }
    }
}

#[cfg(feature = "client")]
mod http;

#[cfg(feature = "client")]
pub use http::{load_ca_certificates, ApiClient, ApiError, ClientOptions};

#[cfg(test)]
mod tests;
