//! The daemon's freeze and replay watch: verifies the timestamp each poll response carries against the
//! trust root's `timestamp` role (`ota_keys::timestamp`), feeds the verdict to the pure
//! `ota_client_core::freshness::Freshness` and keeps its state in `DATA_DIR/freshness.json`. The alarm goes
//! out with every poll while it lasts and `ota-client status` shows it. A robot whose root names no timestamp
//! role does none of this (today's behaviour).

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ota_client_core::daemon::Level;
use ota_client_core::freshness::{Freshness, FreshnessState, Policy, Seen, Verdict};
use ota_image_io::atomic::write_atomically;
use ota_keys::timestamp::{parse_timestamp, verify_timestamp, TimestampError};
use ota_keys::TrustRoot;
use ota_protocol::fleet::{FreezeAlarm, FreezeReason};
use serde::Serialize;

use super::log::Log;
use crate::config::{Config, DEFAULT_MAX_METADATA_AGE};

/// The freshness state, in the data directory.
pub const FRESHNESS_FILE: &str = "freshness.json";

/// What `ota-client status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FreshnessStatus {
    /// The alarm the daemon sends with its polls, if any.
    pub alarm: Option<FreezeAlarm>,
    /// What the robot remembers.
    pub state: FreshnessState,
}

/// What `ota-client status` shows for `config` and the robot's trust root (`Client::trust_root`); `None` when
/// the root names no timestamp role.
pub fn freshness_status(config: &Config, root: &TrustRoot) -> Option<FreshnessStatus> {
    let keys = role_keys(root)?;
    let (saved, _) = load(&config.data_dir.join(FRESHNESS_FILE));
    let f = Freshness::new(policy(config), saved, &keys);
    Some(FreshnessStatus {
        alarm: f.alarm(),
        state: f.state().clone(),
    })
}

/// The policy of `config`: `[server] max_metadata_age_secs` and the image's build time (`[server] build_time`,
/// else the modification time of the image's trust root file, which the image build wrote).
fn policy(config: &Config) -> Policy {
    let server = config.server.as_ref();
    Policy {
        max_age: server.map_or(DEFAULT_MAX_METADATA_AGE, |s| s.max_metadata_age),
        build_time: server
            .and_then(|s| s.build_time)
            .or_else(|| mtime(&config.trust_root))
            .unwrap_or(0),
    }
}

fn mtime(path: &Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// The ids of `root`'s timestamp keys, sorted; `None` without a timestamp role.
fn role_keys(root: &TrustRoot) -> Option<Vec<String>> {
    let role = root.timestamp.as_ref()?;
    let mut ids: Vec<String> = role.keys.iter().map(|k| k.key_id().to_string()).collect();
    ids.sort();
    Some(ids)
}

/// The saved state: the default when missing or unreadable, with the reason when unreadable.
fn load(path: &Path) -> (FreshnessState, Option<String>) {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => (state, None),
            Err(e) => (
                FreshnessState::default(),
                Some(format!(
                    "{} is corrupt ({e}); freeze detection starts over from the image's build time",
                    path.display()
                )),
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (FreshnessState::default(), None),
        Err(e) => (
            FreshnessState::default(),
            Some(format!("reading {}: {e}", path.display())),
        ),
    }
}

/// Writes the state atomically; a failure is a warning (the alarm still goes out from memory).
fn save(path: &Path, state: &FreshnessState, log: &Log) {
    let bytes = serde_json::to_vec_pretty(state).expect("serialisable");
    if let Err(e) = write_atomically(path, &bytes, 0o644) {
        log.line(
            Level::Warn,
            &format!("cannot save the freeze-detection state: {e}"),
        );
    }
}

/// One daemon run's watch.
pub(super) struct Watch {
    policy: Policy,
    path: PathBuf,
    /// `None` while the trust root names no timestamp role.
    active: Option<Freshness>,
    /// The role's key ids `active` follows.
    keys: Vec<String>,
    /// Whether a response without a timestamp was logged already (once per run).
    told_missing: bool,
    /// The alarm last logged (logged when it comes, changes or goes).
    logged: Option<FreezeReason>,
}

impl Watch {
    pub(super) fn open(config: &Config) -> Watch {
        Watch {
            policy: policy(config),
            path: config.data_dir.join(FRESHNESS_FILE),
            active: None,
            keys: Vec::new(),
            told_missing: false,
            logged: None,
        }
    }

    /// Follows the trust root's timestamp role (`root`: the robot's root now, `None` when it cannot be read,
    /// which an install reports): starts from the saved state, starts over with new keys, or stops without a
    /// role.
    fn follow(&mut self, root: Option<&TrustRoot>, log: &Log) -> Option<()> {
        let Some(keys) = root.and_then(role_keys) else {
            self.active = None;
            return None;
        };
        if self.active.is_none() || keys != self.keys {
            let saved = match self.active.take() {
                Some(f) => f.state().clone(),
                None => {
                    let (state, problem) = load(&self.path);
                    if let Some(p) = problem {
                        log.line(Level::Error, &p);
                    }
                    state
                }
            };
            self.active = Some(Freshness::new(self.policy, saved, &keys));
            self.keys = keys;
        }
        Some(())
    }

    /// Before a poll at `now` (this run's monotonic time): counts the uptime, saves when due and returns the
    /// alarm to send.
    pub(super) fn before_poll(
        &mut self,
        now: Duration,
        root: Option<&TrustRoot>,
        log: &Log,
    ) -> Option<FreezeAlarm> {
        self.follow(root, log)?;
        let f = self.active.as_mut()?;
        f.tick(now);
        let alarm = f.alarm();
        self.settle(log);
        alarm
    }

    /// After a poll at `now`: judges the response's timestamp.
    pub(super) fn after_poll(
        &mut self,
        now: Duration,
        root: Option<&TrustRoot>,
        timestamp: Option<&serde_json::Value>,
        log: &Log,
    ) {
        let (Some(root), Some(()), Some(f)) = (root, self.follow(root, log), self.active.as_mut())
        else {
            return;
        };
        match timestamp.map(|v| parse_timestamp(v).and_then(|doc| verify_timestamp(root, &doc))) {
            None => {
                f.tick(now);
                if !std::mem::replace(&mut self.told_missing, true) {
                    log.line(
                        Level::Warn,
                        "the server sent no timestamp, but this robot's trust root names a timestamp key: \
                         give the server its timestamp key (`ota-server timestamp-key`)",
                    );
                }
            }
            Some(Ok(ts)) => {
                let seen = Seen {
                    version: ts.version,
                    issued_at: ts.issued_at,
                    expires: ts.expires,
                };
                // A refused replay is logged once, with the alarm below.
                if f.observe(now, seen) == Verdict::Older {
                    let newest = f.state().newest.map_or(0, |n| n.version);
                    log.line(
                        Level::Debug,
                        &format!(
                            "refused timestamp version {}: older than version {newest} already seen",
                            ts.version
                        ),
                    );
                }
            }
            Some(Err(e)) => {
                let version = match &e {
                    TimestampError::NotSigned { version, .. }
                    | TimestampError::Malformed { version, .. } => Some(*version),
                    _ => None,
                };
                f.refuse_invalid(now, version, format!("refused the server's timestamp: {e}"));
            }
        }
        self.settle(log);
    }

    /// Saves the state now (the daemon is stopping), so no counted uptime is lost.
    pub(super) fn stop(&mut self, log: &Log) {
        if let Some(f) = &mut self.active {
            f.take_save();
            save(&self.path, f.state(), log);
        }
    }

    /// Logs the alarm when it comes, changes or goes, and saves the state when due.
    fn settle(&mut self, log: &Log) {
        let Some(f) = &mut self.active else {
            return;
        };
        let alarm = f.alarm();
        let reason = alarm.as_ref().map(|a| a.reason);
        if reason != self.logged {
            self.logged = reason;
            let (level, line) = match (&alarm, &f.state().refused) {
                (None, _) => (Level::Info, "freeze alarm cleared: a fresh timestamp".to_string()),
                (Some(a), Some(r)) => (
                    Level::Error,
                    format!("freeze alarm ({}): {}", a.reason.as_str(), r.detail),
                ),
                (Some(a), None) => (
                    Level::Error,
                    format!(
                        "freeze alarm (stale): no new signed timestamp for {} s of this robot's uptime \
                         (newest version {}); the server or the network may be withholding updates",
                        a.stale_secs,
                        a.last_version
                            .map_or_else(|| "none".to_string(), |v| v.to_string())
                    ),
                ),
            };
            log.line(level, &line);
        }
        if f.take_save() {
            save(&self.path, f.state(), log);
        }
    }
}
