//! The lease decision, without I/O or a clock of its own: a replica may run the once-only periodic jobs while the
//! database confirmed, less than `ttl` ago, that this replica holds the lock. A failed or negative check takes
//! the lease away at once; a replica cut off from the database stops acting within `ttl`, before the database
//! drops its session and another replica can take the lock. (Compare-and-set on the rollout rows keeps each
//! effect exactly-once even in the moment two replicas believe they hold it; the lease keeps them from racing.)

use std::time::Duration;

/// What one check of the lock said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The database says this replica holds the lock (it took it, or its session is alive and holds it).
    Held,
    /// Another replica holds it.
    Taken,
    /// The database did not answer.
    Failed,
}

/// A replica's view of the lease. Times are offsets on a monotonic clock the caller chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    confirmed_at: Option<Duration>,
}

impl Holding {
    /// Takes in a check made at `at`.
    pub fn observe(&mut self, check: Check, at: Duration) {
        self.confirmed_at = match check {
            Check::Held => Some(self.confirmed_at.map_or(at, |t| t.max(at))),
            Check::Taken | Check::Failed => None,
        };
    }

    /// Whether this replica holds the lock by what it knows at `now`.
    pub fn held(&self) -> bool {
        self.confirmed_at.is_some()
    }

    /// Whether the once-only jobs may run at `now`: held, and confirmed less than `ttl` ago.
    pub fn may_act(&self, now: Duration, ttl: Duration) -> bool {
        self.confirmed_at
            .is_some_and(|t| now >= t && now.saturating_sub(t) < ttl)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn check() -> impl Strategy<Value = Check> {
        prop_oneof![Just(Check::Held), Just(Check::Taken), Just(Check::Failed)]
    }

    proptest! {
        /// On a virtual clock: after any history, the replica acts only if its last check said "held" and was
        /// less than `ttl` ago.
        #[test]
        fn acts_only_within_ttl_of_the_last_confirmation(
            steps in proptest::collection::vec((0u64..5_000, check()), 0..40),
            wait in 0u64..10_000,
        ) {
            let mut clock = Duration::ZERO;
            let mut holding = Holding::default();
            let mut last = None;
            for (advance, c) in steps {
                clock += Duration::from_millis(advance);
                holding.observe(c, clock);
                last = Some((c, clock));
            }
            let now = clock + Duration::from_millis(wait);
            let expected = matches!(last, Some((Check::Held, at)) if now - at < TTL);
            prop_assert_eq!(holding.may_act(now, TTL), expected);
        }
    }

    #[test]
    fn a_failed_check_ends_the_lease_at_once() {
        let mut h = Holding::default();
        assert!(!h.may_act(Duration::ZERO, TTL), "nobody starts holding it");
        h.observe(Check::Held, Duration::from_secs(10));
        assert!(h.may_act(Duration::from_secs(12), TTL));
        assert!(
            !h.may_act(Duration::from_secs(13), TTL),
            "unconfirmed for ttl"
        );
        h.observe(Check::Failed, Duration::from_secs(11));
        assert!(!h.may_act(Duration::from_secs(11), TTL));
        assert!(!h.held());
    }
}
