//! Bounded exponential backoff with full jitter.

use std::time::Duration;

/// A `Retry-After` longer than this is treated as this (a confused or hostile server must
/// not park the fleet for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Exponential backoff with full jitter: the n-th consecutive failure waits a uniformly
/// random time in `0..=min(max, initial * 2^(n-1))`, and at least the server's `Retry-After`
/// (capped at [`MAX_RETRY_AFTER`]). Full jitter spreads a fleet that failed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff between `initial` and `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay after one more failure; `random` is the jitter source.
    pub fn next(&mut self, random: u64, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = self.ceiling().as_millis().min(u128::from(u64::MAX - 1)) as u64;
        let jittered = Duration::from_millis(random % (ms + 1));
        match retry_after {
            Some(r) => jittered.max(r.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// The upper bound of the jitter for the current failure count.
    pub fn ceiling(&self) -> Duration {
        self.initial
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// A success: start again from `initial`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The longest backoff.
    pub fn max(&self) -> Duration {
        self.max
    }
}
