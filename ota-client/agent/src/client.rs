//! The client's operations as a library: `ota-client`'s subcommands and a future daemon
//! call the same [`Client`] methods, so installs, confirmations and reports follow one path.
//!
//! Every operation re-reads the booted slot, the boot environment and the persisted state
//! (nothing is trusted from memory across restarts), asks `ota-client-core` what to do, and
//! persists each transition in the order the core prescribes. Named checkpoints between the
//! writes let tests cut the power at every phase boundary ([`Hooks`]).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ota_bootloader::BootEnvError;
use ota_bundle_format::{BundleError, BundleReader};
use ota_client_core::machine::Context;
use ota_client_core::{
    decide_on_boot, plan_install, step, BootEnv, BootOutcome, ClassFacts, ClientState, ConfigFacts,
    DeviceFacts, Event, ImageFacts, InstallOutcome, LiveFlip, LiveTrial, ManifestFacts, Order,
    PendingTrial, Refusal, ReportEvent, Slot, SlotState, StepError, Transition, WriteTarget,
};
use serde::Serialize;

use crate::boot::BootBackend;
use crate::booted::{self, BootedError};
use crate::command::{self, run_health_checks};
use crate::config::Config;
use crate::live::{self, LinkError};
use crate::slotio::{self, ImageWriter, SlotWriter};
use crate::source::{self, BundleSource, SourceError};
use crate::store::{DataDir, StoreError, STATE_SPACE_NEEDED};

/// How long the reboot and service-restart commands may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an operation failed. Every message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The data directory, state file or lock.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The boot environment cannot be read or written (a corrupt one is never overwritten).
    #[error("{0}; nothing was changed")]
    BootEnv(#[from] BootEnvError),
    /// The booted slot is unknown.
    #[error(transparent)]
    Booted(#[from] BootedError),
    /// The installed trust root cannot be loaded.
    #[error(transparent)]
    Trust(#[from] ota_keys::TrustRootError),
    /// A rotated trust root was refused.
    #[error("trust root update refused: {0}")]
    Rotation(#[from] ota_keys::RotationError),
    /// The bundle cannot be fetched.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The bundle failed verification.
    #[error("bundle refused: {0}")]
    Bundle(#[from] BundleError),
    /// The planner refused the install.
    #[error("install refused: {0}")]
    Refused(#[from] Refusal),
    /// The transition table refused the operation.
    #[error("refused: {0}")]
    Step(#[from] StepError),
    /// A slot device or file.
    #[error("slot {class}/{slot} ({path}): {detail}")]
    Slot {
        /// Slot class.
        class: String,
        /// Slot.
        slot: Slot,
        /// Device or file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A live class's symlink.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A live update failed its health checks and was switched back.
    #[error("live update switched back to the previous slot: {0}")]
    LiveFailed(String),
    /// A trial boot failed its health checks.
    #[error("trial boot of slot {slot} failed and the trial was cleared: {reason}")]
    TrialFailed {
        /// The failed slot.
        slot: Slot,
        /// Why.
        reason: String,
    },
    /// The booted slot is neither the primary nor on trial.
    #[error("{0}")]
    Inconsistent(String),
    /// A command (reboot, service restart) failed.
    #[error("command `{command}` failed ({status}): {output}")]
    Command {
        /// argv joined.
        command: String,
        /// How it ended.
        status: String,
        /// Its last output line.
        output: String,
    },
    /// A file the operator named.
    #[error("{op} {path}: {error}")]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        error: io::Error,
    },
    /// A test hook cut the power here (never happens outside tests).
    #[error("simulated power cut at {0}")]
    PowerCut(String),
}

/// Test hooks (all `None` in production).
#[derive(Clone, Default)]
#[allow(clippy::type_complexity)]
pub struct Hooks {
    /// Called at every named checkpoint; returning `true` simulates a power cut there: the
    /// operation stops and nothing more is written by this `Client`.
    pub crash_at: Option<Arc<dyn Fn(&str) -> bool + Send + Sync>>,
    /// Wraps each slot writer (e.g. to stop after N bytes).
    pub wrap_writer: Option<Arc<dyn Fn(Box<dyn SlotWriter>) -> Box<dyn SlotWriter> + Send + Sync>>,
}

/// Receives install progress (a progress bar, a log, or a daemon's reports).
pub trait Progress: Send {
    /// A step of the install began ("verifying bundle", "arming slot B", ...).
    fn phase(&mut self, message: &str);
    /// An image starts streaming into a slot.
    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64);
    /// `n` more bytes were written.
    fn bytes_written(&mut self, n: u64);
    /// The image was written and verified.
    fn image_finished(&mut self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&mut self, _: &str) {}
    fn image_started(&mut self, _: &str, _: &str, _: Slot, _: u64) {}
    fn bytes_written(&mut self, _: u64) {}
    fn image_finished(&mut self) {}
}

/// Install options.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Accept a lower version than the running one.
    pub allow_downgrade: bool,
    /// Run the reboot command once the trial is armed.
    pub reboot: bool,
    /// Set to cancel a download.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InstallReport {
    /// The boot slot was written and armed for a trial boot.
    TrialArmed {
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
        /// The armed slot.
        slot: Slot,
        /// Trial boots armed.
        tries: u8,
        /// Live classes switched when the trial is committed.
        live_classes: Vec<String>,
        /// Whether the reboot command was run.
        rebooting: bool,
    },
    /// Live classes were switched and passed their health checks.
    LiveSwitched {
        /// Release version.
        version: semver::Version,
        /// Bundle identity.
        bundle_hash: String,
        /// The switches.
        flips: Vec<LiveFlip>,
    },
}

/// What `confirm` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfirmReport {
    /// The booted slot.
    pub booted: Slot,
    /// One line per action taken, for the journal.
    pub actions: Vec<String>,
    /// Whether the reboot command was run.
    pub rebooted: bool,
}

/// A pending trial boot as seen in the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialStatus {
    /// The slot named by `OTA_TRIAL`.
    pub slot: Slot,
    /// Trial boots left.
    pub tries_left: u8,
}

/// One slot in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// Slot class.
    pub class: String,
    /// Slot.
    pub slot: Slot,
    /// Device or file.
    pub device: String,
    /// good, bad, trying, installed, writing, empty.
    pub state: String,
    /// Release version.
    pub version: Option<semver::Version>,
    /// Bundle identity.
    pub bundle_hash: Option<String>,
    /// Why it is in its state.
    pub note: Option<String>,
    /// Booted (boot classes) or pointed at by the link (live classes).
    pub active: bool,
    /// Live class.
    pub live: bool,
}

/// Everything `status` reports (also the daemon's inventory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This robot's product string.
    pub compatible: String,
    /// The booted slot, if known.
    pub booted: Option<Slot>,
    /// The committed slot, if the environment is readable.
    pub primary: Option<Slot>,
    /// A trial named by the environment.
    pub trial: Option<TrialStatus>,
    /// Problems reading the booted slot, environment or state.
    pub errors: Vec<String>,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
    /// The trial the client armed and has not resolved.
    pub pending_trial: Option<PendingTrial>,
    /// A live trial in progress.
    pub live_trial: Option<LiveTrial>,
    /// The last install's outcome.
    pub last_install: Option<InstallOutcome>,
    /// Events (rollbacks, failures, commits) not yet reported.
    pub unreported_events: Vec<ReportEvent>,
}

/// What an operation works on: re-read at its start.
struct Session {
    state: ClientState,
    env: BootEnv,
    booted: Slot,
    /// The state differs from the persisted one (adopted factory slots).
    dirty: bool,
    bundle: Option<(semver::Version, String)>,
}

/// The OTA client.
pub struct Client {
    config: Config,
    data: DataDir,
    boot: BootBackend,
    hooks: Hooks,
    dead: bool,
}

/// Counts bytes for the progress display on their way into the slot.
struct ProgressWriter<'a> {
    inner: &'a mut dyn SlotWriter,
    progress: &'a mut dyn Progress,
}

impl Write for ProgressWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.bytes_written(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Client {
    /// A client for `config`, with the configured bootloader backend.
    pub fn open(config: Config) -> Result<Client, ClientError> {
        let boot = BootBackend::from_config(&config.bootloader.kind)?;
        Ok(Client::with_backend(config, boot))
    }

    /// A client over an explicit bootloader backend (tests inject failing stores).
    pub fn with_backend(config: Config, boot: BootBackend) -> Client {
        Client {
            data: DataDir::new(&config.data_dir),
            config,
            boot,
            hooks: Hooks::default(),
            dead: false,
        }
    }

    /// Installs test hooks.
    pub fn set_hooks(&mut self, hooks: Hooks) {
        self.hooks = hooks;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn checkpoint(&mut self, name: &str) -> Result<(), ClientError> {
        if !self.dead {
            if let Some(f) = &self.hooks.crash_at {
                self.dead = f(name);
            }
        }
        if self.dead {
            return Err(ClientError::PowerCut(name.to_string()));
        }
        Ok(())
    }

    fn boot_classes(&self) -> Vec<String> {
        self.config.boot_classes()
    }

    fn live_active(&self) -> Result<BTreeMap<String, Slot>, ClientError> {
        let mut out = BTreeMap::new();
        for (name, class) in &self.config.slots {
            if class.is_live() {
                out.insert(name.clone(), live::active(class)?);
            }
        }
        Ok(out)
    }

    /// Reads the situation: booted slot, environment (corrupt: stop), state.
    fn session(&self) -> Result<Session, ClientError> {
        let booted = booted::detect(&self.config.booted_slot)?;
        let env = self.boot.read()?;
        let loaded = self.data.load()?;
        let mut state = loaded.clone().unwrap_or_default();
        let boot_classes = if booted == env.primary && env.armed_trial().is_none() {
            self.boot_classes()
        } else {
            Vec::new()
        };
        let live_active = if state.live_trial.is_none() {
            self.live_active()?
        } else {
            BTreeMap::new()
        };
        state.adopt_running(&boot_classes, booted, &live_active);
        Ok(Session {
            dirty: loaded.as_ref() != Some(&state),
            state,
            env,
            booted,
            bundle: None,
        })
    }

    fn save(
        &mut self,
        s: &mut Session,
        state: ClientState,
        label: &str,
    ) -> Result<(), ClientError> {
        self.checkpoint(&format!("{label}:before-state"))?;
        self.data.save(&state)?;
        s.state = state;
        s.dirty = false;
        self.checkpoint(&format!("{label}:after-state"))
    }

    fn write_env(&mut self, s: &mut Session, env: BootEnv, label: &str) -> Result<(), ClientError> {
        self.checkpoint(&format!("{label}:before-env"))?;
        self.boot.write(env)?;
        s.env = env;
        self.checkpoint(&format!("{label}:after-env"))
    }

    fn transition(&self, s: &Session, event: Event) -> Result<Transition, ClientError> {
        let classes = self.boot_classes();
        let ctx = Context {
            env: s.env,
            booted: s.booted,
            boot_classes: &classes,
        };
        Ok(step(&s.state, &ctx, event)?)
    }

    fn apply(&mut self, s: &mut Session, t: Transition, label: &str) -> Result<(), ClientError> {
        match t.order {
            Order::StateFirst => {
                self.save(s, t.state, label)?;
                if let Some(env) = t.env {
                    self.write_env(s, env, label)?;
                }
            }
            Order::EnvFirst => {
                if let Some(env) = t.env {
                    self.write_env(s, env, label)?;
                }
                self.save(s, t.state, label)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, s: &mut Session, event: Event, label: &str) -> Result<(), ClientError> {
        let t = self.transition(s, event)?;
        self.apply(s, t, label)
    }

    fn run_command(&self, argv: &[String]) -> Result<(), ClientError> {
        let r = command::run(argv, COMMAND_TIMEOUT);
        if r.success {
            return Ok(());
        }
        Err(ClientError::Command {
            command: argv.join(" "),
            status: r.status,
            output: r.output_tail.lines().last().unwrap_or("").to_string(),
        })
    }

    /// Runs the configured reboot command. A daemon installs without `reboot`, reports
    /// that it is rebooting, then calls this.
    pub fn reboot_now(&mut self) -> Result<(), ClientError> {
        self.reboot()
    }

    fn reboot(&mut self) -> Result<(), ClientError> {
        self.checkpoint("reboot")?;
        self.run_command(&self.config.reboot_command.clone())
    }

    /// Points live classes' links at their `to` (or `from`) slots and restarts their services.
    fn switch_live(
        &mut self,
        flips: &[LiveFlip],
        forward: bool,
        label: &str,
    ) -> Result<(), ClientError> {
        for f in flips {
            let class = self.config.slots[&f.class].clone();
            live::switch(&class, if forward { f.to } else { f.from })?;
            self.checkpoint(&format!("{label}:{}-switched", f.class))?;
        }
        let mut first_err = None;
        for f in flips {
            let restart = self.config.slots[&f.class].service_restart.clone();
            if !restart.is_empty() {
                if let Err(e) = self.run_command(&restart) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    // ---------------------------------------------------------------- install

    /// Installs a bundle: verify, plan, stream into the standby slot, record, then arm a
    /// trial boot (or switch live classes). On failure the booted and primary slots and the
    /// armed state are untouched, and the failure is recorded for the report.
    pub fn install(
        &mut self,
        source: &BundleSource,
        options: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstallReport, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let result = self.install_locked(&mut s, source, options, progress);
        if let Err(e) = &result {
            if !self.dead && !matches!(e, ClientError::LiveFailed(_)) {
                let (version, bundle_hash) = s
                    .bundle
                    .clone()
                    .map_or((None, None), |(v, h)| (Some(v), Some(h)));
                let failed = Event::InstallFailed {
                    reason: e.to_string(),
                    version,
                    bundle_hash,
                };
                // Best effort: the failure itself is what the caller reports.
                if let Ok(t) = self.transition(&s, failed) {
                    let _ = self.apply(&mut s, t, "install-failed");
                }
            }
        }
        result
    }

    fn install_locked(
        &mut self,
        s: &mut Session,
        source: &BundleSource,
        options: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstallReport, ClientError> {
        progress.phase(&format!("opening {source}"));
        let trust = ota_keys::load_trust_root(&self.config.trust_root)?;
        let opened = source::open(source, &self.config.http, options.cancel.clone())?;
        let mut reader = BundleReader::open(opened.reader, &trust)?;
        let manifest = reader.manifest().clone();
        let hash = reader.manifest_digest();
        s.bundle = Some((manifest.version.clone(), hash.clone()));
        progress.phase(&format!(
            "bundle {} ({}) is signed by the trusted keys",
            manifest.version,
            &hash[..12]
        ));

        let facts = ManifestFacts {
            version: manifest.version.clone(),
            compatible: manifest.compatible.clone(),
            bundle_hash: hash.clone(),
            images: manifest
                .images
                .iter()
                .map(|i| ImageFacts {
                    name: i.name.clone(),
                    slot_class: i.slot_class.clone(),
                    size: i.size,
                })
                .collect(),
        };
        let mut classes = BTreeMap::new();
        for (name, class) in &self.config.slots {
            let used = facts.images.iter().any(|i| &i.slot_class == name);
            let size = |slot: Slot| -> Result<u64, ClientError> {
                if !used {
                    return Ok(0);
                }
                let path = class.path(slot);
                slotio::capacity(path, class.size).map_err(|e| ClientError::Slot {
                    class: name.clone(),
                    slot,
                    path: path.display().to_string(),
                    detail: format!("cannot determine its size: {e}"),
                })
            };
            classes.insert(
                name.clone(),
                ClassFacts {
                    live: class.is_live(),
                    size_a: size(Slot::A)?,
                    size_b: size(Slot::B)?,
                },
            );
        }
        let config_facts = ConfigFacts {
            compatible: self.config.compatible.clone(),
            classes,
            tries: self.config.bootloader.tries,
            state_space_needed: STATE_SPACE_NEEDED,
        };
        let device = DeviceFacts {
            booted: s.booted,
            env: s.env,
            live_active: self.live_active()?,
            state_dir_free: self.data.free_space()?,
        };
        let plan = plan_install(
            &facts,
            &config_facts,
            &s.state,
            &device,
            ota_client_core::InstallOptions {
                allow_downgrade: options.allow_downgrade,
            },
        )?;

        // The targets become unbootable (state Writing, OTA_TRIAL cleared if it names them)
        // before their first byte is written.
        let targets = plan
            .writes
            .iter()
            .map(|w| WriteTarget {
                class: w.class.clone(),
                slot: w.slot,
                live: w.live,
            })
            .collect();
        self.event(
            s,
            Event::WriteStarted {
                targets,
                version: plan.version.clone(),
                bundle_hash: hash.clone(),
            },
            "install:write-started",
        )?;

        for w in &plan.writes {
            let image = reader.next_image()?.ok_or_else(|| {
                BundleError::Usage(format!("the bundle ended before image '{}'", w.image))
            })?;
            debug_assert_eq!(image.entry().name, w.image);
            let path = self.config.slots[&w.class].path(w.slot).to_path_buf();
            let slot_err = |detail: String| ClientError::Slot {
                class: w.class.clone(),
                slot: w.slot,
                path: path.display().to_string(),
                detail,
            };
            let file = ImageWriter::open_slot(&path)
                .map_err(|e| slot_err(format!("cannot open for writing: {e}")))?;
            let mut writer: Box<dyn SlotWriter> = Box::new(file);
            if let Some(wrap) = &self.hooks.wrap_writer {
                writer = wrap(writer);
            }
            progress.image_started(&w.image, &w.class, w.slot, w.size);
            let mut counting = ProgressWriter {
                inner: &mut *writer,
                progress: &mut *progress,
            };
            // Only a failed write is the slot's problem. Anything else (the download gave up
            // or was cancelled, a corrupt or modified payload) is the bundle's: the daemon
            // tells an outage (retried later) from a verdict (reported) by that error.
            image.copy_to(&mut counting).map_err(|e| match e {
                BundleError::WriteFailed { .. } => slot_err(e.to_string()),
                other => ClientError::Bundle(other),
            })?;
            writer
                .sync()
                .map_err(|e| slot_err(format!("syncing: {e}")))?;
            progress.image_finished();
            self.checkpoint(&format!("install:{}-synced", w.class))?;
        }
        reader.finish()?;
        self.checkpoint("install:bundle-finished")?;

        // Record every written slot as verified in one atomic state write.
        let mut state_after = s.state.clone();
        for w in &plan.writes {
            let classes = self.boot_classes();
            let ctx = Context {
                env: s.env,
                booted: s.booted,
                boot_classes: &classes,
            };
            let t = step(
                &state_after,
                &ctx,
                Event::WriteVerified {
                    class: w.class.clone(),
                    slot: w.slot,
                    version: plan.version.clone(),
                    bundle_hash: hash.clone(),
                },
            )?;
            state_after = t.state;
        }
        self.save(s, state_after, "install:verified")?;

        if let Some(slot) = plan.boot_slot {
            progress.phase(&format!(
                "arming slot {slot} for {} trial boots",
                plan.tries
            ));
            self.event(
                s,
                Event::ArmTrial(PendingTrial {
                    slot,
                    classes: plan.boot_classes.clone(),
                    armed_tries: plan.tries,
                    version: plan.version.clone(),
                    bundle_hash: hash.clone(),
                    live: plan.live.clone(),
                }),
                "install:arm",
            )?;
            if options.reboot {
                self.reboot()?;
            }
            return Ok(InstallReport::TrialArmed {
                version: plan.version,
                bundle_hash: hash,
                slot,
                tries: plan.tries,
                live_classes: plan.live.iter().map(|f| f.class.clone()).collect(),
                rebooting: options.reboot,
            });
        }

        progress.phase("switching live slots");
        self.live_trial(s, plan.live.clone(), plan.version.clone(), hash.clone())?;
        Ok(InstallReport::LiveSwitched {
            version: plan.version,
            bundle_hash: hash,
            flips: plan.live,
        })
    }

    /// Switches live classes, runs the health checks, keeps or switches back.
    fn live_trial(
        &mut self,
        s: &mut Session,
        flips: Vec<LiveFlip>,
        version: semver::Version,
        bundle_hash: String,
    ) -> Result<(), ClientError> {
        self.event(
            s,
            Event::LiveStarted(LiveTrial {
                flips: flips.clone(),
                version,
                bundle_hash,
            }),
            "live:started",
        )?;
        let health = self
            .switch_live(&flips, true, "live:forward")
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.checkpoint("live:restarted")
                    .map_err(|e| e.to_string())?;
                run_health_checks(&self.config.health_checks).map_err(|f| f.reason())
            });
        match health {
            Ok(()) => self.event(s, Event::LiveCommitted, "live:committed"),
            Err(_) if self.dead => Err(ClientError::PowerCut("live:trial".into())),
            Err(reason) => {
                self.switch_live(&flips, false, "live:back")?;
                self.event(
                    s,
                    Event::LiveFailed {
                        reason: reason.clone(),
                        interrupted: false,
                    },
                    "live:failed",
                )?;
                Err(ClientError::LiveFailed(reason))
            }
        }
    }

    // ---------------------------------------------------------------- confirm

    /// Run at every boot (and at every start of a daemon): finishes or undoes whatever the
    /// last run left, commits a healthy trial boot, records rollbacks. Idempotent.
    pub fn confirm(&mut self) -> Result<ConfirmReport, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let mut report = ConfirmReport {
            booted: s.booted,
            actions: Vec::new(),
            rebooted: false,
        };
        if let Some(t) = s.state.live_trial.clone() {
            self.switch_live(&t.flips, false, "confirm:live-back")?;
            let reason = format!(
                "live update {} was interrupted (power cut or client restart) before it was confirmed; switched back",
                t.version
            );
            self.event(
                &mut s,
                Event::LiveFailed {
                    reason: reason.clone(),
                    interrupted: true,
                },
                "confirm:live-interrupted",
            )?;
            report.actions.push(reason);
        }
        let outcome = decide_on_boot(&s.env, s.booted, &s.state, &self.boot_classes());
        match outcome {
            BootOutcome::Settled => {
                if s.dirty {
                    let st = s.state.clone();
                    self.save(&mut s, st, "confirm:adopt")?;
                }
                report
                    .actions
                    .push(format!("slot {} is committed; nothing to do", s.booted));
            }
            BootOutcome::AwaitingReboot { slot } => {
                report.actions.push(format!(
                    "slot {slot} is armed for a trial boot; waiting for a reboot"
                ));
            }
            BootOutcome::TrialBooted { slot } => {
                match run_health_checks(&self.config.health_checks) {
                    Ok(()) => {
                        self.commit(&mut s, "confirm:commit")?;
                        report
                            .actions
                            .push(format!("health checks passed: committed slot {slot}"));
                    }
                    Err(f) => {
                        let reason = f.reason();
                        self.event(
                            &mut s,
                            Event::TrialFailed {
                                reason: reason.clone(),
                            },
                            "confirm:trial-failed",
                        )?;
                        self.reboot()?;
                        return Err(ClientError::TrialFailed { slot, reason });
                    }
                }
            }
            BootOutcome::AbortTrial { slot, reason } => {
                self.event(
                    &mut s,
                    Event::TrialFailed {
                        reason: reason.clone(),
                    },
                    "confirm:abort-trial",
                )?;
                self.reboot()?;
                return Err(ClientError::TrialFailed { slot, reason });
            }
            BootOutcome::RolledBack { slot, reason } => {
                self.event(
                    &mut s,
                    Event::RolledBack {
                        reason: reason.clone(),
                    },
                    "confirm:rolled-back",
                )?;
                report
                    .actions
                    .push(format!("slot {slot} was rolled back: {reason}"));
            }
            BootOutcome::FinishCommit { slot } => {
                self.commit(&mut s, "confirm:finish-commit")?;
                report
                    .actions
                    .push(format!("finished recording the commit of slot {slot}"));
            }
            BootOutcome::ArmInterrupted { slot } => {
                self.event(&mut s, Event::ArmInterrupted, "confirm:arm-interrupted")?;
                report.actions.push(format!(
                    "the trial of slot {slot} was never armed (interrupted install); install again"
                ));
            }
            BootOutcome::ClearStaleTrial { slot } => {
                self.event(&mut s, Event::ClearStaleTrial, "confirm:clear-stale")?;
                report
                    .actions
                    .push(format!("cleared a stale trial of slot {slot}"));
            }
            BootOutcome::AwaitingRebootToPrimary { booted, primary } => {
                report.actions.push(format!(
                    "slot {booted} failed its trial; rebooting into slot {primary}"
                ));
                self.reboot()?;
                report.rebooted = true;
            }
            BootOutcome::Inconsistent { reason } => return Err(ClientError::Inconsistent(reason)),
        }
        Ok(report)
    }

    /// Commits the booted trial slot (or records a commit the environment already holds),
    /// then switches the live classes installed with it.
    fn commit(&mut self, s: &mut Session, label: &str) -> Result<(), ClientError> {
        let live = s
            .state
            .pending_trial
            .as_ref()
            .map(|p| p.live.clone())
            .unwrap_or_default();
        let event = if s.env.primary == s.booted {
            Event::FinishCommit
        } else {
            Event::Commit
        };
        let t = self.transition(s, event)?;
        if let Some(env) = t.env {
            self.write_env(s, env, label)?;
        }
        self.switch_live(&live, true, label)?;
        self.save(s, t.state, label)
    }

    // ---------------------------------------------------------------- mark

    /// Marks a slot good (the booted one by default). On a trial boot this commits it.
    pub fn mark_good(&mut self, slot: Option<Slot>) -> Result<String, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let slot = slot.unwrap_or(s.booted);
        if slot == s.booted && s.env.trial == Some(slot) && s.env.primary != slot {
            self.commit(&mut s, "mark-good:commit")?;
            return Ok(format!("committed slot {slot}"));
        }
        self.event(&mut s, Event::MarkGood { slot }, "mark-good")?;
        Ok(format!("marked slot {slot} good"))
    }

    /// Marks a slot bad (the booted one by default). For the running committed slot this
    /// switches the primary to the other slot, only if that one is known good.
    pub fn mark_bad(&mut self, slot: Option<Slot>) -> Result<String, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let slot = slot.unwrap_or(s.booted);
        let on_trial = slot == s.booted && s.env.trial == Some(slot) && s.env.primary != slot;
        let was_primary = slot == s.env.primary;
        self.event(&mut s, Event::MarkBad { slot }, "mark-bad")?;
        Ok(if on_trial {
            format!(
                "marked slot {slot} bad; reboot to return to slot {}",
                s.env.primary
            )
        } else if was_primary {
            format!(
                "marked slot {slot} bad; slot {} boots from the next reboot",
                s.env.primary
            )
        } else {
            format!("marked slot {slot} bad")
        })
    }

    // ---------------------------------------------------------------- status & events

    /// The robot's update status. Never fails: problems are listed in `errors`.
    pub fn status(&self) -> Status {
        let mut errors = Vec::new();
        let booted = booted::detect(&self.config.booted_slot)
            .map_err(|e| errors.push(e.to_string()))
            .ok();
        let env = self
            .boot
            .read()
            .map_err(|e| errors.push(e.to_string()))
            .ok();
        let state = match self.data.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                errors.push(e.to_string());
                ClientState::default()
            }
        };
        let mut state = state;
        if let (Some(b), Some(e)) = (booted, env) {
            if b == e.primary && e.armed_trial().is_none() {
                let live_active = if state.live_trial.is_none() {
                    self.live_active().unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                state.adopt_running(&self.boot_classes(), b, &live_active);
            }
        }
        // "trying": armed for the next boot, or booted on trial right now.
        let trying = env.and_then(|e| {
            e.armed_trial()
                .or(booted.filter(|b| e.trial == Some(*b) && e.primary != *b))
        });
        let mut slots = Vec::new();
        for (name, class) in &self.config.slots {
            let live_active = if class.is_live() {
                live::active(class).ok()
            } else {
                None
            };
            for slot in Slot::ALL {
                let rec = state.record(name, slot);
                let is_trying =
                    !class.is_live() && trying == Some(slot) && rec.state == SlotState::Installed;
                slots.push(SlotStatus {
                    class: name.clone(),
                    slot,
                    device: class.path(slot).display().to_string(),
                    state: if is_trying {
                        "trying".into()
                    } else {
                        rec.state.to_string()
                    },
                    version: rec.version,
                    bundle_hash: rec.bundle_hash,
                    note: rec.note,
                    active: if class.is_live() {
                        live_active == Some(slot)
                    } else {
                        booted == Some(slot)
                    },
                    live: class.is_live(),
                });
            }
        }
        Status {
            compatible: self.config.compatible.clone(),
            booted,
            primary: env.map(|e| e.primary),
            trial: env.and_then(|e| {
                e.trial.filter(|t| *t != e.primary).map(|slot| TrialStatus {
                    slot,
                    tries_left: e.tries,
                })
            }),
            errors,
            slots,
            pending_trial: state.pending_trial,
            live_trial: state.live_trial,
            last_install: state.last_install,
            unreported_events: state.events,
        }
    }

    /// Removes and returns the unreported events (for a reporter that delivers them now).
    pub fn take_events(&mut self) -> Result<Vec<ReportEvent>, ClientError> {
        let last = self.status().unreported_events.last().map(|e| e.id);
        match last {
            Some(id) => self.ack_events(id),
            None => Ok(Vec::new()),
        }
    }

    /// Removes the events up to and including `up_to_id` once a server has accepted them,
    /// returning them.
    pub fn ack_events(&mut self, up_to_id: u64) -> Result<Vec<ReportEvent>, ClientError> {
        let _lock = self.data.lock()?;
        let Some(mut state) = self.data.load()? else {
            return Ok(Vec::new());
        };
        let (taken, kept): (Vec<_>, Vec<_>) =
            state.events.drain(..).partition(|e| e.id <= up_to_id);
        state.events = kept;
        if !taken.is_empty() {
            self.data.save(&state)?;
        }
        Ok(taken)
    }

    // ---------------------------------------------------------------- trust

    /// Installs a rotated trust root if the installed one accepts it.
    pub fn trust_update(&mut self, candidate: &Path) -> Result<u64, ClientError> {
        let _lock = self.data.lock()?;
        let current = ota_keys::load_trust_root(&self.config.trust_root)?;
        let text = std::fs::read_to_string(candidate).map_err(|error| ClientError::File {
            op: "reading",
            path: candidate.display().to_string(),
            error,
        })?;
        let signed = ota_keys::SignedTrustRoot::from_json(&text)?;
        let accepted = ota_keys::accept_rotation(&current, &signed)?;
        ota_keys::write_file_atomically(
            &self.config.trust_root,
            signed.to_json_pretty().as_bytes(),
            0o644,
        )
        .map_err(|error| ClientError::File {
            op: "writing",
            path: self.config.trust_root.display().to_string(),
            error,
        })?;
        Ok(accepted.version)
    }
}
