//! The I/O loop: asks `ota_client_core::daemon::DaemonMachine` what to do, does it (files,
//! HTTP, the client's install and reboot, sleeping) and tells the machine how it went. The
//! machine's state is saved before every action that follows a change to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_client_core::daemon::{
    Action, ActiveOffer, ChainRefused, DaemonMachine, Exit, Failure, Input, InstallResult, Level,
    ProgressThrottle, SayOnce, Settings,
};
use ota_client_core::ReportEvent;
use ota_protocol::device::{
    ChallengeRequest, ChallengeResponse, EnrollRequest, PollRequest, ReportRequest, TrustChain,
    UpdateOffer,
};

use super::api::{failure, Server};
use super::approval::approved;
use super::error::DaemonError;
use super::files::{default_device_id, Files};
use super::freshness::Watch;
use super::hooks::DaemonHooks;
use super::log::{Log, LOG_FILE};
use super::progress::Reporter;
use super::readiness;
use super::watchdog::{self, Watched};
use crate::client::{Client, ClientError, InstallOptions, InstallReport, Status};
use crate::config::{Config, ServerConfig};
use crate::identity;
use crate::source::{BundleSource, HttpRequest};
use crate::telemetry::Sampler;
use ota_packaging::Notifier;

/// Runs the daemon for `config` until `cancel` is set ([`Exit::Stopped`]) or a reboot was
/// started ([`Exit::Rebooted`]).
pub fn run(
    config: Config,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    run_client(Client::open(config)?, hooks, cancel)
}

/// [`run`] over an already opened client (e.g. one made with [`Client::with_backend`]).
pub fn run_client(
    client: Client,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    Daemon::open(client, hooks, cancel)?.run()
}

struct Daemon<'a> {
    client: Client,
    server_config: ServerConfig,
    hooks: &'a DaemonHooks,
    cancel: &'a Arc<AtomicBool>,
    server: Server,
    files: Files,
    log: Log,
    machine: DaemonMachine,
    sampler: Sampler,
    telemetry_problem: Option<String>,
    start: Instant,
    /// systemd's readiness and watchdog (no-op outside a `Type=notify` unit).
    dog: Notifier,
    /// Freeze and replay detection from the server's signed timestamps.
    freshness: Watch,
    /// The robot's identity key: enrollment proves it.
    key: ota_keys::SecretKey,
    /// The server's chain refused: said once per cause, not on every poll.
    chain_refused: SayOnce<ChainRefused>,
}

impl<'a> Daemon<'a> {
    fn open(
        client: Client,
        hooks: &'a DaemonHooks,
        cancel: &'a Arc<AtomicBool>,
    ) -> Result<Daemon<'a>, DaemonError> {
        let config = client.config().clone();
        let server_config = config
            .server
            .clone()
            .ok_or_else(|| DaemonError::NoServer(config.source.clone()))?;
        let device_id = match &server_config.device_id {
            Some(id) => id.clone(),
            None => default_device_id()?,
        };
        let files = Files::open(&config.data_dir)?;
        let key =
            identity::load_or_create(&config.data_dir, server_config.identity_key.as_deref())?;
        let saved = files.load_state()?;
        let token = files.token()?;
        let mut server = Server::new(&config, &server_config.url)?;
        let settings = Settings {
            device_id,
            server_url: server_config.url.clone(),
            backoff_initial: server_config.backoff_initial,
            backoff_max: server_config.backoff_max,
            gates: config
                .readiness
                .as_ref()
                .map(|r| r.phases.clone())
                .unwrap_or_default(),
        };
        let machine = DaemonMachine::new(settings, saved, token.is_some());
        server.set_token(token);
        Ok(Daemon {
            sampler: Sampler::new(&config.data_dir, server_config.telemetry_command.clone()),
            log: Log::new(hooks.log.clone(), Some(config.data_dir.join(LOG_FILE))),
            client,
            server_config,
            hooks,
            cancel,
            server,
            files,
            machine,
            telemetry_problem: None,
            start: hooks.clock.now(),
            dog: Notifier::from_env(),
            freshness: Watch::open(&config),
            key,
            chain_refused: SayOnce::default(),
        })
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn now(&self) -> Duration {
        self.hooks.clock.now().saturating_duration_since(self.start)
    }

    /// Runs until the machine says to stop; only files that cannot be written end it early.
    fn run(&mut self) -> Result<Exit, DaemonError> {
        if let Err(e) = self.dog.ready() {
            let line = format!("cannot tell systemd the daemon is ready ($NOTIFY_SOCKET): {e}");
            self.log.line(Level::Warn, &line);
        }
        let mut input = Input::Start;
        loop {
            self.dog.alive();
            let action = self
                .machine
                .step(self.now(), self.hooks.clock.random(), input);
            if self.machine.take_changed() {
                self.files.save_state(self.machine.state())?;
            }
            for (level, line) in self.machine.take_log() {
                self.log.line(level, &line);
            }
            if action.interruptible() && self.cancelled() {
                input = Input::Cancelled;
                continue;
            }
            input = match action {
                Action::Exit(exit) => {
                    self.freshness.stop(&self.log);
                    return Ok(exit);
                }
                Action::ForgetToken => {
                    self.files.remove_token()?;
                    self.server.set_token(None);
                    Input::Done
                }
                Action::Enroll => self.enroll()?,
                Action::ListEvents => Input::Events(self.client.status().unreported_events),
                Action::Send {
                    request,
                    attach_log,
                } => self.send(request, attach_log),
                Action::Ack { id } => match self.client.ack_events(id) {
                    Ok(_) => Input::Done,
                    Err(e) => Input::Failed(Failure::retry(e.to_string())),
                },
                Action::Poll => self.poll(),
                Action::Install(offer) => self.install(&offer, false),
                Action::Stage(offer) => self.install(&offer, true),
                Action::Activate(offer) => self.activate(&offer),
                Action::CheckReady { phase, offer } => Input::Ready(readiness::check(
                    self.client.config().readiness.as_ref(),
                    phase,
                    &offer,
                )),
                Action::CheckApproval { manifest_digest } => {
                    Input::Approved(approved(&self.client.config().data_dir, &manifest_digest))
                }
                Action::Reboot => self.reboot(),
                Action::Wait { delay, .. } => {
                    if watchdog::sleep(self.hooks.clock.as_ref(), delay, self.cancel, &self.dog) {
                        Input::Woke
                    } else {
                        Input::Cancelled
                    }
                }
            };
        }
    }

    fn enroll(&mut self) -> Result<Input, DaemonError> {
        let secret = match self.server_config.enrollment_secret.read() {
            Ok(s) => s,
            Err(e) => return Ok(Input::Failed(Failure::give_up(e.to_string()))),
        };
        let state = self.machine.state();
        let (device_id, request_id) = (state.device_id.clone(), state.enroll_request_id.clone());
        // A fresh one-time challenge each attempt, signed with the robot's key: a captured request is useless.
        let asked = ChallengeRequest {
            device_id: device_id.clone(),
        };
        let challenge = match self
            .server
            .anonymous()
            .post::<_, ChallengeResponse>(ota_protocol::paths::CHALLENGE, &asked)
        {
            Ok(c) => c.challenge,
            Err(e) => return Ok(Input::Failed(failure(&e))),
        };
        let req = EnrollRequest {
            enrollment_secret: secret,
            compatible: self.client.config().compatible.clone(),
            tags: self.server_config.tags.clone(),
            public_key: Some(identity::public_key_hex(&self.key)),
            signature: Some(identity::sign_enrollment(
                &self.key,
                &device_id,
                &challenge,
                &request_id,
            )),
            challenge: Some(challenge),
            device_id,
            request_id,
        };
        match self.server.anonymous().enroll(&req) {
            Ok(resp) => {
                self.files.save_token(&resp.token)?;
                self.server.set_token(Some(resp.token));
                Ok(Input::Done)
            }
            Err(e) => Ok(Input::Failed(failure(&e))),
        }
    }

    fn send(&self, mut request: ReportRequest, attach_log: bool) -> Input {
        if attach_log {
            request.log_tail = Some(self.log.tail()).filter(|t| !t.is_empty());
        }
        match self.server.device().report(&request) {
            Ok(_) => Input::Done,
            Err(e) => Input::Failed(failure(&e)),
        }
    }

    /// Polls with inventory (the boot class's slots and versions) and telemetry.
    fn poll(&mut self) -> Input {
        let status = self.client.status();
        let config = self.client.config();
        let class = config
            .boot_classes()
            .into_iter()
            .next()
            .or_else(|| config.slots.keys().next().cloned());
        let mut slots = BTreeMap::new();
        let mut current_version = None;
        for s in &status.slots {
            if Some(&s.class) != class.as_ref() {
                continue;
            }
            if let Some(v) = &s.version {
                slots.insert(s.slot.to_string(), v.to_string());
            }
            if s.active {
                current_version = s.version.clone();
            }
        }
        let (telemetry, problem) = self.sampler.sample();
        if problem != self.telemetry_problem {
            if let Some(p) = &problem {
                self.log.line(Level::Warn, p);
            }
            self.telemetry_problem = problem;
        }
        let req = PollRequest {
            compatible: config.compatible.clone(),
            current_version,
            booted_slot: status.booted.map(|s| s.to_string()),
            slots,
            telemetry,
            waiting: self.machine.waiting().cloned(),
            staged: status.staged.clone(),
            security_floor: status.security_floor.clone(),
            freeze_alarm: self.freshness.before_poll(
                self.now(),
                self.client.trust_root().ok().as_ref(),
                &self.log,
            ),
        };
        match self.server.device().poll(&req) {
            Ok(response) => {
                self.catch_up_trust(response.trust_version, status.trust_version);
                let (now, root) = (self.now(), self.client.trust_root().ok());
                let timestamp = response.timestamp.as_ref();
                self.freshness
                    .after_poll(now, root.as_ref(), timestamp, &self.log);
                // Armed but not rebooted into (a stop or a failed reboot command).
                let armed = response.update.as_ref().is_some_and(|offer| {
                    status.trial.is_some()
                        && status
                            .pending_trial
                            .as_ref()
                            .is_some_and(|p| p.bundle_hash == offer.manifest_digest)
                });
                let held = response
                    .update
                    .as_ref()
                    .is_some_and(|offer| holds(&status, &offer.manifest_digest));
                Input::Polled {
                    response,
                    armed,
                    held,
                }
            }
            Err(e) => Input::Failed(failure(&e)),
        }
    }

    /// Walks the server's trust chain when it publishes a newer root than the robot's, before the poll's offer
    /// is acted on (the offer may be signed by the new keys), so a robot offline through several rotations
    /// catches up in one poll. A refused chain is logged; the robot keeps the last good root, and an offer
    /// signed only by keys it does not trust then fails verification, as it must.
    fn catch_up_trust(&mut self, published: Option<u64>, ours: Option<u64>) {
        let (Some(published), Some(ours)) = (published, ours) else {
            return;
        };
        if published <= ours {
            return;
        }
        let path = format!("{}?after={ours}", ota_protocol::paths::TRUST_CHAIN);
        let walked = match self.server.device().get::<TrustChain>(&path) {
            Ok(chain) => chain
                .roots
                .into_iter()
                .map(serde_json::from_value::<ota_keys::SignedTrustRoot>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the server sent a malformed trust root: {e}"))
                .and_then(|roots| self.client.trust_walk(&roots).map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        match walked {
            Ok(v) => {
                self.chain_refused.clear();
                self.log.line(
                    Level::Info,
                    &format!("trust root updated from version {ours} to {v}"),
                )
            }
            Err(e) => {
                let line = format!(
                    "cannot walk the server's trust chain from version {ours} to {published}: {e}"
                );
                if self.chain_refused.should_say((ours, published, e)) {
                    self.log.line(Level::Warn, &line);
                }
            }
        }
    }

    /// Downloads and installs the offer exactly like `ota-client install`, reporting progress;
    /// `stage_only`: writes the standby slot without arming it.
    fn install(&mut self, offer: &UpdateOffer, stage_only: bool) -> Input {
        let before = self.next_event_id();
        // A chunked bundle is read by ranges from the first request: no streamed bytes to drop.
        let mut request =
            HttpRequest::bearer(&self.server.url(&offer.download_url), self.server.token());
        if offer.chunked {
            request = request.ranges_first();
        }
        let source = BundleSource::Http(request);
        let mut progress = Reporter {
            api: self.server.progress(),
            log: &self.log,
            clock: self.hooks.clock.as_ref(),
            start: self.start,
            instance: &self.machine.state().instance,
            offer: ActiveOffer::from_offer(offer),
            throttle: ProgressThrottle::default(),
        };
        let options = InstallOptions {
            allow_downgrade: false,
            reboot: false,
            cancel: Some(Arc::clone(self.cancel)),
            stage_only,
            revert: offer.revert,
        };
        let mut progress = Watched {
            inner: &mut progress,
            dog: &self.dog,
        };
        let result = match self.client.install(&source, &options, &mut progress) {
            Ok(InstallReport::TrialArmed { slot, .. }) => InstallResult::TrialArmed { slot },
            Ok(InstallReport::LiveSwitched { flips, .. }) => InstallResult::LiveSwitched {
                classes: flips.into_iter().map(|f| f.class).collect(),
            },
            Ok(InstallReport::Staged { .. }) => InstallResult::Staged,
            Err(e) => self.failed(&e, before),
        };
        Input::Installed(result)
    }

    /// Arms the slot that already holds the offer's bundle, without downloading.
    fn activate(&mut self, offer: &UpdateOffer) -> Input {
        let before = self.next_event_id();
        Input::Installed(
            match self.client.activate(&offer.manifest_digest, offer.revert) {
                Ok(Some(slot)) => {
                    // A live-only bundle is switched (and checked) by the activation itself.
                    let status = self.client.status();
                    match status.trial {
                        Some(_) => InstallResult::TrialArmed { slot },
                        None => InstallResult::LiveSwitched {
                            classes: status
                                .slots
                                .into_iter()
                                .filter(|s| s.live && s.active && s.slot == slot)
                                .map(|s| s.class)
                                .collect(),
                        },
                    }
                }
                Ok(None) => InstallResult::NotHeld,
                Err(e) => self.failed(&e, before),
            },
        )
    }

    /// The id the client's next event gets.
    fn next_event_id(&self) -> u64 {
        self.client
            .status()
            .unreported_events
            .last()
            .map_or(0, |e| e.id + 1)
    }

    /// A failed install or activation, with the events the client recorded since `before`.
    fn failed(&self, e: &ClientError, before: u64) -> InstallResult {
        let new_events: Vec<ReportEvent> = self
            .client
            .status()
            .unreported_events
            .into_iter()
            .filter(|ev| ev.id >= before)
            .collect();
        InstallResult::Failed {
            failure: Failure::new(e.kind(), e.to_string()),
            cancelled: self.cancelled(),
            new_events,
        }
    }

    fn reboot(&mut self) -> Input {
        let result = match &self.hooks.reboot {
            Some(hook) => hook(),
            None => self.client.reboot_now().map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => Input::Done,
            Err(e) => Input::Failed(Failure::retry(e)),
        }
    }
}

/// Whether a slot other than the booted one holds the bundle `digest` (staged, or a release
/// the robot ran before): the machine then asks [`Client::activate`] before downloading.
fn holds(status: &Status, digest: &str) -> bool {
    status.staged.as_deref() == Some(digest)
        || status
            .slots
            .iter()
            .any(|s| !s.live && !s.active && s.bundle_hash.as_deref() == Some(digest))
}
