//! `activate`: arm a slot that already holds a bundle (staged by a stage-only install, or a
//! release committed before and still in the other slot) without downloading it again.

use ota_client_core::{plan_activation, Activation, Event, InstallOptions, Slot};

use super::install::core_options;
use super::{Client, ClientError, Session};

impl Client {
    /// Arms the non-booted slot that holds exactly the bundle `manifest_digest` for a trial
    /// boot (a live-only bundle: switches its live classes and runs the health checks), and
    /// returns that slot; `None` when no slot holds it (the caller downloads it instead).
    /// `revert` allows a version lower than the running one; nothing below the robot's
    /// security floor is ever armed, whatever the caller says. The caller reboots.
    pub fn activate(
        &mut self,
        manifest_digest: &str,
        revert: bool,
    ) -> Result<Option<Slot>, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let result = self.activate_locked(&mut s, manifest_digest, revert);
        self.record_failure(&mut s, &result);
        result
    }

    fn activate_locked(
        &mut self,
        s: &mut Session,
        manifest_digest: &str,
        revert: bool,
    ) -> Result<Option<Slot>, ClientError> {
        let config = self.config_facts(&[])?;
        let device = self.device_facts(s)?;
        let options: InstallOptions = core_options(&super::InstallOptions {
            revert,
            ..Default::default()
        });
        let planned = plan_activation(manifest_digest, &config, &s.state, &device, options);
        // A refusal names the held bundle, so the failure is recorded against it.
        let held = Slot::ALL.iter().find_map(|slot| {
            s.state.classes.values().find_map(|c| {
                let r = c.get(*slot);
                (r.bundle_hash.as_deref() == Some(manifest_digest))
                    .then(|| r.version.clone())
                    .flatten()
            })
        });
        s.bundle = held.map(|v| (v, manifest_digest.to_string()));
        match planned? {
            None => Ok(None),
            Some(Activation::Boot(trial)) => {
                let slot = trial.slot;
                self.event(s, Event::Activate(trial), "activate:arm")?;
                Ok(Some(slot))
            }
            Some(Activation::Live(trial)) => {
                let slot = trial.flips.first().map(|f| f.to);
                self.live_trial(s, Event::ActivateLive(trial))?;
                Ok(slot)
            }
        }
    }
}
