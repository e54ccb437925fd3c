//! [`DaemonMachine`]: the daemon's loop as a state machine.
//!
//! One cycle: enroll if there is no token; report every unreported client event in order,
//! acknowledging each only after the server has it (at least once, under a stable id); poll;
//! on an offer run the [`plan`]'s steps (report `downloading`, install, report `rebooting`,
//! reboot; or stage, arm later), stopping at the first readiness check or confirmation that
//! says wait: that offer is held until the next poll, which reports why. A cycle
//! that ends without an offer waits the server's poll interval (with its jitter) and resets
//! the backoff; a failed one backs off (a give-up for at least half the longest backoff, a
//! 401 after forgetting the token). An offer whose install failed is reported at once and
//! polled again only after a backoff, so a server that keeps offering a refused bundle does
//! not get a download loop.

use std::collections::VecDeque;
use std::time::Duration;

use ota_protocol::device::{PollResponse, ReportStatus};
use ota_protocol::fleet::{WaitPhase, Waiting};

use super::action::{Action, ErrorKind, Exit, Input, InstallResult, Level, Readiness, Settings};
use super::backoff::Backoff;
use super::gates::{describe, plan, Held, Step, WAITING_FOR_CONFIRMATION};
use super::hold::Holds;
use super::phase::{Phase, Run, Then};
use super::report::{event_offer, event_report, status_report};
use super::state::{enroll_request_id, ActiveOffer, DaemonState};
use super::verdict::{offer_failed, Verdict};
use crate::slot::{EventKind, ReportEvent};

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
    holds: Holds,
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
            holds: Holds::default(),
        }
    }

    /// Why the robot holds the offered update back, for the poll just asked for
    /// ([`Action::Poll`]); `None` when it does not.
    pub fn waiting(&self) -> Option<&Waiting> {
        self.holds.waiting()
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
                let v = Verdict::enroll(f, &self.state.device_id);
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
            (
                Phase::Polling,
                Input::Polled {
                    response,
                    armed,
                    held,
                },
            ) => self.polled(now, random, response, armed, held),
            (Phase::Offer(run, doing), input) => self.offer_answer(now, random, run, doing, input),
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
            (Phase::Polling | Phase::ReportingFailure(_), Input::Failed(f)) => {
                self.fail(now, random, Verdict::of(f))
            }
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
                    self.holds.report(now);
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
        in_slot: bool,
    ) -> Action {
        let Some(offer) = response.update.clone() else {
            self.holds.clear();
            self.say(Level::Debug, "polled: no update".into());
            self.backoff.reset();
            return self.wait(now, response.next_poll_delay(random as u32));
        };
        self.say(Level::Debug, format!("polled: offered {}", offer.version));
        self.holds.offered(&offer.manifest_digest);
        let mut active = ActiveOffer::from_offer(&offer);
        if let Some(old) = self.state.active.as_ref().filter(|a| a.same_offer(&active)) {
            active.staged = old.staged;
        }
        if self.state.active.as_ref() != Some(&active) {
            self.state.active = Some(active.clone());
            self.changed = true;
        }
        let held = Held {
            armed,
            in_slot,
            staged_reported: active.staged,
        };
        let steps = plan(&offer, held, &self.settings.gates);
        // Asking again about a held offer at every poll is routine; its answer is logged.
        let level = if self.holds.holding() {
            Level::Debug
        } else {
            Level::Info
        };
        self.say(level, describe(&offer, armed, &steps));
        let run = Run {
            offer,
            steps: steps.into(),
            poll_delay: response.next_poll_delay(random as u32),
            downloaded: false,
        };
        self.next_step(now, run)
    }

    /// Carries out the next step of `run`; when none is left, waits for the next poll.
    fn next_step(&mut self, now: Duration, mut run: Run) -> Action {
        let Some(step) = run.steps.pop_front() else {
            self.backoff.reset();
            return self.wait(now, run.poll_delay);
        };
        let offer = run.offer.clone();
        let action = match step {
            Step::Check(phase) => Action::CheckReady { phase, offer },
            Step::Approval => Action::CheckApproval {
                manifest_digest: offer.manifest_digest,
            },
            Step::ReportDownloading | Step::ReportStaged => {
                let (status, progress) = match step {
                    Step::ReportDownloading => (ReportStatus::Downloading, Some(0)),
                    _ => (ReportStatus::Staged, None),
                };
                let active = ActiveOffer::from_offer(&offer);
                Action::Send {
                    request: status_report(&self.state.instance, &active, status, progress, None),
                    attach_log: false,
                }
            }
            Step::Install => Action::Install(offer),
            Step::Stage => Action::Stage(offer),
            Step::Activate => Action::Activate(offer),
            Step::Reboot => {
                let mut active = ActiveOffer::from_offer(&offer);
                active.rebooting = true;
                active.staged = self.state.active.as_ref().is_some_and(|a| a.staged);
                self.state.active = Some(active);
                self.changed = true;
                return self.announce_reboot();
            }
        };
        self.phase = Phase::Offer(run, step);
        action
    }

    /// The answer to a step of an offer.
    fn offer_answer(
        &mut self,
        now: Duration,
        random: u64,
        run: Run,
        doing: Step,
        input: Input,
    ) -> Action {
        match (doing, input) {
            (Step::Check(phase), Input::Ready(Readiness::Go)) => {
                self.holds.go(phase);
                self.next_step(now, run)
            }
            (Step::Check(phase), Input::Ready(Readiness::Wait(reason))) => {
                self.hold(now, run, phase, reason)
            }
            (Step::Approval, Input::Approved(true)) => {
                self.holds.go(WaitPhase::Reboot);
                self.next_step(now, run)
            }
            (Step::Approval, Input::Approved(false)) => self.hold(
                now,
                run,
                WaitPhase::Reboot,
                WAITING_FOR_CONFIRMATION.to_string(),
            ),
            (Step::ReportDownloading | Step::ReportStaged, Input::Done) => {
                if doing == Step::ReportStaged {
                    if let Some(a) = self.state.active.as_mut() {
                        a.staged = true;
                        self.changed = true;
                    }
                }
                self.next_step(now, run)
            }
            (Step::ReportDownloading | Step::ReportStaged, Input::Failed(f)) => {
                self.fail(now, random, Verdict::of(f))
            }
            (Step::Install | Step::Stage | Step::Activate, Input::Installed(result)) => {
                self.installed(now, random, run, doing, result)
            }
            (doing, _) => {
                // Not an answer to the last action: ignore it.
                self.phase = Phase::Offer(run, doing);
                self.last.clone()
            }
        }
    }

    /// A check said wait: hold the offer and poll again (reporting why) after the interval.
    fn hold(&mut self, now: Duration, run: Run, phase: WaitPhase, reason: String) -> Action {
        let news = self
            .holds
            .hold(now, &run.offer.manifest_digest, phase, &reason);
        self.say(
            if news { Level::Info } else { Level::Debug },
            format!(
                "the {phase} of {} waits: {reason}; asking again at the next poll",
                run.offer.version
            ),
        );
        self.backoff.reset();
        self.wait(now, run.poll_delay)
    }

    /// How an install, a staging or an activation ended.
    fn installed(
        &mut self,
        now: Duration,
        random: u64,
        mut run: Run,
        doing: Step,
        result: InstallResult,
    ) -> Action {
        let version = run.offer.version.clone();
        match result {
            InstallResult::Staged => {
                run.downloaded = true;
                self.say(
                    Level::Info,
                    format!("{version} downloaded and written to the standby slot, not armed"),
                );
                self.next_step(now, run)
            }
            InstallResult::NotHeld if run.downloaded => self.fail(
                now,
                random,
                Verdict::retry(format!("{version} was staged but no slot holds it now")),
            ),
            InstallResult::NotHeld => {
                self.say(
                    Level::Info,
                    format!("{version} is not in a slot after all: downloading it"),
                );
                let held = Held {
                    staged_reported: self.state.active.as_ref().is_some_and(|a| a.staged),
                    ..Held::default()
                };
                run.steps = plan(&run.offer, held, &self.settings.gates).into();
                self.next_step(now, run)
            }
            InstallResult::TrialArmed { slot } => {
                let line = if doing == Step::Activate {
                    format!("{version} was already in slot {slot}: armed it for a trial boot without downloading")
                } else {
                    format!(
                        "{version} written to slot {slot} and armed for a trial boot: rebooting"
                    )
                };
                self.say(Level::Info, line);
                self.next_step(now, run)
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
                let active = ActiveOffer::from_offer(&run.offer);
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
