//! When a session ends, pure (times are Unix seconds, the caller's clock): a session lives until it has been
//! idle for `idle_secs` or is `absolute_secs` old, whichever comes first. Its last use is written to the store
//! at most once per [`SessionPolicy::touch_interval`], so a busy page does not write on every request; the idle
//! timer can therefore run up to that interval early, never late.

/// How long sessions live (`--session-idle-secs`, `--session-max-secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle_secs: u64,
    /// A session this old ends, however busy.
    pub absolute_secs: u64,
}

impl Default for SessionPolicy {
    /// One hour idle, twelve hours at most: a working day at the console with one sign-in.
    fn default() -> Self {
        SessionPolicy {
            idle_secs: 3600,
            absolute_secs: 12 * 3600,
        }
    }
}

/// Why a session no longer works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    /// Unused for longer than the idle limit.
    #[error("the session ended after being idle; sign in again")]
    Idle,
    /// Older than the absolute limit.
    #[error("the session reached its maximum age; sign in again")]
    Absolute,
}

impl SessionPolicy {
    /// When a session created at `created_at` and last used at `last_used` ends if not used again.
    pub fn expires_at(&self, created_at: u64, last_used: u64) -> u64 {
        last_used
            .saturating_add(self.idle_secs)
            .min(created_at.saturating_add(self.absolute_secs))
    }

    /// Whether the session still works at `now`.
    pub fn check(&self, created_at: u64, last_used: u64, now: u64) -> Result<(), SessionEnd> {
        if now >= created_at.saturating_add(self.absolute_secs) {
            Err(SessionEnd::Absolute)
        } else if now >= last_used.saturating_add(self.idle_secs) {
            Err(SessionEnd::Idle)
        } else {
            Ok(())
        }
    }

    /// How stale a stored last use may get before a request writes a new one: a tenth of the idle limit, at
    /// least a second, at most a minute.
    pub fn touch_interval(&self) -> u64 {
        (self.idle_secs / 10).clamp(1, 60)
    }

    /// Whether a request at `now` writes its use (the stored one is `stored_last_used`).
    pub fn needs_touch(&self, stored_last_used: u64, now: u64) -> bool {
        now.saturating_sub(stored_last_used) >= self.touch_interval()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Replays a session used at the given gaps on a virtual clock, touching it as the server does; checks the
    /// verdict at every use against the rule written out directly.
    fn replay(policy: SessionPolicy, gaps: &[u64]) {
        let created = 1_000_000;
        let mut now = created;
        let mut stored = created;
        let mut true_last = created;
        for gap in gaps {
            now += gap;
            let verdict = policy.check(created, stored, now);
            let too_old = now - created >= policy.absolute_secs;
            // The stored use lags the true one by less than the touch interval: never late, at most that early.
            let idle_true = now - true_last >= policy.idle_secs;
            let idle_stored = now - stored >= policy.idle_secs;
            match verdict {
                Err(SessionEnd::Absolute) => assert!(too_old),
                Err(SessionEnd::Idle) => {
                    assert!(!too_old && idle_stored);
                    assert!(
                        idle_true || now - true_last + policy.touch_interval() > policy.idle_secs
                    );
                }
                Ok(()) => {
                    assert!(!too_old && !idle_true);
                    assert!(now < policy.expires_at(created, stored));
                    if policy.needs_touch(stored, now) {
                        stored = now;
                    }
                    true_last = now;
                }
            }
            if verdict.is_err() {
                return;
            }
        }
    }

    proptest! {
        #[test]
        fn sessions_end_when_idle_or_too_old(
            idle in 1u64..10_000,
            absolute in 1u64..100_000,
            gaps in prop::collection::vec(0u64..12_000, 0..60),
        ) {
            replay(SessionPolicy { idle_secs: idle, absolute_secs: absolute }, &gaps);
        }

        #[test]
        fn expiry_is_the_first_failing_instant(
            idle in 1u64..10_000,
            absolute in 1u64..100_000,
            used_after in 0u64..100_000,
        ) {
            let p = SessionPolicy { idle_secs: idle, absolute_secs: absolute };
            let (created, last) = (500, 500 + used_after);
            let at = p.expires_at(created, last);
            if at > last {
                prop_assert!(p.check(created, last, at - 1).is_ok());
            }
            prop_assert!(p.check(created, last, at).is_err());
        }
    }

    #[test]
    fn a_busy_session_still_ends_at_its_absolute_age() {
        let p = SessionPolicy {
            idle_secs: 60,
            absolute_secs: 600,
        };
        let mut stored = 0;
        for now in (0..600).step_by(10) {
            assert_eq!(p.check(0, stored, now), Ok(()));
            if p.needs_touch(stored, now) {
                stored = now;
            }
        }
        assert_eq!(p.check(0, stored, 600), Err(SessionEnd::Absolute));
        assert_eq!(p.check(0, 0, 60), Err(SessionEnd::Idle));
        assert_eq!(p.touch_interval(), 6);
    }
}
