//! Robot admission, pure: what an enrollment gets (a token, a wait, a refusal) from what the server knows of
//! the id and key, the operator's state changes, token lifetime, and the rate limit on robots asking to be
//! admitted with the fleet secret alone. No I/O and no clock: callers pass the time.

use std::time::Duration;

use ota_protocol::admin::Admission;
use serde::{Deserialize, Serialize};

/// How a server treats a robot it does not know that presents the fleet secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// It waits (pending) until an operator admits it: the secret alone never yields a token.
    #[default]
    Manual,
    /// It is accepted at once (labs, demos, load tests): the secret is the only gate.
    Auto,
}

/// What the server knows of an id when a robot proves a key for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// Its admission state.
    pub admission: Admission,
    /// Whether the presented key is the one on record.
    pub same_key: bool,
}

/// The answer to a key-proving enrollment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A token for a known, accepted key.
    Token,
    /// A new identity, accepted at once (`admission = "auto"`): record it, then a token.
    AdmitNew,
    /// A new identity, pending: record it (one take from the rate limiter), no token.
    AskNew,
    /// A pending identity asked again: no token yet.
    Waiting,
    /// Refused.
    Refuse(Refusal),
}

/// Why an enrollment is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An unknown id without the fleet secret.
    WrongSecret,
    /// The id belongs to another key.
    OtherKey,
    /// An operator rejected (or revoked) it.
    Rejected,
}

/// Decides a key-proving enrollment. The fleet secret matters only for an id the server does not know: a
/// known key (pre-authorised, admitted, pending) is its own credential.
pub fn decide(known: Option<Known>, secret_ok: bool, mode: AdmissionMode) -> Verdict {
    match known {
        None if !secret_ok => Verdict::Refuse(Refusal::WrongSecret),
        None => match mode {
            AdmissionMode::Auto => Verdict::AdmitNew,
            AdmissionMode::Manual => Verdict::AskNew,
        },
        Some(k) if !k.same_key => Verdict::Refuse(Refusal::OtherKey),
        Some(k) => match k.admission {
            Admission::Pending => Verdict::Waiting,
            Admission::Accepted => Verdict::Token,
            Admission::Rejected => Verdict::Refuse(Refusal::Rejected),
        },
    }
}

/// An operator's change of a robot's admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Admit a robot that asked (or one rejected before).
    Admit,
    /// Reject a robot (pending or accepted): its tokens stop working.
    Reject,
    /// Accept a key before the robot first asks; `same_key`: whether the key equals the one on record.
    Preauthorize {
        /// Whether a record exists with this very key.
        same_key: bool,
    },
}

/// Why an operator's change is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpError {
    /// Admit or reject of an id no robot asked for.
    Unknown,
    /// Pre-authorising another key for an id admitted or rejected with a different one.
    OtherKey,
}

/// The state after an operator's change, from the current one (`None`: no record).
pub fn transition(current: Option<Admission>, op: Op) -> Result<Admission, OpError> {
    match (current, op) {
        (None, Op::Admit | Op::Reject) => Err(OpError::Unknown),
        (Some(_), Op::Admit) => Ok(Admission::Accepted),
        (Some(_), Op::Reject) => Ok(Admission::Rejected),
        // A pending request under another key may be an impostor: the operator's key wins.
        (None | Some(Admission::Pending), Op::Preauthorize { .. }) => Ok(Admission::Accepted),
        (Some(a), Op::Preauthorize { same_key: true }) => Ok(if a == Admission::Rejected {
            Admission::Rejected
        } else {
            Admission::Accepted
        }),
        (Some(_), Op::Preauthorize { same_key: false }) => Err(OpError::OtherKey),
    }
}

/// Whether a device token with this expiry (`None`: an older robot's token without one) is valid at `now`.
pub fn token_live(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_none_or(|at| now < at)
}

/// A rate limit: `burst` requests at once, then one per `every` (the generic cell rate algorithm: one number
/// of state, exact in integer milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed at once.
    pub burst: u32,
    /// Time that earns one more request.
    pub every: Duration,
}

/// Robots asking to be admitted with the fleet secret: 30 at once, then one every 2 seconds per replica.
pub const ASK_LIMIT: RateLimit = RateLimit {
    burst: 30,
    every: Duration::from_secs(2),
};

/// The limiter's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limiter {
    /// Theoretical arrival time of the next request, in milliseconds of the caller's clock.
    tat: u64,
}

impl Limiter {
    /// Takes one request at `now_ms` (a monotonic clock), or says how long to wait before one is allowed.
    pub fn take(&mut self, limit: RateLimit, now_ms: u64) -> Result<(), Duration> {
        let every = limit.every.as_millis() as u64;
        let tolerance = every * u64::from(limit.burst.saturating_sub(1));
        let tat = self.tat.max(now_ms);
        let ahead = tat - now_ms;
        if limit.burst == 0 || ahead > tolerance {
            let wait = if limit.burst == 0 {
                every
            } else {
                ahead - tolerance
            };
            return Err(Duration::from_millis(wait.max(1)));
        }
        self.tat = tat + every;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn admission() -> impl Strategy<Value = Admission> {
        prop::sample::select(Admission::ALL.to_vec())
    }

    #[test]
    fn the_secret_alone_never_yields_a_token_under_manual_admission() {
        assert_eq!(decide(None, true, AdmissionMode::Manual), Verdict::AskNew);
        assert_eq!(decide(None, true, AdmissionMode::Auto), Verdict::AdmitNew);
        assert_eq!(AdmissionMode::default(), AdmissionMode::Manual);
    }

    proptest! {
        #[test]
        fn only_the_recorded_accepted_key_gets_a_token(
            known in prop::option::of((admission(), any::<bool>())),
            secret_ok in any::<bool>(),
            auto in any::<bool>(),
        ) {
            let mode = if auto { AdmissionMode::Auto } else { AdmissionMode::Manual };
            let known = known.map(|(admission, same_key)| Known { admission, same_key });
            let v = decide(known, secret_ok, mode);
            let token = matches!(v, Verdict::Token | Verdict::AdmitNew);
            match known {
                // An unknown robot: only the secret, and only under auto admission.
                None => prop_assert_eq!(token, secret_ok && auto),
                Some(k) => {
                    prop_assert_eq!(token, k.same_key && k.admission == Admission::Accepted);
                    if !k.same_key {
                        prop_assert_eq!(v, Verdict::Refuse(Refusal::OtherKey));
                    }
                    // A rejected robot stays refused, whatever it presents.
                    if k.admission == Admission::Rejected {
                        prop_assert!(matches!(v, Verdict::Refuse(_)));
                    }
                }
            }
        }

        #[test]
        fn operator_changes(current in prop::option::of(admission()), same_key in any::<bool>()) {
            prop_assert_eq!(
                transition(current, Op::Admit),
                current.map(|_| Admission::Accepted).ok_or(OpError::Unknown)
            );
            prop_assert_eq!(
                transition(current, Op::Reject),
                current.map(|_| Admission::Rejected).ok_or(OpError::Unknown)
            );
            let pre = transition(current, Op::Preauthorize { same_key });
            match current {
                None | Some(Admission::Pending) => prop_assert_eq!(pre, Ok(Admission::Accepted)),
                // Pre-authorising never lifts a rejection nor swaps the key of a decided robot.
                Some(a) if same_key => prop_assert_eq!(pre, Ok(a)),
                Some(_) => prop_assert_eq!(pre, Err(OpError::OtherKey)),
            }
        }

        #[test]
        fn tokens_die_at_their_expiry(at in 0u64..1_000_000, now in 0u64..1_000_000) {
            prop_assert_eq!(token_live(Some(at), now), now < at);
            prop_assert!(token_live(None, now));
        }

        /// With a virtual clock: in every window of `w` ms at most `burst + w / every` requests pass, a refused
        /// request names a wait after which the next one passes, and an idle limiter lets a whole burst through.
        #[test]
        fn the_limiter_bounds_every_window(
            burst in 1u32..20,
            every_ms in 1u64..5_000,
            gaps in prop::collection::vec(0u64..3_000, 1..200),
        ) {
            let limit = RateLimit { burst, every: Duration::from_millis(every_ms) };
            let mut limiter = Limiter::default();
            let mut now = 1_000_000u64;
            let mut passed = Vec::new();
            for gap in gaps {
                now += gap;
                match limiter.take(limit, now) {
                    Ok(()) => passed.push(now),
                    Err(wait) => {
                        let mut probe = limiter;
                        let later = now + wait.as_millis() as u64;
                        prop_assert!(probe.take(limit, later).is_ok());
                        prop_assert!(probe.take(limit, later).is_err() || burst > 1);
                    }
                }
            }
            for (i, &start) in passed.iter().enumerate() {
                for (j, &end) in passed.iter().enumerate().skip(i) {
                    let allowed = u64::from(burst) + (end - start) / every_ms;
                    prop_assert!((j - i + 1) as u64 <= allowed, "{} in {} ms", j - i + 1, end - start);
                }
            }
            let mut idle = limiter;
            let later = now + every_ms * u64::from(burst) + every_ms;
            for _ in 0..burst {
                prop_assert!(idle.take(limit, later).is_ok());
            }
            prop_assert!(idle.take(limit, later).is_err());
        }
    }
}
