//! [`DaemonMachine`]: the daemon's loop as a state machine.
//!
//! One cycle: enroll if there is no token; report every unreported client event in order,
//! acknowledging each only after the server has it (at least once, under a stable id); poll;
//! on an offer report `downloading`, install, then report `rebooting` and reboot. A cycle
//! that ends without an offer waits the server's poll interval (with its jitter) and resets
//! the backoff; a failed one backs off (a give-up for at least half the longest backoff, a
//! 401 after forgetting the token). An offer whose install failed is reported at once and
//! polled again only after a backoff, so a server that keeps offering a refused bundle does
//! not get a download loop.

use std::collections::VecDeque;
use std::time::Duration;

use ota_protocol::device::{PollResponse, ReportStatus, UpdateOffer};

use super::action::{Action, ErrorKind, Exit, Failure, Input, InstallResult, Level, Settings};
use super::backoff::Backoff;
use super::report::{event_offer, event_report, status_report};
use super::state::{enroll_request_id, ActiveOffer, DaemonState};
use crate::slot::{EventKind, ReportEvent};

/// How a failed cycle is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Back off, honouring `Retry-After`.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Forget the token and enroll again after a backoff.
    Reenroll(String),
    /// Retrying soon cannot help: wait at least half the longest backoff.
    Permanent(String),
}

impl Verdict {
    fn retry(why: String) -> Verdict {
        Verdict::Retry {
            why,
            retry_after: None,
        }
    }

    /// A failed request to the server (other than enrolling).
    fn of(f: Failure) -> Verdict {
        match f.kind {
            ErrorKind::Retry => Verdict::Retry {
                why: f.why,
                retry_after: f.retry_after,
            },
            ErrorKind::Reauthenticate => Verdict::Reenroll(format!(
                "the server no longer accepts this device's token ({})",
                f.message
            )),
            ErrorKind::GiveUp => Verdict::Permanent(f.why),
        }
    }
}

/// What follows the event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    Poll,
    Fail(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Forgetting the token for a new identity.
    NewIdentity {
        warn: bool,
    },
    /// Forgetting the token after a 401.
    Reenroll(String),
    Enrolling,
    Listing(Then),
    Sending {
        queue: VecDeque<ReportEvent>,
        id: u64,
        what: String,
        version: String,
        ends_offer: bool,
        then: Then,
    },
    Acking {
        queue: VecDeque<ReportEvent>,
        id: u64,
        suppressed: bool,
        ends_offer: bool,
        then: Then,
    },
    Polling,
    Downloading(UpdateOffer),
    Installing(UpdateOffer),
    ReportingFailure(semver::Version),
    AnnouncingReboot(semver::Version),
    Rebooting(semver::Version),
    Waiting,
    Exited(Exit),
}

/// The daemon's decisions; see the [module](self) docs.
#[derive(Debug, Clone)]
pub struct DaemonMachine {
    settings: Settings,
    state: DaemonState,
    loaded: bool,
    changed: bool,
    has_token: bool,
    backoff: Backoff,
    phase: Phase,
    last: Action,
    log: Vec<(Level, String)>,
}

impl DaemonMachine {
    /// A machine over the saved state (`None`: never saved) and whether a token is stored.
    pub fn new(settings: Settings, saved: Option<DaemonState>, has_token: bool) -> DaemonMachine {
        DaemonMachine {
            backoff: Backoff::new(settings.backoff_initial, settings.backoff_max),
            settings,
            loaded: saved.is_some(),
            state: saved.unwrap_or_default(),
            changed: false,
            has_token,
            phase: Phase::Idle,
            last: Action::Exit(Exit::Stopped),
            log: Vec::new(),
        }
    }

    /// The records to persist.
    pub fn state(&self) -> &DaemonState {
        &self.state
    }

    /// Whether the records changed since the last call: save them before the next action.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The log lines decided since the last call.
    pub fn take_log(&mut self) -> Vec<(Level, String)> {
        std::mem::take(&mut self.log)
    }

    /// The backoff (for tests and tools).
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Feeds `input` at `now` (any fixed origin) with a `random` word for jitter and new ids;
    /// returns what to do next. An input that does not answer the last action is ignored
    /// and the last action returned again.
    pub fn step(&mut self, now: Duration, random: u64, input: Input) -> Action {
        let action = self.decide(now, random, input);
        self.last = action.clone();
        action
    }

    fn decide(&mut self, now: Duration, random: u64, input: Input) -> Action {
        if let Phase::Exited(exit) = self.phase {
            return Action::Exit(exit);
        }
        if input == Input::Cancelled {
            return self.exit(Exit::Stopped);
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match (phase, input) {
            (Phase::Idle, Input::Start) => {
                if self.state.device_id != self.settings.device_id {
                    self.phase = Phase::NewIdentity { warn: self.loaded };
                    self.has_token = false;
                    return Action::ForgetToken;
                }
                self.started()
            }
            (Phase::NewIdentity { warn }, Input::Done) => {
                if warn {
                    self.say(
                        Level::Warn,
                        format!(
                            "device id changed from {} to {}: enrolling again",
                            self.state.device_id, self.settings.device_id
                        ),
                    );
                }
                self.state = DaemonState::new(&self.settings.device_id, random);
                self.changed = true;
                self.started()
            }
            (Phase::Reenroll(why), Input::Done) => {
                self.state.enroll_request_id = enroll_request_id(random);
                self.changed = true;
                let delay = self.backoff.next(random, None);
                self.say(
                    Level::Warn,
                    format!("{why}; enrolling again in {:.1} s", delay.as_secs_f64()),
                );
                self.wait(now, delay)
            }
            (Phase::Enrolling, Input::Done) => {
                self.has_token = true;
                self.say(
                    Level::Info,
                    format!(
                        "enrolled as {} with {}",
                        self.state.device_id, self.settings.server_url
                    ),
                );
                self.list(Then::Poll)
            }
            (Phase::Enrolling, Input::Failed(f)) => {
                let v = self.enroll_verdict(f);
                self.fail(now, random, v)
            }
            (Phase::Listing(then), Input::Events(events)) => {
                self.next_event(now, random, events.into(), then)
            }
            (
                Phase::Sending {
                    queue,
                    id,
                    what,
                    version,
                    ends_offer,
                    then,
                },
                input @ (Input::Done | Input::Failed(_)),
            ) => {
                match input {
                    Input::Failed(f) if f.kind != ErrorKind::GiveUp => {
                        return self.fail(now, random, Verdict::of(f))
                    }
                    Input::Failed(f) => self.say(
                        Level::Warn,
                        format!(
                            "the server refused the report of {what} of {version} ({}); dropping it",
                            f.why
                        ),
                    ),
                    _ => self.say(Level::Info, format!("reported {what} of {version}")),
                }
                self.phase = Phase::Acking {
                    queue,
                    id,
                    suppressed: false,
                    ends_offer,
                    then,
                };
                Action::Ack { id }
            }
            (
                Phase::Acking {
                    queue,
                    id,
                    suppressed,
                    ends_offer,
                    then,
                },
                Input::Done,
            ) => {
                if suppressed {
                    self.state.suppressed_events.retain(|&s| s != id);
                    self.changed = true;
                } else if ends_offer {
                    self.state.active = None;
                    self.changed = true;
                }
                self.next_event(now, random, queue, then)
            }
            (Phase::Acking { .. }, Input::Failed(f)) => {
                self.fail(now, random, Verdict::retry(f.why))
            }
            (Phase::Polling, Input::Polled { response, armed }) => {
                self.polled(now, random, response, armed)
            }
            (Phase::Downloading(offer), Input::Done) => {
                self.phase = Phase::Installing(offer.clone());
                Action::Install(offer)
            }
            (Phase::Installing(offer), Input::Installed(result)) => {
                self.installed(now, random, offer, result)
            }
            (Phase::ReportingFailure(version), Input::Done) => {
                self.state.active = None;
                self.changed = true;
                self.list(Then::Fail(offer_failed(&version)))
            }
            (Phase::AnnouncingReboot(version), input @ (Input::Done | Input::Failed(_))) => {
                if let Input::Failed(f) = input {
                    // The outcome is reported after the reboot anyway.
                    self.say(
                        Level::Warn,
                        format!("could not report the reboot ({}); rebooting anyway", f.why),
                    );
                }
                self.phase = Phase::Rebooting(version);
                Action::Reboot
            }
            (Phase::Rebooting(_), Input::Done) => self.exit(Exit::Rebooted),
            (Phase::Rebooting(version), Input::Failed(f)) => self.fail(
                now,
                random,
                Verdict::retry(format!("the reboot into {version} failed: {}", f.why)),
            ),
            (Phase::Waiting, Input::Woke) => self.cycle(),
            (
                Phase::Polling | Phase::Downloading(_) | Phase::ReportingFailure(_),
                Input::Failed(f),
            ) => self.fail(now, random, Verdict::of(f)),
            (phase, _) => {
                // Not an answer to the last action: ignore it.
                self.phase = phase;
                self.last.clone()
            }
        }
    }

    fn say(&mut self, level: Level, line: String) {
        self.log.push((level, line));
    }

    fn exit(&mut self, exit: Exit) -> Action {
        self.phase = Phase::Exited(exit);
        Action::Exit(exit)
    }

    fn started(&mut self) -> Action {
        self.say(
            Level::Info,
            format!(
                "started as device {} polling {}",
                self.state.device_id, self.settings.server_url
            ),
        );
        self.cycle()
    }

    /// A new cycle: enroll if needed, then report and poll.
    fn cycle(&mut self) -> Action {
        if self.has_token {
            self.list(Then::Poll)
        } else {
            self.phase = Phase::Enrolling;
            Action::Enroll
        }
    }

    fn list(&mut self, then: Then) -> Action {
        self.phase = Phase::Listing(then);
        Action::ListEvents
    }

    fn wait(&mut self, now: Duration, delay: Duration) -> Action {
        self.phase = Phase::Waiting;
        Action::Wait {
            delay,
            until: now.saturating_add(delay),
        }
    }

    /// Reports (or acknowledges, if it is not a report) the next event, in order.
    fn next_event(
        &mut self,
        now: Duration,
        random: u64,
        mut queue: VecDeque<ReportEvent>,
        then: Then,
    ) -> Action {
        let Some(ev) = queue.pop_front() else {
            return match then {
                Then::Poll => {
                    self.phase = Phase::Polling;
                    Action::Poll
                }
                Then::Fail(v) => self.fail(now, random, v),
            };
        };
        if self.state.suppressed_events.contains(&ev.id) {
            let id = ev.id;
            self.phase = Phase::Acking {
                queue,
                id,
                suppressed: true,
                ends_offer: false,
                then,
            };
            return Action::Ack { id };
        }
        let request = event_report(&self.state, &ev);
        let ends_offer = event_offer(&self.state, &ev).is_some() && request.status.is_terminal();
        let what = match request.status {
            ReportStatus::Success => "success".to_string(),
            ReportStatus::RolledBack => {
                format!("rollback ({})", request.reason.as_deref().unwrap_or(""))
            }
            _ => format!("failure ({})", request.error.as_deref().unwrap_or("")),
        };
        let version = request
            .version
            .as_ref()
            .map_or_else(|| "an update".to_string(), |v| v.to_string());
        let attach_log = request.status.is_bad();
        self.phase = Phase::Sending {
            queue,
            id: ev.id,
            what,
            version,
            ends_offer,
            then,
        };
        Action::Send {
            request,
            attach_log,
        }
    }

    fn polled(
        &mut self,
        now: Duration,
        random: u64,
        response: PollResponse,
        armed: bool,
    ) -> Action {
        let Some(offer) = response.update.clone() else {
            self.say(Level::Debug, "polled: no update".into());
            self.backoff.reset();
            return self.wait(now, response.next_poll_delay(random as u32));
        };
        self.say(Level::Debug, format!("polled: offered {}", offer.version));
        let mut active = ActiveOffer::from_offer(&offer);
        if armed {
            active.rebooting = true;
            self.state.active = Some(active);
            self.changed = true;
            self.say(
                Level::Info,
                format!(
                    "{} is armed for a trial boot but the robot did not reboot: rebooting",
                    offer.version
                ),
            );
            return self.announce_reboot();
        }
        if self.state.active.as_ref() != Some(&active) {
            self.state.active = Some(active.clone());
            self.changed = true;
        }
        self.say(
            Level::Info,
            format!(
                "update {} offered (rollout {}, {} bytes): downloading and installing",
                offer.version, offer.rollout_id, offer.size
            ),
        );
        let request = status_report(
            &self.state.instance,
            &active,
            ReportStatus::Downloading,
            Some(0),
            None,
        );
        self.phase = Phase::Downloading(offer);
        Action::Send {
            request,
            attach_log: false,
        }
    }

    fn installed(
        &mut self,
        now: Duration,
        random: u64,
        offer: UpdateOffer,
        result: InstallResult,
    ) -> Action {
        let version = offer.version.clone();
        match result {
            InstallResult::TrialArmed { slot } => {
                let mut active = ActiveOffer::from_offer(&offer);
                active.rebooting = true;
                self.state.active = Some(active);
                self.changed = true;
                self.say(
                    Level::Info,
                    format!(
                        "{version} written to slot {slot} and armed for a trial boot: rebooting"
                    ),
                );
                self.announce_reboot()
            }
            InstallResult::LiveSwitched { classes } => {
                self.say(
                    Level::Info,
                    format!(
                        "{version} switched live ({}) and healthy",
                        classes.join(", ")
                    ),
                );
                self.backoff.reset();
                self.cycle()
            }
            InstallResult::Failed {
                failure,
                cancelled,
                new_events,
            } if cancelled || failure.kind == ErrorKind::Retry => {
                // Not a verdict on the update: report nothing, try again later.
                self.state.suppressed_events.extend(
                    new_events
                        .iter()
                        .filter(|ev| ev.kind == EventKind::InstallFailed)
                        .map(|ev| ev.id),
                );
                self.changed = true;
                if cancelled {
                    self.say(
                        Level::Info,
                        format!("installing {version} interrupted by shutdown"),
                    );
                    return self.exit(Exit::Stopped);
                }
                self.fail(
                    now,
                    random,
                    Verdict::retry(format!(
                        "installing {version} was interrupted ({}); retrying",
                        failure.why
                    )),
                )
            }
            InstallResult::Failed {
                failure,
                new_events,
                ..
            } => {
                self.say(
                    Level::Error,
                    format!("installing {version} failed: {}", failure.why),
                );
                if !new_events.is_empty() {
                    // Reported with the client's events, then back off before the next poll:
                    // a server that offers the refused bundle again must not get a download loop.
                    return self.list(Then::Fail(offer_failed(&version)));
                }
                // The client could not record it: report it here, or the server would offer
                // the same update forever.
                let active = ActiveOffer::from_offer(&offer);
                let request = status_report(
                    &self.state.instance,
                    &active,
                    ReportStatus::Failure,
                    None,
                    Some(failure.why),
                );
                self.phase = Phase::ReportingFailure(version);
                Action::Send {
                    request,
                    attach_log: true,
                }
            }
        }
    }

    fn announce_reboot(&mut self) -> Action {
        let active = self.state.active.clone().expect("set by the caller");
        let request = status_report(
            &self.state.instance,
            &active,
            ReportStatus::Rebooting,
            None,
            None,
        );
        self.phase = Phase::AnnouncingReboot(active.version);
        Action::Send {
            request,
            attach_log: false,
        }
    }

    fn enroll_verdict(&self, f: Failure) -> Verdict {
        match (f.kind, f.status) {
            (ErrorKind::Retry, _) => Verdict::of(f),
            (ErrorKind::Reauthenticate, _) => Verdict::Permanent(format!(
                "enrollment refused: {} (check [server] enrollment_secret)",
                f.message
            )),
            (ErrorKind::GiveUp, Some(409)) => Verdict::Permanent(format!(
                "enrollment refused: {} (another robot enrolled as {}; an operator must delete that device on the server, or set [server] device_id)",
                f.message, self.state.device_id
            )),
            (ErrorKind::GiveUp, Some(_)) => {
                Verdict::Permanent(format!("enrollment refused: {}", f.message))
            }
            // Not the server's answer (the secret file is unreadable): as it is.
            (ErrorKind::GiveUp, None) => Verdict::Permanent(f.why),
        }
    }

    /// A failed cycle: back off (and forget the token after a 401).
    fn fail(&mut self, now: Duration, random: u64, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Retry { why, retry_after } => {
                let delay = self.backoff.next(random, retry_after);
                self.say(
                    Level::Warn,
                    format!(
                        "{why}; retry {} in {:.1} s",
                        self.backoff.failures(),
                        delay.as_secs_f64()
                    ),
                );
                self.wait(now, delay)
            }
            Verdict::Reenroll(why) => {
                self.has_token = false;
                self.phase = Phase::Reenroll(why);
                Action::ForgetToken
            }
            Verdict::Permanent(why) => {
                let delay = self.backoff.next(random, None).max(self.backoff.max() / 2);
                self.say(
                    Level::Error,
                    format!("{why}; trying again in {:.0} s", delay.as_secs_f64()),
                );
                self.wait(now, delay)
            }
        }
    }
}

fn offer_failed(version: &semver::Version) -> Verdict {
    Verdict::retry(format!(
        "the offer of {version} failed; polling again after a backoff"
    ))
}
