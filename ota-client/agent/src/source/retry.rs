//! How long to wait between download attempts: exponential backoff with jitter, lengthened by a
//! server's `Retry-After`, never beyond [`MAX_RETRY_WAIT`].

use std::time::Duration;

/// The longest single wait between download attempts, whatever the backoff or the server says.
/// With the bounded retry count it bounds how long a hostile server can hold an install.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at
/// [`MAX_RETRY_WAIT`], then a random 50-100 % of it so a fleet does not reconnect in lockstep.
pub fn backoff(attempt: u32, base: Duration, random: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_RETRY_WAIT);
    let ms = capped.as_millis() as u64;
    let half = ms / 2;
    Duration::from_millis(half + random % (ms - half + 1))
}

/// The wait before retry number `attempt`: the backoff, or longer when the server's
/// `Retry-After` asked for more (a server shedding load says when to come back), never more
/// than [`MAX_RETRY_WAIT`].
pub fn retry_wait(
    attempt: u32,
    base: Duration,
    random: u64,
    retry_after: Option<Duration>,
) -> Duration {
    let own = backoff(attempt, base, random);
    match retry_after {
        Some(asked) => own.max(asked.min(MAX_RETRY_WAIT)),
        None => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            let full = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(60));
            for r in [0, 1, 12345, u64::MAX] {
                let d = backoff(attempt, base, r);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} vs {full:?}"
                );
            }
        }
        assert_ne!(backoff(5, base, 1), backoff(5, base, 777));
        assert_eq!(backoff(1, Duration::ZERO, 99), Duration::ZERO);
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap_and_never_shortens_it() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            for r in [0, 7, u64::MAX] {
                let own = backoff(attempt, base, r);
                assert_eq!(retry_wait(attempt, base, r, None), own);
                for asked in [0, 1, 30, 60, 61, 3600, u64::MAX / 2] {
                    let asked = Duration::from_secs(asked);
                    let wait = retry_wait(attempt, base, r, Some(asked));
                    assert!(
                        wait >= own,
                        "a short Retry-After never shortens the backoff"
                    );
                    assert!(wait <= MAX_RETRY_WAIT.max(own));
                    assert_eq!(wait, own.max(asked.min(MAX_RETRY_WAIT)));
                }
            }
        }
    }
}
