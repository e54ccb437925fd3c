//! Freeze and replay detection without a trusted clock: what the robot concludes from the signed timestamps
//! it is shown (docs/time-model.md).
//!
//! Many robots boot at 1970, so nothing here reads a wall clock. The robot keeps two things that only move
//! forward: the newest timestamp version it verified, and a time floor (the image's build time, raised to the
//! `issued_at` of every new timestamp). A timestamp that expired before the floor is a replay and raises the
//! alarm; an older version is refused quietly (a replica a period behind, a cache). "Stale" is measured in the
//! robot's own uptime, accumulated across restarts: no new timestamp for longer than `max_age` of running raises
//! the alarm. The signatures are checked before anything gets here (`ota_keys::timestamp`); the agent keeps
//! [`FreshnessState`] in its data directory and saves it when [`Freshness::take_save`] says so.

use std::time::Duration;

use ota_protocol::fleet::{FreezeAlarm, FreezeReason};
use serde::{Deserialize, Serialize};

/// A crash loses at most this much of the uptime counted towards staleness (or `max_age / 16` when shorter).
pub const SAVE_EVERY: Duration = Duration::from_secs(600);

/// A verified timestamp, as far as freshness is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Monotonic version.
    pub version: u64,
    /// When it was signed (Unix seconds, by the signer's clock).
    pub issued_at: u64,
    /// When it stops being fresh (Unix seconds, by the signer's clock).
    pub expires: u64,
}

/// Why the last timestamp was refused loudly (kept until a new one is accepted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// [`FreezeReason::Replayed`] or [`FreezeReason::Invalid`].
    pub reason: FreezeReason,
    /// Its version, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// What was wrong, for the log and `ota-client status`.
    pub detail: String,
}

/// What the robot remembers about freshness; the agent keeps it in `DATA_DIR/freshness.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessState {
    /// The timestamp keys (ids) the rest was learnt under: a new set (a rotated root) starts over.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The newest timestamp verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<Seen>,
    /// The time floor (Unix seconds): nothing that expired before it is believed. Never decreases.
    #[serde(default)]
    pub floor: u64,
    /// Uptime (milliseconds, summed over the daemon's runs) since `newest` was verified, or since freshness
    /// was first tracked.
    #[serde(default)]
    pub stale_ms: u64,
    /// The last loud refusal, until a new timestamp is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
}

/// The robot's settings for freshness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Uptime without a new timestamp after which the alarm is raised.
    pub max_age: Duration,
    /// The image's build time (Unix seconds): the floor's starting point.
    pub build_time: u64,
}

/// What became of a timestamp the robot was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A newer version: accepted, the floor moves up to its `issued_at`, staleness starts again.
    Fresh,
    /// The version already held: nothing changes (staleness keeps counting).
    Same,
    /// An older version that has not expired yet: refused, no alarm (a replica or a cache behind).
    Older,
    /// Expired before the floor: refused as a replay, alarm.
    Expired,
}

impl FreshnessState {
    /// The alarm this state means under `policy`: a loud refusal first, else staleness.
    pub fn alarm(&self, policy: &Policy) -> Option<FreezeAlarm> {
        let reason = match &self.refused {
            Some(r) => r.reason,
            None if self.stale_ms >= millis(policy.max_age) => FreezeReason::Stale,
            None => return None,
        };
        Some(FreezeAlarm {
            reason,
            stale_secs: self.stale_ms / 1000,
            last_version: self.newest.map(|n| n.version),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One daemon run's view of freshness: the saved state plus this run's monotonic clock.
#[derive(Clone, Debug)]
pub struct Freshness {
    policy: Policy,
    state: FreshnessState,
    /// This run's monotonic time of the last accounting (`None` until the first tick of the run).
    last_tick: Option<Duration>,
    /// `stale_ms` and the alarm as last saved.
    saved: (u64, Option<FreezeReason>),
    changed: bool,
}

impl Freshness {
    /// Resumes from `saved` (default when none) for the timestamp keys `keys` (ids, any order): the floor is
    /// raised to the build time; with other keys than the saved state's, what was learnt is dropped (a root
    /// rotation replaced a key that may have signed nonsense) but the uptime already counted is kept.
    pub fn new(policy: Policy, saved: FreshnessState, keys: &[String]) -> Self {
        let mut keys = keys.to_vec();
        keys.sort();
        let mut state = saved;
        let mut changed = false;
        if state.keys != keys {
            state = FreshnessState {
                keys,
                stale_ms: state.stale_ms,
                ..FreshnessState::default()
            };
            changed = true;
        }
        if policy.build_time > state.floor {
            state.floor = policy.build_time;
            changed = true;
        }
        let saved = (state.stale_ms, state.alarm(&policy).map(|a| a.reason));
        Freshness {
            policy,
            state,
            last_tick: None,
            saved,
            changed,
        }
    }

    /// Counts the uptime since the last tick of this run (`now`: this run's monotonic time).
    pub fn tick(&mut self, now: Duration) {
        if let Some(last) = self.last_tick {
            let ran = millis(now.saturating_sub(last));
            self.state.stale_ms = self.state.stale_ms.saturating_add(ran);
        }
        self.last_tick = Some(self.last_tick.map_or(now, |l| l.max(now)));
    }

    /// Judges a timestamp whose signature verified, at `now`.
    pub fn observe(&mut self, now: Duration, ts: Seen) -> Verdict {
        self.tick(now);
        if ts.expires < self.state.floor {
            self.refuse(
                FreezeReason::Replayed,
                Some(ts.version),
                format!(
                    "timestamp version {} expired at {} before this robot's time floor {}: old metadata \
                     replayed, or the server's clock is far behind",
                    ts.version, ts.expires, self.state.floor
                ),
            );
            return Verdict::Expired;
        }
        match self.state.newest {
            Some(n) if ts.version < n.version => return Verdict::Older,
            Some(n) if ts.version == n.version => return Verdict::Same,
            _ => {}
        }
        self.state.newest = Some(ts);
        self.state.floor = self.state.floor.max(ts.issued_at);
        self.state.stale_ms = 0;
        self.state.refused = None;
        self.changed = true;
        Verdict::Fresh
    }

    /// A timestamp whose signature did not verify (or that could not be read), at `now`.
    pub fn refuse_invalid(&mut self, now: Duration, version: Option<u64>, detail: String) {
        self.tick(now);
        self.refuse(FreezeReason::Invalid, version, detail);
    }

    fn refuse(&mut self, reason: FreezeReason, version: Option<u64>, detail: String) {
        let refused = Refused {
            reason,
            version,
            detail,
        };
        if self.state.refused.as_ref() != Some(&refused) {
            self.state.refused = Some(refused);
            self.changed = true;
        }
    }

    /// The alarm to report now, if any.
    pub fn alarm(&self) -> Option<FreezeAlarm> {
        self.state.alarm(&self.policy)
    }

    /// The state to save.
    pub fn state(&self) -> &FreshnessState {
        &self.state
    }

    /// Whether the state should be saved now (and, when true, that it is taken as saved): after anything
    /// but counting changed, when the alarm came or went, or every [`SAVE_EVERY`] (at most `max_age / 16`)
    /// of counted uptime.
    pub fn take_save(&mut self) -> bool {
        let every = millis(SAVE_EVERY.min(self.policy.max_age / 16)).max(1);
        let alarm = self.alarm().map(|a| a.reason);
        let due = self.changed
            || alarm != self.saved.1
            || self.state.stale_ms.saturating_sub(self.saved.0) >= every;
        if due {
            self.saved = (self.state.stale_ms, alarm);
            self.changed = false;
        }
        due
    }
}

#[cfg(test)]
mod tests;
