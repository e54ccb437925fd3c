//! [`ReadFailure`]: the kind of the error a source's reader ended with, carried beside the bytes.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ota_protocol::client::ErrorKind;

/// The kind of the error a source's reader handed its consumer. The reader that builds the error
/// knows what it means (a stall that outlasted the retries, a 404); the installer only sees it
/// inside a `BundleError`, so the kind travels beside the bytes instead of being dug out of
/// wrapped `io::Error`s.
#[derive(Debug, Clone, Default)]
pub struct ReadFailure(Arc<Mutex<FailureState>>);

#[derive(Debug, Default)]
struct FailureState {
    /// Set where the error was built (maybe on the read-ahead thread, ahead of the consumer).
    built: Option<ErrorKind>,
    /// The consumer was handed an error: until then a built error is still ahead of it, and
    /// whatever else stopped the consumer was not the download's doing.
    delivered: bool,
}

impl ReadFailure {
    fn state(&self) -> MutexGuard<'_, FailureState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the kind of the error a reader is about to return.
    pub(super) fn built(&self, kind: ErrorKind) {
        self.state().built.get_or_insert(kind);
    }

    /// The kind of the read error the consumer got, if it got one: as its builder decided, or
    /// [`ErrorKind::GiveUp`] for a plain I/O error (a local file that cannot be read).
    pub fn kind(&self) -> Option<ErrorKind> {
        let state = self.state();
        state
            .delivered
            .then(|| state.built.unwrap_or(ErrorKind::GiveUp))
    }
}

/// The consumer's end of a source: notes in the [`ReadFailure`] that an error was handed out.
pub(super) struct Delivering {
    pub(super) inner: Box<dyn Read + Send>,
    pub(super) failure: ReadFailure,
}

impl Read for Delivering {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf);
        if matches!(&read, Err(e) if e.kind() != io::ErrorKind::Interrupted) {
            self.failure.state().delivered = true;
        }
        read
    }
}
