//! A warning the daemon would otherwise repeat on every poll (the server's trust chain refused, for as long as
//! the server serves it) is logged once per distinct cause: again only when the cause changes, or after the
//! condition ended and came back. The log stays readable and a new cause is never hidden behind an old one.

/// Remembers the last cause logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayOnce<K> {
    last: Option<K>,
}

impl<K: PartialEq> SayOnce<K> {
    /// Whether to log `cause` now: the first time, and whenever it differs from the last one logged.
    pub fn should_say(&mut self, cause: K) -> bool {
        if self.last.as_ref() == Some(&cause) {
            return false;
        }
        self.last = Some(cause);
        true
    }

    /// The condition ended (e.g. the chain was walked): its next occurrence is logged, even with the same cause.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

/// Why the server's trust chain was not walked, as [`SayOnce`] tells causes apart: the robot's root version, the
/// version the server publishes and the reason.
pub type ChainRefused = (u64, u64, String);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over any run of polls (`Some(cause)`: refused; `None`: walked), a cause is logged exactly when it is
        /// not the one logged last since the last success: never twice in a row, every change and every return
        /// after a success said.
        #[test]
        fn logs_each_change_once(polls in proptest::collection::vec(proptest::option::of(0u8..4), 0..60)) {
            let mut once = SayOnce::default();
            let mut shown: Option<u8> = None;
            for poll in polls {
                match poll {
                    None => {
                        once.clear();
                        shown = None;
                    }
                    Some(cause) => {
                        let said = once.should_say(cause);
                        prop_assert_eq!(said, shown != Some(cause));
                        shown = Some(cause);
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_refusal_every_poll_is_said_once() {
        let mut once = SayOnce::<ChainRefused>::default();
        let refused = |reason: &str| (1, 4, reason.to_string());
        assert!(once.should_say(refused("link 2 not signed")));
        for _ in 0..10 {
            assert!(!once.should_say(refused("link 2 not signed")));
        }
        assert!(
            once.should_say((1, 5, "link 2 not signed".into())),
            "the server published more"
        );
        assert!(once.should_say((1, 5, "timeout".into())), "another reason");
        once.clear();
        assert!(
            once.should_say((1, 5, "timeout".into())),
            "it came back after a success"
        );
    }
}
