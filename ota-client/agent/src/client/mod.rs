//! The client's operations as a library: `ota-client`'s subcommands and a future daemon
//! call the same [`Client`] methods, so installs, confirmations and reports follow one path.
//!
//! Every operation re-reads the booted slot, the boot environment and the persisted state
//! (nothing is trusted from memory across restarts), asks `ota-client-core` what to do, and
//! persists each transition in the order the core prescribes. Named checkpoints between the
//! writes let tests cut the power at every phase boundary ([`Hooks`]).

mod activate;
pub mod chunked;
mod confirm;
mod error;
mod install;
mod options;
mod report;
mod status;
mod trust;

use std::collections::BTreeMap;
use std::time::Duration;

use ota_client_core::machine::Context;
use ota_client_core::{
    raise_floor, step, BootEnv, ClientState, Event, LiveFlip, Order, Slot, Transition,
};

pub use error::{ClientError, EnvOutcome};
pub use options::{Hooks, InstallOptions, NoProgress, Progress};
pub use report::{ConfirmReport, InstallReport, SlotStatus, Status, TrialStatus};

use crate::boot::BootBackend;
use crate::booted;
use crate::command;
use crate::config::Config;
use crate::live;
use crate::store::DataDir;

/// How long the reboot and service-restart commands may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What an operation works on: re-read at its start.
struct Session {
    state: ClientState,
    env: BootEnv,
    booted: Slot,
    /// The state differs from the persisted one (adopted factory slots, a floor to repair).
    dirty: bool,
    bundle: Option<(semver::Version, String)>,
    /// The floor in its own file, written after the state whenever the state's is higher.
    floor_on_disk: Option<semver::Version>,
}

/// The OTA client.
pub struct Client {
    config: Config,
    data: DataDir,
    boot: BootBackend,
    hooks: Hooks,
    dead: bool,
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
        // The floor is the higher of the two copies: the file survives a lost state, the state
        // survives a power cut between its commit and the file's write.
        let floor_on_disk = self.data.load_floor()?;
        state.security_floor = raise_floor(state.security_floor.as_ref(), floor_on_disk.as_ref());
        Ok(Session {
            dirty: loaded.as_ref() != Some(&state) || floor_on_disk != state.security_floor,
            state,
            env,
            booted,
            bundle: None,
            floor_on_disk,
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
        if let Some(floor) = state
            .security_floor
            .as_ref()
            .filter(|f| s.floor_on_disk.as_ref() < Some(*f))
        {
            self.checkpoint(&format!("{label}:before-floor"))?;
            self.data.save_floor(floor)?;
            s.floor_on_disk = Some(floor.clone());
        }
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
                let before = s.state.clone();
                self.save(s, t.state, label)?;
                if let Some(env) = t.env {
                    if let Err(e) = self.write_env(s, env, label) {
                        return Err(self.env_not_written(s, Some(before), e));
                    }
                }
            }
            Order::EnvFirst => {
                if let Some(env) = t.env {
                    if let Err(e) = self.write_env(s, env, label) {
                        return Err(self.env_not_written(s, None, e));
                    }
                }
                self.save(s, t.state, label)?;
            }
        }
        Ok(())
    }

    /// After the environment write of a transition failed (a full or read-only disk, not a power cut): reads
    /// back what the environment holds and, if it is unchanged, puts the records written ahead of it
    /// (`before`, a state-first step such as a recorded trial) back, so they never claim what was not done.
    /// The error says which of the two happened.
    fn env_not_written(
        &mut self,
        s: &mut Session,
        before: Option<ClientState>,
        error: ClientError,
    ) -> ClientError {
        let ClientError::BootEnv(error) = error else {
            return error; // a simulated power cut: the next start sorts it out, as after a real one
        };
        let outcome = match self.boot.read() {
            Ok(now) if now == s.env => match before {
                None => EnvOutcome::Unchanged,
                Some(before) if before == s.state => EnvOutcome::Unchanged,
                Some(before) => match self.data.save(&before) {
                    Ok(()) => {
                        s.state = before;
                        EnvOutcome::RecordsRestored
                    }
                    Err(e) => EnvOutcome::RecordsAhead(e.to_string()),
                },
            },
            Ok(now) => {
                s.env = now;
                EnvOutcome::Changed
            }
            Err(e) => EnvOutcome::Unreadable(e.to_string()),
        };
        ClientError::EnvWrite { error, outcome }
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
}
