//! Login rate limiting, pure: failed sign-ins per (user name, remote address) through the generic cell rate
//! limiter of [`crate::admission::Limiter`]: [`LOGIN_LIMIT`] failures at once, then one more per minute. A
//! success forgets the pair. Keying on the pair means a wrong password typed from one place does not lock the
//! user out everywhere, and one address cannot guess many users faster than the limit allows each.

use std::collections::HashMap;
use std::time::Duration;

use crate::admission::{Limiter, RateLimit};

/// Five failed sign-ins at once, then one a minute.
pub const LOGIN_LIMIT: RateLimit = RateLimit {
    burst: 5,
    every: Duration::from_secs(60),
};

/// Pairs remembered at most; beyond it the pairs whose failures have all been earned back are dropped first,
/// then the oldest ones (a flood of addresses costs bounded memory).
const MAX_PAIRS: usize = 10_000;

/// Failed sign-ins per (user, address), on a monotonic millisecond clock.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    pairs: HashMap<(String, String), Limiter>,
}

impl LoginLimiter {
    /// Whether a sign-in of `user` from `address` may be tried at `now_ms`; else how long to wait.
    pub fn check(&self, user: &str, address: &str, now_ms: u64) -> Result<(), Duration> {
        match self.pairs.get(&(user.to_string(), address.to_string())) {
            Some(limiter) => {
                let mut probe = *limiter;
                probe.take(LOGIN_LIMIT, now_ms)
            }
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in.
    pub fn failed(&mut self, user: &str, address: &str, now_ms: u64) {
        if self.pairs.len() >= MAX_PAIRS {
            self.evict(now_ms);
        }
        let limiter = self
            .pairs
            .entry((user.to_string(), address.to_string()))
            .or_default();
        // When already over the limit the failure earns nothing more; the wait simply continues.
        let _ = limiter.take(LOGIN_LIMIT, now_ms);
    }

    /// Forgets the pair after a successful sign-in.
    pub fn succeeded(&mut self, user: &str, address: &str) {
        self.pairs.remove(&(user.to_string(), address.to_string()));
    }

    fn evict(&mut self, now_ms: u64) {
        self.pairs.retain(|_, l| {
            // A limiter that could take a whole burst again is as good as new: forget it.
            let mut probe = *l;
            !(0..LOGIN_LIMIT.burst).all(|_| probe.take(LOGIN_LIMIT, now_ms).is_ok())
        });
        while self.pairs.len() >= MAX_PAIRS {
            let Some(key) = self.pairs.keys().next().cloned() else {
                break;
            };
            self.pairs.remove(&key);
        }
    }

    /// Pairs remembered (for tests).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is remembered.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Within any minute-long stretch after the first burst, a pair gets at most one more failed attempt in;
        /// another pair is never affected; a success starts over.
        #[test]
        fn failures_are_limited_per_pair(gaps in prop::collection::vec(0u64..90_000, 1..80)) {
            let mut l = LoginLimiter::default();
            let mut now = 0u64;
            let mut tried = Vec::new();
            for gap in gaps {
                now += gap;
                if l.check("ana", "10.0.0.1", now).is_ok() {
                    tried.push(now);
                    l.failed("ana", "10.0.0.1", now);
                }
                prop_assert!(l.check("ana", "10.0.0.2", now).is_ok());
                prop_assert!(l.check("bo", "10.0.0.1", now).is_ok());
            }
            // GCRA: in any window of length w, at most burst + w / every attempts.
            for (i, start) in tried.iter().enumerate() {
                let within = tried[i..].iter().take_while(|t| **t < start + 60_000).count();
                prop_assert!(within as u32 <= LOGIN_LIMIT.burst + 1, "{tried:?}");
            }
            l.succeeded("ana", "10.0.0.1");
            prop_assert!(l.check("ana", "10.0.0.1", now).is_ok());
            prop_assert!(l.is_empty());
        }
    }

    #[test]
    fn the_sixth_quick_failure_waits_a_minute() {
        let mut l = LoginLimiter::default();
        for _ in 0..5 {
            assert!(l.check("ana", "a", 0).is_ok());
            l.failed("ana", "a", 0);
        }
        let wait = l.check("ana", "a", 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(l.check("ana", "a", 60_000).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let mut l = LoginLimiter::default();
        for i in 0..(MAX_PAIRS + 50) {
            l.failed("ana", &i.to_string(), 0);
        }
        assert!(l.len() <= MAX_PAIRS);
    }
}
